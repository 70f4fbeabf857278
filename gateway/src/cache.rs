//! The result cache: exact-match, tenant-scoped answers kept in Redis (or in memory without `[redis]`),
//! identical concurrent requests collapsed into one generation, and every store failure a miss.
//!
//! # Rules
//!
//! - **What is cached** ([`cacheable`]): deterministic requests (`temperature` exactly 0; a missing
//!   temperature is not 0) or opted-in ones (the `opt_in_header`, default `x-r1-cache`, set to `on`,
//!   or a model in `always_models`); `x-r1-cache: off` opts out; never `n > 1`.
//! - **The key** ([`CacheKey`]): sha256 of the tenant and the whole request as compact JSON (maps with sorted
//!   keys) minus `stream`, `stream_options` and `user` → `r1:cache:v2:<hex>`. Two tenants never share
//!   an entry; a streamed and a JSON request do.
//! - **What is stored**: only complete successful answers — a `chat.completion` whose every choice
//!   ended with `stop` or `length`, no tool calls, at most `max_entry_bytes` of JSON — for the model's
//!   TTL (`model_ttl`, else `ttl`). A stream is stored only once it ended with `[DONE]` ([`Capture`]).
//! - **Fail open**: every store call is bounded by `redis_timeout`; an error or timeout is a miss (or a
//!   skipped store), counted in `r1_cache_errors_total{kind}`, logged at debug level, never an error to
//!   the client. After 5 failures in a row the store is not asked for 1 s (kind `unavailable`).
//! - **Singleflight**: identical concurrent cold requests: the first is the [`Lookup::Leader`], the
//!   others wait (at most `wait`, at most `max_waiters` of them) and get its answer as a hit. A leader
//!   that fails, stores nothing or is dropped releases them: they go upstream themselves
//!   ([`Lookup::Miss`]), never an error. Per process: replicas each generate once.
//! - **A hit** ([`Cache::hit_json`], [`Cache::hit_sse`]): the stored answer with a fresh id and
//!   `created`, the `model` the request named, usage marked cached (`prompt_tokens_details.cached_tokens = prompt_tokens`), replayed as
//!   OpenAI chunks ending in `data: [DONE]` when the request streams.
//!
//! # Wiring
//!
//! ```text
//! config:   GatewayConfig { #[serde(default)] cache: cache::CacheSection, .. }
//!           problems.extend(self.cache.problems());               // keys start `cache.`
//! startup:  let cache = Cache::from_config(&config.cache, redis.as_ref())?;   // redis: config.redis_client(env)?
//!           cache.metrics().register(&registry)?;                 // inside the Tokio runtime (lazy Redis)
//! reload:   cache.reconfigure(&new.cache);                        // all but max_entries apply live
//! request (after auth, limits and input checks; before the route decision):
//!           if let Some(why) = cache.cacheable(&request, &headers)
//!              && let Some(key) = cache.key(tenant, &request) {   // tenant: the JWT subject ("" without auth)
//!               match cache.lookup(&key).await {
//!                   Lookup::Hit(stored) => answer now, route `cache`, header `x-r1-cache: hit`:
//!                       JSON:   200, application/json, cache.hit_json(&stored, &request)
//!                       stream: 200, text/event-stream, every Bytes of cache.hit_sse(&stored, &request)
//!                   Lookup::Leader(guard) => ctx.cache = Some(Pending::Leader(guard)), go upstream
//!                   Lookup::Miss(_)       => ctx.cache = Some(Pending::Key(key)), go upstream
//!               }                                                 // `x-r1-cache: miss` on those answers
//!           }
//! answer:   only for HTTP 200 from upstream: ctx.capture = Some(Capture::sse(limit) or ::json(limit))
//!           (limit: cache.section().max_entry_bytes; upstream `response_filter`; any other status: drop
//!           the guard). Edge: every body chunk in `response_body_filter` → capture.push(chunk).
//!           Center: every Bytes the hand-off writes to the client → capture.push.
//! end:      at the body's end (end_of_stream, or in `logging` when no error ended it):
//!           match capture.finish() {
//!               Ok(response) => tokio::spawn(async move { guard.complete(&response).await })
//!                                             // or cache.store(&key, &response) for a Miss
//!               Err(_) => drop(guard),        // releases the waiters
//!           }
//!           A guard dropped with the request (client gone, upstream failure) releases them too.
//! ```

