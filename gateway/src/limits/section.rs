//! `[limits]`: the section, its validation, the checks on a request (body size, `max_tokens`) and its token estimate.

use super::*;

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
    /// Longest a request body may take to arrive, in all (not between reads): a slower one is a 408
    /// and its connection is closed. Default `30s`, within 1s..=10m.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
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

pub(super) fn default_tier_claim() -> String {
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
            body_timeout: default_body_timeout(),
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

pub(super) fn default_max_body_bytes() -> u64 {
    1 << 20
}
pub(super) fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_max_tokens_cap() -> u32 {
    32_768
}
pub(super) fn default_output_reserve() -> u32 {
    4096
}
pub(super) fn default_max_in_flight() -> usize {
    10_000
}
pub(super) fn default_overload_retry_after() -> Duration {
    Duration::from_secs(1)
}
pub(super) fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}
pub(super) fn default_redis_retry_interval() -> Duration {
    Duration::from_secs(1)
}
pub(super) fn default_concurrency_lease() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_local_fallback_share() -> f64 {
    1.0
}
pub(super) fn default_local_max_subjects() -> u64 {
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
            (Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.body_timeout),
            format!(
                "limits.body_timeout: {} must be within 1s..=10m",
                humantime::format_duration(self.body_timeout)
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
        let prompt = Self::prompt_tokens(request);
        let output = request
            .effective_max_tokens()
            .unwrap_or(self.output_reserve)
            .min(self.max_tokens_cap);
        let choices = u64::from(request.n.unwrap_or(1).clamp(1, 128));
        prompt.saturating_add(u64::from(output).saturating_mul(choices))
    }

    /// The prompt's part of [`Self::estimated_tokens`]: what a request costs before it generates.
    pub fn prompt_tokens(request: &ChatCompletionRequest) -> u64 {
        request
            .messages
            .iter()
            .map(|m| 4 + text_tokens(&m.text()) + m.reasoning().map_or(0, text_tokens))
            .sum()
    }

    /// The per-subject limits in force with `share` of each (1.0 normally; `local_fallback_share` in
    /// fallback). Zero means "no limit". Never rounds a set limit down to nothing.
    pub(super) fn quota(&self, share: f64) -> Quota {
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
pub(super) fn text_tokens(text: &str) -> u64 {
    let (ascii, other) = text.chars().fold(
        (0u64, 0u64),
        |(a, o), c| if c.is_ascii() { (a + 1, o) } else { (a, o + 1) },
    );
    ascii.div_ceil(4) + other
}

/// Per-subject limits in force; 0 = off.
#[derive(Debug, Clone, Copy)]
pub(super) struct Quota {
    pub(super) rps: f64,
    pub(super) burst: f64,
    pub(super) concurrent: u32,
    pub(super) tpm: f64,
}
