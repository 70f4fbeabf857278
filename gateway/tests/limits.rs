//! Limits on the real Redis the test command starts (`scripts/services.sh up`, `R1_TEST_REDIS_URL`):
//! requests/s, concurrent requests and tokens/minute shared by two `Limiter`s (two gateway replicas),
//! leases of a crashed replica lapsing, the local fallback when Redis is unreachable or stalls (bounded,
//! counted, fast), and the global in-flight bound. Every test uses its own subjects; none stops Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use r1_config::Validate;
use r1_gateway::limits::{AdmittedBy, Limiter, LimitsSection, RefusalKind};
use r1_proto::{ChatCompletionRequest, ChatMessage, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "support/redis.rs"]
mod redis_target;

fn subject() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

fn limits(change: impl FnOnce(&mut LimitsSection)) -> LimitsSection {
    // Tests of shared counting must count in Redis: a loaded test machine can take longer than the
    // default 50 ms to answer, which would switch them to the local fallback. The tests of the fallback
    // set their own timeout.
    let mut s = LimitsSection {
        redis_timeout: Duration::from_secs(1),
        ..LimitsSection::default()
    };
    change(&mut s);
    assert_eq!(s.problems(), Vec::<String>::new(), "the test's own table must be valid");
    s
}

/// A limiter on the shared Redis, connected.
async fn replica(section: &LimitsSection) -> Limiter {
    let limiter = Limiter::new(section.clone(), Some(redis_target::client()));
    limiter
        .clone()
        .connect(Duration::from_secs(5))
        .await
        .expect("Redis must run: scripts/services.sh up redis");
    limiter
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("redis://{addr}")
}

async fn eventually<F: Future<Output = bool>>(what: &str, within: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn over_rate_is_refused_with_a_retry_after_that_matches_the_rate() {
    let section = limits(|s| {
        s.requests_per_second = Some(0.1);
        s.burst = Some(2);
    });
    let limiter = replica(&section).await;
    let who = subject();
    for _ in 0..2 {
        let a = limiter.admit(&who, 10).await.unwrap();
        assert_eq!(a.admitted_by(), AdmittedBy::Redis);
    }
    let refusal = limiter.admit(&who, 10).await.unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Rate);
    // One request per 10 s: the next one is about 10 s away.
    assert!((9..=10).contains(&refusal.retry_after), "{refusal:?}");
    assert!(
        refusal.message.contains("0.1 requests per second"),
        "{}",
        refusal.message
    );
    let answer = refusal.to_gateway_error();
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.kind, ErrorKind::RateLimit);
    assert_eq!(answer.retry_after, Some(refusal.retry_after));
    assert_eq!(
        serde_json::to_value(answer.body()).unwrap()["error"]["type"],
        "rate_limit_error"
    );
    // Another subject has its own bucket.
    limiter.admit(&subject(), 10).await.unwrap();
    assert_eq!(limiter.stats().refusals(RefusalKind::Rate), 1);
    assert_eq!(limiter.stats().redis_errors, 0);
}

