//! Against the real Redis started by `scripts/services.sh up` (the test command does it): the commands
//! r1-hybrid builds on — `SET NX PX` claims, atomic counters with expiry, and bounded timeouts.
//!
//! Server: `R1_TEST_REDIS_URL` (default `redis://127.0.0.1:16379`, the services script's port), or the
//! TLS server with its ACL user, or the Redis Cluster, as `R1_TEST_REDIS_TARGET` says
//! (`gateway/tests/support/redis.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use r1_queue::redis_conn::{RedisConnection, Timeouts};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[path = "../../gateway/tests/support/redis.rs"]
mod redis_target;

async fn connect() -> RedisConnection {
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_millis(500),
        retries: 1,
    };
    redis_target::client()
        .connect(timeouts)
        .await
        .unwrap_or_else(|e| panic!("is Redis up (scripts/services.sh up)? {}: {e}", redis_target::keys()))
}

fn claim_options() -> redis::SetOptions {
    redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::PX(60_000))
}

fn key(prefix: &str) -> String {
    format!("r1:test:{prefix}:{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn set_nx_gives_exactly_one_claim_and_expires() {
    let mut redis = connect().await;
    let claim = key("claim");

    // Eight concurrent claimers on independent connections: exactly one wins.
    let mut handles = Vec::new();
    for node in 0..8 {
        let claim = claim.clone();
        handles.push(tokio::spawn(async move {
            let mut redis = connect().await;
            let won: bool = redis
                .set_options(&claim, format!("node-{node}"), claim_options())
                .await
                .unwrap();
            won
        }));
    }
    let mut winners = 0;
    for handle in handles {
        winners += usize::from(handle.await.unwrap());
    }
    assert_eq!(winners, 1);

    let owner: String = redis.get(&claim).await.unwrap();
    assert!(owner.starts_with("node-"), "{owner}");
    let ttl: i64 = redis.pttl(&claim).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "ttl {ttl}");
    let _: () = redis.del(&claim).await.unwrap();
    let won: bool = redis.set_options(&claim, "node-late", claim_options()).await.unwrap();
    assert!(won, "a released claim can be taken again");
}

#[tokio::test]
async fn counters_are_atomic_and_windowed() {
    let mut redis = connect().await;
    let counter = key("rate");
    // INCR + PEXPIRE NX in one transaction: the shape of a fixed-window rate limit.
    let mut handles = Vec::new();
    for _ in 0..4 {
        let counter = counter.clone();
        handles.push(tokio::spawn(async move {
            let mut redis = connect().await;
            for _ in 0..25 {
                let (_count, _set): (i64, bool) = redis::pipe()
                    .atomic()
                    .incr(&counter, 1)
                    .cmd("PEXPIRE")
                    .arg(&counter)
                    .arg(1_000)
                    .arg("NX")
                    .query_async(&mut redis)
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let count: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(count, 100);
    let ttl: i64 = redis.pttl(&counter).await.unwrap();
    assert!((1..=1_000).contains(&ttl), "window ttl {ttl}");
}

#[tokio::test]
async fn an_unreachable_server_fails_fast() {
    // Port 1 on loopback refuses at once; the configured timeout bounds it regardless.
    let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_number_of_retries(0);
    let started = std::time::Instant::now();
    let result = ConnectionManager::new_with_config(client, config).await;
    assert!(result.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn task_claims_on_redis_give_one_run_at_a_time_and_remember_answered_tasks() {
    use r1_center::claims::{Claim, Claims, RedisClaims};
    let claims = RedisClaims::connect(&redis_target::client(), Duration::from_millis(500))
        .await
        .unwrap();
    let task = uuid::Uuid::new_v4().simple().to_string();
    let ttl = Duration::from_millis(300);
    assert_eq!(
        claims.claim(&task, "a/1", ttl).await.unwrap(),
        Claim::Acquired { attempt: 0 }
    );
    assert_eq!(claims.claim(&task, "b/1", ttl).await.unwrap(), Claim::Busy);
    assert_eq!(
        claims.claim(&task, "a/1", ttl).await.unwrap(),
        Claim::Busy,
        "one run at a time"
    );
    assert!(claims.refresh(&task, "a/1", ttl).await.unwrap());
    assert!(
        !claims.refresh(&task, "b/1", ttl).await.unwrap(),
        "only the holder refreshes"
    );
    assert_eq!(
        claims.bump(&task).await.unwrap(),
        1,
        "a retry on the holder is attempt 1"
    );
    // The holder dies: its claim lapses and the next node runs the next attempt.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        claims.claim(&task, "b/1", ttl).await.unwrap(),
        Claim::Acquired { attempt: 2 }
    );
    claims.complete(&task, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claims.claim(&task, "c/1", ttl).await.unwrap(), Claim::Done);
}
