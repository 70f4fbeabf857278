//! `tokens_per_minute` charges what an answer used, on every path: a request reserves its prompt
//! estimate plus its `max_tokens`, and the answer's usage corrects that — from the edge's JSON body, from
//! the last chunk of an edge stream (asked for upstream even when the client did not ask, and then kept
//! from the client), from the hand-off's result, and nothing for a cache hit.
//!
//! The budget (1200 tokens a minute) holds two reservations of ~412 tokens, and the ~17 answers here
//! use ~40 each: without the correction on any one path, the third request on it is refused with a 429.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use serde_json::{Value, json};
use support::{CENTER_MODEL, EDGE_MODEL, Edge, Gateway, header};

/// Four different questions per part (identical ones would be cache hits: the key ignores `stream`).
const QUESTIONS: [[&str; 4]; 4] = [
    [
        "What is the capital of France?",
        "What is the capital of Japan?",
        "What is the capital of Italy?",
        "What is the capital of Spain?",
    ],
    ["Hello!", "Good morning!", "Thank you!", "Goodbye!"],
    [
        "What colour is the sky?",
        "What colour is grass?",
        "What colour is snow?",
        "What colour is the sun?",
    ],
    [
        "What is 2 plus 3?",
        "What is 4 plus 1?",
        "What comes after Monday?",
        "What comes after March?",
    ],
];

fn ask(model: &str, text: &str, stream: Option<bool>, include_usage: bool) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": 400,
    });
    if let Some(stream) = stream {
        body["stream"] = json!(stream);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    body
}

/// The data events of an SSE body (`[DONE]` included).
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

async fn ok(gw: &Gateway, body: Value, route: &str) -> String {
    let asked = body["messages"][0]["content"].clone();
    let r = gw.chat(body).await;
    let (status, via) = (r.status(), header(&r, "x-r1-route").to_owned());
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{asked} ({route}): {text}");
    assert_eq!(via, route, "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_path_charges_what_the_answer_used() {
    let edge = Edge::start(EDGE_MODEL);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let center = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(3, "fine "))
        .await
        .unwrap();
    let limits = "[limits]\ntokens_per_minute = 1200\n[cache]\nenabled = true\n";
    let gw = Gateway::start_full(
        &[edge.addr],
        &[center.addr()],
        "",
        limits,
        "transport = \"embedded\"\n",
        reqwest::Client::new(),
    )
    .await;

    // The edge's JSON answers: usage in the body, far below the reservation.
    for text in QUESTIONS[0] {
        let v: Value = serde_json::from_str(&ok(&gw, ask(EDGE_MODEL, text, None, false), "edge").await).unwrap();
        let used = v["usage"]["total_tokens"].as_u64().unwrap();
        assert!(used < 100, "the model's answer is short: {used} tokens");
    }

    // The edge's streams without `include_usage`: the usage chunk the gateway asked for is read and
    // kept from the client, which gets the stream it asked for.
    for text in QUESTIONS[1] {
        let body = ok(&gw, ask(EDGE_MODEL, text, Some(true), false), "edge").await;
        let events = events(&body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
        assert!(
            !body.contains("\"choices\":[]"),
            "no usage chunk for a client that did not ask: {body}"
        );
        assert!(events.len() > 2, "{body}");
    }

    // With `include_usage`, the client gets its usage chunk, once.
    for text in QUESTIONS[2] {
        let body = ok(&gw, ask(EDGE_MODEL, text, Some(true), true), "edge").await;
        let usage: Vec<Value> = events(&body)
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter(|v| v["choices"] == json!([]))
            .collect();
        assert_eq!(usage.len(), 1, "{body}");
        assert!(usage[0]["usage"]["total_tokens"].as_u64().unwrap() < 100);
    }

    // The hand-off: the center's usage, JSON and stream.
    for (i, text) in QUESTIONS[3].iter().enumerate() {
        let stream = (i % 2 == 1).then_some(true);
        let body = ok(&gw, ask(CENTER_MODEL, text, stream, false), "center").await;
        assert!(body.contains("fine ") && !body.contains("\"error\""), "{body}");
    }

    // Cache hits generate nothing: the edge's first answer fills the entry, then hits are free.
    let repeated = ask(EDGE_MODEL, "What is the capital of Germany?", None, false);
    ok(&gw, repeated.clone(), "edge").await;
    for _ in 0..4 {
        ok(&gw, repeated.clone(), "cache").await;
    }
    assert_eq!(gw.metric_family("r1_limit_refusals_total").await, 0.0);

    gw.stop();
    center.shutdown().await.unwrap();
}

/// A stream cut midway (here the model server dies after three tokens) carries no usage chunk: it is
/// charged its prompt and what it streamed, not its whole reservation. Five such streams of a 400-token
/// reservation each fit a 1200-token minute only so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_cut_midway_is_charged_what_it_streamed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script {
        drop_after: Some(3),
        ..r1_mock_upstream::Script::default().content(50, "tok ")
    };
    let dying = r1_mock_upstream::serve(listener, script).await.unwrap();
    // A connection whose exchange failed is closed by the gateway after the body's end: each stream on
    // a new connection, as a client does that sees the close (a pooled one could race it into a reset).
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let gw = Gateway::start_with(&[dying.addr()], &[], "", "[limits]\ntokens_per_minute = 1200\n", fresh).await;
    for (i, text) in QUESTIONS[0].iter().chain(&QUESTIONS[1][..1]).enumerate() {
        let r = gw.chat(ask(EDGE_MODEL, text, Some(true), false)).await;
        assert_eq!(r.status(), 200, "stream {i}: charged what it used, so not refused");
        let body = r.text().await.unwrap();
        assert!(body.contains("\"error\"") && !body.contains("[DONE]"), "{body}");
    }
    assert_eq!(gw.metric_family("r1_limit_refusals_total").await, 0.0);
    gw.stop();
    dying.shutdown().await.unwrap();
}
