//! Limits: body size, the `max_tokens` cap, per-subject requests/s, concurrent requests and tokens per
//! minute — counted in Redis so every gateway replica shares them, with a bounded local fallback — and the
//! global bound on requests in flight.
//!
//! # Wiring
//!
//! ```text
//! config:   GatewayConfig { #[serde(default)] limits: limits::LimitsSection, .. }
//!           problems.extend(self.limits.problems());          // r1_config::Validate; keys start `limits.`
//! startup:  let limiter = Limiter::new(config.limits.clone(), config.redis.as_ref().map(|r| r.url.as_str()))?;
//!           tokio::spawn(limiter.connect(Duration::from_secs(2)));   // optional warm-up; an Err only means
//!                                                              // "starting in local fallback" (log it)
//! reload:   limiter.reconfigure(new.limits.clone());          // keeps counters, leases and the connection
//! metrics:  limiter.stats() on scrape → r1_limit_refusals_total{kind} (RefusalKind::ALL),
//!           r1_limit_redis_errors_total, r1_limit_fallback_admissions_total, r1_limit_fallback_active,
//!           r1_in_flight
//! request, in order:
//!   1. first thing, before auth:   ctx.in_flight = Some(limiter.try_enter().map_err(|r| r.to_gateway_error())?);
//!                                                              // 503 + Retry-After; never queues
//!   2. headers, before reading:    limits.check_body_len(content_length)?;       // 413, no upstream call
//!      while reading the body:     limits.check_body_len(bytes_read_so_far)?;    // chunked bodies too
//!   3. after auth and parsing:     limits.check_max_tokens(&request)?;           // 400, param max_tokens
//!                                  (hygiene::Hygiene::check runs here too)
//!   4. before cache and route:     ctx.admission = Some(limiter
//!                                      .admit(&subject, limits.estimated_tokens(&request)).await
//!                                      .map_err(|r| r.to_gateway_error())?); // 429 + Retry-After
//!   5. when usage is known (response body, last stream chunk, or the logging hook):
//!                                  if let Some(a) = ctx.admission.take() { a.record_usage(usage.total_tokens) }
//!      a request that failed before the model ran: `a.record_usage(0)` gives its reservation back;
//!      an admission dropped without `record_usage` keeps its reservation (usage unknown = as reserved).
//!   6. dropping `Ctx` drops the Admission (frees its concurrency slot) and the in-flight guard.
//! ```
//!
//! `limits` above is `limiter.section()`; `subject` is the JWT subject (or the tenant the gateway uses for
//! unauthenticated requests). A cache hit still passes step 4: limits count requests, not generations.
//!
//! # How the counting works
//!
//! One Lua script per admission (one round trip) checks all three per-subject limits and, only when
//! all pass, takes from all three — a refused request consumes nothing:
//! - **requests/s**: a token bucket of `burst` requests refilled at `requests_per_second`;
//! - **concurrent requests**: a sorted set of leases, each expiring `concurrency_lease` after it was
//!   taken or last renewed. A live [`Admission`] renews its lease every third of that and removes it when
//!   dropped, so a gateway that crashes leaks its slots for at most one `concurrency_lease`;
//! - **tokens/minute**: a token bucket of `tokens_per_minute` refilled continuously. Admission reserves the
//!   prompt estimate plus the output cap ([`LimitsSection::estimated_tokens`]);
//!   [`Admission::record_usage`] corrects by the difference with the actual usage. A request needing more
//!   than the whole budget is admitted when the bucket is full and leaves it in debt, so it is never
//!   refused forever.
//!
//! Time is Redis's (`TIME`), so replicas with skewed clocks agree. Keys are
//! `r1:limits:{<subject>}:rate|conc|tok` (one hash slot per subject) and expire once they would be full
//! again.
//!
//! # When Redis is unreachable
//!
//! Every Redis call is bounded by `redis_timeout`. An error or a timeout counts in
//! [`LimitStats::redis_errors`], switches this replica to its local fallback and answers the request from
//! it; while in fallback one request per `redis_retry_interval` tries Redis again, and the first that gets
//! an answer switches back. The fallback enforces `local_fallback_share` of every limit in this process
//! alone (never rounded down to nothing: a bucket of at least one request, one concurrent request, one
//! token per minute) — never unlimited. Counts do not move between the two: a switch starts the other
//! side from its own state.
//!
//! Without a Redis URL every limit is enforced in full per replica, and nothing counts as fallback.
//!
//! # Cost
//!
//! Nothing at all for a subject when no per-subject limit is configured. Otherwise one `EVALSHA` per
//! request, plus one `ZREM` when a concurrency slot is freed, one renewal per `concurrency_lease / 3` of a
//! long request and one `EVALSHA` per usage correction (these three off the request path, in a task).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use r1_config::Validate;
use r1_proto::{ChatCompletionRequest, ErrorKind};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::error::{GatewayError, Source};

/// The longest `Retry-After` ever sent, in seconds.
pub const MAX_RETRY_AFTER: u64 = 3600;
/// How long a new Redis connection may take before it is thrown away and a later probe makes another.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Seconds of `Retry-After` for a concurrency refusal (when a slot frees is unknown).
const CONCURRENCY_RETRY_AFTER: u64 = 1;

