//! The result cache against real stores: the Redis the test command starts (`R1_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:16379`; over TLS with an ACL user, or the Redis Cluster, with
//! `R1_TEST_REDIS_TARGET`, see `support/redis.rs`), a Redis of this test's own that it kills mid-run, ports where
//! nothing answers, and the in-memory store.
//!
//! Keys carry a fresh tenant per test, so runs never see each other's entries in the shared Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use r1_gateway::cache::{
    Cache, CacheKey, CacheSection, Capture, ErrorKind, Lookup, MissReason, SkipReason, StoreOutcome, WaitOutcome, Why,
    cacheable,
};
use r1_proto::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, FinishReason, Nullable, Usage,
};
use serde_json::{Value, json};

#[path = "support/redis.rs"]
mod redis_target;

/// A raw connection to the shared Redis (one server or the cluster), to write what the cache then reads.
async fn raw_connection() -> r1_queue::redis_conn::RedisConnection {
    let timeouts = r1_queue::redis_conn::Timeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_secs(2),
        retries: 1,
    };
    redis_target::client().connect(timeouts).await.unwrap()
}

fn fresh_tenant() -> String {
    format!("tenant-{}", uuid::Uuid::new_v4().simple())
}

fn request(value: Value) -> ChatCompletionRequest {
    serde_json::from_value(value).unwrap()
}

/// A deterministic request.
fn ask(prompt: &str) -> ChatCompletionRequest {
    request(json!({"model": "r1-edge", "messages": [{"role": "user", "content": prompt}], "temperature": 0}))
}

fn answer(text: &str) -> ChatCompletionResponse {
    let mut message = ChatMessage::assistant(text);
    message.reasoning_content = Nullable::Value(format!("thinking about {text}"));
    ChatCompletionResponse::new(
        "chatcmpl-upstream",
        1_700_000_000,
        "r1-edge",
        message,
        FinishReason::Stop,
        Usage::new(11, 7).with_reasoning_tokens(3),
    )
}

fn section() -> CacheSection {
    CacheSection {
        redis_timeout: Duration::from_millis(500),
        ..CacheSection::default()
    }
}

fn key(tenant: &str, request: &ChatCompletionRequest) -> CacheKey {
    CacheKey::new(tenant, request).unwrap()
}

/// The text of a hit's stored answer.
fn text_of(lookup: &Lookup) -> Option<String> {
    match lookup {
        Lookup::Hit(stored) => Some(stored.response().first_message().unwrap().text().into_owned()),
        _ => None,
    }
}

/// A port on loopback where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Keys and the cacheable rule

#[test]
fn every_answer_changing_parameter_changes_the_key() {
    let base = json!({"model": "r1-edge", "messages": [{"role": "user", "content": "2+2?"}], "temperature": 0});
    let variants: Vec<(&str, Value)> = vec![
        ("base", json!({})),
        ("temperature absent", json!({"temperature": null})),
        ("temperature 0.7", json!({"temperature": 0.7})),
        ("top_p", json!({"top_p": 0.9})),
        ("top_k", json!({"top_k": 40})),
        ("seed", json!({"seed": 7})),
        ("stop string", json!({"stop": "\n"})),
        ("stop array", json!({"stop": ["\n"]})),
        ("max_tokens", json!({"max_tokens": 16})),
        ("max_completion_tokens", json!({"max_completion_tokens": 16})),
        ("n 1", json!({"n": 1})),
        ("presence_penalty", json!({"presence_penalty": 0.5})),
        ("frequency_penalty", json!({"frequency_penalty": 0.5})),
        ("logit_bias", json!({"logit_bias": {"50256": -100}})),
        ("logprobs", json!({"logprobs": true})),
        ("top_logprobs", json!({"logprobs": true, "top_logprobs": 2})),
        ("response_format", json!({"response_format": {"type": "json_object"}})),
        (
            "tools",
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
        ),
        ("tool_choice", json!({"tool_choice": "none"})),
        ("unknown extra key", json!({"repetition_penalty": 1.1})),
        ("model", json!({"model": "deepseek-r1"})),
        ("content", json!({"messages": [{"role": "user", "content": "2+3?"}]})),
        ("role", json!({"messages": [{"role": "system", "content": "2+2?"}]})),
        (
            "name",
            json!({"messages": [{"role": "user", "content": "2+2?", "name": "ann"}]}),
        ),
        (
            "content parts",
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}]}),
        ),
        (
            "history",
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "2+2?"}
            ]}),
        ),
    ];
    let mut seen = HashSet::new();
    for (name, change) in variants {
        let mut value = base.clone();
        for (k, v) in change.as_object().unwrap() {
            value[k] = v.clone();
        }
        let key = key("tenant-a", &request(value));
        assert!(key.as_str().starts_with("r1:cache:v2:"), "{name}: {key}");
        assert!(seen.insert(key.as_str().to_owned()), "{name} did not change the key");
    }
}

