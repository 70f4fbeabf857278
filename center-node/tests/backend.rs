//! The OpenAI-compatible backend against the stand-in for the model API: what it sends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use r1_center::backend::Backend;
use r1_center::backend::openai::{OpenAiBackend, OpenAiSettings};
use r1_center::config::{BackendSection, ReasoningHistory};
use r1_proto::ChatCompletionRequest;
use serde_json::json;

fn conversation() -> ChatCompletionRequest {
    serde_json::from_value(json!({
        "model": "deepseek-r1",
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "Two and two make four."},
            {"role": "user", "content": "And times 3?"}
        ]
    }))
    .unwrap()
}

#[tokio::test]
async fn earlier_reasoning_is_stripped_for_deepseek_and_kept_when_configured() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().record(4))
        .await
        .unwrap();
    let base = format!("http://{}/v1", upstream.addr());
    for history in [ReasoningHistory::Strip, ReasoningHistory::Keep] {
        let mut section = BackendSection::openai(base.clone(), "deepseek-reasoner");
        section.reasoning_history = Some(history);
        let backend = OpenAiBackend::new(OpenAiSettings::from_section(&section, None)).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        backend.generate(conversation(), &tx, None).await.unwrap();
    }
    let sent = upstream.recorded();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[0].body["messages"][1].get("reasoning_content").is_none(),
        "{}",
        sent[0].body
    );
    assert_eq!(sent[0].body["messages"][1]["content"], "4");
    assert_eq!(
        sent[1].body["messages"][1]["reasoning_content"],
        "Two and two make four."
    );

    // Unset, it follows the backend: DeepSeek's API refuses the key, other servers get it.
    let deepseek = BackendSection::openai("https://api.deepseek.com/v1", "deepseek-reasoner");
    assert_eq!(deepseek.reasoning_history(), ReasoningHistory::Strip);
    assert_eq!(
        BackendSection::openai(base, "r1").reasoning_history(),
        ReasoningHistory::Keep
    );
}