#[tokio::test]
async fn a_refused_request_consumes_nothing() {
    let section = limits(|s| {
        s.requests_per_second = Some(0.01);
        s.burst = Some(2);
        s.concurrent_requests = Some(1);
    });
    let limiter = replica(&section).await;
    let who = subject();
    let first = limiter.admit(&who, 1).await.unwrap();
    // The rate passes (one of two left), the concurrency does not: nothing is taken from the rate.
    for _ in 0..5 {
        assert_eq!(limiter.admit(&who, 1).await.unwrap_err().kind, RefusalKind::Concurrency);
    }
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        match limiter.admit(&who, 1).await {
            Ok(a) => break a,
            Err(r) => assert_eq!(r.kind, RefusalKind::Concurrency, "{r:?}"),
        }
        assert!(Instant::now() < deadline, "the freed slot never admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(second);
    // Now the bucket of two is empty.
    eventually(
        "the rate refuses once the slot is free",
        Duration::from_secs(5),
        || async { matches!(limiter.admit(&who, 1).await, Err(r) if r.kind == RefusalKind::Rate) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_rate_through_redis() {
    let section = limits(|s| {
        s.requests_per_second = Some(0.1);
        s.burst = Some(3);
    });
    let (a, b) = (replica(&section).await, replica(&section).await);
    let who = subject();
    a.admit(&who, 1).await.unwrap();
    a.admit(&who, 1).await.unwrap();
    b.admit(&who, 1).await.unwrap();
    assert_eq!(b.admit(&who, 1).await.unwrap_err().kind, RefusalKind::Rate);
    assert_eq!(a.admit(&who, 1).await.unwrap_err().kind, RefusalKind::Rate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slots_are_shared_and_freed_on_drop() {
    let section = limits(|s| s.concurrent_requests = Some(2));
    let (a, b) = (replica(&section).await, replica(&section).await);
    let who = subject();
    let first = a.admit(&who, 1).await.unwrap();
    let _second = a.admit(&who, 1).await.unwrap();
    let refusal = b.admit(&who, 1).await.unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Concurrency);
    assert_eq!(refusal.retry_after, 1);
    assert_eq!(refusal.to_gateway_error().status(), 429);
    drop(first);
    eventually(
        "a slot freed on replica a admits on replica b",
        Duration::from_secs(5),
        || async {
            match b.admit(&who, 1).await {
                Ok(admission) => {
                    std::mem::forget(admission); // keep holding it: the next check counts it
                    true
                }
                Err(r) => {
                    assert_eq!(r.kind, RefusalKind::Concurrency);
                    false
                }
            }
        },
    )
    .await;
    assert_eq!(a.admit(&who, 1).await.unwrap_err().kind, RefusalKind::Concurrency);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_request_keeps_its_slot_and_a_crashed_replicas_slot_lapses() {
    let section = limits(|s| {
        s.concurrent_requests = Some(1);
        s.concurrency_lease = Duration::from_secs(1);
    });
    let b = replica(&section).await;

    // A live request renews its lease: it holds the slot well past one lease.
    let live = subject();
    let held = b.admit(&live, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await; // time passing is what is tested
    assert_eq!(b.admit(&live, 1).await.unwrap_err().kind, RefusalKind::Concurrency);
    drop(held);

    // A replica that dies holding a slot: its runtime (and the lease's renewal) is gone, nothing released it.
    let crashed = subject();
    let (redis, section_a, who) = (redis_target::client(), section.clone(), crashed.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let a = Limiter::new(section_a, Some(redis));
            a.clone().connect(Duration::from_secs(5)).await.unwrap();
            let admission = a.admit(&who, 1).await.unwrap();
            std::mem::forget(admission);
            std::mem::forget(a);
        });
        drop(runtime);
    })
    .join()
    .unwrap();
    let died = Instant::now();
    assert_eq!(b.admit(&crashed, 1).await.unwrap_err().kind, RefusalKind::Concurrency);
    eventually("the dead replica's lease lapses", Duration::from_secs(5), || async {
        b.admit(&crashed, 1).await.is_ok()
    })
    .await;
    assert!(
        died.elapsed() < Duration::from_secs(3),
        "lapsed after {:?}",
        died.elapsed()
    );
}

#[tokio::test]
async fn token_budget_reserves_then_corrects_by_actual_usage() {
    let section = limits(|s| s.tokens_per_minute = Some(1000));
    let limiter = replica(&section).await;
    let who = subject();
    let first = limiter.admit(&who, 600).await.unwrap();
    assert_eq!(first.reserved_tokens(), 600);
    let refusal = limiter.admit(&who, 600).await.unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Tokens);
    // 400 left, 600 needed, 1000 per minute: 200 tokens are 12 s away.
    assert!((12..=13).contains(&refusal.retry_after), "{refusal:?}");
    assert_eq!(refusal.to_gateway_error().status(), 429);
    // It used 100 of its 600: the 500 come back.
    first.record_usage(100);
    eventually("the refund admits the next request", Duration::from_secs(5), || async {
        limiter.admit(&who, 600).await.is_ok()
    })
    .await;

    // A request bigger than the whole budget passes when the bucket is full, and leaves it in debt.
    let big = subject();
    limiter.admit(&big, 5000).await.unwrap();
    let refusal = limiter.admit(&big, 1).await.unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Tokens);
    assert!(
        refusal.retry_after >= 240,
        "4000 tokens of debt at 1000/min: {refusal:?}"
    );
}

#[tokio::test]
async fn usage_above_the_reservation_is_charged() {
    let section = limits(|s| s.tokens_per_minute = Some(1000));
    let limiter = replica(&section).await;
    let who = subject();
    limiter.admit(&who, 100).await.unwrap().record_usage(900);
    eventually("the extra 800 tokens are charged", Duration::from_secs(5), || async {
        matches!(limiter.admit(&who, 200).await, Err(r) if r.kind == RefusalKind::Tokens)
    })
    .await;
}

#[tokio::test]
async fn unreachable_redis_falls_back_to_bounded_local_counting_quickly() {
    let section = limits(|s| {
        s.requests_per_second = Some(0.1);
        s.burst = Some(4);
        s.concurrent_requests = Some(4);
        s.local_fallback_share = 0.5;
        s.redis_timeout = Duration::from_millis(50);
    });
    let limiter = Limiter::new(section, Some(redis_target::plain(&closed_port().await)));
    assert!(limiter.clone().connect(Duration::from_secs(1)).await.is_err());
    let who = subject();
    let mut held = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let a = limiter.admit(&who, 1).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(a.admitted_by(), AdmittedBy::Local);
        held.push(a);
    }
    // Half of a burst of 4: never unlimited.
    for _ in 0..20 {
        let started = Instant::now();
        let refusal = limiter.admit(&who, 1).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(refusal.kind, RefusalKind::Rate);
        assert!(
            refusal.message.contains("0.05 requests per second (burst 2)"),
            "{}",
            refusal.message
        );
    }
    let stats = limiter.stats();
    assert!(stats.fallback_active, "{stats:?}");
    assert!(stats.redis_errors >= 1, "{stats:?}");
    assert_eq!(stats.fallback_admissions, 22, "{stats:?}");
    assert_eq!(stats.refusals(RefusalKind::Rate), 20, "{stats:?}");

    // Concurrency in fallback: half of 4.
    let section = limits(|s| {
        s.concurrent_requests = Some(4);
        s.local_fallback_share = 0.5;
        s.redis_timeout = Duration::from_millis(50);
    });
    limiter.reconfigure(section);
    let other = subject();
    let one = limiter.admit(&other, 1).await.unwrap();
    let _two = limiter.admit(&other, 1).await.unwrap();
    assert_eq!(
        limiter.admit(&other, 1).await.unwrap_err().kind,
        RefusalKind::Concurrency
    );
    drop(one);
    let _three = limiter.admit(&other, 1).await.unwrap();
}

#[tokio::test]
async fn without_redis_limits_are_enforced_in_full_per_replica() {
    let section = limits(|s| {
        s.requests_per_second = Some(0.1);
        s.burst = Some(3);
        s.tokens_per_minute = Some(100);
    });
    let limiter = Limiter::new(section, None);
    let who = subject();
    for _ in 0..3 {
        assert_eq!(limiter.admit(&who, 10).await.unwrap().admitted_by(), AdmittedBy::Local);
    }
    assert_eq!(limiter.admit(&who, 10).await.unwrap_err().kind, RefusalKind::Rate);
    let tokens = subject();
    let a = limiter.admit(&tokens, 80).await.unwrap();
    assert_eq!(limiter.admit(&tokens, 80).await.unwrap_err().kind, RefusalKind::Tokens);
    a.record_usage(0); // failed before the model ran: all 80 come back
    limiter.admit(&tokens, 80).await.unwrap();
    let stats = limiter.stats();
    assert!(
        !stats.fallback_active && stats.redis_errors == 0 && stats.fallback_admissions == 0,
        "{stats:?}"
    );
}

#[tokio::test]
async fn no_per_subject_limit_costs_nothing_even_with_redis_down() {
    let limiter = Limiter::new(
        LimitsSection::default(),
        Some(redis_target::plain(&closed_port().await)),
    );
    for _ in 0..100 {
        assert_eq!(
            limiter.admit("anyone", 1_000_000).await.unwrap().admitted_by(),
            AdmittedBy::Unlimited
        );
    }
    assert_eq!(limiter.stats().redis_errors, 0);
}

/// A TCP forwarder to Redis that can stop forwarding while keeping every connection open — a Redis
/// that hangs (or a network that blackholes), the case a closed port does not show.
struct Stall {
    addr: String,
    stalled: Arc<AtomicBool>,
}

impl Stall {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("redis://{}", listener.local_addr().unwrap());
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (flag, target) = (flag.clone(), target.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, flag.clone()), pump(sr, cw, flag));
                });
            }
        });
        Self { addr, stalled }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hanging_mid_run_falls_back_within_the_timeout_and_recovers() {
    // A relay of the plain server's bytes, whatever the Redis the other tests use.
    let url = redis_target::single_url();
    let target = url.trim_start_matches("redis://").split('/').next().unwrap().to_owned();
    let stall = Stall::start(target).await;
    let section = limits(|s| {
        s.requests_per_second = Some(1000.0);
        s.redis_timeout = Duration::from_millis(50);
        s.redis_retry_interval = Duration::from_millis(100);
    });
    let limiter = Limiter::new(section, Some(redis_target::plain(&stall.addr)));
    limiter.clone().connect(Duration::from_secs(5)).await.unwrap();
    let who = subject();
    assert_eq!(limiter.admit(&who, 1).await.unwrap().admitted_by(), AdmittedBy::Redis);

    stall.stalled.store(true, Ordering::SeqCst);
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let a = limiter.admit(&who, 1).await.unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(a.admitted_by(), AdmittedBy::Local);
    }
    assert!(
        slowest < Duration::from_millis(250),
        "redis_timeout is 50ms, slowest {slowest:?}"
    );
    let stats = limiter.stats();
    assert!(stats.fallback_active && stats.redis_errors >= 1, "{stats:?}");
    assert!(stats.redis_errors < 50, "only probes wait on Redis: {stats:?}");

    stall.stalled.store(false, Ordering::SeqCst);
    eventually("counting moves back to Redis", Duration::from_secs(15), || async {
        limiter.admit(&who, 1).await.unwrap().admitted_by() == AdmittedBy::Redis
    })
    .await;
    assert!(!limiter.stats().fallback_active);
}