#[test]
fn tenants_never_share_a_key_and_delivery_options_never_split_one() {
    let plain = ask("same prompt");
    assert_ne!(key("tenant-a", &plain), key("tenant-b", &plain));
    // A tenant name cannot be crafted to run into another tenant's request.
    assert_ne!(key("a\"", &plain), key("a", &plain));

    let streamed = request(json!({
        "model": "r1-edge", "messages": [{"role": "user", "content": "same prompt"}], "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true}, "user": "end-user-42"
    }));
    assert_eq!(key("tenant-a", &plain), key("tenant-a", &streamed));

    // The order a client writes its keys in does not matter; a different value does.
    let one = request(json!({"model": "m", "messages": [], "temperature": 0,
        "logit_bias": {"1": 2, "3": 4}, "response_format": {"type": "json_schema", "json_schema": {"b": 1, "a": 2}}}));
    let other = request(
        json!({"response_format": {"json_schema": {"a": 2, "b": 1}, "type": "json_schema"},
        "logit_bias": {"3": 4, "1": 2}, "temperature": 0, "messages": [], "model": "m"}),
    );
    assert_eq!(key("t", &one), key("t", &other));
    // temperature 0 and 0.0 are the same number.
    let float = request(
        json!({"model": "r1-edge", "messages": [{"role": "user", "content": "same prompt"}], "temperature": 0.0}),
    );
    assert_eq!(key("t", &plain), key("t", &float));
}

#[test]
fn only_deterministic_or_opted_in_requests_are_cacheable() {
    let section = CacheSection {
        always_models: vec!["r1-always".to_owned()],
        ..CacheSection::default()
    };
    let headers = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("x-r1-cache", HeaderValue::from_str(value).unwrap());
        headers
    };
    let none = HeaderMap::new();
    let with = |change: Value| {
        let mut value = json!({"model": "r1-edge", "messages": [{"role": "user", "content": "x"}]});
        for (k, v) in change.as_object().unwrap() {
            value[k] = v.clone();
        }
        request(value)
    };
    let table: Vec<(&str, ChatCompletionRequest, HeaderMap, Option<Why>)> = vec![
        (
            "temperature 0",
            with(json!({"temperature": 0})),
            none.clone(),
            Some(Why::Deterministic),
        ),
        ("temperature absent", with(json!({})), none.clone(), None),
        ("temperature 0.7", with(json!({"temperature": 0.7})), none.clone(), None),
        (
            "temperature 1e-9",
            with(json!({"temperature": 1e-9})),
            none.clone(),
            None,
        ),
        (
            "opt in",
            with(json!({"temperature": 0.7})),
            headers("on"),
            Some(Why::Header),
        ),
        ("opt in, any case", with(json!({})), headers(" ON "), Some(Why::Header)),
        (
            "opt out beats temperature 0",
            with(json!({"temperature": 0})),
            headers("Off"),
            None,
        ),
        ("other header values are ignored", with(json!({})), headers("yes"), None),
        ("n > 1", with(json!({"temperature": 0, "n": 2})), none.clone(), None),
        ("n > 1 opted in", with(json!({"n": 3})), headers("on"), None),
        (
            "n = 1",
            with(json!({"temperature": 0, "n": 1})),
            none.clone(),
            Some(Why::Deterministic),
        ),
        (
            "config rule",
            with(json!({"model": "r1-always"})),
            none.clone(),
            Some(Why::ModelRule),
        ),
        (
            "config rule, opted out",
            with(json!({"model": "r1-always"})),
            headers("off"),
            None,
        ),
    ];
    for (name, request, headers, expected) in table {
        assert_eq!(cacheable(&request, &headers, &section), expected, "{name}");
    }

    let disabled = CacheSection {
        enabled: false,
        ..CacheSection::default()
    };
    assert_eq!(cacheable(&with(json!({"temperature": 0})), &none, &disabled), None);
    let renamed = CacheSection {
        opt_in_header: "x-cache-me".to_owned(),
        ..CacheSection::default()
    };
    let mut custom = HeaderMap::new();
    custom.insert("x-cache-me", HeaderValue::from_static("on"));
    assert_eq!(cacheable(&with(json!({})), &custom, &renamed), Some(Why::Header));
    assert_eq!(cacheable(&with(json!({})), &headers("on"), &renamed), None);
}