mod capture;
mod flight;
mod key;
mod metrics;
mod replay;
mod section;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderMap;
use r1_proto::{CHAT_COMPLETION_OBJECT, ChatCompletionRequest, ChatCompletionResponse, FinishReason, Nullable};

pub use capture::Capture;
pub use key::{CacheKey, KEY_PREFIX, Why, cacheable};
pub use metrics::{CacheMetrics, ErrorKind, SkipReason, WaitOutcome};
pub use section::{CacheSection, ENTRIES_RANGE, ENTRY_BYTES_RANGE, MAX_WAIT, REDIS_TIMEOUT_RANGE, TTL_RANGE};
pub use store::{MemoryStore, RedisStore, Store, StoreError};

use flight::{Flight, Flights, Join, State};

/// The response header that tells a client how the cache took its request (`hit` or `miss`).
pub const RESPONSE_HEADER: &str = "x-r1-cache";
/// Failures in a row after which the store is given a rest.
const BREAKER_FAILURES: u32 = 5;
/// How long the store is not asked after [`BREAKER_FAILURES`] failures in a row.
const BREAKER_REST: Duration = Duration::from_secs(1);
/// Message keys that a stored answer must not carry (a replay could not reproduce them as deltas).
const UNSUPPORTED_MESSAGE_KEYS: [&str; 2] = ["tool_calls", "function_call"];

/// The cache could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The counters could not be created.
    #[error("cache metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The Redis URL is malformed.
    #[error("cache redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A stored answer, found by [`Cache::lookup`].
#[derive(Debug, Clone)]
pub struct Stored(Arc<ChatCompletionResponse>);

impl Stored {
    /// The answer as it was stored (the upstream's id, time and usage).
    pub fn response(&self) -> &ChatCompletionResponse {
        &self.0
    }
}

/// Why a lookup sends the request upstream without leading a flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissReason {
    /// The identical request it waited for failed, stored nothing or went away.
    Released,
    /// It waited `wait` for the identical request in flight.
    WaitTimeout,
    /// `max_waiters` already waited for the identical request in flight.
    TooManyWaiters,
}

/// What [`Cache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// An answer: serve it with [`Cache::hit_json`] or [`Cache::hit_sse`].
    Hit(Stored),
    /// No answer, and this request generates it for every identical one that arrives meanwhile: go
    /// upstream, then [`LeaderGuard::complete`] with the answer, or drop the guard if there is none.
    Leader(LeaderGuard),
    /// No answer: go upstream. [`Cache::store`] may still keep what comes back.
    Miss(MissReason),
}

/// What became of an answer offered to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Written to the store.
    Stored,
    /// Not an answer the cache keeps.
    Skipped(SkipReason),
    /// The store failed (counted); the answer is not kept.
    Failed(ErrorKind),
}

/// Gives the store a rest after repeated failures, so an outage costs misses, not `redis_timeout`
/// on every request.
#[derive(Debug)]
struct Breaker {
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the store is not asked.
    resting_until: AtomicU64,
}

impl Breaker {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            resting_until: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn allows(&self) -> bool {
        self.now_ms() >= self.resting_until.load(Ordering::Acquire)
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// Counts a failure; `true` when it starts a rest.
    fn failure(&self) -> bool {
        if self.failures.fetch_add(1, Ordering::AcqRel) + 1 < BREAKER_FAILURES {
            return false;
        }
        self.failures.store(0, Ordering::Release);
        let until = self.now_ms() + u64::try_from(BREAKER_REST.as_millis()).unwrap_or(u64::MAX);
        self.resting_until.store(until, Ordering::Release);
        true
    }
}

#[derive(Debug)]
struct Inner {
    settings: ArcSwap<CacheSection>,
    store: Arc<dyn Store>,
    flights: Flights,
    metrics: CacheMetrics,
    breaker: Breaker,
}

/// The result cache. Cheap to clone (one `Arc`); share one per gateway process.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl Cache {
    /// A cache over `store`, configured by `section`.
    pub fn new(section: &CacheSection, store: Arc<dyn Store>) -> Result<Self, InitError> {
        Ok(Self {
            inner: Arc::new(Inner {
                settings: ArcSwap::from_pointee(section.clone()),
                store,
                flights: Flights::default(),
                metrics: CacheMetrics::new()?,
                breaker: Breaker::new(),
            }),
        })
    }

    /// A cache in this process's memory (at most `max_entries`).
    pub fn memory(section: &CacheSection) -> Result<Self, InitError> {
        Self::new(section, Arc::new(MemoryStore::new(section.max_entries)))
    }

