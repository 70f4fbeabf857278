//! The gateway's Prometheus metrics: names and label values in one place, one registry per gateway.
//! Labels come from bounded sets only (route, reason, status class, phase) — never a model string,
//! user or request id.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::limits::{Limiter, RefusalKind};

/// Every metric the gateway exports (on the admin listener only).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Finished requests by route and HTTP status.
    pub requests: IntCounterVec,
    /// Request latency (first byte in to last byte out) by route.
    pub latency: HistogramVec,
    /// Time from receiving the request to the first body byte from the upstream, by route.
    pub time_to_first_token: HistogramVec,
    /// Route decisions by route and reason.
    pub decisions: IntCounterVec,
    /// Shadow-mode decisions (what enforce would have done) by route and reason.
    pub shadow_decisions: IntCounterVec,
    /// Requests no pool could serve (400), by what was missing (`r1_proto::Unmet`).
    pub unservable: IntCounterVec,
    /// Upstream failures by route and phase (`connect`, `proxy`, `first_token`, `idle`, `total`; `busy`: a
    /// member answered 429/503 and was skipped for its `Retry-After`).
    pub upstream_errors: IntCounterVec,
    /// Requests refused by the gateway itself, by error kind.
    pub rejected: IntCounterVec,
    /// In-flight upstream requests by pool.
    pub in_flight: IntGaugeVec,
    /// Configuration reloads applied.
    pub reloads: IntCounter,
    /// Configuration reloads refused (the old configuration stays).
    pub reload_failures: IntCounter,
    /// TLS certificate reloads by outcome (`applied`, `refused`).
    pub tls_reloads: IntCounterVec,
    /// Tasks the hand-off did not take, by reason (`timeout`, `full`, `error`, `no_center`: no r1-center
    /// node in the group).
    pub handoff_produce_errors: IntCounterVec,
    /// Center tasks by model version.
    pub center_versions: IntCounterVec,
    /// Requests refused by authentication, by reason.
    pub auth_failures: IntCounterVec,
}

impl Metrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let buckets = prometheus::exponential_buckets(0.0005, 2.0, 20)?;
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new("r1_requests_total", "Finished requests."),
                &["route", "status"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new("r1_request_duration_seconds", "Request latency.").buckets(buckets.clone()),
                &["route"],
            )?,
            time_to_first_token: HistogramVec::new(
                HistogramOpts::new(
                    "r1_time_to_first_token_seconds",
                    "Request in to first upstream body byte.",
                )
                .buckets(buckets),
                &["route"],
            )?,
            decisions: IntCounterVec::new(
                Opts::new("r1_route_decisions_total", "Route decisions."),
                &["route", "reason"],
            )?,
            shadow_decisions: IntCounterVec::new(
                Opts::new(
                    "r1_route_shadow_decisions_total",
                    "Shadow-mode decisions (not applied).",
                ),
                &["route", "reason"],
            )?,
            unservable: IntCounterVec::new(
                Opts::new(
                    "r1_route_unservable_total",
                    "Requests refused because no pool serves what they ask, by what was missing.",
                ),
                &["unmet"],
            )?,
            upstream_errors: IntCounterVec::new(
                Opts::new("r1_upstream_errors_total", "Upstream failures by phase."),
                &["route", "phase"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new("r1_rejected_requests_total", "Requests refused by the gateway."),
                &["kind"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new("r1_pool_in_flight", "In-flight upstream requests."),
                &["pool"],
            )?,
            reloads: IntCounter::new("r1_config_reloads_total", "Configuration reloads applied.")?,
            reload_failures: IntCounter::new("r1_config_reload_failures_total", "Configuration reloads refused.")?,
            tls_reloads: IntCounterVec::new(
                Opts::new("r1_tls_certificate_reloads_total", "TLS certificate reloads."),
                &["outcome"],
            )?,
            handoff_produce_errors: IntCounterVec::new(
                Opts::new("r1_kafka_produce_errors_total", "Tasks the hand-off did not take."),
                &["reason"],
            )?,
            center_versions: IntCounterVec::new(
                Opts::new("r1_center_version_tasks_total", "Center tasks by model version."),
                &["version"],
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new("r1_auth_failures_total", "Requests refused by authentication."),
                &["reason"],
            )?,
            registry: Registry::new(),
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.latency.clone()))?;
        m.registry.register(Box::new(m.time_to_first_token.clone()))?;
        m.registry.register(Box::new(m.decisions.clone()))?;
        m.registry.register(Box::new(m.shadow_decisions.clone()))?;
        m.registry.register(Box::new(m.unservable.clone()))?;
        m.registry.register(Box::new(m.upstream_errors.clone()))?;
        m.registry.register(Box::new(m.rejected.clone()))?;
        m.registry.register(Box::new(m.in_flight.clone()))?;
        m.registry.register(Box::new(m.reloads.clone()))?;
        m.registry.register(Box::new(m.reload_failures.clone()))?;
        m.registry.register(Box::new(m.tls_reloads.clone()))?;
        m.registry.register(Box::new(m.handoff_produce_errors.clone()))?;
        m.registry.register(Box::new(m.center_versions.clone()))?;
        m.registry.register(Box::new(m.auth_failures.clone()))?;
        Ok(m)
    }

    /// The registry (other families, e.g. the cache's, register here).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding our own well-formed families cannot fail; an empty scrape would show it if it did.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The limiter's counters, read from it at every scrape:
