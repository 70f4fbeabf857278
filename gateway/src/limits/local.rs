//! This replica's own counters: token buckets and concurrency per subject (no Redis, or its fallback).

use super::*;

/// One subject's counters in this process.
#[derive(Debug, Default)]
pub(super) struct LocalSubject {
    pub(super) rate: Bucket,
    pub(super) tokens: Bucket,
    pub(super) in_flight: u32,
}

/// A token bucket; full until first used.
#[derive(Debug, Default)]
pub(super) struct Bucket {
    /// `(level, when)`; `None` = full.
    pub(super) state: Option<(f64, Instant)>,
}

impl Bucket {
    /// The level at `now` for a bucket of `capacity` refilled at `per_second`.
    pub(super) fn level(&self, now: Instant, capacity: f64, per_second: f64) -> f64 {
        match self.state {
            None => capacity,
            Some((level, at)) => (level + now.saturating_duration_since(at).as_secs_f64() * per_second).min(capacity),
        }
    }

    pub(super) fn set(&mut self, now: Instant, level: f64) {
        self.state = Some((level, now));
    }
}
