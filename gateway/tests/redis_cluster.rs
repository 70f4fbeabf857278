//! The gateway on the test command's Redis Cluster (3 masters, one replica each, cluster-node-timeout
//! 2 s: `scripts/services.sh up redis-cluster`), its master killed under load: while the replica takes
//! over, chat is still answered (the cache misses, the limits count locally), `POST /v1/tasks` answers
//! 503 only while task state cannot be written; once the replica serves the slots, the limits count in
//! Redis again and tasks are accepted — no restart. The center node keeps its claims on the single
//! server (its own fail-open path is redis_outage's business).
//!
//! Its own test binary: it kills a node of the shared cluster, which no other test may see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code: a panic is the failure report

mod support;

use support::redis_target;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::kafka::{Names, RedisStack, ask_center};
use support::{Gateway, Restart};

/// A plain connection to one node (`redis://host:port`).
async fn node(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The `host:port` of the live master serving `key`'s slot, as the first node that answers sees it;
/// `None` while none does (its master failed, no replica promoted yet).
async fn master_of(key: &str) -> Option<String> {
    for url in redis_target::cluster_urls() {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            continue;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await.unwrap();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<i64>(), high.parse::<i64>()), (Ok(l), Ok(h)) if (l..=h).contains(&slot))
            });
            if serves {
                return Some(fields[1].split('@').next().unwrap().to_owned());
            }
        }
        return None;
    }
    None
}

/// Waits (polling every 50 ms) until `check` holds; fails with `what` at `deadline`.
async fn until<F: Future<Output = bool>>(deadline: Instant, what: &str, mut check: impl FnMut() -> F) {
    while !check().await {
        assert!(Instant::now() < deadline, "not so: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One asynchronous task submitted through `gw`: its status.
async fn task(gw: &Gateway) -> u16 {
    let url = format!("{}/v1/tasks", gw.public);
    let r = gw
        .client
        .post(url)
        .json(&ask_center("later", false))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_master_killed_under_load_costs_misses_and_local_counting_until_its_replica_takes_over() {
    let names = Names::new();
    let RedisStack {
        upstream,
        gw,
        center: _center,
        edge: _edge,
    } = RedisStack::start(&names, &redis_target::cluster_keys()).await;
    let gw = Arc::new(gw);
    let deadline = Instant::now() + Duration::from_secs(30);
    while task(&gw).await != 202 {
        assert!(
            Instant::now() < deadline,
            "the task store never became ready on the cluster"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.chat(ask_center("warm", false)).await.status(), 200);
    assert_eq!(
        gw.metric("r1_limit_fallback_active ").await,
        0.0,
        "counting in the cluster"
    );

    // Load: chat requests (half of them repeated, so cacheable hits when the cache answers) and task
    // submissions, side by side, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let chat_load = {
        let (gw, stop) = (gw.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, 0u32);
            while !stop.load(Ordering::SeqCst) {
                let text = if sent % 2 == 0 {
                    "again".to_owned()
                } else {
                    format!("new {sent}")
                };
                if gw.chat(ask_center(&text, false)).await.status() != 200 {
                    failed += 1;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (sent, failed)
        })
    };
    let task_load = {
        let (gw, stop) = (gw.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                answers.push((Instant::now(), task(&gw).await));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await; // some load before the kill

    // The master serving the limiter's keys for this (unauthenticated) tenant.
    let limit_key = "r1:limits:{anonymous}:rate";
    let master = master_of(limit_key)
        .await
        .expect("the cluster serves every slot before the kill");
    let mut victim = node(&format!("redis://{master}")).await;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut victim).await.unwrap();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_owned();
    let restart = Restart("redis-cluster");
    let errors_before = gw.metric_family("r1_cache_errors_total").await;
    let killed = Instant::now();
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -KILL {pid}")])
        .status()
        .unwrap();
    assert!(status.success());

    // The fallback starts, then ends once a replica serves the slot: each waited for, never slept.
    let deadline = killed + Duration::from_secs(30);
    let fallback_is = |on: f64| {
        let gw = gw.clone();
        move || {
            let gw = gw.clone();
            async move { gw.metric("r1_limit_fallback_active ").await == on }
        }
    };
    until(
        deadline,
        "the limiter falls back while the master is gone",
        fallback_is(1.0),
    )
    .await;
    let fell_back = killed.elapsed();
    until(deadline, "a replica takes over the slot", || async {
        master_of(limit_key).await.is_some_and(|m| m != master)
    })
    .await;
    let promoted = killed.elapsed();
    until(
        deadline,
        "the limiter counts in Redis again after the failover",
        fallback_is(0.0),
    )
    .await;
    let shared_again = killed.elapsed();
    // Tasks are accepted again too (the load keeps submitting): wait for three in a row.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut ok = 0;
        for _ in 0..3 {
            if task(&gw).await == 202 {
                ok += 1;
            }
        }
        if ok == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "tasks were not accepted after the failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks_again = killed.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (sent, failed) = chat_load.await.unwrap();
    let answers = task_load.await.unwrap();

    assert_eq!(failed, 0, "every chat request was answered ({sent} sent)");
    assert!(
        gw.metric_family("r1_cache_errors_total").await > errors_before,
        "the cache counted the lost master's errors as misses"
    );
    assert!(gw.metric("r1_limit_fallback_admissions_total ").await >= 1.0);
    let refused: Vec<Duration> = answers
        .iter()
        .filter(|(_, s)| *s == 503)
        .map(|(at, _)| at.saturating_duration_since(killed))
        .collect();
    assert!(
        answers.iter().all(|(_, s)| *s == 202 || *s == 503),
        "a task is accepted or refused with 503, nothing else"
    );
    // 503 only while task state could not be written: never before the kill, never once the slot's
    // new master has answered the limiter (the same cluster, the same connection setup) and a store
    // call's timeout has passed.
    for at in &refused {
        assert!(
            *at > Duration::ZERO && *at <= shared_again + Duration::from_secs(2),
            "a 503 at {at:?} after the kill, outside the outage (shared counting back at {shared_again:?})"
        );
    }
    println!(
        "master {master} killed: limiter on local fallback after {fell_back:?}, replica promoted after {promoted:?}, \
         shared counting again after {shared_again:?}, tasks accepted again after {tasks_again:?}; \
         {sent} chat requests (0 failed), {} task submissions, {} answered 503 (from {:?} to {:?})",
        answers.len(),
        refused.len(),
        refused.first(),
        refused.last()
    );
    drop(restart); // the killed node starts again and rejoins as a replica
    upstream.shutdown().await.unwrap();
}
