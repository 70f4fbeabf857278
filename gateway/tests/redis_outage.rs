//! Redis stopped, on the real server the test command starts: `POST /v1/tasks` answers 503 with
//! `Retry-After` instead of accepting a task whose state could be lost; interactive center traffic
//! keeps flowing (the center's claims fail open); the result cache misses (its error counter rises)
//! and the limits fall back to local counting — no client error, and `r1_limit_fallback_active` says so;
//! once Redis is back, tasks are accepted again and the limits count in Redis again.
//!
//! Its own test binary: it stops the shared Redis, which no other test may see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::kafka::{Center, Names, ask_center, kafka_gateway, redis_url};
use support::{EDGE_MODEL, Edge, Restart, services};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_new_tasks_get_503_and_interactive_traffic_still_flows() {
    let names = Names::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default().content(3, "fine ");
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let center = Center::start(&names, "center-a", &format!("http://{}", upstream.addr()));
    let edge = Edge::start(EDGE_MODEL);
    let redis = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"250ms\"\n[limits]\nrequests_per_second = 1000\n[cache]\nenabled = true\n",
        redis_url()
    );
    let gw = kafka_gateway(&names, &[edge.addr], 0, &redis).await;
    center.wait_until_serving().await;
    let task = || {
        let (client, url) = (gw.client.clone(), format!("{}/v1/tasks", gw.public));
        async move { client.post(url).json(&ask_center("later", false)).send().await.unwrap() }
    };
    // The store connects in the background: wait until it takes a task.
    let deadline = Instant::now() + Duration::from_secs(30);
    while task().await.status() != 202 {
        assert!(Instant::now() < deadline, "the task store never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    services(&["stop", "redis"]);
    let restart = Restart("redis");
    for _ in 0..5 {
        let started = Instant::now();
        let r = task().await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a fast 503: {:?}",
            started.elapsed()
        );
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains("task store"),
            "{body}"
        );
    }
    // Interactive center requests do not depend on Redis: the node runs them unclaimed, the cache
    // lookup (temperature 0: cacheable) misses, the limits count locally.
    let errors_before = gw.metric_family("r1_cache_errors_total").await;
    for i in 0..3 {
        let r = gw.chat(ask_center(&format!("still answered {i}"), false)).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "fine ".repeat(3));
    }
    assert!(center.metric("r1_center_claim_errors_total").await >= 1.0);
    assert!(
        gw.metric_family("r1_cache_errors_total").await > errors_before,
        "the cache counted Redis errors"
    );
    // The limiter's fallback is visible: active, with its admissions and the Redis errors counted.
    assert_eq!(gw.metric("r1_limit_fallback_active ").await, 1.0);
    assert!(gw.metric("r1_limit_redis_errors_total ").await >= 1.0);
    assert!(gw.metric("r1_limit_fallback_admissions_total ").await >= 3.0);
    assert_eq!(gw.metric_family("r1_limit_refusals_total").await, 0.0);

    drop(restart); // up again
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = task().await;
        if r.status() == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks are not accepted after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With Redis back, the next requests' probe switches the limiter back to shared counting.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.metric("r1_limit_fallback_active ").await != 0.0 {
        assert!(Instant::now() < deadline, "the limiter stayed in its local fallback");
        assert_eq!(
            gw.chat(ask_center("back to shared counting", false)).await.status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.stop();
    upstream.shutdown().await.unwrap();
}