/// `[limits]`: how much a caller may ask for, and how much the gateway takes on at once.
///
/// Per-subject limits (`requests_per_second`, `concurrent_requests`, `tokens_per_minute`) are off unless
/// set: they are policy, sized to the tenants' plans. The global bounds (`max_body_bytes`,
/// `max_tokens_cap`, `max_in_flight`) are always on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body, in bytes; a larger one is a 413 before it is read. Default 1048576 (1 MiB),
    /// within 1024..=67108864.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Largest `max_tokens` / `max_completion_tokens` a request may ask for; above it the request is a 400.
    /// Default 32768.
    #[serde(default = "default_max_tokens_cap")]
    pub max_tokens_cap: u32,
    /// Output tokens reserved against `tokens_per_minute` for a request that sets no `max_tokens`.
    /// Default 4096, at most `max_tokens_cap`.
    #[serde(default = "default_output_reserve")]
    pub output_reserve: u32,
    /// Requests per second one subject may make, on average. Default: no limit.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// How many requests a subject may make at once above its rate (the bucket size). Default:
    /// `requests_per_second` rounded up. Only with `requests_per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Requests one subject may have running at once. Default: no limit.
    #[serde(default)]
    pub concurrent_requests: Option<u32>,
    /// Tokens (prompt + completion) one subject may use per minute. Default: no limit.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Requests this replica serves at once, all subjects together; beyond it a request is shed with
    /// 503 + `Retry-After` instead of waiting. Default 10000.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// `Retry-After` sent with an overload 503, in whole seconds. Default `1s`, within 1s..=1h.
    #[serde(default = "default_overload_retry_after", with = "humantime_serde")]
    pub overload_retry_after: Duration,
    /// Limit on every Redis call; a slower answer is an error and the request is counted locally.
    /// Default `50ms`, within 1ms..=1s.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// While in local fallback, how often one request tries Redis again. Default `1s`, within 100ms..=1m.
    #[serde(default = "default_redis_retry_interval", with = "humantime_serde")]
    pub redis_retry_interval: Duration,
    /// How long a concurrency slot outlives a gateway that stopped renewing it (crashed). Live requests
    /// renew theirs every third of it. Default `30s`, within 1s..=1h.
    #[serde(default = "default_concurrency_lease", with = "humantime_serde")]
    pub concurrency_lease: Duration,
    /// The fraction of each per-subject limit this replica enforces on its own while Redis is unreachable,
    /// within (0, 1]. Default 1.0: each replica enforces the full limit, so a subject never gets less than
    /// its limit because Redis is down, and gets at most replicas × limit in all (bounded, never
    /// unlimited). Set 1/N for N replicas behind an even load balancer to keep the total at the limit.
    #[serde(default = "default_local_fallback_share")]
    pub local_fallback_share: f64,
    /// Most subjects the local counters remember (least recently used forgotten first). Default 100000.
    /// Fixed at start: a reload does not change it.
    #[serde(default = "default_local_max_subjects")]
    pub local_max_subjects: u64,
    /// The JWT claim that names a caller's tier (e.g. `tier`); its value picks `[limits.tiers.<value>]`.
    #[serde(default = "default_tier_claim")]
    pub tier_claim: String,
    /// Per-tier per-subject limits, replacing the ones above for callers whose token names that tier
    /// (`[limits.tiers.premium] requests_per_second = 50`). A key left out keeps the default's value.
    #[serde(default)]
    pub tiers: std::collections::BTreeMap<String, TierLimits>,
}

/// `[limits.tiers.<name>]`: a tier's per-subject limits.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    /// Requests per second.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Burst above the rate.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Requests in flight at once.
    #[serde(default)]
    pub concurrent_requests: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

fn default_tier_claim() -> String {
    "tier".to_owned()
}

impl LimitsSection {
    /// These limits with `tier`'s overrides applied (unchanged for an unknown or absent tier).
    pub fn for_tier(&self, tier: Option<&str>) -> std::borrow::Cow<'_, Self> {
        let Some(t) = tier.and_then(|t| self.tiers.get(t)) else {
            return std::borrow::Cow::Borrowed(self);
        };
        let mut section = self.clone();
        if t.requests_per_second.is_some() {
            section.requests_per_second = t.requests_per_second;
            section.burst = t.burst;
        } else if t.burst.is_some() {
            section.burst = t.burst;
        }
        if t.concurrent_requests.is_some() {
            section.concurrent_requests = t.concurrent_requests;
        }
        if t.tokens_per_minute.is_some() {
            section.tokens_per_minute = t.tokens_per_minute;
        }
        std::borrow::Cow::Owned(section)
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body_bytes(),
            max_tokens_cap: default_max_tokens_cap(),
            output_reserve: default_output_reserve(),
            requests_per_second: None,
            burst: None,
            concurrent_requests: None,
            tokens_per_minute: None,
            max_in_flight: default_max_in_flight(),
            overload_retry_after: default_overload_retry_after(),
            redis_timeout: default_redis_timeout(),
            redis_retry_interval: default_redis_retry_interval(),
            concurrency_lease: default_concurrency_lease(),
            local_fallback_share: default_local_fallback_share(),
            local_max_subjects: default_local_max_subjects(),
            tier_claim: default_tier_claim(),
            tiers: std::collections::BTreeMap::new(),
        }
    }
}

fn default_max_body_bytes() -> u64 {
    1 << 20
}
fn default_max_tokens_cap() -> u32 {
    32_768
}
fn default_output_reserve() -> u32 {
    4096
}
fn default_max_in_flight() -> usize {
    10_000
}
fn default_overload_retry_after() -> Duration {
    Duration::from_secs(1)
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}
fn default_redis_retry_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_concurrency_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_local_fallback_share() -> f64 {
    1.0
}
fn default_local_max_subjects() -> u64 {
    100_000
}