    /// A cache in `redis` (one server or a cluster), connected on first use (a Redis down at start-up
    /// means misses). Must be called within a Tokio runtime.
    pub fn redis(section: &CacheSection, redis: &r1_queue::redis_conn::RedisClient) -> Result<Self, InitError> {
        Self::new(section, Arc::new(RedisStore::lazy(redis, section.redis_timeout)?))
    }

    /// In Redis when `[redis]` is configured (`redis`), else in memory.
    pub fn from_config(
        section: &CacheSection,
        redis: Option<&r1_queue::redis_conn::RedisClient>,
    ) -> Result<Self, InitError> {
        match redis {
            Some(redis) => Self::redis(section, redis),
            None => Self::memory(section),
        }
    }

    /// Applies a reloaded `[cache]` table. Everything applies to the next lookup except
    /// `max_entries` (the in-memory store keeps its start-up bound).
    pub fn reconfigure(&self, section: &CacheSection) {
        self.inner.settings.store(Arc::new(section.clone()));
    }

    /// The settings in force.
    pub fn section(&self) -> Arc<CacheSection> {
        self.inner.settings.load_full()
    }

    /// The counters (register them once with [`CacheMetrics::register`]).
    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// `redis` or `memory`.
    pub fn store_kind(&self) -> &'static str {
        self.inner.store.kind()
    }

    /// How many distinct requests are being generated by a leader right now.
    pub fn flights_in_progress(&self) -> usize {
        self.inner.flights.len()
    }

    /// How many requests wait for the leader of `key` right now.
    pub fn waiters(&self, key: &CacheKey) -> usize {
        self.inner.flights.waiters(key.as_str())
    }

    /// Whether `request` may be answered from the cache, under the settings in force ([`cacheable`]).
    pub fn cacheable(&self, request: &ChatCompletionRequest, headers: &HeaderMap) -> Option<Why> {
        cacheable(request, headers, &self.inner.settings.load())
    }

    /// The key of `request` for `tenant` ([`CacheKey::new`]).
    pub fn key(&self, tenant: &str, request: &ChatCompletionRequest) -> Option<CacheKey> {
        CacheKey::new(tenant, request)
    }

    /// Looks `key` up: a stored answer, the answer of an identical request in flight (waited for), or
    /// the lead of a new flight. Never fails: store errors are misses. Takes at most about
    /// `redis_timeout` (twice for a new leader), plus `wait` when waiting for an identical request.
    pub async fn lookup(&self, key: &CacheKey) -> Lookup {
        let metrics = &self.inner.metrics;
        let first = self.read(key).await;
        if let Ok(Some(stored)) = first {
            metrics.hits.inc();
            return Lookup::Hit(stored);
        }
        let settings = self.inner.settings.load_full();
        match self.inner.flights.join(key.as_str(), settings.max_waiters) {
            Join::Lead(flight) => {
                let mut guard = LeaderGuard {
                    cache: self.clone(),
                    key: key.clone(),
                    flight,
                    published: false,
                };
                // A leader that finished between our read and our join has stored its answer: look
                // again (unless the store is failing), so one answer is generated once.
                if first.is_ok()
                    && let Ok(Some(stored)) = self.read(key).await
                {
                    guard.flight.publish(State::Done(Arc::clone(&stored.0)));
                    guard.published = true;
                    metrics.hits.inc();
                    return Lookup::Hit(stored);
                }
                metrics.misses.inc();
                Lookup::Leader(guard)
            }
            Join::Wait(mut receiver, _slot) => {
                let waited = tokio::time::timeout(
                    settings.wait,
                    receiver.wait_for(|state| !matches!(state, State::Pending)),
                )
                .await
                // Owned at once: the channel's read guard must not outlive this expression.
                .map(|state| state.map(|state| state.clone()));
                let (wait, lookup) = match waited {
                    Ok(Ok(State::Done(response))) => (WaitOutcome::Hit, Lookup::Hit(Stored(response))),
                    // Released, or the sender is gone: the leader went away without a word.
                    Ok(Ok(State::Pending | State::Released) | Err(_)) => {
                        (WaitOutcome::Released, Lookup::Miss(MissReason::Released))
                    }
                    Err(_) => (WaitOutcome::Timeout, Lookup::Miss(MissReason::WaitTimeout)),
                };
                metrics.waits.with_label_values(&[wait.as_str()]).inc();
                match lookup {
                    Lookup::Hit(_) => metrics.hits.inc(),
                    Lookup::Leader(_) | Lookup::Miss(_) => metrics.misses.inc(),
                }
                lookup
            }
            Join::Full => {
                metrics.waits.with_label_values(&[WaitOutcome::Full.as_str()]).inc();
                metrics.misses.inc();
                Lookup::Miss(MissReason::TooManyWaiters)
            }
        }
    }

    /// Keeps `response` under `key` for the model's TTL, if it is a complete successful answer (see
    /// the module docs). For answers obtained without leading a flight; a leader uses
    /// [`LeaderGuard::complete`]. Never fails: a store error is counted and reported.
    pub async fn store(&self, key: &CacheKey, response: &ChatCompletionResponse) -> StoreOutcome {
        match self.encode(response) {
            Ok(encoded) => self.write(key, encoded).await,
            Err(reason) => StoreOutcome::Skipped(reason),
        }
    }

    /// The JSON body answering a hit (send it as `application/json`, status 200, with
    /// [`RESPONSE_HEADER`]` : hit`): the stored completion with a fresh id and `created`, usage
    /// marked cached.
    pub fn hit_json(&self, stored: &Stored, request: &ChatCompletionRequest) -> Bytes {
        replay::json(stored.response(), &request.model)
    }

    /// The SSE events answering a hit of a streaming `request` (send them in order as
    /// `text/event-stream`, status 200): role, reasoning, content and finish chunks per choice, the
    /// usage chunk when `stream_options.include_usage` (and the stored answer has usage), then
    /// `data: [DONE]`.
    pub fn hit_sse(&self, stored: &Stored, request: &ChatCompletionRequest) -> Vec<Bytes> {
        replay::sse(stored.response(), &request.model, request.include_usage())
    }

    /// The stored form of `response`, if the cache keeps it (counted when not).
    fn encode(&self, response: &ChatCompletionResponse) -> Result<Bytes, SkipReason> {
        let checked = storable(response).and_then(|()| {
            let encoded = serde_json::to_vec(response).map_err(|_| SkipReason::Failed)?;
            if encoded.len() > self.inner.settings.load().max_entry_bytes {
                return Err(SkipReason::TooLarge);
            }
            Ok(Bytes::from(encoded))
        });
        if let Err(reason) = checked {
            self.inner.metrics.skips.with_label_values(&[reason.as_str()]).inc();
        }
        checked
    }

    async fn write(&self, key: &CacheKey, encoded: Bytes) -> StoreOutcome {
        let ttl = self.inner.settings.load().ttl_for(key.model());
        match self.call(self.inner.store.set(key.as_str(), encoded, ttl)).await {
            Ok(()) => {
                self.inner.metrics.stores.inc();
                StoreOutcome::Stored
            }
            Err(kind) => StoreOutcome::Failed(kind),
        }
    }

    /// The entry under `key`: `Err` when the store failed (counted), `Ok(None)` when there is none or
    /// it cannot be read (counted as `decode`).
    async fn read(&self, key: &CacheKey) -> Result<Option<Stored>, ErrorKind> {
        let Some(bytes) = self.call(self.inner.store.get(key.as_str())).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<ChatCompletionResponse>(&bytes) {
            Ok(response) => Ok(Some(Stored(Arc::new(response)))),
            Err(error) => {
                self.count_error(ErrorKind::Decode);
                tracing::debug!(key = %key, %error, "cache entry unreadable; treated as missing");
                Ok(None)
            }
        }
    }

    /// Runs one store call under `redis_timeout` and the breaker, counting failures.
    async fn call<T>(&self, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, ErrorKind> {
        let breaker = &self.inner.breaker;
        if !breaker.allows() {
            self.count_error(ErrorKind::Unavailable);
            return Err(ErrorKind::Unavailable);
        }
        let timeout = self.inner.settings.load().redis_timeout;
        let kind = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => {
                breaker.success();
                return Ok(value);
            }
            Ok(Err(error)) => {
                tracing::debug!(store = self.inner.store.kind(), %error, "cache store call failed; a miss");
                ErrorKind::Redis
            }
            Err(_) => {
                tracing::debug!(
                    store = self.inner.store.kind(),
                    ?timeout,
                    "cache store call timed out; a miss"
                );
                ErrorKind::Timeout
            }
        };
        self.count_error(kind);
        if breaker.failure() {
            tracing::warn!(
                store = self.inner.store.kind(),
                failures = BREAKER_FAILURES,
                rest = ?BREAKER_REST,
                "cache store failing; serving without it for a moment"
            );
        }
        Err(kind)
    }

    fn count_error(&self, kind: ErrorKind) {
        self.inner.metrics.errors.with_label_values(&[kind.as_str()]).inc();
    }
}