#[tokio::test]
async fn global_in_flight_is_bounded_and_sheds_with_503() {
    let section = limits(|s| {
        s.max_in_flight = 2;
        s.overload_retry_after = Duration::from_secs(2);
    });
    let limiter = Limiter::new(section, None);
    let one = limiter.try_enter().unwrap();
    let _two = limiter.try_enter().unwrap();
    assert_eq!(limiter.stats().in_flight, 2);
    let refusal = limiter.try_enter().unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Overload);
    assert_eq!(refusal.retry_after, 2);
    let answer = refusal.to_gateway_error();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.retry_after, Some(2));
    assert_eq!(limiter.stats().in_flight, 2, "a refusal holds no place");
    drop(one);
    let _three = limiter.try_enter().unwrap();
    assert_eq!(limiter.stats().refusals(RefusalKind::Overload), 1);
}

#[test]
fn body_size_and_max_tokens_checks() {
    let section = LimitsSection::default();
    assert_eq!(section.max_body_bytes, 1 << 20);
    section.check_body_len(1 << 20).unwrap();
    let too_big = section.check_body_len((1 << 20) + 1).unwrap_err();
    assert_eq!(too_big.status(), 413);
    assert!(too_big.message.contains("1048576"), "{}", too_big.message);

    let mut request = ChatCompletionRequest::new("r1", vec![ChatMessage::user("hi")]);
    request.max_tokens = Some(32_768);
    section.check_max_tokens(&request).unwrap();
    request.max_completion_tokens = Some(32_769);
    let err = section.check_max_tokens(&request).unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(err.param, Some("max_completion_tokens"));
    request.max_tokens = Some(100_000);
    assert_eq!(
        section.check_max_tokens(&request).unwrap_err().param,
        Some("max_tokens")
    );
}

