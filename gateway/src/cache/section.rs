//! `[cache]`: the result cache's settings, checked with `cache.`-prefixed key paths.

use std::collections::BTreeMap;
use std::time::Duration;

use r1_config::Validate;
use serde::{Deserialize, Deserializer};

/// The bounds every TTL (`ttl`, `model_ttl.*`) must lie within.
pub const TTL_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600);
/// The bounds of `redis_timeout`: a cache that waits longer than this costs more than it saves.
pub const REDIS_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(1);
/// The longest `wait` accepted (R1 may think for minutes; longer than this, go upstream).
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The bounds of `max_entry_bytes`.
pub const ENTRY_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=64 * 1024 * 1024;
/// The bounds of `max_entries`.
pub const ENTRIES_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000_000;

/// `[cache]`: which answers are kept and served again, and for how long.
///
/// Only deterministic requests (`temperature` exactly 0) or ones opted in (the `opt_in_header` with
/// value `on`, or a model in `always_models`) are cached; `opt_in_header: off` opts any request out;
/// a request asking for several choices (`n > 1`) never is. Entries live in Redis when `[redis]` is
/// configured (shared by every gateway replica), else in this process's memory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Serve repeated requests from the cache. Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long an answer is kept. Default `"10m"`; between 1 s and 7 days.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// TTLs that replace `ttl` for requests naming a model, e.g. `model_ttl = { "r1-edge" = "1h" }`.
    #[serde(default, deserialize_with = "durations")]
    pub model_ttl: BTreeMap<String, Duration>,
    /// The request header a client opts in with (`on`: cache this request although it is not
    /// deterministic) or out with (`off`: never answer it from the cache nor store it). Default
    /// `x-r1-cache`; other values are ignored.
    #[serde(default = "default_opt_in_header")]
    pub opt_in_header: String,
    /// Models whose requests are cached even when not deterministic (a rule-level opt-in, for models
    /// whose answers are as good as any other sample of them). Default none.
    #[serde(default)]
    pub always_models: Vec<String>,
    /// The most entries the in-memory store holds (used only without `[redis]`; read at start-up).
    /// Default `10000`.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// The largest answer stored, in bytes of its JSON; larger ones are not cached. Default `1048576`.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
    /// Every cache store call's limit; slower is a miss (or a skipped store), never an error to the
    /// client. Default `"100ms"`; between 1 ms and 1 s.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// How long identical concurrent requests wait for the one that is generating their answer, before
    /// they go upstream themselves. Default `"60s"`; at most 10 min; `"0s"` turns waiting off.
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait: Duration,
    /// How many requests may wait for one answer at once; the next ones go upstream themselves.
    /// Default `4096`; `0` turns waiting off.
    #[serde(default = "default_max_waiters")]
    pub max_waiters: usize,
}

fn default_true() -> bool {
    true
}
fn default_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_opt_in_header() -> String {
    "x-r1-cache".to_owned()
}
fn default_max_entries() -> u64 {
    10_000
}
fn default_max_entry_bytes() -> usize {
    1024 * 1024
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(100)
}
fn default_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_max_waiters() -> usize {
    4096
}

/// A map of human durations (`{ "r1-edge" = "1h" }`).
fn durations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, Duration>, D::Error> {
    let raw = BTreeMap::<String, humantime_serde::Serde<Duration>>::deserialize(deserializer)?;
    Ok(raw.into_iter().map(|(model, ttl)| (model, ttl.into_inner())).collect())
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: default_ttl(),
            model_ttl: BTreeMap::new(),
            opt_in_header: default_opt_in_header(),
            always_models: Vec::new(),
            max_entries: default_max_entries(),
            max_entry_bytes: default_max_entry_bytes(),
            redis_timeout: default_redis_timeout(),
            wait: default_wait(),
            max_waiters: default_max_waiters(),
        }
    }
}

impl CacheSection {
    /// The TTL of answers to requests for `model`: its `model_ttl`, else `ttl`.
    pub fn ttl_for(&self, model: &str) -> Duration {
        self.model_ttl.get(model).copied().unwrap_or(self.ttl)
    }
}

