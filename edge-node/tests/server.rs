//! r1-edge's HTTP server in process, on a real socket (port 0), with the shipped model: batching,
//! stop sequences, limits, streaming, disconnects, errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

#[path = "support/test_server.rs"]
mod test_server;

use test_server::TestServer;

const MODEL: &str = "r1-edge-mini";

fn greedy(question: &str, max_tokens: u32) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": max_tokens})
}

fn text(response: &Value) -> &str {
    response["choices"][0]["message"]["content"].as_str().unwrap()
}

const QUESTIONS: [&str; 10] = [
    "Hi",
    "What is the capital of France?",
    "What is 7 plus 5?",
    "你好",
    "Translate 'apple' into Chinese.",
    "Is this sentence positive or negative: I love this sunny day, it makes me so happy.",
    "What day comes after Monday?",
    "法国的首都是哪里？",
    "Tell me a fact about cats.",
    "What colour is the sky on a clear day? Please answer in one short sentence.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batched_greedy_equals_one_at_a_time() {
    let server = TestServer::start(MODEL, MODEL, |_| {}).await;
    // Alone: one request at a time, so every decode step has one row.
    let mut alone = Vec::new();
    for q in QUESTIONS {
        alone.push(server.chat(greedy(q, 24)).await);
    }
    assert_eq!(
        server.metric("r1_edge_batch_size_sum").await,
        server.metric("r1_edge_batch_size_count").await
    );

    // Together: all at once (ignore_eos keeps rows alive so they overlap for many steps).
    let before = (
        server.metric("r1_edge_batch_size_sum").await,
        server.metric("r1_edge_batch_size_count").await,
    );
    let together = futures::future::join_all(QUESTIONS.iter().map(|q| server.chat(greedy(q, 24)))).await;
    let after = (
        server.metric("r1_edge_batch_size_sum").await,
        server.metric("r1_edge_batch_size_count").await,
    );
    let mean_rows = (after.0 - before.0) / (after.1 - before.1);
    assert!(
        mean_rows > 2.0,
        "requests must have shared decode steps, mean batch {mean_rows}"
    );

    let lengths: std::collections::HashSet<u64> = alone
        .iter()
        .map(|r| r["usage"]["prompt_tokens"].as_u64().unwrap())
        .collect();
    assert!(lengths.len() >= 8, "prompts of different lengths: {lengths:?}");
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(text(a), text(t), "prompt {i} {:?}", QUESTIONS[i]);
        assert_eq!(a["usage"], t["usage"], "prompt {i}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sequences_and_max_tokens() {
    let server = TestServer::start(MODEL, MODEL, |_| {}).await;
    let mut body = greedy("What is the capital of France?", 40);
    body["ignore_eos"] = json!(true);
    let full = server.chat(body.clone()).await;
    let full_text = text(&full).to_owned();
    assert_eq!(full["choices"][0]["finish_reason"], "length");
    assert_eq!(full["usage"]["completion_tokens"], 40);

    // A stop sequence taken from the middle of the greedy text: the answer ends right before it.
    let chars: Vec<char> = full_text.chars().collect();
    let stop: String = chars[chars.len() / 3..chars.len() / 3 + 3].iter().collect();
    let cut = full_text.find(&stop).unwrap();
    body["stop"] = json!(["never-appears", stop]);
    let stopped = server.chat(body.clone()).await;
    assert_eq!(text(&stopped), &full_text[..cut], "stop {stop:?}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    // max_tokens: exactly that many tokens, finish_reason length.
    body.as_object_mut().unwrap().remove("stop");
    body["max_tokens"] = json!(3);
    let short = server.chat(body).await;
    assert_eq!(short["usage"]["completion_tokens"], 3);
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert!(
        full_text.starts_with(text(&short)),
        "{:?} is the start of {full_text:?}",
        text(&short)
    );
    server.stop().await;
}

/// Reads an SSE body into its `data:` payloads.
async fn sse_events(response: reqwest::Response) -> Vec<String> {
    let body = response.text().await.unwrap();
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_concatenate_to_the_non_streamed_text() {
    let server = TestServer::start(MODEL, MODEL, |_| {}).await;
    for q in ["What is 7 plus 5?", "法国的首都是哪里？"] {
        let plain = server.chat(greedy(q, 30)).await;
        let mut body = greedy(q, 30);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let response = server.post(body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let events = sse_events(response).await;
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let streamed: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(streamed, text(&plain));
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(
            finish["choices"][0]["finish_reason"],
            plain["choices"][0]["finish_reason"]
        );
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"], plain["usage"]);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_client_frees_its_slot() {
    // One slot: while a generation holds it, nothing else runs.
    let server = TestServer::start(MODEL, MODEL, |c| c.batching.max_batch_size = 1).await;
    let mut long = greedy("Tell me a fact about cats.", 450);
    long["ignore_eos"] = json!(true);
    long["stream"] = json!(true);
    let response = server.post(long).await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap(); // the generation is running
    drop(stream); // the client goes away

    // The next request gets the slot and completes; the first one was cancelled, not finished.
    let next = tokio::time::timeout(Duration::from_secs(60), server.chat(greedy("Hi", 8)))
        .await
        .unwrap();
    assert!(!text(&next).is_empty() || next["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        server.metric("r1_edge_requests_total{outcome=\"cancelled\"}").await,
        1.0
    );
    let generated = server.metric("r1_edge_generated_tokens_total").await;
    assert!(
        generated < 450.0,
        "the abandoned generation stopped early ({generated} tokens in all)"
    );
    assert_eq!(server.metric("r1_edge_running_sequences").await, 0.0);
    server.stop().await;
}

async fn error_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors() {
    let server = TestServer::start(MODEL, MODEL, |c| c.server.max_body_bytes = 4096).await;
    let url = format!("{}/v1/chat/completions", server.base);

    let malformed = server.client.post(&url).body("{\"model\": ").send().await.unwrap();
    let body = error_of(malformed, 400).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let mut unknown = greedy("Hi", 5);
    unknown["model"] = json!("gpt-9");
    let body = error_of(server.post(unknown).await, 404).await;
    assert_eq!(body["error"]["code"], "model_not_found");

    let body = error_of(server.post(greedy("Hi", 5000)).await, 400).await;
    assert_eq!(body["error"]["param"], "max_tokens");

    let mut role = greedy("Hi", 5);
    role["messages"][0]["role"] = json!("wizard");
    let body = error_of(server.post(role).await, 400).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("wizard"));

    let huge = greedy(&"a".repeat(10_000), 5);
    error_of(server.post(huge).await, 413).await;

    // What this server does not serve is refused naming the parameter, never silently ignored.
    let tool = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let unserved = [
        ("tools", json!({"tools": tool})),
        ("tool_choice", json!({"tool_choice": "required"})),
        ("response_format", json!({"response_format": {"type": "json_object"}})),
        ("logprobs", json!({"logprobs": true})),
        ("top_logprobs", json!({"top_logprobs": 2})),
        ("logit_bias", json!({"logit_bias": {"42": 5}})),
        ("presence_penalty", json!({"presence_penalty": 3.0})),
        ("reasoning_effort", json!({"reasoning_effort": "high"})),
        ("store", json!({"store": true})),
        ("modalities", json!({"modalities": ["text", "audio"]})),
        ("min_p", json!({"min_p": 0.1})),
    ];
    for (param, extra) in &unserved {
        let mut request = greedy("Hi", 5);
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let body = error_of(server.post(request).await, 400).await;
        assert_eq!(body["error"]["param"], *param, "{body}");
    }
    let mut image = greedy("Hi", 5);
    image["messages"][0]["content"] =
        json!([{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": "data:,"}}]);
    let body = error_of(server.post(image).await, 400).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("image"), "{body}");
    // tool_choice "none" with tools asks for no call, and labels change nothing: served.
    let mut none = greedy("Hi", 3);
    none["tools"] = tool;
    none["tool_choice"] = json!("none");
    none["metadata"] = json!({"team": "search"});
    none["store"] = json!(false);
    none["parallel_tool_calls"] = json!(true);
    assert_eq!(server.post(none).await.status(), 200);

    assert_eq!(
        server
            .metric("r1_edge_rejected_requests_total{kind=\"invalid_request\"}")
            .await,
        3.0 + unserved.len() as f64 + 1.0
    );
    assert_eq!(
        server.metric("r1_edge_generated_tokens_total").await,
        3.0,
        "no refused request reached the model (the tool_choice none request generated 3)"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_with_retry_after() {
    let server = TestServer::start(MODEL, MODEL, |c| {
        c.batching.max_batch_size = 1;
        c.server.max_queue = 1;
    })
    .await;
    // A holds the only slot...
    let mut long = greedy("Tell me a fact about cats.", 450);
    long["ignore_eos"] = json!(true);
    long["stream"] = json!(true);
    let mut a = server.post(long.clone()).await.bytes_stream();
    a.next().await.unwrap().unwrap();
    // ... and eight more arrive at once for the one queue place: a stream's status is known when it is
    // queued or refused, so the answers come at once. One takes the place (more only if A finished
    // meanwhile and freed a slot); the others are refused at once.
    let posts = (0..8).map(|_| server.post(long.clone()));
    let answers = futures::future::join_all(posts).await;
    let mut refused = 0;
    for answer in answers {
        if answer.status() == 200 {
            continue;
        }
        assert_eq!(answer.headers()["retry-after"], "1");
        let body = error_of(answer, 429).await;
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "queue_full");
        refused += 1;
    }
    assert!(refused >= 5, "a full queue refuses: {refused} of 8 refused");
    drop(a);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_that_moves_too_slowly_refuses_newcomers_at_once() {
    let server = TestServer::start(MODEL, MODEL, |c| {
        c.batching.max_batch_size = 1;
        c.server.max_queue = 8;
        c.server.max_queue_wait = Duration::from_millis(300);
    })
    .await;
    // Four long streams: one runs, three wait behind it (each takes a while, so the queue stays).
    let mut long = greedy("Tell me a fact about cats.", 450);
    long["ignore_eos"] = json!(true);
    long["stream"] = json!(true);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(server.post(long.clone()).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.metric("r1_edge_queue_depth").await < 3.0 {
        assert!(std::time::Instant::now() < deadline, "three are queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once the oldest has waited past the bound, a newcomer is refused although the queue has room.
    let queued = std::time::Instant::now(); // they were queued before this
    tokio::time::sleep_until((queued + Duration::from_millis(400)).into()).await;
    let c = server.post(greedy("Hello", 4)).await;
    assert_eq!(c.headers()["retry-after"], "1");
    let body = error_of(c, 429).await;
    assert_eq!(body["error"]["code"], "queue_backlogged", "{body}");
    assert!(server.metric("r1_edge_queue_depth").await >= 2.0, "C was not queued");
    // Their clients gone, the queue empties, and a newcomer is admitted again.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.metric("r1_edge_queue_depth").await > 0.0 {
        assert!(std::time::Instant::now() < deadline, "the queue empties");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = server.post(greedy("Hello", 4)).await;
    assert_eq!(d.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penalties_change_a_greedy_answer_and_stay_deterministic() {
    let server = TestServer::start(MODEL, MODEL, |_| {}).await;
    let mut ask = greedy("Tell me a fact about cats.", 40);
    ask["ignore_eos"] = json!(true);
    let plain = server.chat(ask.clone()).await;
    ask["frequency_penalty"] = json!(2.0);
    let penalized = server.chat(ask.clone()).await;
    assert_ne!(
        text(&plain),
        text(&penalized),
        "a penalty changes what greedy decoding picks"
    );
    assert_eq!(
        text(&penalized),
        text(&server.chat(ask).await),
        "and stays deterministic"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_int8_model_serves_through_the_same_path() {
    let server = TestServer::start("r1-edge-mini-int8", MODEL, |_| {}).await;
    let answer = server.chat(greedy("What is the capital of France?", 20)).await;
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(text(&answer).chars().any(char::is_alphabetic), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_models() {
    let server = TestServer::start(MODEL, MODEL, |_| {}).await;
    let get = |path: &str| server.client.get(format!("{}{path}", server.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    // What it can serve, for the gateway's router.
    let card = &models["data"][0];
    assert_eq!(card["max_model_len"], 512);
    let capabilities = &card["capabilities"];
    assert_eq!(capabilities["context_length"], 512);
    assert!(capabilities["max_tokens"].as_u64().unwrap() > 0);
    let per_token = capabilities["bytes_per_token"].as_f64().unwrap();
    assert!((0.5..8.0).contains(&per_token), "{capabilities}");
    assert_eq!(capabilities["tools"], false);
    assert_eq!(capabilities["logprobs"], false);
    assert_eq!(capabilities["max_n"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_generations_finish_within_the_grace_period() {
    let server = TestServer::start(MODEL, MODEL, |c| c.server.shutdown_grace = Duration::from_secs(60)).await;
    let mut body = greedy("Tell me a fact about cats.", 200);
    body["ignore_eos"] = json!(true);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = server.post(body).await;
    let task = server.begin_stop(); // SIGTERM while the generation runs
    let events = sse_events(response).await;
    assert_eq!(
        events.last().unwrap(),
        "[DONE]",
        "the running generation finished normally"
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 200, "every token was generated");
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_streams_end_with_an_error_event_not_done() {
    let server = TestServer::start(MODEL, MODEL, |c| c.server.shutdown_grace = Duration::from_millis(1)).await;
    let mut body = greedy("Tell me a fact about cats.", 450);
    body["ignore_eos"] = json!(true);
    body["stream"] = json!(true);
    body["temperature"] = json!(0);
    let response = server.post(body).await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap(); // running
    let task = server.begin_stop();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(!rest.contains("[DONE]"), "no [DONE] after a cut generation");
    let last = rest.trim_end().rsplit("\n\n").next().unwrap();
    let error: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("shutting down"),
        "{error}"
    );
    task.await.unwrap().unwrap();
}