/// `r1_limit_refusals_total{kind}` (`rate`, `concurrency`, `tokens`, `overload`),
/// `r1_limit_redis_errors_total`, `r1_limit_fallback_admissions_total`, `r1_limit_fallback_active`
/// (1 while this replica counts locally because Redis is unreachable) and `r1_in_flight` (requests
/// holding a place under `limits.max_in_flight`).
#[derive(Debug)]
pub struct LimiterCollector {
    limiter: Limiter,
    families: Mutex<LimitFamilies>,
    descs: Vec<Desc>,
}

#[derive(Debug)]
struct LimitFamilies {
    refusals: IntCounterVec,
    redis_errors: IntCounter,
    fallback_admissions: IntCounter,
    fallback_active: IntGauge,
    in_flight: IntGauge,
}

impl LimiterCollector {
    /// The families of `limiter`.
    pub fn new(limiter: Limiter) -> Result<Self, prometheus::Error> {
        let families = LimitFamilies {
            refusals: IntCounterVec::new(
                Opts::new("r1_limit_refusals_total", "Requests refused by a limit, by kind."),
                &["kind"],
            )?,
            redis_errors: IntCounter::new("r1_limit_redis_errors_total", "Limiter calls to Redis that failed.")?,
            fallback_admissions: IntCounter::new(
                "r1_limit_fallback_admissions_total",
                "Admissions decided locally because Redis was unreachable.",
            )?,
            fallback_active: IntGauge::new(
                "r1_limit_fallback_active",
                "1 while this replica counts limits locally because Redis is unreachable.",
            )?,
            in_flight: IntGauge::new("r1_in_flight", "Requests holding a place under limits.max_in_flight.")?,
        };
        let descs = [
            families.refusals.desc(),
            families.redis_errors.desc(),
            families.fallback_admissions.desc(),
            families.fallback_active.desc(),
            families.in_flight.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(Self {
            limiter,
            families: Mutex::new(families),
            descs,
        })
    }
}

impl Collector for LimiterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = self.limiter.stats();
        let f = self.families.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The limiter's own counters are the truth: copied as they are.
        f.refusals.reset();
        for kind in RefusalKind::ALL {
            f.refusals
                .with_label_values(&[kind.as_str()])
                .inc_by(stats.refusals(kind));
        }
        f.redis_errors.reset();
        f.redis_errors.inc_by(stats.redis_errors);
        f.fallback_admissions.reset();
        f.fallback_admissions.inc_by(stats.fallback_admissions);
        f.fallback_active.set(i64::from(stats.fallback_active));
        f.in_flight.set(i64::try_from(stats.in_flight).unwrap_or(i64::MAX));
        let mut out = f.refusals.collect();
        out.extend(f.redis_errors.collect());
        out.extend(f.fallback_admissions.collect());
        out.extend(f.fallback_active.collect());
        out.extend(f.in_flight.collect());
        out
    }
}