impl Validate for LimitsSection {
    /// Every problem of the table, each prefixed with its key (`limits.burst: …`).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.tier_claim.trim().is_empty() {
            problems.push("limits.tier_claim: must not be empty".to_owned());
        }
        for (name, t) in &self.tiers {
            if t.requests_per_second.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                problems.push(format!("limits.tiers.{name}.requests_per_second: must be above 0"));
            }
            if t.burst == Some(0) {
                problems.push(format!("limits.tiers.{name}.burst: must be at least 1"));
            }
            if t.concurrent_requests == Some(0) {
                problems.push(format!("limits.tiers.{name}.concurrent_requests: must be at least 1"));
            }
            if t.tokens_per_minute == Some(0) {
                problems.push(format!("limits.tiers.{name}.tokens_per_minute: must be at least 1"));
            }
        }
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(
            (1024..=64 << 20).contains(&self.max_body_bytes),
            format!(
                "limits.max_body_bytes: {} must be within 1024..=67108864",
                self.max_body_bytes
            ),
        );
        check(
            self.max_tokens_cap >= 1,
            "limits.max_tokens_cap: must be at least 1".to_owned(),
        );
        check(
            (1..=self.max_tokens_cap.max(1)).contains(&self.output_reserve),
            format!(
                "limits.output_reserve: {} must be within 1..=limits.max_tokens_cap ({})",
                self.output_reserve, self.max_tokens_cap
            ),
        );
        if let Some(rps) = self.requests_per_second {
            check(
                rps.is_finite() && rps > 0.0 && rps <= 1e6,
                format!("limits.requests_per_second: {rps} must be above 0 and at most 1000000"),
            );
        }
        match (self.burst, self.requests_per_second) {
            (Some(0), _) => check(false, "limits.burst: must be at least 1".to_owned()),
            (Some(_), None) => check(
                false,
                "limits.burst: set, but limits.requests_per_second is not".to_owned(),
            ),
            _ => {}
        }
        check(
            self.concurrent_requests != Some(0),
            "limits.concurrent_requests: must be at least 1 (leave it out for no limit)".to_owned(),
        );
        check(
            self.tokens_per_minute != Some(0),
            "limits.tokens_per_minute: must be at least 1 (leave it out for no limit)".to_owned(),
        );
        check(
            self.max_in_flight >= 1,
            "limits.max_in_flight: must be at least 1".to_owned(),
        );
        let ranges = [
            (
                "overload_retry_after",
                self.overload_retry_after,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
            (
                "redis_timeout",
                self.redis_timeout,
                Duration::from_millis(1),
                Duration::from_secs(1),
            ),
            (
                "redis_retry_interval",
                self.redis_retry_interval,
                Duration::from_millis(100),
                Duration::from_secs(60),
            ),
            (
                "concurrency_lease",
                self.concurrency_lease,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
        ];
        for (key, value, min, max) in ranges {
            check(
                (min..=max).contains(&value),
                format!(
                    "limits.{key}: {} must be within {}..={}",
                    humantime::format_duration(value),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
        let share = self.local_fallback_share;
        check(
            share.is_finite() && share > 0.0 && share <= 1.0,
            format!(
                "limits.local_fallback_share: {share} must be above 0 and at most 1 (the fallback is never unlimited)"
            ),
        );
        check(
            self.local_max_subjects >= 1,
            "limits.local_max_subjects: must be at least 1".to_owned(),
        );
        problems
    }
}

impl LimitsSection {
    /// Whether any per-subject limit is set (otherwise [`Limiter::admit`] costs nothing).
    pub fn has_subject_limits(&self) -> bool {
        self.requests_per_second.is_some() || self.concurrent_requests.is_some() || self.tokens_per_minute.is_some()
    }

    /// `max_body_bytes` as a size in memory (validated to at most 64 MiB, so it always fits).
    pub fn body_limit(&self) -> usize {
        usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX)
    }

    /// The largest body of a batch: it carries many requests, up to 16 × the single-request limit.
    pub fn batch_body_limit(&self) -> usize {
        self.body_limit().saturating_mul(16)
    }

    /// A body of `len` bytes (the `Content-Length`, or what was read so far): a 413 above `max_body_bytes`.
    pub fn check_body_len(&self, len: u64) -> Result<(), GatewayError> {
        if len > self.max_body_bytes {
            return Err(GatewayError::downstream(
                ErrorKind::PayloadTooLarge,
                format!("the request body is larger than {} bytes", self.max_body_bytes),
            )
            .code("request_too_large"));
        }
        Ok(())
    }

    /// `max_tokens` and `max_completion_tokens`: a 400 naming the parameter when one is above `max_tokens_cap`.
    pub fn check_max_tokens(&self, request: &ChatCompletionRequest) -> Result<(), GatewayError> {
        for (param, value) in [
            ("max_tokens", request.max_tokens),
            ("max_completion_tokens", request.max_completion_tokens),
        ] {
            if let Some(value) = value
                && value > self.max_tokens_cap
            {
                return Err(GatewayError::downstream(
                    ErrorKind::InvalidRequest,
                    format!(
                        "`{param}` is {value}, more than the {} this gateway allows",
                        self.max_tokens_cap
                    ),
                )
                .code("invalid_value")
                .param(param));
            }
        }
        Ok(())
    }

    /// Tokens to reserve for `request` against `tokens_per_minute`: an estimate of the prompt (about four
    /// ASCII characters or one other character per token, plus a few per message) and its output cap
    /// (`max_completion_tokens`, `max_tokens` or `output_reserve`, at most `max_tokens_cap`) times `n`.
    pub fn estimated_tokens(&self, request: &ChatCompletionRequest) -> u64 {
        let prompt: u64 = request
            .messages
            .iter()
            .map(|m| 4 + text_tokens(&m.text()) + m.reasoning().map_or(0, text_tokens))
            .sum();
        let output = request
            .effective_max_tokens()
            .unwrap_or(self.output_reserve)
            .min(self.max_tokens_cap);
        let choices = u64::from(request.n.unwrap_or(1).clamp(1, 128));
        prompt.saturating_add(u64::from(output).saturating_mul(choices))
    }

    /// The per-subject limits in force with `share` of each (1.0 normally; `local_fallback_share` in
    /// fallback). Zero means "no limit". Never rounds a set limit down to nothing.
    fn quota(&self, share: f64) -> Quota {
        let rps = self.requests_per_second.map_or(0.0, |rps| (rps * share).max(1e-3));
        let burst = self
            .burst
            .map_or_else(|| self.requests_per_second.unwrap_or(0.0).ceil(), f64::from);
        Quota {
            rps,
            burst: if rps > 0.0 { (burst * share).max(1.0) } else { 0.0 },
            concurrent: self
                .concurrent_requests
                .map_or(0, |c| ((f64::from(c) * share).ceil() as u32).max(1)),
            tpm: self.tokens_per_minute.map_or(0.0, |t| (t as f64 * share).max(1.0)),
        }
    }
}

/// Tokens in `text`, roughly: a quarter per ASCII character, one per other character (CJK and the like).
fn text_tokens(text: &str) -> u64 {
    let (ascii, other) = text.chars().fold(
        (0u64, 0u64),
        |(a, o), c| if c.is_ascii() { (a + 1, o) } else { (a, o + 1) },
    );
    ascii.div_ceil(4) + other
}

/// Per-subject limits in force; 0 = off.
#[derive(Debug, Clone, Copy)]
struct Quota {
    rps: f64,
    burst: f64,
    concurrent: u32,
    tpm: f64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// Over `requests_per_second` (429).
    Rate,
    /// Over `concurrent_requests` (429).
    Concurrency,
    /// Over `tokens_per_minute` (429).
    Tokens,
    /// Over `max_in_flight`: the gateway is full (503).
    Overload,
}

impl RefusalKind {
    /// Every kind, to pre-register metric label values.
    pub const ALL: [Self; 4] = [Self::Rate, Self::Concurrency, Self::Tokens, Self::Overload];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Concurrency => "concurrency",
            Self::Tokens => "tokens",
            Self::Overload => "overload",
        }
    }

    /// The HTTP status: 503 for overload, 429 for the others.
    pub const fn status(self) -> u16 {
        match self {
            Self::Overload => 503,
            Self::Rate | Self::Concurrency | Self::Tokens => 429,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A request refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Which limit.
    pub kind: RefusalKind,
    /// Seconds for `Retry-After` (1..=[`MAX_RETRY_AFTER`]).
    pub retry_after: u64,
    /// A sentence for the client.
    pub message: String,
}

impl Refusal {
    fn new(kind: RefusalKind, retry_after_ms: u64, message: String) -> Self {
        Self {
            kind,
            retry_after: retry_after_ms.div_ceil(1000).clamp(1, MAX_RETRY_AFTER),
            message,
        }
    }

    /// The answer: 429 `rate_limit_error` (code `rate_limit_exceeded`) or, for overload, 503
    /// `overloaded_error`; both with `Retry-After`.
    pub fn to_gateway_error(&self) -> GatewayError {
        let error = match self.kind {
            RefusalKind::Overload => {
                GatewayError::upstream(ErrorKind::Overloaded, Source::Internal, self.message.clone()).code("overloaded")
            }
            _ => GatewayError::downstream(ErrorKind::RateLimit, self.message.clone()).code("rate_limit_exceeded"),
        };
        error.retry_after(self.retry_after)
    }
}

/// The Redis URL could not be used.
#[derive(Debug, thiserror::Error)]
#[error("limits: redis: {0}")]
pub struct LimitsSetupError(String);

/// Redis did not answer (in time).
#[derive(Debug, thiserror::Error)]
#[error("limits: redis: {0}")]
pub struct RedisUnavailable(String);

/// Counters of a [`Limiter`], for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitStats {
    /// Requests refused, by [`RefusalKind`] (in [`RefusalKind::ALL`] order; see [`LimitStats::refusals`]).
    pub refusals_by_kind: [u64; 4],
    /// Redis calls that failed or timed out.
    pub redis_errors: u64,
    /// Admissions decided by the local fallback because Redis was unreachable.
    pub fallback_admissions: u64,
    /// Whether this replica counts locally now because Redis is unreachable.
    pub fallback_active: bool,
    /// Requests in flight (holding an [`InFlightGuard`]).
    pub in_flight: usize,
}

impl LimitStats {
    /// Requests refused by `kind`.
    pub fn refusals(&self, kind: RefusalKind) -> u64 {
        self.refusals_by_kind[kind.index()]
    }
}

/// Who decided an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmittedBy {
    /// No per-subject limit is configured.
    Unlimited,
    /// The shared counters in Redis.
    Redis,
    /// This replica's own counters (no Redis configured, or the fallback).
    Local,
}

