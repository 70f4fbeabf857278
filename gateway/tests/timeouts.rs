//! The phases of an answer and their limits, on both center paths' kinds of stream: proxied SSE from
//! an edge member, and SSE the gateway writes itself from the task hand-off (embedded transport).
//! The model behind them is the stand-in for the external model API, scripted to be silent (with
//! keep-alive comments, as a real server thinking for minutes) or slow.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use r1_mock_upstream::Script;
use serde_json::{Value, json};
use support::{CENTER_MODEL, EDGE_MODEL, Gateway};

async fn upstream(script: Script) -> r1_mock_upstream::Handle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    r1_mock_upstream::serve(listener, script).await.unwrap()
}

fn stream_request(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "think hard"}], "stream": true, "max_tokens": 100})
}

/// The body of a stream, split into events (comments included).
async fn events(r: reqwest::Response) -> Vec<String> {
    r.text()
        .await
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxied_stream_silent_past_the_idle_limit_ends_with_an_error_event() {
    // Thinks for 5 s after the role chunk, sending a comment every 100 ms: alive, but no token.
    let silent = upstream(
        Script::default()
            .content(3, "late ")
            .delays(Duration::from_secs(5), Duration::from_millis(10))
            .keepalive(Duration::from_millis(100)),
    )
    .await;
    let routing = "[timeouts]\nfirst_token = \"3s\"\nidle = \"600ms\"\ntotal = \"20s\"\n";
    let gw = Gateway::start(&[silent.addr()], &[], routing).await;
    let started = Instant::now();
    let r = gw.chat(stream_request(EDGE_MODEL)).await;
    assert_eq!(r.status(), 200);
    let events = events(r).await;
    let took = started.elapsed();
    let last = events.last().unwrap();
    assert!(
        last.starts_with("data: {\"error\""),
        "an in-band error event last: {events:?}"
    );
    assert!(last.contains("timeout_error") && last.contains("silent"), "{last}");
    assert!(
        !events.iter().any(|e| e == "data: [DONE]"),
        "never a [DONE] after a failure"
    );
    assert!(
        events.iter().any(|e| e.starts_with(": keep-alive")),
        "the comments reached the client"
    );
    assert!(
        took < Duration::from_secs(3),
        "cut by idle (600 ms), not by the model's 5 s: {took:?}"
    );
    assert_eq!(
        gw.metric("r1_upstream_errors_total{phase=\"idle\",route=\"edge\"}")
            .await,
        1.0
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxied_stream_past_the_total_limit_is_cut_even_while_tokens_flow() {
    let slow = upstream(
        Script::default()
            .content(50, "word ")
            .delays(Duration::ZERO, Duration::from_millis(100)),
    )
    .await;
    let routing = "[timeouts]\nfirst_token = \"800ms\"\nidle = \"3s\"\ntotal = \"1s\"\n";
    let gw = Gateway::start(&[slow.addr()], &[], routing).await;
    let r = gw.chat(stream_request(EDGE_MODEL)).await;
    let events = events(r).await;
    let last = events.last().unwrap();
    assert!(
        last.contains("timeout_error") && last.contains("longer than 1s"),
        "{last}"
    );
    let words = events.iter().filter(|e| e.contains("word")).count();
    assert!((5..30).contains(&words), "tokens flowed until the total limit: {words}");
    assert_eq!(
        gw.metric("r1_upstream_errors_total{phase=\"total\",route=\"edge\"}")
            .await,
        1.0
    );
    gw.stop();
}

/// A gateway whose center is reached through the in-process hand-off, with `center` as its backend.
async fn embedded(center: SocketAddr, timeouts: &str) -> Gateway {
    let gw = Gateway::start_full(
        &[],
        &[center],
        "",
        timeouts,
        "transport = \"embedded\"",
        reqwest::Client::new(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.pools().await["handoff"]["ready"] != true {
        assert!(Instant::now() < deadline, "the embedded hand-off did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_the_hand_off_the_gateway_keeps_a_thinking_stream_alive_and_then_answers() {
    // The model thinks 1.5 s before its first token and sends nothing meanwhile.
    let thinker = upstream(
        Script::default()
            .content(3, "done ")
            .delays(Duration::from_millis(1500), Duration::ZERO),
    )
    .await;
    let timeouts = "[timeouts]\nfirst_token = \"10s\"\nidle = \"10s\"\nsse_keepalive = \"200ms\"\n";
    let gw = embedded(thinker.addr(), timeouts).await;
    let r = gw.chat(stream_request(CENTER_MODEL)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-r1-route"], "center");
    let events = events(r).await;
    let comments = events.iter().filter(|e| e.starts_with(": keep-alive")).count();
    assert!(comments >= 3, "keep-alive comments while the model thinks: {events:?}");
    assert_eq!(events.last().unwrap(), "data: [DONE]");
    let text: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "done ".repeat(3));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_the_hand_off_no_first_token_in_time_is_a_504_before_anything_is_written() {
    let mute = upstream(
        Script::default()
            .content(3, "late ")
            .delays(Duration::from_secs(10), Duration::ZERO),
    )
    .await;
    // Keep-alive later than the first-token limit: nothing is written before the limit passes.
    let timeouts = "[timeouts]\nfirst_token = \"700ms\"\nidle = \"10s\"\nsse_keepalive = \"5s\"\n";
    let gw = embedded(mute.addr(), timeouts).await;
    let started = Instant::now();
    let r = gw.chat(stream_request(CENTER_MODEL)).await;
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "timeout_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no token arrived within 700ms")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        gw.metric("r1_upstream_errors_total{phase=\"first_token\",route=\"center\"}")
            .await,
        1.0
    );
    gw.stop();
}

/// Waits (at most `within`) until `model` has no request in flight: its work for a client that went
/// away has stopped.
async fn stops_within(model: &r1_mock_upstream::Handle, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while model.stats().snapshot().in_flight > 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: the model still works for a client that left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads `r`'s body until a piece holds `needle`, then drops it: the client goes away.
async fn read_until_then_leave(r: reqwest::Response, needle: &str) {
    use futures::StreamExt;
    let mut body = r.bytes_stream();
    let mut seen = Vec::new();
    while let Some(piece) = body.next().await {
        seen.extend_from_slice(&piece.unwrap());
        if String::from_utf8_lossy(&seen).contains(needle) {
            return;
        }
    }
    panic!("the stream ended before {needle:?}: {}", String::from_utf8_lossy(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_goes_away_stops_the_model_within_a_second_on_both_paths_and_nothing_is_cached() {
    // 50 tokens 100 ms apart, after 50 ms: a 5 s answer.
    let slow = || {
        Script::default()
            .content(50, "tok ")
            .delays(Duration::from_millis(50), Duration::from_millis(100))
    };
    let ask = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "count slowly"}], "stream": true,
               "temperature": 0, "max_tokens": 60})
    };

    // Proxied (edge), with the result cache on: mid-stream, then before the first token.
    let model = upstream(slow()).await;
    let gw = Gateway::start(&[model.addr()], &[], "[cache]\nenabled = true\n").await;
    read_until_then_leave(gw.chat(ask(EDGE_MODEL)).await, "tok ").await;
    stops_within(&model, Duration::from_secs(1), "proxied, mid-stream").await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while gw.metric("r1_in_flight").await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the gateway still counts the request in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The cut answer was not cached: the same question goes to the model again.
    let received = model.stats().snapshot().received;
    let again = gw.chat(ask(EDGE_MODEL)).await;
    assert_ne!(
        again.headers().get("x-r1-cache").map(|v| v.as_bytes()),
        Some(&b"hit"[..])
    );
    read_until_then_leave(again, "tok ").await;
    assert_eq!(
        model.stats().snapshot().received,
        received + 1,
        "not answered from the cache"
    );
    stops_within(&model, Duration::from_secs(1), "proxied, mid-stream again").await;
    gw.stop();

    let thinker = upstream(slow().delays(Duration::from_secs(5), Duration::from_millis(100))).await;
    let gw = Gateway::start(&[thinker.addr()], &[], "").await;
    let r = gw.chat(ask(EDGE_MODEL)).await;
    assert_eq!(r.status(), 200);
    read_until_then_leave(r, "\"role\"").await; // the role chunk, no token yet
    stops_within(&thinker, Duration::from_secs(1), "proxied, before the first token").await;
    gw.stop();

    // Through the hand-off (the in-process queue and worker): the cancel reaches the worker.
    let model = upstream(slow()).await;
    let timeouts = "[timeouts]\nfirst_token = \"10s\"\nidle = \"10s\"\nsse_keepalive = \"200ms\"\n";
    let gw = embedded(model.addr(), timeouts).await;
    read_until_then_leave(gw.chat(ask(CENTER_MODEL)).await, "tok ").await;
    stops_within(&model, Duration::from_secs(1), "hand-off, mid-stream").await;
    gw.stop();

    let thinker = upstream(slow().delays(Duration::from_secs(5), Duration::from_millis(100))).await;
    let gw = embedded(thinker.addr(), timeouts).await;
    let r = gw.chat(ask(CENTER_MODEL)).await;
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while thinker.stats().snapshot().in_flight == 0 {
        assert!(Instant::now() < deadline, "the task never reached the model");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(r); // before the first token
    stops_within(&thinker, Duration::from_secs(1), "hand-off, before the first token").await;
    gw.stop();
}