/// Whether the cache keeps `response`: a `chat.completion` with its usage and choices that all
/// finished with `stop` or `length` and carry no tool calls.
fn storable(response: &ChatCompletionResponse) -> Result<(), SkipReason> {
    if response.object != CHAT_COMPLETION_OBJECT || response.extra.contains_key("error") {
        return Err(SkipReason::Failed);
    }
    if response.choices.is_empty() {
        return Err(SkipReason::Incomplete);
    }
    if !matches!(response.usage, Nullable::Value(_)) {
        return Err(SkipReason::NoUsage);
    }
    for choice in &response.choices {
        let extra = &choice.message.extra;
        if UNSUPPORTED_MESSAGE_KEYS
            .iter()
            .any(|key| extra.get(*key).is_some_and(|v| !v.is_null()))
        {
            return Err(SkipReason::Unsupported);
        }
        match &choice.finish_reason {
            Nullable::Value(FinishReason::Stop | FinishReason::Length) => {}
            Nullable::Value(FinishReason::ToolCalls | FinishReason::FunctionCall) => {
                return Err(SkipReason::Unsupported);
            }
            _ => return Err(SkipReason::Incomplete),
        }
    }
    Ok(())
}

/// The lead of a flight: this request generates the answer identical concurrent requests wait for.
///
/// [`LeaderGuard::complete`] hands them the answer and stores it; dropping the guard without
/// completing (an upstream failure, a truncated stream, the client went away) releases them to go
/// upstream themselves.
#[derive(Debug)]
pub struct LeaderGuard {
    cache: Cache,
    key: CacheKey,
    flight: Arc<Flight>,
    published: bool,
}

