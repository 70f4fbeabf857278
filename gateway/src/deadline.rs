//! The phases of an upstream exchange and their timeouts: connect, time to first token, inter-token
//! idle, total (`[timeouts]`).
//!
//! Connect is the socket's own timeout. The other three are kept by [`PhaseClock`], fed with every
//! piece of a streamed answer: an SSE `data:` event is progress, a keep-alive comment (`: …`) is
//! not. A reasoning model that thinks for minutes keeps the connection open with comments — r1-edge
//! sends one every `server.sse_keepalive` — and the clock still sees that no token came.
//!
//! On the HTTP proxy path the clock can only look when bytes arrive, so its precision is the
//! upstream's keep-alive interval; an upstream that sends nothing at all is cut by the socket's read
//! timeout, `max(first_token, idle)`.

use std::time::{Duration, Instant};

use r1_proto::sse::DataLines;

use crate::config::TimeoutsSection;

/// A timeout that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No token within `first_token` of sending the request.
    FirstToken,
    /// No token within `idle` of the previous one.
    Idle,
    /// The whole exchange took longer than `total`.
    Total,
}

impl Phase {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstToken => "first_token",
            Self::Idle => "idle",
            Self::Total => "total",
        }
    }

    /// The sentence a client reads.
    pub fn message(self, limits: &TimeoutsSection) -> String {
        let (what, limit) = match self {
            Self::FirstToken => ("no token arrived within", limits.first_token),
            Self::Idle => ("the stream was silent for longer than", limits.idle),
            Self::Total => ("the answer took longer than", limits.total),
        };
        format!(
            "the upstream model timed out: {what} {}",
            humantime::format_duration(limit)
        )
    }
}

/// Tracks one exchange's phases.
#[derive(Debug, Clone)]
pub struct PhaseClock {
    first_token: Duration,
    idle: Duration,
    total: Duration,
    started: Instant,
    sent: Instant,
    last_progress: Option<Instant>,
    /// Which pieces of a stream carry `data:` lines.
    data_lines: DataLines,
}

impl PhaseClock {
    /// A clock for a request that arrived at `started`.
    pub fn new(limits: &TimeoutsSection, started: Instant) -> Self {
        Self {
            first_token: limits.first_token,
            idle: limits.idle,
            total: limits.total,
            started,
            sent: started,
            last_progress: None,
            data_lines: DataLines::default(),
        }
    }

    /// The request was (re)sent upstream at `now`: the first-token phase starts again.
    pub fn sent(&mut self, now: Instant) {
        self.sent = now;
        self.last_progress = None;
        self.data_lines = DataLines::default();
    }

    /// Records a piece of an SSE answer seen at `now`: progress if it carries a `data:` line (wherever
    /// the stream was cut), not if it holds only keep-alive comments.
    pub fn observe_sse(&mut self, now: Instant, piece: &[u8]) -> Result<(), Phase> {
        let progress = self.data_lines.any(piece);
        self.observe(now, progress)
    }

    /// Whether a token has arrived.
    pub fn has_progress(&self) -> bool {
        self.last_progress.is_some()
    }

    /// Records a piece of the answer seen at `now`; `progress` says whether it carried a token.
    /// Progress is never cut by the first-token or idle limit (it arrived); only `total` applies.
    pub fn observe(&mut self, now: Instant, progress: bool) -> Result<(), Phase> {
        if now.saturating_duration_since(self.started) > self.total {
            return Err(Phase::Total);
        }
        if progress {
            self.last_progress = Some(now);
            return Ok(());
        }
        self.check(now)
    }

    /// Whether a limit has passed at `now` with nothing new.
    pub fn check(&self, now: Instant) -> Result<(), Phase> {
        if now.saturating_duration_since(self.started) > self.total {
            return Err(Phase::Total);
        }
        match self.last_progress {
            None if now.saturating_duration_since(self.sent) > self.first_token => Err(Phase::FirstToken),
            Some(last) if now.saturating_duration_since(last) > self.idle => Err(Phase::Idle),
            _ => Ok(()),
        }
    }

    /// The instant at which the next limit passes if nothing arrives.
    pub fn next_deadline(&self) -> Instant {
        let phase = match self.last_progress {
            None => self.sent + self.first_token,
            Some(last) => last + self.idle,
        };
        phase.min(self.started + self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TimeoutsSection {
        TimeoutsSection {
            first_token: Duration::from_secs(10),
            idle: Duration::from_secs(5),
            total: Duration::from_secs(60),
            ..TimeoutsSection::default()
        }
    }

    #[test]
    fn each_phase_fires_on_its_own_limit() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = PhaseClock::new(&limits(), t0);
        // Thinking: comments only, within the first-token limit, then past it.
        assert_eq!(clock.observe(t0 + s(9), false), Ok(()));
        assert_eq!(clock.observe(t0 + s(11), false), Err(Phase::FirstToken));
        // A resend restarts the first-token phase.
        clock.sent(t0 + s(11));
        assert_eq!(clock.check(t0 + s(20)), Ok(()));
        assert_eq!(clock.next_deadline(), t0 + s(21));
        // Tokens, then a silence longer than idle.
        assert_eq!(clock.observe(t0 + s(20), true), Ok(()));
        assert_eq!(clock.observe(t0 + s(24), false), Ok(()));
        assert_eq!(clock.observe(t0 + s(26), false), Err(Phase::Idle));
        // A token that arrives late is taken; the total limit still applies to it.
        assert_eq!(clock.observe(t0 + s(30), true), Ok(()));
        assert_eq!(clock.next_deadline(), t0 + s(35));
        assert_eq!(clock.observe(t0 + s(61), true), Err(Phase::Total));
    }

    #[test]
    fn a_data_line_cut_between_pieces_is_progress_and_keep_alives_are_not() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = PhaseClock::new(&limits(), t0);
        assert_eq!(clock.observe_sse(t0 + s(1), b": keep-alive\n\nda"), Ok(()));
        assert!(!clock.has_progress());
        assert_eq!(clock.observe_sse(t0 + s(2), b"ta: {}\n\n"), Ok(()));
        assert!(clock.has_progress(), "`data:` completed in the second piece");
        assert_eq!(clock.observe_sse(t0 + s(8), b": keep-alive\r\n\r\n"), Err(Phase::Idle));
    }

    #[test]
    fn messages_name_the_limit() {
        assert_eq!(
            Phase::FirstToken.message(&limits()),
            "the upstream model timed out: no token arrived within 10s"
        );
        assert_eq!(Phase::Idle.as_str(), "idle");
    }
}
