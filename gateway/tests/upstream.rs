//! What crosses the gateway between a client and a model server: only allow-listed client headers go
//! upstream (never credentials, cookies, forwarding claims or a stale `Content-Encoding`); an upstream
//! failure reaches the client as the gateway's own 502 with an OpenAI error body, never the upstream's
//! body or headers; the upstream's `Server` and private `x-*` headers never reach a client. And what a
//! broken model server does to an exchange: a reset after it read the request is one clean 502 (the
//! request is not replayed into it), and a server that goes silent is cut at the first-token limit
//! with a 504 and its socket closed. A stream the model server cuts midway ends with an in-band error
//! event and a clean end of body, and then the gateway closes the connection (the exchange failed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use r1_mock_upstream::{Broken, BrokenServer, Reply, Script};
use serde_json::{Value, json};
use support::{EDGE_MODEL, Gateway, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A broken model server (`r1_mock_upstream::BrokenServer`) on a free port.
async fn broken(broken: Broken) -> BrokenServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    BrokenServer::serve(listener, broken, EDGE_MODEL).unwrap()
}

fn ask(text: &str) -> Value {
    json!({"model": EDGE_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 8})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_allow_listed_headers_cross_and_upstream_failures_are_the_gateways_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = Script::default().record(8).poison("BOOM", 500).when(
        "LEAKY",
        Reply::ok()
            .header("server", "model-server/1.2.3")
            .header("x-backend-host", "10.0.0.5:8000"),
    );
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let gw = Gateway::start(&[upstream.addr()], &[], "").await;
    let url = format!("{}/v1/chat/completions", gw.public);

    // Client headers: only the allow-listed ones reach the model server.
    let r = gw
        .client
        .post(&url)
        .header("cookie", "session=secret")
        .header("x-api-key", "sk-client")
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-real-ip", "1.2.3.4")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("accept", "application/json")
        .json(&ask("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.recorded();
    let headers = &seen.last().unwrap().headers;
    for gone in ["cookie", "x-api-key", "x-forwarded-for", "x-real-ip", "authorization"] {
        assert!(!headers.contains_key(gone), "{gone} went upstream: {headers:?}");
    }
    assert_eq!(
        headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("x-request-id"));

    // The upstream's identity and private headers stay inside; ours are there.
    let r = gw.chat(ask("LEAKY")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-backend-host").is_none(), "{:?}", r.headers());
    assert_ne!(header(&r, "server"), "model-server/1.2.3");
    assert_eq!(header(&r, "x-r1-route"), "edge");

    // An upstream 500 is the gateway's 502, with an OpenAI error body of its own.
    let r = gw.chat(ask("BOOM")).await;
    assert_eq!(r.status(), 502);
    assert_eq!(header(&r, "x-r1-route"), "edge");
    assert!(r.headers().get("x-backend-host").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["message"], "the upstream model failed (HTTP 500)",
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");

    gw.stop();
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_resets_after_reading_the_request_is_one_clean_502_and_sees_it_once() {
    let upstream = broken(Broken::Reset).await;
    let gw = Gateway::start(&[upstream.addr()], &[], "").await;
    for round in 1..=3u64 {
        let r = gw.chat(ask("hello")).await;
        assert_eq!(r.status(), 502, "round {round}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "upstream_error", "{body}");
        assert_eq!(
            upstream.chats(),
            round,
            "a request the member read is never replayed into it"
        );
    }
    assert_eq!(
        gw.metric("r1_upstream_errors_total{phase=\"proxy\",route=\"edge\"}")
            .await,
        3.0
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_member_is_cut_at_the_first_token_limit_with_a_504_and_its_socket_closed() {
    let upstream = broken(Broken::Silent).await;
    let gw = Gateway::start(
        &[upstream.addr()],
        &[],
        "[timeouts]\nfirst_token = \"1500ms\"\nidle = \"500ms\"\ntotal = \"20s\"\n",
    )
    .await;
    for stream in [false, true] {
        let mut body = ask("hello");
        body["stream"] = json!(stream);
        let started = Instant::now();
        let r = gw.chat(body).await;
        let took = started.elapsed();
        assert_eq!(
            r.status(),
            504,
            "stream {stream}: nothing was sent, so a status can still say it"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "timeout_error", "{body}");
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
            "cut at first_token (1.5 s), not idle (0.5 s) or never: {took:?}"
        );
    }
    // The gateway closed the upstream sockets it gave up on (polled: the close is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.closed() < 2 {
        assert!(Instant::now() < deadline, "the silent member's sockets were left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.chats(), 2);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pooled_connection_the_member_closed_while_idle_is_never_a_client_error() {
    let upstream = broken(Broken::AnswerThenCloseIdle).await;
    let gw = Gateway::start(&[upstream.addr()], &[], "").await;
    for round in 1..=3u64 {
        let r = gw.chat(ask("hello")).await;
        assert_eq!(r.status(), 200, "round {round}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "ok");
        // The member closes the connection the gateway pooled (polled: it does so after 300 ms idle);
        // the next request must not fail on it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while upstream.closed() < round {
            assert!(
                Instant::now() < deadline,
                "the member did not close its idle connection"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(upstream.chats(), round, "each request reached it once");
    }
    gw.stop();
}

/// Reads from `socket` until `buf` ends with `end` (or fails the test after 10 s).
async fn read_until(socket: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !buf.ends_with(end) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), socket.read(&mut chunk))
            .await
            .expect("the gateway answered in time")
            .unwrap();
        assert!(
            n > 0,
            "the gateway closed the connection early: {}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_the_member_cuts_midway_ends_its_body_cleanly_and_then_its_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = Script {
        drop_after: Some(3),
        ..Script::default().content(50, "tok ")
    };
    let dying = r1_mock_upstream::serve(listener, script).await.unwrap();
    let gw = Gateway::start(&[dying.addr()], &[], "").await;
    let mut body = ask("hello");
    body["stream"] = json!(true);
    let body = body.to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let public = gw.public.trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&public).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    read_until(&mut socket, &mut answer, b"\r\n0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(
        text.contains("data: {\"error\"") && !text.contains("[done]"),
        "an in-band error, never a fake [DONE]: {text}"
    );
    // Nothing after the end of the body, and the connection is closed: a client must not send its next
    // request into it (the headers went out before the failure, so they could not say so).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the connection after a failed exchange");
    assert!(
        read.is_ok() && rest.is_empty(),
        "{read:?} {}",
        String::from_utf8_lossy(&rest)
    );
    gw.stop();
    dying.shutdown().await.unwrap();
}
