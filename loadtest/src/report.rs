//! The report: a serde shape for `--json` and a human table for the terminal.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sse::StreamEnd;
use crate::stats::{Recorder, Tally, percentile};

/// The run's clock readings, from the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Requested rate, req/s.
    pub target_rate: f64,
    /// Measured requests the schedule produced (sent + dropped).
    pub scheduled: u64,
    /// From the start of the measured phase to the last send, plus one interval.
    pub send_window: Duration,
    /// From the start of the measured phase to the last response.
    pub total_window: Duration,
    /// The most the scheduler was ever late for a send.
    pub max_send_lag: Duration,
    /// Whether requests were streamed (TTFT measured).
    pub streaming: bool,
}

/// What a run measured. Warm-up requests are not in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Requested rate, req/s.
    pub target_rate: f64,
    /// Requests the schedule produced in the measured phase (`sent + dropped`).
    pub scheduled: u64,
    /// Requests that went out.
    pub sent: u64,
    /// Scheduled requests not sent because `max_in_flight` were already out.
    pub dropped: u64,
    /// 2xx responses read to the end.
    pub ok: u64,
    /// Sent requests that did not end ok.
    pub failed: u64,
    /// Failures by status class and by kind.
    pub errors: Errors,
    /// Responses by exact HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// How streamed 2xx bodies ended (`None` unless streaming).
    pub streams: Option<Streams>,
    /// Sends per second over the send window (equals `target_rate` when the generator kept up).
    pub achieved_rate: f64,
    /// Ok responses per second, from the start of the measured phase to the last response (or the
    /// end of the send window, if later).
    pub throughput: f64,
    /// Seconds from the start of the measured phase to the last send, plus one interval.
    pub duration_s: f64,
    /// The most the generator was ever late for a send, in ms (a large value means the latencies
    /// include the generator's own lag: give it more CPU or a lower rate).
    pub max_send_lag_ms: f64,
    /// Latency of ok requests, from the scheduled send to the end of the response.
    pub latency_ms: Option<Percentiles>,
    /// Time to first token of ok streamed requests, from the scheduled send.
    pub ttft_ms: Option<Percentiles>,
    /// The same by `x-r1-route` (`none` when absent or no response came).
    pub routes: BTreeMap<String, RouteReport>,
}

/// One route's slice of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteReport {
    /// This route's share of all sent requests, 0–1.
    pub share: f64,
    /// Requests answered with this route (or, for `none`, without a route).
    pub sent: u64,
    /// 2xx responses read to the end.
    pub ok: u64,
    /// Requests that did not end ok.
    pub failed: u64,
    /// Failures by status class and by kind.
    pub errors: Errors,
    /// Responses by exact HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// How streamed 2xx bodies ended (`None` unless streaming).
    pub streams: Option<Streams>,
    /// Latency of ok requests, from the scheduled send.
    pub latency_ms: Option<Percentiles>,
    /// Time to first token of ok streamed requests, from the scheduled send.
    pub ttft_ms: Option<Percentiles>,
    /// `x-r1-route-reason` values seen, with counts.
    pub reasons: BTreeMap<String, u64>,
}

/// How streamed 2xx bodies ended, by the markers they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streams {
    /// Ended with `data: [DONE]` and no error event (ok, unless the connection then broke).
    pub done: u64,
    /// Ended with an in-band error event (`data: {"error": …}`) and no `[DONE]`: a failure reported
    /// as DESIGN.md's reliability rules ask.
    pub error_event: u64,
    /// Carried an error event *and* `[DONE]`: a fake `[DONE]` after a failure (must be 0).
    pub fake_done: u64,
    /// Carried neither before the body ended (a reset, an end without `[DONE]`, or a timeout).
    pub cut: u64,
    /// Of all of these, bodies whose connection broke (reset, or closed before the body's end).
    pub reset: u64,
}

impl Streams {
    fn of(tally: &Tally) -> Self {
        let count = |end| tally.streams.get(&end).copied().unwrap_or(0);
        Self {
            done: count(StreamEnd::Done),
            error_event: count(StreamEnd::ErrorEvent),
            fake_done: count(StreamEnd::FakeDone),
            cut: count(StreamEnd::Cut),
            reset: tally.stream_resets,
        }
    }
}

/// Failures, two ways.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    /// Responses outside 2xx by class: `4xx`, `5xx`, ….
    pub by_status: BTreeMap<String, u64>,
    /// Requests with no usable response: `connect`, `timeout`, `other`; and 2xx streams that did
    /// not end with a clean `[DONE]`: `error_event`, `fake_done`, `cut`.
    pub by_kind: BTreeMap<String, u64>,
}

