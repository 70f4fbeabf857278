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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use r1_mock_upstream::{Reply, Script};
use serde_json::{Value, json};
use support::{EDGE_MODEL, Gateway, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a broken model server does with a chat request once it has read it whole.
#[derive(Debug, Clone, Copy)]
enum Broken {
    /// Resets the connection (a crash) before writing anything.
    Reset,
    /// Writes nothing and keeps the connection open until the peer closes it.
    Silent,
    /// Answers (keep-alive), then closes the connection once it has been idle for 300 ms: shorter than
    /// the gateway keeps a pooled connection, as many servers' keep-alive timeouts are.
    AnswerThenCloseIdle,
}

/// A model server on a raw socket: health checks (`GET`) are answered 200; each chat request is read
/// whole, counted, and then met with `broken`. `closed` counts connections the gateway closed on it.
struct RawUpstream {
    addr: std::net::SocketAddr,
    chats: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
}

impl RawUpstream {
    async fn start(broken: Broken) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (chats, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (c, d) = (chats.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(Self::serve(socket, broken, c.clone(), d.clone()));
            }
        });
        Self { addr, chats, closed }
    }

    async fn serve(mut socket: TcpStream, broken: Broken, chats: Arc<AtomicU64>, closed: Arc<AtomicU64>) {
        let mut buf = Vec::new();
        loop {
            // One request: its head, then `content-length` bytes of body.
            let head_end = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                let mut chunk = [0u8; 4096];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < head_end + length {
                let mut chunk = [0u8; 4096];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..head_end + length);
            if matches!(broken, Broken::AnswerThenCloseIdle) && !head.starts_with("get ") {
                chats.fetch_add(1, Ordering::SeqCst);
                let body = format!(
                    "{{\"id\":\"chatcmpl-raw\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"{EDGE_MODEL}\",\
                     \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"ok\"}},\"finish_reason\":\"stop\"}}],\
                     \"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}}}"
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if socket.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                // Idle for 300 ms with no next request: closed, as a server's keep-alive timeout does.
                let mut chunk = [0u8; 4096];
                match tokio::time::timeout(Duration::from_millis(300), socket.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                continue;
            }
            if head.starts_with("get ") {
                let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                if socket.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            chats.fetch_add(1, Ordering::SeqCst);
            match broken {
                Broken::Reset => {
                    // SO_LINGER 0: the close is a RST, as when the process dies (a zero linger never
                    // blocks the thread, which is what the deprecation warns of).
                    #[allow(deprecated)]
                    let _ = socket.set_linger(Some(Duration::ZERO));
                    return;
                }
                Broken::AnswerThenCloseIdle => return,
                Broken::Silent => {
                    let mut rest = [0u8; 64];
                    while let Ok(n) = socket.read(&mut rest).await {
                        if n == 0 {
                            break;
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
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
    let upstream = RawUpstream::start(Broken::Reset).await;
    let gw = Gateway::start(&[upstream.addr], &[], "").await;
    for round in 1..=3u64 {
        let r = gw.chat(ask("hello")).await;
        assert_eq!(r.status(), 502, "round {round}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "upstream_error", "{body}");
        assert_eq!(
            upstream.chats.load(Ordering::SeqCst),
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
    let upstream = RawUpstream::start(Broken::Silent).await;
    let gw = Gateway::start(
        &[upstream.addr],
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
    while upstream.closed.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the silent member's sockets were left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.chats.load(Ordering::SeqCst), 2);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pooled_connection_the_member_closed_while_idle_is_never_a_client_error() {
    let upstream = RawUpstream::start(Broken::AnswerThenCloseIdle).await;
    let gw = Gateway::start(&[upstream.addr], &[], "").await;
    for round in 1..=3u64 {
        let r = gw.chat(ask("hello")).await;
        assert_eq!(r.status(), 200, "round {round}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "ok");
        // The member closes the connection the gateway pooled (polled: it does so after 300 ms idle);
        // the next request must not fail on it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while upstream.closed.load(Ordering::SeqCst) < round {
            assert!(
                Instant::now() < deadline,
                "the member did not close its idle connection"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            upstream.chats.load(Ordering::SeqCst),
            round,
            "each request reached it once"
        );
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
