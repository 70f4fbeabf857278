//! Redis stopped, on the real server the test command starts: `POST /v1/tasks` answers 503 with
//! `Retry-After` instead of accepting a task whose state could be lost; interactive center traffic
//! keeps flowing (the center's claims fail open); the result cache misses (its error counter rises)
//! and the limits fall back to local counting — no client error, and `r1_limit_fallback_active` says so;
//! once Redis is back, tasks are accepted again and the limits count in Redis again. The same when Redis
//! is blackholed (reachable, but no byte answers, as in a network partition) rather than stopped: each
//! call gives up at `redis.timeout`.
//!
//! Its own test binary: it stops the shared Redis, which no other test may see; its tests run one at a
//! time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::kafka::{Names, RedisStack, ask_center, redis_url};
use support::{Gateway, Restart, services};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One asynchronous task submitted through `gw`.
async fn task(gw: &Gateway) -> reqwest::Response {
    let url = format!("{}/v1/tasks", gw.public);
    gw.client
        .post(url)
        .json(&ask_center("later", false))
        .send()
        .await
        .unwrap()
}

/// Submits tasks until one is accepted (at most 30 s; `what` is the failure).
async fn until_tasks_are_accepted(gw: &Gateway, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while task(gw).await.status() != 202 {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends chat requests (each answered) until the limiter has left its local fallback (at most 30 s):
/// the next requests' probe switches it back to shared counting once Redis answers.
async fn until_the_limits_count_in_redis_again(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.metric("r1_limit_fallback_active ").await != 0.0 {
        assert!(Instant::now() < deadline, "the limiter stayed in its local fallback");
        assert_eq!(
            gw.chat(ask_center("back to shared counting", false)).await.status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One test at a time: one stops the shared Redis, the other needs it up.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_new_tasks_get_503_and_interactive_traffic_still_flows() {
    let _serial = SERIAL.lock().await;
    let names = Names::new();
    let RedisStack {
        upstream,
        center,
        gw,
        edge: _edge,
    } = RedisStack::start(&names, &format!("url = \"{}\"\n", redis_url())).await;
    // The store connects in the background: wait until it takes a task.
    until_tasks_are_accepted(&gw, "the task store never became ready").await;

    services(&["stop", "redis"]);
    let restart = Restart("redis");
    for _ in 0..5 {
        let started = Instant::now();
        let r = task(&gw).await;
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
    until_tasks_are_accepted(&gw, "tasks are not accepted after Redis came back").await;
    // With Redis back, the next requests' probe switches the limiter back to shared counting.
    until_the_limits_count_in_redis_again(&gw).await;
    gw.stop();
    upstream.shutdown().await.unwrap();
}

/// A TCP relay in front of the real Redis that can drop everything: while `dropped` is set no byte
/// crosses in either direction and new connections are accepted but never answered (a partition that
/// drops packets: nothing is refused, nothing answers). Cleared, what was held flows again, as TCP's
/// retransmissions would deliver it.
struct Blackhole {
    url: String,
    dropped: Arc<AtomicBool>,
}

impl Blackhole {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let dropped = Arc::new(AtomicBool::new(false));
        let gate = dropped.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::pump(client_read, server_write, gate.clone()));
                tokio::spawn(Self::pump(server_read, client_write, gate.clone()));
            }
        });
        Self { url, dropped }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        dropped: Arc<AtomicBool>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while dropped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Read while open, held while dropped.
            while dropped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_blackholed_calls_give_up_at_the_timeout_and_everything_recovers_by_itself() {
    let _serial = SERIAL.lock().await;
    let names = Names::new();
    let blackhole = Blackhole::start(redis_url().trim_start_matches("redis://").to_owned()).await;
    let RedisStack {
        upstream,
        gw,
        center: _center,
        edge: _edge,
    } = RedisStack::start(&names, &format!("url = \"{}\"\n", blackhole.url)).await;
    until_tasks_are_accepted(&gw, "the task store never became ready").await;
    assert_eq!(gw.metric("r1_limit_fallback_active ").await, 0.0);

    blackhole.dropped.store(true, Ordering::SeqCst);
    // A task whose state cannot be written is refused, at the timeout, not after a hang.
    for _ in 0..3 {
        let started = Instant::now();
        let r = task(&gw).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a 503 at the timeout: {:?}",
            started.elapsed()
        );
    }
    // Interactive traffic flows: cache lookups miss at the timeout, the limits count locally.
    let errors_before = gw.metric_family("r1_cache_errors_total").await;
    for i in 0..3 {
        let started = Instant::now();
        let r = gw.chat(ask_center(&format!("still answered {i}"), false)).await;
        assert_eq!(r.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "fine ".repeat(3));
    }
    assert!(
        gw.metric_family("r1_cache_errors_total").await > errors_before,
        "the cache counted its timeouts"
    );
    assert_eq!(gw.metric("r1_limit_fallback_active ").await, 1.0);
    assert_eq!(gw.metric_family("r1_limit_refusals_total").await, 0.0);

    // The partition heals: tasks are accepted and the limits count in Redis again, with no restart.
    blackhole.dropped.store(false, Ordering::SeqCst);
    until_tasks_are_accepted(&gw, "tasks are not accepted after the partition healed").await;
    until_the_limits_count_in_redis_again(&gw).await;
    gw.stop();
    upstream.shutdown().await.unwrap();
}