/// Percentiles of a set of samples, in milliseconds (nearest rank, exact).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of microsecond samples; `None` for none.
    pub fn of(samples: &[u64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let ms = |p: f64| percentile(&sorted, p).map_or(0.0, |us| us as f64 / 1000.0);
        (!sorted.is_empty()).then(|| Self {
            count: sorted.len() as u64,
            p50: ms(50.0),
            p90: ms(90.0),
            p99: ms(99.0),
            p99_9: ms(99.9),
            max: ms(100.0),
        })
    }
}

impl Errors {
    fn of(tally: &Tally) -> Self {
        Self {
            by_status: tally.by_status.clone(),
            by_kind: tally.by_kind.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        self.by_status.is_empty() && self.by_kind.is_empty()
    }
}

impl fmt::Display for Errors {
    /// `5xx 3, timeout 1`, or `-` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let parts: Vec<String> = self
            .by_status
            .iter()
            .chain(&self.by_kind)
            .map(|(key, count)| format!("{key} {count}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

impl Report {
    /// Builds the report from what the run recorded.
    pub fn new(recorder: &Recorder, timing: &Timing) -> Self {
        let overall = &recorder.overall;
        let ttft = |tally: &Tally| {
            if timing.streaming {
                Percentiles::of(&tally.ttft_us)
            } else {
                None
            }
        };
        let streams = |tally: &Tally| timing.streaming.then(|| Streams::of(tally));
        let routes = recorder
            .routes
            .iter()
            .map(|(route, tally)| {
                let report = RouteReport {
                    share: ratio(tally.sent, overall.sent),
                    sent: tally.sent,
                    ok: tally.ok,
                    failed: tally.failed(),
                    errors: Errors::of(tally),
                    statuses: tally.statuses.clone(),
                    streams: streams(tally),
                    latency_ms: Percentiles::of(&tally.latency_us),
                    ttft_ms: ttft(tally),
                    reasons: tally.reasons.clone(),
                };
                (route.clone(), report)
            })
            .collect();
        Self {
            target_rate: timing.target_rate,
            scheduled: timing.scheduled,
            sent: overall.sent,
            dropped: recorder.dropped,
            ok: overall.ok,
            failed: overall.failed(),
            errors: Errors::of(overall),
            statuses: overall.statuses.clone(),
            streams: streams(overall),
            achieved_rate: per_second(overall.sent, timing.send_window),
            throughput: per_second(overall.ok, timing.total_window.max(timing.send_window)),
            duration_s: timing.send_window.as_secs_f64(),
            max_send_lag_ms: timing.max_send_lag.as_secs_f64() * 1000.0,
            latency_ms: Percentiles::of(&overall.latency_us),
            ttft_ms: ttft(overall),
            routes,
        }
    }

    /// Whether any measured request failed or was dropped (what `--fail-on-error` checks).
    pub fn has_failures(&self) -> bool {
        self.failed > 0 || self.dropped > 0
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_table(&mut out);
        out
    }

    fn write_table(&self, out: &mut String) -> fmt::Result {
        writeln!(
            out,
            "r1-loadtest: {} scheduled at {:.1} req/s over {:.2} s (open loop; times from the scheduled send)",
            self.scheduled, self.target_rate, self.duration_s
        )?;
        writeln!(
            out,
            "  sent {}  ok {}  failed {}  dropped {}  achieved {:.1} req/s  throughput {:.1} ok/s  max send lag {:.1} ms",
            self.sent, self.ok, self.failed, self.dropped, self.achieved_rate, self.throughput, self.max_send_lag_ms
        )?;
        writeln!(out, "  errors: {}  statuses: {}", self.errors, counts(&self.statuses))?;

        let all = ("all", 1.0, self.sent, self.ok, self.failed, &self.latency_ms);
        let routes = self
            .routes
            .iter()
            .map(|(name, r)| (name.as_str(), r.share, r.sent, r.ok, r.failed, &r.latency_ms));
        writeln!(out, "\nlatency ms")?;
        write_rows(out, std::iter::once(all).chain(routes))?;

        if self.ttft_ms.is_some() {
            let all = ("all", 1.0, self.sent, self.ok, self.failed, &self.ttft_ms);
            let routes = self
                .routes
                .iter()
                .map(|(name, r)| (name.as_str(), r.share, r.sent, r.ok, r.failed, &r.ttft_ms));
            writeln!(out, "\ntime to first token ms")?;
            write_rows(out, std::iter::once(all).chain(routes))?;
        }

        if let Some(all) = &self.streams {
            writeln!(out, "\nstreams (how 2xx streamed bodies ended)")?;
            writeln!(
                out,
                "  {:<8} {:>7} {:>11} {:>9} {:>7} {:>7}",
                "route", "done", "error_event", "fake_done", "cut", "reset"
            )?;
            let routes = self
                .routes
                .iter()
                .filter_map(|(name, r)| r.streams.as_ref().map(|s| (name.as_str(), s)));
            for (name, s) in std::iter::once(("all", all)).chain(routes) {
                writeln!(
                    out,
                    "  {name:<8} {:>7} {:>11} {:>9} {:>7} {:>7}",
                    s.done, s.error_event, s.fake_done, s.cut, s.reset
                )?;
            }
        }

        writeln!(out, "\nby route")?;
        for (name, route) in &self.routes {
            writeln!(
                out,
                "  {name:<8} errors: {}  statuses: {}  reasons: {}",
                route.errors,
                counts(&route.statuses),
                counts(&route.reasons)
            )?;
        }
        Ok(())
    }
}

/// `key n, key n`, or `-` for none.
fn counts<K: fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    let parts: Vec<String> = map.iter().map(|(key, n)| format!("{key} {n}")).collect();
    parts.join(", ")
}

type Row<'a> = (&'a str, f64, u64, u64, u64, &'a Option<Percentiles>);

fn write_rows<'a>(out: &mut String, rows: impl Iterator<Item = Row<'a>>) -> fmt::Result {
    writeln!(
        out,
        "  {:<8} {:>6} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "route", "share", "sent", "ok", "failed", "p50", "p90", "p99", "p99.9", "max"
    )?;
    for (name, share, sent, ok, failed, percentiles) in rows {
        write!(out, "  {name:<8} {:>5.1}% {sent:>7} {ok:>7} {failed:>7}", share * 100.0)?;
        match percentiles {
            Some(p) => {
                writeln!(
                    out,
                    " {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    p.p50, p.p90, p.p99, p.p99_9, p.max
                )?;
            }
            None => writeln!(out, " {:>9} {:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-", "-")?,
        }
    }
    Ok(())
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn per_second(count: u64, window: Duration) -> f64 {
    let seconds = window.as_secs_f64();
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Failure, Outcome};

    #[test]
    fn streams_are_absent_unless_streaming() {
        let timing = Timing {
            target_rate: 1.0,
            scheduled: 0,
            send_window: Duration::from_secs(1),
            total_window: Duration::from_secs(1),
            max_send_lag: Duration::ZERO,
            streaming: false,
        };
        let report = Report::new(&Recorder::default(), &timing);
        assert!(report.streams.is_none());
        assert!(!report.table().contains("fake_done"));
    }

    #[test]
    fn report_has_routes_shares_and_json_keys() {
        let mut recorder = Recorder::default();
        for i in 0..10u64 {
            let route = if i < 7 { "edge" } else { "center" };
            let (status, stream, result) = match i {
                9 => (500, None, Err(Failure::Status(500))),
                8 => (200, Some(StreamEnd::ErrorEvent), Err(Failure::ErrorEvent)),
                _ => (200, Some(StreamEnd::Done), Ok(())),
            };
            recorder.record(&Outcome {
                measured: true,
                index: i,
                due: Duration::from_millis(100 * i),
                elapsed: Duration::from_millis(i + 1),
                route: Some(route.to_owned()),
                reason: Some("weighted".to_owned()),
                status: Some(status),
                stream,
                reset: i == 8,
                first_token: Some(Duration::from_millis(1)),
                result,
            });
        }
        recorder.drop_one(true);
        let timing = Timing {
            target_rate: 10.0,
            scheduled: 11,
            send_window: Duration::from_secs(1),
            total_window: Duration::from_secs(2),
            max_send_lag: Duration::ZERO,
            streaming: true,
        };
        let report = Report::new(&recorder, &timing);
        assert_eq!((report.sent, report.ok, report.failed, report.dropped), (10, 8, 2, 1));
        assert!(report.has_failures());
        assert!((report.routes["edge"].share - 0.7).abs() < 1e-9);
        assert_eq!(report.routes["center"].errors.by_status["5xx"], 1);
        assert_eq!(report.routes["center"].errors.by_kind["error_event"], 1);
        assert_eq!(report.statuses, BTreeMap::from([(200, 9), (500, 1)]));
        let center = report.routes["center"].streams.unwrap();
        assert_eq!(
            (center.done, center.error_event, center.fake_done, center.reset),
            (1, 1, 0, 1)
        );
        assert_eq!(report.streams.unwrap().done, 8);
        assert_eq!(report.latency_ms.unwrap().max, 8.0);
        assert!((report.throughput - 4.0).abs() < 1e-9);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["latency_ms"]["p99.9"], 8.0);
        assert_eq!(json["routes"]["edge"]["reasons"]["weighted"], 7);
        assert_eq!(json["statuses"]["500"], 1);
        assert_eq!(json["streams"]["error_event"], 1);
        assert_eq!(json["routes"]["center"]["streams"]["fake_done"], 0);
        let table = report.table();
        for needle in [
            "edge",
            "center",
            "70.0%",
            "5xx 1",
            "time to first token",
            "weighted 7",
            "statuses: 200 9, 500 1",
            "error_event",
            "fake_done",
        ] {
            assert!(table.contains(needle), "{needle} missing in\n{table}");
        }
    }
}