/// Enforces `[limits]`; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("redis", &self.inner.redis.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    section: ArcSwap<LimitsSection>,
    redis: Option<RedisBackend>,
    local: moka::sync::Cache<String, Arc<Mutex<LocalSubject>>>,
    in_flight: AtomicUsize,
    refusals: [AtomicU64; 4],
    fallback_admissions: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("limits::Inner").finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter for `section`, sharing its counts through Redis at `redis_url` when given. Connects
    /// lazily (or through [`Limiter::connect`]): an unreachable Redis is not an error here, only a bad URL.
    pub fn new(section: LimitsSection, redis_url: Option<&str>) -> Result<Self, LimitsSetupError> {
        let redis = redis_url
            .map(|url| {
                redis::Client::open(url)
                    .map(RedisBackend::new)
                    .map_err(|e| LimitsSetupError(e.to_string()))
            })
            .transpose()?;
        let local = moka::sync::Cache::builder()
            .max_capacity(section.local_max_subjects)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_idle(Duration::from_secs(3600))
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                section: ArcSwap::from_pointee(section),
                redis,
                local,
                in_flight: AtomicUsize::new(0),
                refusals: Default::default(),
                fallback_admissions: AtomicU64::new(0),
            }),
        })
    }

    /// The table in force.
    pub fn section(&self) -> Arc<LimitsSection> {
        self.inner.section.load_full()
    }

    /// Applies a reloaded table. Counters, leases, the local state and the Redis connection are kept;
    /// `local_max_subjects` keeps its value from start.
    pub fn reconfigure(&self, section: LimitsSection) {
        self.inner.section.store(Arc::new(section));
    }

    /// Makes sure Redis answers, waiting at most `within`; `Ok` when no Redis is configured. On `Err` the
    /// limiter is in local fallback (and keeps trying, as after any Redis error).
    pub async fn connect(self, within: Duration) -> Result<(), RedisUnavailable> {
        let Some(redis) = &self.inner.redis else {
            return Ok(());
        };
        let section = self.section();
        let mut connection = redis.connection(&section)?;
        let ping = redis::cmd("PING");
        let result = tokio::time::timeout(within, ping.query_async::<String>(&mut connection)).await;
        match result {
            Ok(Ok(_)) => {
                redis.answered();
                Ok(())
            }
            Ok(Err(e)) => Err(redis.failed(&section, e.to_string())),
            Err(_) => Err(redis.failed(&section, format!("no answer within {within:?}"))),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> LimitStats {
        let inner = &self.inner;
        LimitStats {
            refusals_by_kind: std::array::from_fn(|i| inner.refusals[i].load(Ordering::Relaxed)),
            redis_errors: inner.redis.as_ref().map_or(0, |r| r.errors.load(Ordering::Relaxed)),
            fallback_admissions: inner.fallback_admissions.load(Ordering::Relaxed),
            fallback_active: inner.redis.as_ref().is_some_and(|r| r.fallback.load(Ordering::Relaxed)),
            in_flight: inner.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Takes one of the `max_in_flight` places of this replica, or refuses at once with
    /// [`RefusalKind::Overload`] (503) — it never waits. The place is given back when the guard drops.
    pub fn try_enter(&self) -> Result<InFlightGuard, Refusal> {
        let section = self.inner.section.load();
        let now = self.inner.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if now > section.max_in_flight {
            self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            let retry = u64::try_from(section.overload_retry_after.as_millis()).unwrap_or(u64::MAX);
            return Err(self.refused(Refusal::new(
                RefusalKind::Overload,
                retry,
                format!(
                    "the gateway is at capacity; retry after {} s",
                    retry.div_ceil(1000).clamp(1, MAX_RETRY_AFTER)
                ),
            )));
        }
        Ok(InFlightGuard {
            inner: self.inner.clone(),
        })
    }

    /// Admits one request of `subject` that may use `estimated_tokens` (see
    /// [`LimitsSection::estimated_tokens`]), or refuses it with a 429 [`Refusal`] and a `Retry-After`.
    /// Answers within about `redis_timeout`: Redis trouble falls back to local counting.
    pub async fn admit(&self, subject: &str, estimated_tokens: u64) -> Result<Admission, Refusal> {
        self.admit_tier(subject, None, estimated_tokens).await
    }

    /// [`Limiter::admit`] for a caller of `tier` (the value of its `tier_claim`): that tier's limits
    /// from `[limits.tiers]` apply, the defaults for an unknown or absent tier.
    pub async fn admit_tier(
        &self,
        subject: &str,
        tier: Option<&str>,
        estimated_tokens: u64,
    ) -> Result<Admission, Refusal> {
        let loaded = self.inner.section.load_full();
        let section = loaded.for_tier(tier);
        if !section.has_subject_limits() {
            return Ok(Admission::unlimited());
        }
        let share = match &self.inner.redis {
            None => 1.0,
            Some(redis) => {
                if redis.should_try(&section) {
                    match self.admit_redis(redis, &section, subject, estimated_tokens).await {
                        Ok(decided) => return decided.map_err(|r| self.refused(r)),
                        Err(e) => tracing::debug!(error = %e, "limits: counting locally"),
                    }
                }
                self.inner.fallback_admissions.fetch_add(1, Ordering::Relaxed);
                section.local_fallback_share
            }
        };
        self.admit_local(&section, share, subject, estimated_tokens)
            .map_err(|r| self.refused(r))
    }

    fn refused(&self, refusal: Refusal) -> Refusal {
        self.inner.refusals[refusal.kind.index()].fetch_add(1, Ordering::Relaxed);
        refusal
    }

    async fn admit_redis(
        &self,
        redis: &RedisBackend,
        section: &LimitsSection,
        subject: &str,
        estimated_tokens: u64,
    ) -> Result<Result<Admission, Refusal>, RedisUnavailable> {
        let quota = section.quota(1.0);
        let keys = Keys::new(subject);
        let lease = (quota.concurrent > 0).then(|| uuid::Uuid::new_v4().simple().to_string());
        let lease_ms = millis(section.concurrency_lease);
        let mut invocation = ADMIT.prepare_invoke();
        invocation
            .key(&keys.rate)
            .key(&keys.conc)
            .key(&keys.tok)
            .arg(quota.rps)
            .arg(quota.burst)
            .arg(quota.concurrent)
            .arg(lease.as_deref().unwrap_or(""))
            .arg(lease_ms)
            .arg(quota.tpm)
            .arg(estimated_tokens);
        let mut connection = redis.connection(section)?;
        let (code, retry_ms): (i64, i64) = redis.call(section, invocation.invoke_async(&mut connection)).await?;
        let retry_ms = u64::try_from(retry_ms).unwrap_or(0);
        Ok(match code {
            0 => {
                let lease = lease.map(|lease| spawn_lease(self.inner.clone(), keys.conc.clone(), lease));
                Ok(Admission {
                    inner: Some(self.inner.clone()),
                    reserved: if quota.tpm > 0.0 { estimated_tokens } else { 0 },
                    holder: Holder::Redis {
                        token_key: (quota.tpm > 0.0).then_some(keys.tok),
                        _lease: lease,
                    },
                })
            }
            1 => Err(rate_refusal(&quota, retry_ms)),
            2 => Err(concurrency_refusal(&quota)),
            3 => Err(tokens_refusal(&quota, estimated_tokens, retry_ms)),
            other => return Err(redis.failed(section, format!("admission script answered {other}"))),
        })
    }

    fn admit_local(
        &self,
        section: &LimitsSection,
        share: f64,
        subject: &str,
        estimated_tokens: u64,
    ) -> Result<Admission, Refusal> {
        let quota = section.quota(share);
        let entry = self.inner.local.get_with_by_ref(subject, Default::default);
        let mut state = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut rate = 0.0;
        if quota.rps > 0.0 {
            rate = state.rate.level(now, quota.burst, quota.rps);
            if rate < 1.0 {
                return Err(rate_refusal(&quota, ((1.0 - rate) * 1000.0 / quota.rps).ceil() as u64));
            }
        }
        if quota.concurrent > 0 && state.in_flight >= quota.concurrent {
            return Err(concurrency_refusal(&quota));
        }
        let mut tokens = 0.0;
        let cost = estimated_tokens as f64;
        if quota.tpm > 0.0 {
            tokens = state.tokens.level(now, quota.tpm, quota.tpm / 60.0);
            let need = cost.min(quota.tpm);
            if tokens < need {
                let retry_ms = ((need - tokens) * 60_000.0 / quota.tpm).ceil() as u64;
                return Err(tokens_refusal(&quota, estimated_tokens, retry_ms));
            }
        }
        if quota.rps > 0.0 {
            state.rate.set(now, rate - 1.0);
        }
        if quota.concurrent > 0 {
            state.in_flight += 1;
        }
        if quota.tpm > 0.0 {
            state.tokens.set(now, tokens - cost);
        }
        drop(state);
        Ok(Admission {
            inner: Some(self.inner.clone()),
            reserved: if quota.tpm > 0.0 { estimated_tokens } else { 0 },
            holder: Holder::Local {
                entry,
                slot: quota.concurrent > 0,
                share,
                tokens: quota.tpm > 0.0,
            },
        })
    }
}

fn rate_refusal(quota: &Quota, retry_ms: u64) -> Refusal {
    let refusal = Refusal::new(RefusalKind::Rate, retry_ms, String::new());
    Refusal {
        message: format!(
            "rate limit: more than {} requests per second (burst {}); retry after {} s",
            trim_float(quota.rps),
            trim_float(quota.burst),
            refusal.retry_after
        ),
        ..refusal
    }
}

fn concurrency_refusal(quota: &Quota) -> Refusal {
    Refusal::new(
        RefusalKind::Concurrency,
        CONCURRENCY_RETRY_AFTER * 1000,
        format!(
            "concurrency limit: {} of your requests are already running; retry when one has finished",
            quota.concurrent
        ),
    )
}

fn tokens_refusal(quota: &Quota, estimated_tokens: u64, retry_ms: u64) -> Refusal {
    let refusal = Refusal::new(RefusalKind::Tokens, retry_ms, String::new());
    Refusal {
        message: format!(
            "token limit: {} tokens per minute used up (this request reserves {estimated_tokens}); retry after {} s",
            trim_float(quota.tpm),
            refusal.retry_after
        ),
        ..refusal
    }
}

/// `2` rather than `2.0`; a few decimals for fractions.
fn trim_float(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}").trim_end_matches('0').to_owned()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A place among `max_in_flight`; given back on drop.
#[derive(Debug)]
pub struct InFlightGuard {
    inner: Arc<Inner>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted request. Holds its concurrency slot until dropped; [`Admission::record_usage`] corrects its
/// token reservation by what it actually used.
#[derive(Debug)]
pub struct Admission {
    inner: Option<Arc<Inner>>,
    /// Tokens reserved against `tokens_per_minute` (0 when that limit is off).
    reserved: u64,
    holder: Holder,
}

#[derive(Debug)]
enum Holder {
    Unlimited,
    Redis {
        /// The token bucket, when `tokens_per_minute` was counted.
        token_key: Option<String>,
        /// Dropping it makes the lease task remove the lease (it renews it meanwhile).
        _lease: Option<oneshot::Sender<()>>,
    },
    Local {
        entry: Arc<Mutex<LocalSubject>>,
        /// Whether a concurrency slot was taken.
        slot: bool,
        /// The share of the limits it was admitted under.
        share: f64,
        /// Whether tokens were reserved.
        tokens: bool,
    },
}

impl Admission {
    fn unlimited() -> Self {
        Self {
            inner: None,
            reserved: 0,
            holder: Holder::Unlimited,
        }
    }

    /// Who decided it.
    pub fn admitted_by(&self) -> AdmittedBy {
        match self.holder {
            Holder::Unlimited => AdmittedBy::Unlimited,
            Holder::Redis { .. } => AdmittedBy::Redis,
            Holder::Local { .. } => AdmittedBy::Local,
        }
    }

    /// Tokens reserved against `tokens_per_minute` (0 when that limit is off).
    pub fn reserved_tokens(&self) -> u64 {
        self.reserved
    }

    /// Corrects the token reservation to `actual_tokens` (the response's `usage.total_tokens`; 0 when the
    /// request failed before the model ran), then frees the concurrency slot. Does not wait: the Redis
    /// update runs in a task, bounded by `redis_timeout`, and is lost if Redis does not answer.
    pub fn record_usage(self, actual_tokens: u64) {
        let Some(inner) = &self.inner else { return };
        if self.reserved == 0 || actual_tokens == self.reserved {
            return;
        }
        let delta = i128::from(actual_tokens) - i128::from(self.reserved);
        let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
        let section = inner.section.load_full();
        match &self.holder {
            Holder::Unlimited => {}
            Holder::Redis {
                token_key: Some(key), ..
            } => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let tpm = section.quota(1.0).tpm;
                if tpm <= 0.0 {
                    return;
                }
                let (inner, key) = (inner.clone(), key.clone());
                runtime.spawn(async move {
                    let Some(redis) = &inner.redis else { return };
                    let mut invocation = RECORD.prepare_invoke();
                    invocation.key(&key).arg(tpm).arg(delta);
                    let Ok(mut connection) = redis.connection(&section) else {
                        return;
                    };
                    let _ = redis
                        .call::<i64>(&section, invocation.invoke_async(&mut connection))
                        .await;
                });
            }
            Holder::Redis { token_key: None, .. } => {}
            Holder::Local {
                entry, share, tokens, ..
            } => {
                let tpm = section.quota(*share).tpm;
                if *tokens && tpm > 0.0 {
                    let mut state = entry.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = Instant::now();
                    let level = state.tokens.level(now, tpm, tpm / 60.0);
                    state.tokens.set(now, (level - delta as f64).min(tpm));
                }
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Holder::Local { entry, slot: true, .. } = &self.holder {
            let mut state = entry.lock().unwrap_or_else(PoisonError::into_inner);
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

/// One subject's counters in this process.
#[derive(Debug, Default)]
struct LocalSubject {
    rate: Bucket,
    tokens: Bucket,
    in_flight: u32,
}

/// A token bucket; full until first used.
#[derive(Debug, Default)]
struct Bucket {
    /// `(level, when)`; `None` = full.
    state: Option<(f64, Instant)>,
}

impl Bucket {
    /// The level at `now` for a bucket of `capacity` refilled at `per_second`.
    fn level(&self, now: Instant, capacity: f64, per_second: f64) -> f64 {
        match self.state {
            None => capacity,
            Some((level, at)) => (level + now.saturating_duration_since(at).as_secs_f64() * per_second).min(capacity),
        }
    }

    fn set(&mut self, now: Instant, level: f64) {
        self.state = Some((level, now));
    }
}

/// A subject's keys; `{subject}` is the hash tag, so a subject's keys share a Redis Cluster slot.
struct Keys {
    rate: String,
    conc: String,
    tok: String,
}

impl Keys {
    fn new(subject: &str) -> Self {
        Self {
            rate: format!("r1:limits:{{{subject}}}:rate"),
            conc: format!("r1:limits:{{{subject}}}:conc"),
            tok: format!("r1:limits:{{{subject}}}:tok"),
        }
    }
}

/// KEYS: rate bucket, concurrency leases, token bucket.
/// ARGV: requests/s, burst, concurrent, lease id, lease ms, tokens/min, tokens asked (a limit of 0 is off).
/// Returns `{0, 0}` admitted (all three taken), or `{1|2|3, retry ms}` refused by rate|concurrency|tokens
/// (nothing taken). Buckets are hashes `{l = level, t = ms}`; leases a sorted set scored by expiry.
static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rps, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, lease, ttl = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local tpm, cost = tonumber(ARGV[6]), tonumber(ARGV[7])
local function level(key, cap, per_ms)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, at = tonumber(v[1]), tonumber(v[2])
  if not l or not at then return cap end
  if now > at then l = l + (now - at) * per_ms end
  if l > cap then l = cap end
  return l
end
local rate, tokens
if rps > 0 then
  rate = level(KEYS[1], burst, rps / 1000)
  if rate < 1 then return {1, math.ceil((1 - rate) * 1000 / rps)} end
end
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= limit then return {2, 1000} end
end
if tpm > 0 then
  tokens = level(KEYS[3], tpm, tpm / 60000)
  local need = math.min(cost, tpm)
  if tokens < need then return {3, math.ceil((need - tokens) * 60000 / tpm)} end
end
if rps > 0 then
  rate = rate - 1
  redis.call('HSET', KEYS[1], 'l', rate, 't', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - rate) * 1000 / rps) + 1000)
end
if limit > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if tpm > 0 then
  tokens = tokens - cost
  redis.call('HSET', KEYS[3], 'l', tokens, 't', now)
  redis.call('PEXPIRE', KEYS[3], math.ceil((tpm - tokens) * 60000 / tpm) + 1000)
end
return {0, 0}
",
    )
});

/// KEYS: concurrency leases. ARGV: lease id, lease ms. Re-adds the lease if it lapsed meanwhile.
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// KEYS: token bucket. ARGV: tokens/min, actual − reserved (a refund when negative).
static RECORD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'l', 't')
local l, at = tonumber(v[1]), tonumber(v[2])
if not l or not at then l = tpm elseif now > at then l = l + (now - at) * tpm / 60000 end
if l > tpm then l = tpm end
l = l - delta
if l > tpm then l = tpm end
redis.call('HSET', KEYS[1], 'l', l, 't', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((tpm - l) * 60000 / tpm) + 1000)
return 1
",
    )
});

