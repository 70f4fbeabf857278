//! Tallies of finished requests, overall and per route, and nearest-rank percentiles over them.
//!
//! Latencies are kept as a plain vector of microseconds and sorted once at the end: a run holds at
//! most rate × duration samples, so exact percentiles cost less than an HDR histogram's setup.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::sse::StreamEnd;

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
    /// Position in its phase's schedule, from 0 (measured requests and warm-up ones counted apart).
    pub index: u64,
    /// When it was due, from the start of the measured phase (zero for warm-up requests).
    pub due: Duration,
    /// From the scheduled send to the end: the body's last byte, the failure, or the timeout.
    pub elapsed: Duration,
    /// The `x-r1-route` header, if a response came.
    pub route: Option<String>,
    /// The `x-r1-route-reason` header, if a response came.
    pub reason: Option<String>,
    /// The HTTP status, if a response came.
    pub status: Option<u16>,
    /// How a streamed 2xx body ended; `None` when not streaming or no 2xx response came.
    pub stream: Option<StreamEnd>,
    /// The connection broke while the body was read (reset, or closed before the body's end);
    /// the generator's own timeout is not counted here.
    pub reset: bool,
    /// From the scheduled send to the first SSE `data:` event carrying content, if one came (a
    /// stream that failed later has one too).
    pub first_token: Option<Duration>,
    /// `Ok` for a 2xx response read to its clean end (a stream: with `[DONE]` and no error event);
    /// its latency is `elapsed`.
    pub result: Result<(), Failure>,
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
    /// A 2xx stream that ended with an in-band error event (`data: {"error": …}`) and no `[DONE]`.
    ErrorEvent,
    /// A 2xx stream with an error event *and* `[DONE]`: a failure dressed up as a success.
    FakeDone,
    /// A 2xx stream whose body ended cleanly without `[DONE]` or an error event.
    Cut,
}

impl Failure {
    /// The error key in the report: `4xx`, `5xx`, … for statuses; `connect`, `timeout`, `other`,
    /// `error_event`, `fake_done`, `cut` for kinds.
    pub fn key(self) -> String {
        match self {
            Self::Status(status) => format!("{}xx", status / 100),
            Self::Connect => "connect".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Other => "other".to_owned(),
            Self::ErrorEvent => StreamEnd::ErrorEvent.as_str().to_owned(),
            Self::FakeDone => StreamEnd::FakeDone.as_str().to_owned(),
            Self::Cut => StreamEnd::Cut.as_str().to_owned(),
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
    /// Failures without a usable response by kind (`connect`, `timeout`, `other`, and for 2xx
    /// streams `error_event`, `fake_done`, `cut`).
    pub by_kind: BTreeMap<String, u64>,
    /// Responses by exact status (`200`, `502`, …).
    pub statuses: BTreeMap<u16, u64>,
    /// Streamed 2xx bodies by how they ended.
    pub streams: BTreeMap<StreamEnd, u64>,
    /// Streamed 2xx bodies whose connection broke (whatever markers they carried).
    pub stream_resets: u64,
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
        if let Some(status) = outcome.status {
            *self.statuses.entry(status).or_default() += 1;
        }
        if let Some(end) = outcome.stream {
            *self.streams.entry(end).or_default() += 1;
            self.stream_resets += u64::from(outcome.reset);
        }
        match outcome.result {
            Ok(()) => {
                self.ok += 1;
                self.latency_us.push(micros(outcome.elapsed));
                if let Some(ttft) = outcome.first_token {
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

    fn outcome(route: Option<&str>, result: Result<(), Failure>) -> Outcome {
        Outcome {
            measured: true,
            index: 0,
            due: Duration::ZERO,
            elapsed: Duration::from_millis(3),
            route: route.map(str::to_owned),
            reason: None,
            status: None,
            stream: None,
            reset: false,
            first_token: None,
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
        let ok = Ok(());
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
    fn streams_are_counted_by_end_with_statuses_and_resets() {
        let mut recorder = Recorder::default();
        let streamed = |route: &str, end: StreamEnd, reset: bool, result: Result<(), Failure>| Outcome {
            status: Some(200),
            stream: Some(end),
            reset,
            first_token: Some(Duration::from_millis(1)),
            ..outcome(Some(route), result)
        };
        let ok = Ok(());
        recorder.record(&streamed("edge", StreamEnd::Done, false, ok));
        recorder.record(&streamed("edge", StreamEnd::ErrorEvent, true, Err(Failure::ErrorEvent)));
        recorder.record(&streamed("edge", StreamEnd::Cut, true, Err(Failure::Other)));
        recorder.record(&streamed("center", StreamEnd::FakeDone, false, Err(Failure::FakeDone)));
        recorder.record(&Outcome {
            status: Some(502),
            ..outcome(Some("edge"), Err(Failure::Status(502)))
        });

        let edge = &recorder.routes["edge"];
        assert_eq!((edge.sent, edge.ok), (4, 1));
        assert_eq!(edge.statuses, BTreeMap::from([(200, 3), (502, 1)]));
        assert_eq!(
            edge.streams,
            BTreeMap::from([(StreamEnd::Done, 1), (StreamEnd::ErrorEvent, 1), (StreamEnd::Cut, 1)])
        );
        assert_eq!(edge.stream_resets, 2);
        assert_eq!(edge.by_kind["error_event"], 1);
        assert_eq!(recorder.routes["center"].by_kind["fake_done"], 1);
        assert_eq!(recorder.overall.streams[&StreamEnd::FakeDone], 1);
        assert_eq!(recorder.overall.statuses[&200], 4);
        // Only ok streams count in the time to first token.
        assert_eq!(recorder.overall.ttft_us, vec![1000]);
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