impl LeaderGuard {
    /// The key being generated.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Completes the flight with the upstream's `response`: if the cache keeps it (see
    /// [`Cache::store`]), the waiters get it at once and it is then stored; if not, they are released.
    pub async fn complete(mut self, response: &ChatCompletionResponse) -> StoreOutcome {
        let encoded = match self.cache.encode(response) {
            Ok(encoded) => encoded,
            Err(reason) => return StoreOutcome::Skipped(reason),
        };
        self.flight.publish(State::Done(Arc::new(response.clone())));
        self.published = true;
        // The flight stays joinable (answering at once) until the store has the entry.
        self.cache.write(&self.key, encoded).await
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if !self.published {
            self.flight.publish(State::Released);
        }
        self.cache.inner.flights.remove(self.key.as_str(), &self.flight);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use r1_proto::{ChatMessage, Usage};

    fn answer(finish: FinishReason) -> ChatCompletionResponse {
        ChatCompletionResponse::new("c", 1, "m", ChatMessage::assistant("hi"), finish, Usage::new(1, 1))
    }

    #[test]
    fn only_finished_plain_answers_are_storable() {
        assert_eq!(storable(&answer(FinishReason::Stop)), Ok(()));
        assert_eq!(storable(&answer(FinishReason::Length)), Ok(()));
        assert_eq!(storable(&answer(FinishReason::ToolCalls)), Err(SkipReason::Unsupported));
        assert_eq!(
            storable(&answer(FinishReason::ContentFilter)),
            Err(SkipReason::Incomplete)
        );
        let mut unfinished = answer(FinishReason::Stop);
        unfinished.choices[0].finish_reason = Nullable::Null;
        assert_eq!(storable(&unfinished), Err(SkipReason::Incomplete));
        let mut tools = answer(FinishReason::Stop);
        tools.choices[0]
            .message
            .extra
            .insert("tool_calls".into(), serde_json::json!([{"id": "t"}]));
        assert_eq!(storable(&tools), Err(SkipReason::Unsupported));
        let mut empty = answer(FinishReason::Stop);
        empty.choices.clear();
        assert_eq!(storable(&empty), Err(SkipReason::Incomplete));
        let mut silent = answer(FinishReason::Stop);
        silent.usage = Nullable::Null;
        assert_eq!(storable(&silent), Err(SkipReason::NoUsage), "a hit must carry usage");
    }

    #[test]
    fn the_breaker_rests_after_repeated_failures() {
        let breaker = Breaker::new();
        for _ in 0..BREAKER_FAILURES - 1 {
            assert!(!breaker.failure());
        }
        assert!(breaker.allows());
        assert!(breaker.failure());
        assert!(!breaker.allows());
    }
}