/// Renews a Redis concurrency lease until the returned sender is dropped, then removes it. If the task
/// cannot run (its runtime went away), the lease lapses after `concurrency_lease`.
fn spawn_lease(inner: Arc<Inner>, key: String, lease: String) -> oneshot::Sender<()> {
    let (done, mut dropped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let Some(redis) = &inner.redis else { return };
        loop {
            let period = inner.section.load().concurrency_lease / 3;
            tokio::select! {
                _ = &mut dropped => break,
                () = tokio::time::sleep(period) => {
                    let section = inner.section.load_full();
                    let mut invocation = RENEW.prepare_invoke();
                    invocation.key(&key).arg(&lease).arg(millis(section.concurrency_lease));
                    if let Ok(mut connection) = redis.connection(&section) {
                        let _ = redis.call::<i64>(&section, invocation.invoke_async(&mut connection)).await;
                    }
                }
            }
        }
        let section = inner.section.load_full();
        let mut release = redis::cmd("ZREM");
        release.arg(&key).arg(&lease);
        if let Ok(mut connection) = redis.connection(&section) {
            let _ = redis.call::<i64>(&section, release.query_async(&mut connection)).await;
        }
    });
    done
}

/// The shared counters' Redis, its health, and the switch to local counting.
struct RedisBackend {
    client: redis::Client,
    /// The connection (made lazily) and when it was made.
    connection: ArcSwapOption<(ConnectionManager, Instant)>,
    /// Set while Redis is unreachable: admissions count locally.
    fallback: AtomicBool,
    /// While in fallback, when the next probe may try Redis (ms since `epoch`).
    next_probe_ms: AtomicU64,
    epoch: Instant,
    errors: AtomicU64,
}

