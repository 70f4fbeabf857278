//! The cache's counters and their bounded label values.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Why a store call failed (`r1_cache_errors_total{kind}`). Each failure is a miss or a skipped store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The store did not answer within `redis_timeout`.
    Timeout,
    /// Redis refused or was unreachable.
    Redis,
    /// An entry was there but could not be read back (written by something else); treated as missing.
    Decode,
    /// Not tried: the store failed repeatedly just before, and is given a short rest.
    Unavailable,
}

impl ErrorKind {
    /// Every value, in declaration order.
    pub const ALL: [Self; 4] = [Self::Timeout, Self::Redis, Self::Decode, Self::Unavailable];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Redis => "redis",
            Self::Decode => "decode",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Why an answer was not stored (`r1_cache_store_skips_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Not a finished answer: no choices, a choice without `finish_reason` `stop` or `length`, a
    /// stream without `[DONE]`.
    Incomplete,
    /// The upstream answered with an error (or something that is not a chat completion).
    Failed,
    /// Tool calls, which a replay could not reproduce faithfully.
    Unsupported,
    /// Larger than `max_entry_bytes`.
    TooLarge,
    /// The model server reported no token usage: a hit must answer with it, as a miss does.
    NoUsage,
}

impl SkipReason {
    /// Every value, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Incomplete,
        Self::Failed,
        Self::Unsupported,
        Self::TooLarge,
        Self::NoUsage,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Failed => "failed",
            Self::Unsupported => "unsupported",
            Self::TooLarge => "too_large",
            Self::NoUsage => "no_usage",
        }
    }
}

/// How a wait for an identical in-flight request ended (`r1_cache_singleflight_waits_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitOutcome {
    /// The leader's answer arrived: a hit.
    Hit,
    /// The leader failed or went away; this request goes upstream itself.
    Released,
    /// `wait` ran out; this request goes upstream itself.
    Timeout,
    /// `max_waiters` were already waiting; this request went upstream without waiting.
    Full,
}

impl WaitOutcome {
    /// Every value, in declaration order.
    pub const ALL: [Self; 4] = [Self::Hit, Self::Released, Self::Timeout, Self::Full];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Released => "released",
            Self::Timeout => "timeout",
            Self::Full => "full",
        }
    }
}

/// The cache's counters. Created unregistered; [`CacheMetrics::register`] adds them to a registry
/// (the gateway's, served on the admin listener). Read them in tests with `.get()`.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    /// `r1_cache_hits_total`: lookups answered from the cache (stored, or a leader's answer waited for).
    pub hits: IntCounter,
    /// `r1_cache_misses_total`: lookups that went upstream (a cold key's leader, released or timed-out
    /// waiters, requests beyond `max_waiters`, and every lookup while the store fails).
    pub misses: IntCounter,
    /// `r1_cache_stores_total`: answers written to the store.
    pub stores: IntCounter,
    /// `r1_cache_store_skips_total{reason}`: answers not stored, by [`SkipReason`].
    pub skips: IntCounterVec,
    /// `r1_cache_errors_total{kind}`: failed store calls, by [`ErrorKind`].
    pub errors: IntCounterVec,
    /// `r1_cache_singleflight_waits_total{outcome}`: waits for an identical in-flight request, by
    /// [`WaitOutcome`].
    pub waits: IntCounterVec,
}

impl CacheMetrics {
    /// Fresh counters, every label value present at 0.
    pub fn new() -> Result<Self, prometheus::Error> {
        let m = Self {
            hits: IntCounter::new("r1_cache_hits_total", "Cache lookups answered from the cache.")?,
            misses: IntCounter::new("r1_cache_misses_total", "Cache lookups that went upstream.")?,
            stores: IntCounter::new("r1_cache_stores_total", "Answers written to the cache.")?,
            skips: IntCounterVec::new(
                Opts::new("r1_cache_store_skips_total", "Answers not written to the cache."),
                &["reason"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("r1_cache_errors_total", "Failed cache store calls (each a miss)."),
                &["kind"],
            )?,
            waits: IntCounterVec::new(
                Opts::new(
                    "r1_cache_singleflight_waits_total",
                    "Waits for an identical in-flight request.",
                ),
                &["outcome"],
            )?,
        };
        for reason in SkipReason::ALL {
            m.skips.with_label_values(&[reason.as_str()]);
        }
        for kind in ErrorKind::ALL {
            m.errors.with_label_values(&[kind.as_str()]);
        }
        for outcome in WaitOutcome::ALL {
            m.waits.with_label_values(&[outcome.as_str()]);
        }
        Ok(m)
    }

    /// Adds every counter to `registry` (once per registry).
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.hits.clone()))?;
        registry.register(Box::new(self.misses.clone()))?;
        registry.register(Box::new(self.stores.clone()))?;
        registry.register(Box::new(self.skips.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.waits.clone()))?;
        Ok(())
    }

    /// Failed store calls of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors.with_label_values(&[kind.as_str()]).get()
    }

    /// Failed store calls of every kind.
    pub fn errors_total(&self) -> u64 {
        ErrorKind::ALL.iter().map(|&kind| self.errors_of(kind)).sum()
    }

    /// Answers not stored for one reason.
    pub fn skips_of(&self, reason: SkipReason) -> u64 {
        self.skips.with_label_values(&[reason.as_str()]).get()
    }

    /// Waits that ended one way.
    pub fn waits_of(&self, outcome: WaitOutcome) -> u64 {
        self.waits.with_label_values(&[outcome.as_str()]).get()
    }
}
