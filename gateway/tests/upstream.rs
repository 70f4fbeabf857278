//! What crosses the gateway between a client and a model server: only allow-listed client headers go
//! upstream (never credentials, cookies, forwarding claims or a stale `Content-Encoding`); an upstream
//! failure reaches the client as the gateway's own 502 with an OpenAI error body, never the upstream's
//! body or headers; the upstream's `Server` and private `x-*` headers never reach a client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use r1_mock_upstream::{Reply, Script};
use serde_json::{Value, json};
use support::{EDGE_MODEL, Gateway, header};

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