#[test]
fn token_estimate_is_prompt_plus_output_cap_times_n() {
    let section = LimitsSection::default();
    let mut request = ChatCompletionRequest::new(
        "r1",
        vec![ChatMessage::system("a".repeat(40)), ChatMessage::user("你好世界")],
    );
    // (4 + 10) + (4 + 4) for the prompt, then the output reserve.
    assert_eq!(section.estimated_tokens(&request), 22 + 4096);
    request.max_tokens = Some(100);
    assert_eq!(section.estimated_tokens(&request), 22 + 100);
    request.max_completion_tokens = Some(50);
    request.n = Some(3);
    assert_eq!(section.estimated_tokens(&request), 22 + 150);
    request.max_completion_tokens = Some(1_000_000);
    request.n = None;
    assert_eq!(
        section.estimated_tokens(&request),
        22 + 32_768,
        "the cap bounds the reservation"
    );
}

#[test]
fn config_defaults_keys_and_problems() {
    let parsed: LimitsSection = toml::from_str("").unwrap();
    assert_eq!(parsed, LimitsSection::default());
    assert!(!parsed.has_subject_limits());
    assert_eq!(parsed.redis_timeout, Duration::from_millis(50));
    assert_eq!(parsed.max_in_flight, 10_000);
    assert_eq!(parsed.local_fallback_share, 1.0);

    let full: LimitsSection = toml::from_str(
        r#"
max_body_bytes = 2097152
max_tokens_cap = 8192
output_reserve = 1024
requests_per_second = 5
burst = 10
concurrent_requests = 4
tokens_per_minute = 100000
max_in_flight = 500
overload_retry_after = "2s"
redis_timeout = "30ms"
redis_retry_interval = "500ms"
concurrency_lease = "1m"
local_fallback_share = 0.34
local_max_subjects = 5000
"#,
    )
    .unwrap();
    assert_eq!(full.problems(), Vec::<String>::new());
    assert!(full.has_subject_limits());

    let typo = toml::from_str::<LimitsSection>("request_per_second = 3")
        .unwrap_err()
        .to_string();
    assert!(typo.contains("request_per_second"), "{typo}");

    let bad = LimitsSection {
        max_body_bytes: 10,
        max_tokens_cap: 100,
        output_reserve: 200,
        requests_per_second: Some(-1.0),
        burst: Some(0),
        concurrent_requests: Some(0),
        tokens_per_minute: Some(0),
        max_in_flight: 0,
        overload_retry_after: Duration::ZERO,
        redis_timeout: Duration::from_secs(2),
        redis_retry_interval: Duration::from_millis(10),
        concurrency_lease: Duration::from_millis(500),
        local_fallback_share: 0.0,
        local_max_subjects: 0,
        ..LimitsSection::default()
    };
    let problems = bad.problems();
    for key in [
        "max_body_bytes",
        "output_reserve",
        "requests_per_second",
        "burst",
        "concurrent_requests",
        "tokens_per_minute",
        "max_in_flight",
        "overload_retry_after",
        "redis_timeout",
        "redis_retry_interval",
        "concurrency_lease",
        "local_fallback_share",
        "local_max_subjects",
    ] {
        let prefix = format!("limits.{key}:");
        assert!(
            problems.iter().any(|p| p.starts_with(&prefix)),
            "{prefix} missing from {problems:#?}"
        );
    }
    let burst_alone = LimitsSection {
        burst: Some(3),
        ..LimitsSection::default()
    };
    assert_eq!(
        burst_alone.problems(),
        vec!["limits.burst: set, but limits.requests_per_second is not".to_owned()]
    );
    let unlimited_fallback = LimitsSection {
        local_fallback_share: f64::INFINITY,
        ..LimitsSection::default()
    };
    assert!(unlimited_fallback.problems()[0].contains("never unlimited"));
}
