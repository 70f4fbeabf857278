//! Limits: body size, the `max_tokens` cap, per-subject requests/s, concurrent requests and tokens per
//! minute — counted in Redis so every gateway replica shares them, with a bounded local fallback — and the
//! global bound on requests in flight.
//!
//! Its parts: [`LimitsSection`] and the request checks (`section`), [`Refusal`]s (`refusal`), what an
//! admitted request holds (`admission`), this replica's counters (`local`) and the shared ones in Redis
//! (`shared`); [`Limiter`] here ties them together.
//!
//! # Wiring
//!
//! ```text
//! config:   GatewayConfig { #[serde(default)] limits: limits::LimitsSection, .. }
//!           problems.extend(self.limits.problems());          // r1_config::Validate; keys start `limits.`
//! startup:  Limiter::new(config.limits.clone(), redis.clone())  // server::build; connects lazily
//! reload:   limiter.reconfigure(new.limits.clone());          // keeps counters, leases and the connection
//! metrics:  metrics::LimiterCollector reads limiter.stats() at every scrape → r1_limit_refusals_total{kind},
//!           r1_limit_redis_errors_total, r1_limit_fallback_admissions_total, r1_limit_fallback_active,
//!           r1_in_flight
//! request, in order (admit.rs):
//!   1. first thing, before auth:   ctx.policy.in_flight = limiter.try_enter()   // 503 + Retry-After; never queues
//!      right after auth:           ctx.policy.hold = limiter.hold(subject, tier) // 429: at most
//!                                      concurrent_requests of a subject here, slow bodies included
//!   2. reading the body (at most limits.body_timeout in all):           at most limits.body_limit() bytes             // 413, no upstream call
//!   3. after auth and parsing:     limits.check_max_tokens(&request)?            // 400, param max_tokens
//!                                  (hygiene::Hygiene::check runs here too)
//!   4. before cache and route:     ctx.policy.admission = limiter.admit_tier(subject, tier,
//!                                      limits.estimated_tokens(&request))      // 429 + Retry-After
//!   5. when usage is known (the edge's JSON body or last stream chunk, the hand-off's result; 0 for
//!      a cache hit):               ctx.policy.record_usage(usage.total_tokens)
//!      an admission dropped without `record_usage` keeps its reservation (usage unknown = as reserved).
//!   6. dropping `Ctx` drops the Admission (frees its concurrency slot) and the in-flight guard.
//! ```
//!
//! `limits` above is `limiter.section()`; `subject` is the JWT subject (or the tenant the gateway uses for
//! unauthenticated requests). A cache hit still passes step 4: limits count requests, not generations.

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
use r1_queue::redis_conn::{RedisClient, RedisConnection, Timeouts};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::error::{GatewayError, Source};

/// The longest `Retry-After` ever sent, in seconds.
pub const MAX_RETRY_AFTER: u64 = 3600;
/// How long a new Redis connection may take before it is thrown away and a later probe makes another.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Seconds of `Retry-After` for a concurrency refusal (when a slot frees is unknown).
const CONCURRENCY_RETRY_AFTER: u64 = 1;

mod admission;
mod local;
mod refusal;
mod section;
mod shared;

use admission::Holder;
pub use admission::{Admission, InFlightGuard};
use local::LocalSubject;
pub use refusal::{RedisUnavailable, Refusal, RefusalKind};
use refusal::{concurrency_refusal, rate_refusal, tokens_refusal};
use section::Quota;
pub use section::{LimitsSection, TierLimits};
use shared::{ADMIT, Keys, RECORD, RedisBackend, spawn_lease};
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

/// One of a subject's places in this replica ([`Limiter::hold`]), given back when dropped.
#[derive(Debug)]
pub struct SubjectHold {
    held: Option<(Arc<Inner>, Arc<str>)>,
}

impl Drop for SubjectHold {
    fn drop(&mut self) {
        let Some((inner, subject)) = self.held.take() else {
            return;
        };
        let mut holds = inner.holds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = holds.get_mut(&subject) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                holds.remove(&subject);
            }
        }
    }
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
    /// Requests of each subject in this replica from authentication on ([`Limiter::hold`]); a subject
    /// leaves the map when its last one ends, so it holds at most `max_in_flight` entries.
    holds: Mutex<std::collections::HashMap<Arc<str>, u32>>,
    refusals: [AtomicU64; 4],
    fallback_admissions: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("limits::Inner").finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter for `section`, sharing its counts through `redis` (one server or a cluster) when given.
    /// Connects lazily (or through [`Limiter::connect`]): an unreachable Redis is not an error here.
    pub fn new(section: LimitsSection, redis: Option<RedisClient>) -> Self {
        let redis = redis.map(RedisBackend::new);
        let local = moka::sync::Cache::builder()
            .max_capacity(section.local_max_subjects)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_idle(Duration::from_secs(3600))
            .build();
        Self {
            inner: Arc::new(Inner {
                section: ArcSwap::from_pointee(section),
                redis,
                local,
                in_flight: AtomicUsize::new(0),
                holds: Mutex::default(),
                refusals: Default::default(),
                fallback_admissions: AtomicU64::new(0),
            }),
        }
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
            Ok(Err(e)) => Err(redis.failed(&section, redis.client.explain(&e))),
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

    /// Holds one of `subject`'s `concurrent_requests` places in this replica from authentication on —
    /// before its body is read — or refuses at once with [`RefusalKind::Concurrency`] (429). Slow bodies
    /// of one subject therefore take at most that many of the `max_in_flight` places, and never starve
    /// the others. Counted in this process only, with no Redis call; the admission later counts the
    /// subject across replicas as before. Nothing is held when the subject's tier sets no concurrency
    /// limit. Given back when the hold drops.
    pub fn hold(&self, subject: &str, tier: Option<&str>) -> Result<SubjectHold, Refusal> {
        let section = self.inner.section.load();
        let Some(limit) = section.for_tier(tier).concurrent_requests else {
            return Ok(SubjectHold { held: None });
        };
        let subject: Arc<str> = Arc::from(subject);
        let mut holds = self.inner.holds.lock().unwrap_or_else(PoisonError::into_inner);
        let count = holds.entry(subject.clone()).or_insert(0);
        if *count >= limit {
            drop(holds);
            let quota = section.for_tier(tier).quota(1.0);
            return Err(self.refused(concurrency_refusal(&quota)));
        }
        *count += 1;
        Ok(SubjectHold {
            held: Some((self.inner.clone(), subject)),
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::local::Bucket;
    use super::refusal::trim_float;
    use super::section::text_tokens;
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
