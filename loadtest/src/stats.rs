//! Tallies of finished requests, overall and per route, and nearest-rank percentiles over them.
//!
//! Latencies are kept as a plain vector of microseconds and sorted once at the end: a run holds at
//! most rate × duration samples, so exact percentiles cost less than an HDR histogram's setup.

use std::collections::BTreeMap;
use std::time::Duration;

/// Route label for responses without an `x-r1-route` header (and for requests that got no response).
pub const NO_ROUTE: &str = "none";
/// Label that absorbs route or reason values past the caps below, so a misbehaving server cannot
/// grow the report without bound.
pub const OTHER: &str = "other";
const MAX_ROUTES: usize = 16;
const MAX_REASONS: usize = 32;
const MAX_LABEL_LEN: usize = 64;

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Scheduled inside the measured phase (not warm-up).
    pub measured: bool,
    /// The `x-r1-route` header, if a response came.
    pub route: Option<String>,
    /// The `x-r1-route-reason` header, if a response came.
    pub reason: Option<String>,
    /// What happened.
    pub result: Result<Success, Failure>,
}

/// A 2xx response read to its end. Both times run from the request's scheduled send time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Success {
    /// To the end of the body (the last SSE event when streaming).
    pub latency: Duration,
    /// To the first SSE `data:` event carrying content; `None` when not streaming or none came.
    pub ttft: Option<Duration>,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A response with a status outside 2xx.
    Status(u16),
    /// The connection could not be made.
    Connect,
    /// The per-request timeout fired (before the headers or while reading the body).
    Timeout,
    /// Anything else: a reset connection, a broken body, an oversized SSE line.
    Other,
}

impl Failure {
    /// The error key in the report: `4xx`, `5xx`, … for statuses, `connect`, `timeout`, `other` for kinds.
    pub fn key(self) -> String {
        match self {
            Self::Status(status) => format!("{}xx", status / 100),
            Self::Connect => "connect".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Other => "other".to_owned(),
        }
    }
}

/// Counts and samples for one slice of the run (all requests, or one route).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests that went out.
    pub sent: u64,
    /// 2xx responses read to the end.
    pub ok: u64,
    /// Non-2xx responses by status class (`4xx`, `5xx`, …).
    pub by_status: BTreeMap<String, u64>,
    /// Failures without a usable response by kind (`connect`, `timeout`, `other`).
    pub by_kind: BTreeMap<String, u64>,
    /// Latencies of ok requests, in microseconds.
    pub latency_us: Vec<u64>,
    /// Times to first token of ok streamed requests, in microseconds.
    pub ttft_us: Vec<u64>,
    /// `x-r1-route-reason` values seen.
    pub reasons: BTreeMap<String, u64>,
}

impl Tally {
    /// Requests that went out but did not succeed.
    pub fn failed(&self) -> u64 {
        self.sent - self.ok
    }

    fn add(&mut self, outcome: &Outcome) {
        self.sent += 1;
        match outcome.result {
            Ok(success) => {
                self.ok += 1;
                self.latency_us.push(micros(success.latency));
                if let Some(ttft) = success.ttft {
                    self.ttft_us.push(micros(ttft));
                }
            }
            Err(failure @ Failure::Status(_)) => *self.by_status.entry(failure.key()).or_default() += 1,
            Err(failure) => *self.by_kind.entry(failure.key()).or_default() += 1,
        }
        if let Some(reason) = &outcome.reason {
            let key = bounded_key(&self.reasons, reason, MAX_REASONS);
            *self.reasons.entry(key).or_default() += 1;
        }
    }
}

/// Everything measured in a run.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// All measured requests.
    pub overall: Tally,
    /// Measured requests by `x-r1-route` ([`NO_ROUTE`] when absent).
    pub routes: BTreeMap<String, Tally>,
    /// Measured requests not sent because `max_in_flight` were out.
    pub dropped: u64,
    /// Warm-up requests finished (sent, not reported).
    pub warmup_done: u64,
}

impl Recorder {
    /// Adds a finished request.
    pub fn record(&mut self, outcome: &Outcome) {
        if !outcome.measured {
            self.warmup_done += 1;
            return;
        }
        self.overall.add(outcome);
        let route = outcome.route.as_deref().unwrap_or(NO_ROUTE);
        let key = bounded_key(&self.routes, route, MAX_ROUTES);
        self.routes.entry(key).or_default().add(outcome);
    }

    /// Counts a scheduled request that was not sent.
    pub fn drop_one(&mut self, measured: bool) {
        if measured {
            self.dropped += 1;
        }
    }
}

/// `value` itself if already present or there is room, else [`OTHER`]; long values are cut.
fn bounded_key<V>(map: &BTreeMap<String, V>, value: &str, cap: usize) -> String {
    let value: String = value.chars().take(MAX_LABEL_LEN).collect();
    if map.contains_key(&value) || map.len() < cap - 1 {
        value
    } else {
        OTHER.to_owned()
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The `p`-th percentile (0–100) of sorted samples by nearest rank: the smallest sample with at
/// least `p`% of the samples at or below it. `None` for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // `p` is not exact in binary (99.9 × 1000 comes out a hair above 99 900 / 100), so shave a
    // millionth of a rank before rounding up; the percentiles we ask for never need finer ranks.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-6).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(route: Option<&str>, result: Result<Success, Failure>) -> Outcome {
        Outcome {
            measured: true,
            route: route.map(str::to_owned),
            reason: None,
            result,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 50.0), Some(500));
        assert_eq!(percentile(&samples, 99.0), Some(990));
        assert_eq!(percentile(&samples, 99.9), Some(999));
        assert_eq!(percentile(&samples, 100.0), Some(1000));
        assert_eq!(percentile(&samples, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn outcomes_split_by_route_and_failure() {
        let ok = Ok(Success {
            latency: Duration::from_millis(3),
            ttft: None,
        });
        let mut recorder = Recorder::default();
        recorder.record(&outcome(Some("edge"), ok));
        recorder.record(&outcome(Some("center"), Err(Failure::Status(503))));
        recorder.record(&outcome(None, Err(Failure::Connect)));
        recorder.record(&Outcome {
            measured: false,
            ..outcome(Some("edge"), ok)
        });
        recorder.drop_one(true);
        recorder.drop_one(false);

        assert_eq!(
            (recorder.overall.sent, recorder.overall.ok, recorder.overall.failed()),
            (3, 1, 2)
        );
        assert_eq!(recorder.overall.by_status["5xx"], 1);
        assert_eq!(recorder.overall.by_kind["connect"], 1);
        assert_eq!(recorder.overall.latency_us, vec![3000]);
        assert_eq!(recorder.routes["edge"].sent, 1);
        assert_eq!(recorder.routes["center"].by_status["5xx"], 1);
        assert_eq!(recorder.routes[NO_ROUTE].by_kind["connect"], 1);
        assert_eq!((recorder.dropped, recorder.warmup_done), (1, 1));
    }

    #[test]
    fn route_labels_are_capped() {
        let mut recorder = Recorder::default();
        for i in 0..100 {
            recorder.record(&outcome(Some(&format!("r{i}")), Err(Failure::Other)));
        }
        assert_eq!(recorder.routes.len(), MAX_ROUTES);
        assert_eq!(recorder.routes[OTHER].sent, 100 - (MAX_ROUTES as u64 - 1));
    }
}
