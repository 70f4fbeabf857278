//! Kafka stopped for 30 s under load (eight concurrent clients), on the real broker the test command
//! starts: clients get fast 503s with `Retry-After` (never a hung request), and no task the gateway
//! accepted before the outage is lost — each one's client gets its complete answer once the broker is
//! back.
//!
//! Its own test binary: it stops the shared broker, which no other test may see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::kafka::{Center, Names, ask_center, kafka_gateway};
use support::{EDGE_MODEL, Edge, Restart, services};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_down_for_30s_gives_fast_503s_and_loses_no_accepted_task() {
    let names = Names::new();
    // Answers take ~2 s, so tasks accepted just before the outage finish while the broker is down.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .content(20, "done ")
        .delays(Duration::from_millis(100), Duration::from_millis(100));
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let center = Center::start(&names, "center-a", &format!("http://{}", upstream.addr()));
    let edge = Edge::start(EDGE_MODEL);
    // A reasoning model may be silent for minutes, and so is a stream while the broker restarts:
    // the gateway's limits must outlast the outage (30 s + the broker's restart, slower when the
    // machine is busy) — the deployed defaults are minutes too.
    let timeouts = "[timeouts]\nfirst_token = \"5m\"\nidle = \"5m\"\ntotal = \"10m\"\n";
    let gw = kafka_gateway(&names, &[edge.addr], 0, timeouts).await;
    center.wait_until_serving().await;
    gw.wait_until_center_seen().await;
    let post = |body: Value| {
        let (client, url) = (gw.client.clone(), format!("{}/v1/chat/completions", gw.public));
        async move { client.post(url).json(&body).send().await }
    };
    let r = post(ask_center("warm-up", false)).await.unwrap();
    assert_eq!(r.status(), 200);

    // Accepted before the outage: their answers are produced while the broker is down.
    let mut accepted = Vec::new();
    for i in 0..4 {
        let mut body = ask_center(&format!("accepted {i}"), i % 2 == 0);
        body["max_tokens"] = json!(100);
        let call = tokio::spawn(post(body));
        accepted.push(call);
    }
    // Give the four tasks time to be handed over (each produce is acknowledged in milliseconds).
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.pools().await["handoff"]["waiting"].as_u64().unwrap_or(0) < 4 {
        assert!(Instant::now() < deadline, "the four tasks were not handed over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = center.metric("r1_center_in_flight").await;

    services(&["stop", "kafka"]);
    let restart = Restart("kafka");
    let down_at = Instant::now();
    // 30 s of traffic from eight concurrent clients against a dead broker: every request ends fast with a
    // 503 and Retry-After, none hangs.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (client, url) = (gw.client.clone(), format!("{}/v1/chat/completions", gw.public));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while down_at.elapsed() < Duration::from_secs(30) {
                    let started = Instant::now();
                    let ask = ask_center(&format!("during the outage, client {c}"), c % 2 == 0);
                    let r = tokio::time::timeout(Duration::from_secs(10), client.post(&url).json(&ask).send())
                        .await
                        .expect("no request hangs")
                        .unwrap();
                    latencies.push(started.elapsed());
                    assert_eq!(r.status(), 503);
                    assert_eq!(r.headers()["retry-after"], "1");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    latencies.sort();
    let (median, slowest) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    assert!(median <= Duration::from_millis(100), "503s are fast: median {median:?}");
    assert!(
        slowest <= Duration::from_millis(4500),
        "a 503 took {slowest:?} (send_timeout 3 s)"
    );
    drop(restart); // up again

    // Every task accepted before the outage completes.
    for (i, call) in accepted.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(120), call)
            .await
            .expect("an accepted task's answer arrives after the restart")
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let answer = if i % 2 == 0 {
            let (t, _, done, error) = support::kafka::read_sse(&text);
            assert!(done && error.is_none(), "{text}");
            t
        } else {
            serde_json::from_str::<Value>(&text).unwrap()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(answer, "done ".repeat(20), "accepted task {i} lost nothing");
    }
    // New requests are taken again once the producer reconnects.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = post(ask_center("after the outage", false)).await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the hand-off did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "outage: {} requests refused with 503, median {median:?}, slowest {slowest:?}; {before} tasks in flight at the stop",
        latencies.len()
    );
    gw.stop();
    upstream.shutdown().await.unwrap();
}
