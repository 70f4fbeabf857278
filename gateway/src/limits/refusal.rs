//! Why a request was refused (429 or 503 + `Retry-After`), and the limiter's setup errors.

use super::*;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// Over `requests_per_second` (429).
    Rate,
    /// Over `concurrent_requests` (429).
    Concurrency,
    /// Over `tokens_per_minute` (429).
    Tokens,
    /// Over `max_in_flight`: the gateway is full (503).
    Overload,
}

impl RefusalKind {
    /// Every kind, to pre-register metric label values.
    pub const ALL: [Self; 4] = [Self::Rate, Self::Concurrency, Self::Tokens, Self::Overload];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Concurrency => "concurrency",
            Self::Tokens => "tokens",
            Self::Overload => "overload",
        }
    }

    /// The HTTP status: 503 for overload, 429 for the others.
    pub const fn status(self) -> u16 {
        match self {
            Self::Overload => 503,
            Self::Rate | Self::Concurrency | Self::Tokens => 429,
        }
    }

    pub(super) const fn index(self) -> usize {
        self as usize
    }
}

/// A request refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Which limit.
    pub kind: RefusalKind,
    /// Seconds for `Retry-After` (1..=[`MAX_RETRY_AFTER`]).
    pub retry_after: u64,
    /// A sentence for the client.
    pub message: String,
}

impl Refusal {
    pub(super) fn new(kind: RefusalKind, retry_after_ms: u64, message: String) -> Self {
        Self {
            kind,
            retry_after: retry_after_ms.div_ceil(1000).clamp(1, MAX_RETRY_AFTER),
            message,
        }
    }

    /// The answer: 429 `rate_limit_error` (code `rate_limit_exceeded`) or, for overload, 503
    /// `overloaded_error`; both with `Retry-After`.
    pub fn to_gateway_error(&self) -> GatewayError {
        let error = match self.kind {
            RefusalKind::Overload => {
                GatewayError::upstream(ErrorKind::Overloaded, Source::Internal, self.message.clone()).code("overloaded")
            }
            _ => GatewayError::downstream(ErrorKind::RateLimit, self.message.clone()).code("rate_limit_exceeded"),
        };
        error.retry_after(self.retry_after)
    }
}

/// Redis did not answer (in time).
#[derive(Debug, thiserror::Error)]
#[error("limits: redis: {0}")]
pub struct RedisUnavailable(pub(super) String);

pub(super) fn rate_refusal(quota: &Quota, retry_ms: u64) -> Refusal {
    let refusal = Refusal::new(RefusalKind::Rate, retry_ms, String::new());
    Refusal {
        message: format!(
            "rate limit: more than {} requests per second (burst {}); retry after {} s",
            trim_float(quota.rps),
            trim_float(quota.burst),
            refusal.retry_after
        ),
        ..refusal
    }
}

pub(super) fn concurrency_refusal(quota: &Quota) -> Refusal {
    Refusal::new(
        RefusalKind::Concurrency,
        CONCURRENCY_RETRY_AFTER * 1000,
        format!(
            "concurrency limit: {} of your requests are already running; retry when one has finished",
            quota.concurrent
        ),
    )
}

pub(super) fn tokens_refusal(quota: &Quota, estimated_tokens: u64, retry_ms: u64) -> Refusal {
    let refusal = Refusal::new(RefusalKind::Tokens, retry_ms, String::new());
    Refusal {
        message: format!(
            "token limit: {} tokens per minute used up (this request reserves {estimated_tokens}); retry after {} s",
            trim_float(quota.tpm),
            refusal.retry_after
        ),
        ..refusal
    }
}

/// `2` rather than `2.0`; a few decimals for fractions.
pub(super) fn trim_float(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}").trim_end_matches('0').to_owned()
    }
}
