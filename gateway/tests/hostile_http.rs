//! Hostile HTTP framing on the public listener: every request whose framing a front proxy could read
//! differently (the request-smuggling table) and every body whose end is unknown is answered with one
//! 4xx and its connection closed — the bytes after it are never read as a second request, and nothing
//! reaches a model. A well-framed keep-alive connection stays open.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use support::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one connection answered to `bytes`: its status lines, and whether the gateway closed it.
async fn exchange(public: &str, bytes: &[u8]) -> (Vec<String>, bool) {
    let mut tcp = TcpStream::connect(public.trim_start_matches("http://")).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break false, // still open
        }
    };
    let statuses = String::from_utf8_lossy(&answer)
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1."))
        .map(str::to_owned)
        .collect();
    (statuses, closed)
}

const NEXT: &str = "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ambiguous_framing_is_refused_and_its_connection_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(2, "x "))
        .await
        .unwrap();
    let gw = Gateway::start_full(&[upstream.addr()], &[], "", "", "", reqwest::Client::new()).await;
    let post = "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "invalid chunk size",
            format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n{NEXT}"),
            "400",
        ),
        (
            "CL and TE together",
            format!("{post}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{NEXT}"),
            "400",
        ),
        (
            "TE: chunked, identity",
            format!("{post}Transfer-Encoding: chunked, identity\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n{NEXT}"),
            "400",
        ),
        (
            "duplicate Content-Length",
            format!("{post}Content-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}{NEXT}"),
            "400",
        ),
        (
            "a +2 length",
            format!("{post}Content-Length: +2\r\n\r\n{{}}{NEXT}"),
            "400",
        ),
        (
            "obs-fold",
            format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-A: a\r\n b\r\n\r\n{NEXT}"),
            "400",
        ),
        (
            "HTTP/1.0 with TE",
            format!(
                "POST /v1/chat/completions HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n{NEXT}"
            ),
            "400",
        ),
        ("bare LF", format!("GET /healthz HTTP/1.1\nHost: gw\n\n{NEXT}"), "400"),
        (
            "premature Upgrade",
            format!("{post}Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\n{{}}{NEXT}"),
            "400",
        ),
        (
            "a declared length over the limit",
            format!("{post}Content-Length: 99999999\r\n\r\n{NEXT}"),
            "413",
        ),
    ];
    for (name, bytes, status) in cases {
        let (statuses, closed) = exchange(&gw.public, bytes.as_bytes()).await;
        assert_eq!(
            statuses.len(),
            1,
            "{name}: exactly one answer, not two requests: {statuses:?}"
        );
        assert!(
            statuses[0].starts_with(&format!("HTTP/1.1 {status}")),
            "{name}: {statuses:?}"
        );
        assert!(closed, "{name}: the connection must be closed");
    }
    assert_eq!(upstream.stats().snapshot().received, 0, "nothing reached a model");

    // A well-framed connection is kept for the next request.
    let mut tcp = TcpStream::connect(gw.public.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    for _ in 0..3 {
        tcp.write_all(NEXT.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_a_client_provokes_never_eject_a_healthy_member() {
    // The member crashes on one input (a 500), as a server with an input-triggered bug does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .content(2, "ok ")
        .poison("crash-me", 500);
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let gw = Gateway::start_full(&[upstream.addr()], &[], "", "", "", reqwest::Client::new()).await;
    let ask = |text: &str| serde_json::json!({"model": support::EDGE_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4});
    for _ in 0..10 {
        let r = gw.chat(ask("please crash-me now")).await;
        assert_eq!(r.status(), 502, "the member's failure is the gateway's 502");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "upstream_error");
    }
    let pools = gw.pools().await;
    assert_eq!(pools["pools"][0]["members"][0]["consecutive_failures"], 0, "{pools}");
    // Everyone else is still served by that member: it was not ejected.
    for _ in 0..3 {
        assert_eq!(gw.chat(ask("hello")).await.status(), 200);
    }
    let pools = gw.pools().await;
    let member = &pools["pools"][0]["members"][0];
    assert_eq!(member["ejected"], false, "{pools}");
    assert_eq!(member["consecutive_failures"], 0, "{pools}");
    assert_eq!(member["ready"], true, "{pools}");
    gw.stop();
}