impl RedisBackend {
    fn new(client: redis::Client) -> Self {
        Self {
            client,
            connection: ArcSwapOption::empty(),
            fallback: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            errors: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// Whether this admission should ask Redis: always when healthy; in fallback, one caller per
    /// `redis_retry_interval` (the one that moves the next probe time on).
    fn should_try(&self, section: &LimitsSection) -> bool {
        if !self.fallback.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe_ms.load(Ordering::Acquire);
        let after = now.saturating_add(millis(section.redis_retry_interval));
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(next, after, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// The connection, made now (lazily connecting, in the background) if there is none.
    fn connection(&self, section: &LimitsSection) -> Result<ConnectionManager, RedisUnavailable> {
        if let Some(current) = self.connection.load().as_ref() {
            return Ok(current.0.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
            .set_response_timeout(Some(section.redis_timeout.max(Duration::from_millis(250))))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| self.failed(section, e.to_string()))?;
        self.connection.store(Some(Arc::new((manager.clone(), Instant::now()))));
        // Drive the lazy connection to the end even if the request that made it gives up first.
        let mut warm = manager.clone();
        tokio::spawn(async move {
            let ping = redis::cmd("PING");
            let _ = tokio::time::timeout(REDIS_CONNECT_TIMEOUT, ping.query_async::<String>(&mut warm)).await;
        });
        Ok(manager)
    }

    /// Runs `call` within `redis_timeout`; an error or timeout counts and switches to the fallback.
    async fn call<T>(
        &self,
        section: &LimitsSection,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisUnavailable> {
        match tokio::time::timeout(section.redis_timeout, call).await {
            Ok(Ok(value)) => {
                self.answered();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.failed(section, e.to_string())),
            Err(_) => Err(self.failed(
                section,
                format!("no answer within {}", humantime::format_duration(section.redis_timeout)),
            )),
        }
    }

    fn answered(&self) {
        if self.fallback.swap(false, Ordering::AcqRel) {
            tracing::info!("limits: Redis answers again; counting in Redis");
        }
    }

    fn failed(&self, section: &LimitsSection, error: String) -> RedisUnavailable {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.next_probe_ms.store(
            self.now_ms().saturating_add(millis(section.redis_retry_interval)),
            Ordering::Release,
        );
        if !self.fallback.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "limits: Redis unreachable; counting locally until it answers");
        }
        // A connection that had its chance and still fails is replaced on the next try (a blackholed
        // connection is never noticed by the manager itself); a younger one may still be connecting.
        let current = self.connection.load();
        if let Some(current) = current.as_ref()
            && current.1.elapsed() >= REDIS_CONNECT_TIMEOUT
        {
            self.connection.compare_and_swap(current, None);
        }
        RedisUnavailable(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_section_is_valid() {
        assert_eq!(LimitsSection::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn shares_never_reach_zero() {
        let section = LimitsSection {
            requests_per_second: Some(2.0),
            concurrent_requests: Some(3),
            tokens_per_minute: Some(10),
            ..LimitsSection::default()
        };
        let q = section.quota(0.01);
        assert!(
            q.rps > 0.0 && q.burst >= 1.0 && q.concurrent == 1 && q.tpm >= 1.0,
            "{q:?}"
        );
        let q = section.quota(0.5);
        assert_eq!((q.rps, q.burst, q.concurrent, q.tpm), (1.0, 1.0, 2, 5.0));
    }

    #[test]
    fn local_bucket_refills() {
        let mut b = Bucket::default();
        let t0 = Instant::now();
        assert_eq!(b.level(t0, 5.0, 1.0), 5.0);
        b.set(t0, 0.0);
        let later = t0 + Duration::from_millis(2500);
        assert!((b.level(later, 5.0, 1.0) - 2.5).abs() < 1e-9);
        assert_eq!(b.level(t0 + Duration::from_secs(60), 5.0, 1.0), 5.0);
    }

    #[test]
    fn text_tokens_counts_ascii_by_four() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("你好"), 2);
    }

    #[test]
    fn trim_float_reads_well() {
        assert_eq!(trim_float(2.0), "2");
        assert_eq!(trim_float(0.5), "0.5");
        assert_eq!(trim_float(0.125), "0.125");
    }
}