fn human(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

impl Validate for CacheSection {
    /// Every problem of the table, each prefixed with its key (`cache.ttl: …`). No I/O.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let ttl_bounds = format!(
            "must be between {} and {}",
            human(TTL_RANGE.start()),
            human(TTL_RANGE.end())
        );
        if !TTL_RANGE.contains(&self.ttl) {
            problems.push(format!("cache.ttl: {} {ttl_bounds}", human(&self.ttl)));
        }
        for (model, ttl) in &self.model_ttl {
            if model.trim().is_empty() {
                problems.push("cache.model_ttl: a model name must not be empty".to_owned());
            } else if !TTL_RANGE.contains(ttl) {
                problems.push(format!("cache.model_ttl.{model}: {} {ttl_bounds}", human(ttl)));
            }
        }
        if http::HeaderName::from_bytes(self.opt_in_header.as_bytes()).is_err() {
            problems.push(format!(
                "cache.opt_in_header: `{}` is not a header name",
                self.opt_in_header
            ));
        }
        for (i, model) in self.always_models.iter().enumerate() {
            if model.trim().is_empty() {
                problems.push(format!("cache.always_models[{i}]: must not be empty"));
            }
        }
        if !ENTRIES_RANGE.contains(&self.max_entries) {
            problems.push(format!(
                "cache.max_entries: {} must be {}..={}",
                self.max_entries,
                ENTRIES_RANGE.start(),
                ENTRIES_RANGE.end()
            ));
        }
        if !ENTRY_BYTES_RANGE.contains(&self.max_entry_bytes) {
            problems.push(format!(
                "cache.max_entry_bytes: {} must be {}..={}",
                self.max_entry_bytes,
                ENTRY_BYTES_RANGE.start(),
                ENTRY_BYTES_RANGE.end()
            ));
        }
        if !REDIS_TIMEOUT_RANGE.contains(&self.redis_timeout) {
            problems.push(format!(
                "cache.redis_timeout: {} must be between {} and {} (a slow cache is a miss)",
                human(&self.redis_timeout),
                human(REDIS_TIMEOUT_RANGE.start()),
                human(REDIS_TIMEOUT_RANGE.end())
            ));
        }
        if self.wait > MAX_WAIT {
            problems.push(format!(
                "cache.wait: {} must be at most {}",
                human(&self.wait),
                human(&MAX_WAIT)
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_empty_table_is_the_default() {
        let section: CacheSection = toml::from_str("").unwrap();
        assert_eq!(section, CacheSection::default());
        assert!(section.problems().is_empty());
        assert_eq!(section.ttl, Duration::from_secs(600));
        assert_eq!(section.redis_timeout, Duration::from_millis(100));
        assert_eq!(section.opt_in_header, "x-r1-cache");
    }

    #[test]
    fn model_ttls_are_human_durations() {
        let section: CacheSection = toml::from_str("ttl = \"5m\"\nmodel_ttl = { \"r1-edge\" = \"1h\" }\n").unwrap();
        assert_eq!(section.ttl_for("r1-edge"), Duration::from_secs(3600));
        assert_eq!(section.ttl_for("deepseek-r1"), Duration::from_secs(300));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<CacheSection>("tll = \"5m\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tll"), "{err}");
    }

    #[test]
    fn every_problem_names_its_key() {
        let section: CacheSection = toml::from_str(
            r#"
            ttl = "0s"
            model_ttl = { "r1-edge" = "30d", "" = "1m" }
            opt_in_header = "x r1"
            always_models = ["", "ok"]
            max_entries = 0
            max_entry_bytes = 10
            redis_timeout = "2s"
            wait = "1h"
            "#,
        )
        .unwrap();
        let problems = section.problems();
        let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "cache.ttl",
                "cache.model_ttl",
                "cache.model_ttl.r1-edge",
                "cache.opt_in_header",
                "cache.always_models[0]",
                "cache.max_entries",
                "cache.max_entry_bytes",
                "cache.redis_timeout",
                "cache.wait",
            ],
            "{problems:#?}"
        );
    }
}