// ---------------------------------------------------------------------------------------------
// Store, hit, tenants, TTL

async fn round_trip(cache: &Cache, other_replica: &Cache) {
    let tenant = fresh_tenant();
    let streamed = request(json!({
        "model": "r1-edge", "messages": [{"role": "user", "content": "round trip"}], "temperature": 0, "stream": true
    }));
    let k = key(&tenant, &streamed);
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("a cold key leads")
    };
    assert_eq!(guard.complete(&answer("four")).await, StoreOutcome::Stored);

    // Another replica on the same store, and a JSON request: the same entry.
    let json_request = ask("round trip");
    let hit = other_replica.lookup(&key(&tenant, &json_request)).await;
    assert_eq!(text_of(&hit).as_deref(), Some("four"));
    let Lookup::Hit(stored) = hit else { unreachable!() };
    let body: Value = serde_json::from_slice(&other_replica.hit_json(&stored, &json_request)).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "r1-edge");
    assert_ne!(body["id"], "chatcmpl-upstream", "every answer has its own id");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["choices"][0]["message"]["content"], "four");
    assert_eq!(
        body["choices"][0]["message"]["reasoning_content"],
        "thinking about four"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 11);
    assert_eq!(body["usage"]["completion_tokens"], 7);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 11);
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 3);

    // The same prompt from another tenant is cold.
    let Lookup::Leader(other) = cache.lookup(&key(&fresh_tenant(), &json_request)).await else {
        panic!("another tenant must not see this tenant's entry")
    };
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_round_trip() {
    let cache = Cache::memory(&section()).unwrap();
    round_trip(&cache, &cache).await;
    assert_eq!(cache.store_kind(), "memory");
    assert_eq!(cache.metrics().stores.get(), 1);
    assert_eq!(cache.metrics().hits.get(), 1);
    assert_eq!(cache.metrics().misses.get(), 2);
    assert_eq!(cache.metrics().errors_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_round_trip_is_shared_by_replicas() {
    let a = Cache::redis(&section(), &redis_target::client()).unwrap();
    let b = Cache::redis(&section(), &redis_target::client()).unwrap();
    round_trip(&a, &b).await;
    assert_eq!(a.store_kind(), "redis");
    assert_eq!(a.metrics().errors_total() + b.metrics().errors_total(), 0);
    assert_eq!(b.metrics().hits.get(), 1);
}

async fn expires_after_its_ttl(cache: &Cache) {
    let tenant = fresh_tenant();
    let short =
        request(json!({"model": "r1-short", "messages": [{"role": "user", "content": "ttl"}], "temperature": 0}));
    let long = ask("ttl");
    let written = Instant::now();
    for r in [&short, &long] {
        assert_eq!(
            cache.store(&key(&tenant, r), &answer("kept")).await,
            StoreOutcome::Stored
        );
    }
    assert!(text_of(&cache.lookup(&key(&tenant, &short)).await).is_some());
    // Poll until the short entry is gone: not before its TTL, and soon after it.
    loop {
        let lookup = cache.lookup(&key(&tenant, &short)).await;
        if text_of(&lookup).is_none() {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "the 1s entry outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        written.elapsed() >= Duration::from_millis(900),
        "expired early: {:?}",
        written.elapsed()
    );
    assert_eq!(
        text_of(&cache.lookup(&key(&tenant, &long)).await).as_deref(),
        Some("kept"),
        "the model without an override keeps `ttl`"
    );
}

fn short_ttl_section() -> CacheSection {
    CacheSection {
        model_ttl: [("r1-short".to_owned(), Duration::from_secs(1))].into(),
        ..section()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_entries_expire_after_their_model_ttl() {
    expires_after_its_ttl(&Cache::memory(&short_ttl_section()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_expire_after_their_model_ttl() {
    expires_after_its_ttl(&Cache::redis(&short_ttl_section(), &redis_target::client()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_complete_answers_within_the_size_bound_are_stored() {
    let cache = Cache::memory(&CacheSection {
        max_entry_bytes: 1024,
        ..section()
    })
    .unwrap();
    let tenant = fresh_tenant();
    let k = key(&tenant, &ask("skips"));

    let mut unfinished = answer("half");
    unfinished.choices[0].finish_reason = Nullable::Null;
    let mut tools = answer("tools");
    tools.choices[0].finish_reason = Nullable::Value(FinishReason::ToolCalls);
    let mut filtered = answer("filtered");
    filtered.choices[0].finish_reason = Nullable::Value(FinishReason::ContentFilter);
    let mut truncated = answer("cut");
    truncated.choices[0].finish_reason = Nullable::Value(FinishReason::Length);

    assert_eq!(
        cache.store(&k, &unfinished).await,
        StoreOutcome::Skipped(SkipReason::Incomplete)
    );
    assert_eq!(
        cache.store(&k, &tools).await,
        StoreOutcome::Skipped(SkipReason::Unsupported)
    );
    assert_eq!(
        cache.store(&k, &filtered).await,
        StoreOutcome::Skipped(SkipReason::Incomplete)
    );
    assert_eq!(
        cache.store(&k, &answer(&"x".repeat(2000))).await,
        StoreOutcome::Skipped(SkipReason::TooLarge)
    );
    assert!(
        matches!(cache.lookup(&k).await, Lookup::Leader(_)),
        "nothing was stored"
    );
    // `length` is a complete answer to a request whose max_tokens is part of its key.
    assert_eq!(cache.store(&k, &truncated).await, StoreOutcome::Stored);
    assert_eq!(text_of(&cache.lookup(&k).await).as_deref(), Some("cut"));

    let m = cache.metrics();
    assert_eq!(m.skips_of(SkipReason::Incomplete), 2);
    assert_eq!(m.skips_of(SkipReason::Unsupported), 1);
    assert_eq!(m.skips_of(SkipReason::TooLarge), 1);
    assert_eq!(m.stores.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_redis_entry_is_a_counted_miss() {
    let cache = Cache::redis(&section(), &redis_target::client()).unwrap();
    let k = key(&fresh_tenant(), &ask("garbage"));
    let mut connection = raw_connection().await;
    redis::cmd("SET")
        .arg(k.as_str())
        .arg("not json")
        .arg("PX")
        .arg(60_000)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("garbage is a miss")
    };
    assert_eq!(
        cache.metrics().errors_of(ErrorKind::Decode),
        2,
        "read, then read again as leader"
    );
    // The leader's answer replaces it.
    assert_eq!(guard.complete(&answer("clean")).await, StoreOutcome::Stored);
    assert_eq!(text_of(&cache.lookup(&k).await).as_deref(), Some("clean"));
}

// ---------------------------------------------------------------------------------------------
// Singleflight

/// 1,000 identical cold lookups at once: one leader, which answers after a while; 999 hits.
async fn thousand_identical_cold_lookups(cache: Cache) {
    const N: usize = 1000;
    let k = key(&fresh_tenant(), &ask("one generation"));
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (cache, k, barrier) = (cache.clone(), k.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                match cache.lookup(&k).await {
                    Lookup::Leader(guard) => {
                        // The generation takes a while; everyone else arrives meanwhile.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        assert_eq!(guard.complete(&answer("generated once")).await, StoreOutcome::Stored);
                        "leader"
                    }
                    hit @ Lookup::Hit(_) => {
                        assert_eq!(text_of(&hit).as_deref(), Some("generated once"));
                        "hit"
                    }
                    Lookup::Miss(reason) => panic!("a request went upstream a second time: {reason:?}"),
                }
            })
        })
        .collect();
    let mut leaders = 0;
    let mut hits = 0;
    for outcome in futures::future::join_all(tasks).await {
        match outcome.unwrap() {
            "leader" => leaders += 1,
            _ => hits += 1,
        }
    }
    assert_eq!((leaders, hits), (1, N - 1));
    let m = cache.metrics();
    assert_eq!(m.misses.get(), 1);
    assert_eq!(m.hits.get(), (N - 1) as u64);
    assert_eq!(m.stores.get(), 1);
    assert!(m.waits_of(WaitOutcome::Hit) > 0, "some waited for the leader");
    assert_eq!(cache.flights_in_progress(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_identical_cold_requests_generate_once_in_memory() {
    thousand_identical_cold_lookups(Cache::memory(&section()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_identical_cold_requests_generate_once_on_redis() {
    let cache = Cache::redis(
        &CacheSection {
            redis_timeout: Duration::from_secs(1),
            ..section()
        },
        &redis_target::client(),
    )
    .unwrap();
    thousand_identical_cold_lookups(cache).await;
}

/// Starts `count` lookups of `k` and waits until they all wait for its leader.
async fn waiters(cache: &Cache, k: &CacheKey, count: usize) -> Vec<tokio::task::JoinHandle<Lookup>> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (cache, k) = (cache.clone(), k.clone());
            tokio::spawn(async move { cache.lookup(&k).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.waiters(k) < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} waiting",
            cache.waiters(k)
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_or_failed_leader_releases_its_waiters() {
    let cache = Cache::memory(&section()).unwrap();
    let k = key(&fresh_tenant(), &ask("leader goes away"));

    // Dropped (the client went away, the upstream failed).
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("cold")
    };
    let waiting = waiters(&cache, &k, 10).await;
    let dropped = Instant::now();
    drop(guard);
    for task in waiting {
        assert!(matches!(task.await.unwrap(), Lookup::Miss(MissReason::Released)));
    }
    assert!(dropped.elapsed() < Duration::from_secs(1), "released at once");
    assert_eq!(cache.metrics().waits_of(WaitOutcome::Released), 10);
    assert_eq!(cache.flights_in_progress(), 0);

    // Completed with an answer the cache does not keep (a truncated stream assembled badly).
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("still cold: nothing was stored")
    };
    let waiting = waiters(&cache, &k, 5).await;
    let mut unfinished = answer("half");
    unfinished.choices[0].finish_reason = Nullable::Null;
    assert_eq!(
        guard.complete(&unfinished).await,
        StoreOutcome::Skipped(SkipReason::Incomplete)
    );
    for task in waiting {
        assert!(matches!(task.await.unwrap(), Lookup::Miss(MissReason::Released)));
    }
    assert_eq!(cache.metrics().waits_of(WaitOutcome::Released), 15);
    assert!(matches!(cache.lookup(&k).await, Lookup::Leader(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_is_bounded_in_time_and_number() {
    let cache = Cache::memory(&CacheSection {
        wait: Duration::from_millis(300),
        max_waiters: 2,
        ..section()
    })
    .unwrap();
    let k = key(&fresh_tenant(), &ask("slow leader"));
    let Lookup::Leader(_guard) = cache.lookup(&k).await else {
        panic!("cold")
    };
    let started = Instant::now();
    let waiting = waiters(&cache, &k, 2).await;
    // A third goes upstream at once.
    assert!(matches!(
        cache.lookup(&k).await,
        Lookup::Miss(MissReason::TooManyWaiters)
    ));
    assert!(started.elapsed() < Duration::from_millis(300));
    for task in waiting {
        assert!(matches!(task.await.unwrap(), Lookup::Miss(MissReason::WaitTimeout)));
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    let m = cache.metrics();
    assert_eq!(m.waits_of(WaitOutcome::Full), 1);
    assert_eq!(m.waits_of(WaitOutcome::Timeout), 2);
    assert_eq!(m.misses.get(), 4);
}

// ---------------------------------------------------------------------------------------------
// Redis failures: misses, counted, bounded, never an error

/// Lookups and stores against a store that fails: every one a miss or a failed store, each within
/// `bound`, the error counter rising.
async fn fails_open(cache: &Cache, bound: Duration) {
    let m = cache.metrics();
    let (errors, good) = (m.errors_total(), m.hits.get() + m.stores.get());
    let tenant = fresh_tenant();
    for i in 0..12 {
        let k = key(&tenant, &ask(&format!("down {i}")));
        let started = Instant::now();
        let lookup = cache.lookup(&k).await;
        let Lookup::Leader(guard) = lookup else {
            panic!("a failing store is a miss, and the request leads: {lookup:?}")
        };
        assert!(matches!(
            guard.complete(&answer("unkept")).await,
            StoreOutcome::Failed(_)
        ));
        assert!(started.elapsed() < bound, "lookup + store took {:?}", started.elapsed());
    }
    assert!(
        m.errors_total() >= errors + 24,
        "every call counted: {} after {errors}",
        m.errors_total()
    );
    assert!(
        m.errors_of(ErrorKind::Unavailable) > 0,
        "repeated failures give the store a rest"
    );
    assert_eq!(m.hits.get() + m.stores.get(), good, "nothing stored or found meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_on_a_closed_port_is_a_counted_miss() {
    let timeout = Duration::from_millis(100);
    let cache = Cache::redis(
        &CacheSection {
            redis_timeout: timeout,
            ..section()
        },
        &redis_target::plain(&format!("redis://127.0.0.1:{}", closed_port())),
    )
    .unwrap();
    fails_open(&cache, timeout * 2 + Duration::from_millis(300)).await;
    assert!(cache.metrics().errors_of(ErrorKind::Redis) + cache.metrics().errors_of(ErrorKind::Timeout) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_never_answers_times_out_within_redis_timeout() {
    // Accepts connections and never says a word: a blackholed Redis.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(100);
    let cache = Cache::redis(
        &CacheSection {
            redis_timeout: timeout,
            ..section()
        },
        &redis_target::plain(&format!("redis://{addr}")),
    )
    .unwrap();
    fails_open(&cache, timeout * 2 + Duration::from_millis(300)).await;
    assert!(cache.metrics().errors_of(ErrorKind::Timeout) >= 5);
    silent.abort();
}

/// A Redis of this test's own, so killing it disturbs no one.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh install puts it on the PATH)");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let client = redis::Client::open(url.as_str()).unwrap();
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server on {port} never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_is_a_counted_miss_and_recovers() {
    let timeout = Duration::from_millis(100);
    let mut redis = OwnRedis::start(closed_port()).await;
    let cache = Cache::redis(
        &CacheSection {
            redis_timeout: timeout,
            ..section()
        },
        &redis_target::plain(&redis.url()),
    )
    .unwrap();
    let tenant = fresh_tenant();
    let k = key(&tenant, &ask("before the kill"));
    assert_eq!(cache.store(&k, &answer("warm")).await, StoreOutcome::Stored);
    assert_eq!(text_of(&cache.lookup(&k).await).as_deref(), Some("warm"));
    assert_eq!(cache.metrics().errors_total(), 0);

    redis.kill();
    fails_open(&cache, timeout * 2 + Duration::from_millis(300)).await;
    // The entry was in the dead Redis: now a miss, not an error.
    let started = Instant::now();
    assert!(matches!(cache.lookup(&k).await, Lookup::Leader(_)));
    assert!(started.elapsed() < timeout + Duration::from_millis(300));

    // Redis comes back (empty): the cache works again once the rest is over and it reconnected.
    let port = redis.port;
    drop(redis);
    let _redis = OwnRedis::start(port).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if cache.store(&k, &answer("again")).await == StoreOutcome::Stored {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(text_of(&cache.lookup(&k).await).as_deref(), Some("again"));
}

// ---------------------------------------------------------------------------------------------
// SSE replay

/// The `data:` payloads of events, checking the framing.
fn data_payloads(events: &[bytes::Bytes]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            let text = std::str::from_utf8(event).unwrap();
            let payload = text.strip_prefix("data: ").expect("a data event");
            let payload = payload.strip_suffix("\n\n").expect("ends with a blank line");
            assert!(!payload.contains('\n'), "one line per event");
            payload.to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_replays_as_an_openai_stream() {
    let cache = Cache::memory(&section()).unwrap();
    let tenant = fresh_tenant();
    let mut stored = answer("The answer is 4.");
    stored.system_fingerprint = Nullable::Value("fp_1".to_owned());
    let plain = ask("replay");
    cache.store(&key(&tenant, &plain), &stored).await;
    let Lookup::Hit(hit) = cache.lookup(&key(&tenant, &plain)).await else {
        panic!("stored")
    };

    let with_usage = request(json!({
        "model": "r1-edge", "messages": [{"role": "user", "content": "replay"}], "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true}
    }));
    let events = cache.hit_sse(&hit, &with_usage);
    let payloads = data_payloads(&events);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    // Every chunk is a chat.completion.chunk of one stream.
    for chunk in &chunks {
        let typed: ChatCompletionChunk = serde_json::from_value(chunk.clone()).unwrap();
        assert_eq!(typed.object, "chat.completion.chunk");
        assert_eq!(typed.id, chunks[0]["id"].as_str().unwrap());
        assert_eq!(typed.created, chunks[0]["created"].as_u64().unwrap());
        assert_eq!(typed.model, "r1-edge");
        assert_eq!(chunk["system_fingerprint"], "fp_1");
        assert!(
            chunk.get("usage").is_some(),
            "usage: null on every chunk when asked for"
        );
    }
    assert_ne!(chunks[0]["id"], "chatcmpl-upstream");
    // The OpenAI order: role, text, finish, usage-only.
    assert_eq!(
        chunks[0]["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(
        finish["choices"],
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    );
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    assert_eq!(usage["usage"]["total_tokens"], 18);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 11);
    for chunk in &chunks[..chunks.len() - 1] {
        assert_eq!(chunk["usage"], Value::Null);
    }
    // The deltas concatenate to the stored text.
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(text, "The answer is 4.");
    assert_eq!(reasoning, "thinking about The answer is 4.");

    // Without include_usage: no usage key anywhere and no usage chunk.
    let events = cache.hit_sse(
        &hit,
        &request(json!({"model": "r1-edge", "messages": [], "stream": true})),
    );
    let payloads = data_payloads(&events);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    for p in &payloads[..payloads.len() - 1] {
        let chunk: Value = serde_json::from_str(p).unwrap();
        assert!(chunk.get("usage").is_none(), "{p}");
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }

    // A capture of the replay (what a gateway would see passing through) is the stored answer.
    let mut capture = Capture::sse(1 << 20);
    for event in cache.hit_sse(&hit, &with_usage) {
        capture.push(&event);
    }
    let again = capture.finish().unwrap();
    assert_eq!(again.choices, stored.choices);
    assert_eq!(again.usage.get().unwrap().prompt_tokens, 11);
}

#[test]
fn a_json_capture_is_the_upstream_answer() {
    let body = serde_json::to_vec(&answer("json")).unwrap();
    let mut capture = Capture::json(1 << 20);
    for piece in body.chunks(10) {
        capture.push(piece);
    }
    assert_eq!(capture.finish().unwrap(), answer("json"));
    let mut error = Capture::json(1 << 20);
    error.push(br#"{"error":{"message":"overloaded","type":"server_error","code":null}}"#);
    assert_eq!(error.finish().unwrap_err(), SkipReason::Failed);
}

#[test]
fn counters_register_under_their_names() {
    let registry = prometheus::Registry::new();
    let cache = Cache::memory(&section()).unwrap();
    cache.metrics().register(&registry).unwrap();
    let mut text = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    for name in [
        "r1_cache_hits_total",
        "r1_cache_misses_total",
        "r1_cache_stores_total",
        "r1_cache_store_skips_total",
        "r1_cache_errors_total",
        "r1_cache_singleflight_waits_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} counter")),
            "{name} missing:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_to_the_next_request() {
    let cache = Cache::memory(&section()).unwrap();
    let deterministic = ask("reload");
    assert_eq!(
        cache.cacheable(&deterministic, &HeaderMap::new()),
        Some(Why::Deterministic)
    );
    cache.reconfigure(&CacheSection {
        enabled: false,
        ..section()
    });
    assert_eq!(cache.cacheable(&deterministic, &HeaderMap::new()), None);
    assert!(!cache.section().enabled);
}
