//! The per-request log (`--request-log FILE`): one JSON line per measured request, in schedule
//! order, with its scheduled send time on the wall clock, so a drill can line requests up with an
//! event outside the run (a process killed at a known time) that the generator knows nothing about.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::sse::StreamEnd;
use crate::stats::Outcome;

/// The `error` of a request the generator did not send (`max_in_flight` were out).
pub const DROPPED: &str = "dropped";

/// One line of the log: how one measured request went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the measured schedule, from 0.
    pub i: u64,
    /// Scheduled send time, ms from the start of the measured phase.
    pub at_ms: f64,
    /// Scheduled send time on the wall clock, ms since the Unix epoch.
    pub unix_ms: u64,
    /// From the scheduled send to the end (last byte, failure or timeout), ms; `None` if dropped.
    pub elapsed_ms: Option<f64>,
    /// `x-r1-route`, if a response came with one.
    pub route: Option<String>,
    /// `x-r1-route-reason`, if a response came with one.
    pub reason: Option<String>,
    /// HTTP status, if a response came.
    pub status: Option<u16>,
    /// Read to a clean end (a stream: `[DONE]`, no error event).
    pub ok: bool,
    /// The failure's key as in the report's errors (`5xx`, `connect`, `error_event`, …), or
    /// [`DROPPED`].
    pub error: Option<String>,
    /// How a streamed 2xx body ended.
    pub stream: Option<StreamEnd>,
    /// The connection broke while the body was read.
    pub reset: bool,
    /// Time to first token, ms from the scheduled send, for any stream that got one (a stream
    /// that failed later too: it shows the stream had started).
    pub ttft_ms: Option<f64>,
}

/// The entries of one run, written when it ends.
#[derive(Debug)]
pub struct RequestLog {
    measure_start: SystemTime,
    entries: Vec<Entry>,
}

impl RequestLog {
    /// An empty log for a run whose measured phase starts at `measure_start` on the wall clock.
    pub fn new(measure_start: SystemTime) -> Self {
        Self {
            measure_start,
            entries: Vec::new(),
        }
    }

    /// Adds a finished measured request.
    pub fn record(&mut self, outcome: &Outcome) {
        let mut entry = self.entry(outcome.index, outcome.due);
        entry.elapsed_ms = Some(ms(outcome.elapsed));
        entry.route.clone_from(&outcome.route);
        entry.reason.clone_from(&outcome.reason);
        entry.status = outcome.status;
        entry.ok = outcome.result.is_ok();
        entry.error = outcome.result.as_ref().err().map(|failure| failure.key());
        entry.stream = outcome.stream;
        entry.reset = outcome.reset;
        entry.ttft_ms = outcome.first_token.map(ms);
        self.entries.push(entry);
    }

    /// Adds a measured request that was not sent.
    pub fn dropped(&mut self, index: u64, due: Duration) {
        let mut entry = self.entry(index, due);
        entry.error = Some(DROPPED.to_owned());
        self.entries.push(entry);
    }

    /// The entries so far, in schedule order.
    pub fn entries(&mut self) -> &[Entry] {
        self.entries.sort_unstable_by_key(|e| e.i);
        &self.entries
    }

    /// Writes the entries as JSON lines, in schedule order.
    pub async fn write(mut self, path: &Path) -> anyhow::Result<()> {
        let mut text = String::new();
        for entry in self.entries() {
            text.push_str(&serde_json::to_string(entry)?);
            text.push('\n');
        }
        tokio::fs::write(path, text)
            .await
            .with_context(|| format!("writing the request log {}", path.display()))
    }

    fn entry(&self, i: u64, due: Duration) -> Entry {
        let unix = (self.measure_start + due)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Entry {
            i,
            at_ms: ms(due),
            unix_ms: u64::try_from(unix.as_millis()).unwrap_or(u64::MAX),
            elapsed_ms: None,
            route: None,
            reason: None,
            status: None,
            ok: false,
            error: None,
            stream: None,
            reset: false,
            ttft_ms: None,
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Failure;

    #[test]
    fn entries_carry_wall_time_route_status_and_stream_end() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut log = RequestLog::new(start);
        let outcome = Outcome {
            measured: true,
            index: 3,
            due: Duration::from_millis(1500),
            elapsed: Duration::from_millis(40),
            route: Some("edge".to_owned()),
            reason: Some("mode_off".to_owned()),
            status: Some(200),
            stream: Some(StreamEnd::ErrorEvent),
            reset: true,
            first_token: Some(Duration::from_millis(7)),
            result: Err(Failure::ErrorEvent),
        };
        log.record(&outcome);
        log.record(&Outcome {
            index: 1,
            route: Some("center".to_owned()),
            reason: Some("failover_unhealthy".to_owned()),
            stream: Some(StreamEnd::Done),
            reset: false,
            first_token: Some(Duration::from_millis(5)),
            result: Ok(()),
            ..outcome.clone()
        });
        log.dropped(2, Duration::from_millis(1000));

        let entries = log.entries().to_vec();
        assert_eq!(entries.iter().map(|e| e.i).collect::<Vec<_>>(), [1, 2, 3]);
        let (ok, dropped, failed) = (&entries[0], &entries[1], &entries[2]);
        assert!(ok.ok && ok.error.is_none());
        assert_eq!(ok.ttft_ms, Some(5.0));
        assert_eq!(dropped.error.as_deref(), Some(DROPPED));
        assert_eq!((dropped.elapsed_ms, dropped.status), (None, None));
        assert_eq!(failed.unix_ms, 1_700_000_001_500);
        assert_eq!((failed.at_ms, failed.elapsed_ms), (1500.0, Some(40.0)));
        assert_eq!(failed.error.as_deref(), Some("error_event"));
        assert_eq!(failed.ttft_ms, Some(7.0), "a failed stream that had started shows it");

        let line = serde_json::to_value(failed).unwrap();
        assert_eq!(line["stream"], "error_event");
        assert_eq!(line["reset"], true);
        assert_eq!(line["route"], "edge");
        assert_eq!(line["status"], 200);
    }
}
