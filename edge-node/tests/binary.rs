//! The real `r1-edge` binary, started as the Kubernetes manifests start it (flags verbatim), asked a
//! question over HTTP, then stopped with SIGTERM: it must drain and exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_drains_on_sigterm() {
    // Port 0 is not an option for a child process we do not control; take a free port from the OS.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/r1-edge-mini");
    let mut child = Command::new(env!("CARGO_BIN_EXE_r1-edge"))
        .args(["--model", model, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--batch_size_dynamic", "true", "--max_batch_size", "32"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "r1-edge exited before it was ready"
        );
        assert!(Instant::now() < deadline, "r1-edge not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "r1-edge-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 16}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{answer}");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "r1-edge exit after SIGTERM: {status}");
}
