//! Every error the gateway answers with: where it came from, and the OpenAI error body and status it
//! becomes ([`GatewayError::body`]); `respond` is the one place that writes it.

use r1_proto::{ErrorBody, ErrorKind, Nullable, UpstreamError};

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's request (bad JSON, unknown model, too large).
    Downstream,
    /// The edge pool.
    Edge,
    /// The center (its pool, or the hand-off's answer).
    Center,
    /// The result cache.
    Cache,
    /// The task queue of the hand-off (Kafka, or the in-process queue) and the task state store.
    Queue,
    /// The gateway itself.
    Internal,
}

impl Source {
    /// Label for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Edge => "edge",
            Self::Center => "center",
            Self::Cache => "cache",
            Self::Queue => "queue",
            Self::Internal => "internal",
        }
    }
}

/// A request-path error, ready to be answered.
#[derive(Debug, Clone)]
pub struct GatewayError {
    /// What kind of failure (decides status and OpenAI `type`).
    pub kind: ErrorKind,
    /// Where it came from.
    pub source: Source,
    /// A sentence for the client.
    pub message: String,
    /// OpenAI `code` (`model_not_found`, …).
    pub code: Option<&'static str>,
    /// OpenAI `param`.
    pub param: Option<&'static str>,
    /// Seconds for `Retry-After`, when the client should retry.
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` of a 401: how to authenticate.
    pub challenge: Option<&'static str>,
    /// A model server's own refusal behind the hand-off: its 4xx status, `type`, `param` and `code`
    /// are the client's, as if it had asked that server.
    pub refusal: Option<Box<UpstreamError>>,
}

impl GatewayError {
    /// A client error of `kind`.
    pub fn downstream(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            source: Source::Downstream,
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
            challenge: None,
            refusal: None,
        }
    }

    /// An upstream or gateway failure of `kind` from `source`.
    pub fn upstream(kind: ErrorKind, source: Source, message: impl Into<String>) -> Self {
        Self {
            source,
            ..Self::downstream(kind, message)
        }
    }

    /// With an OpenAI `code`.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// With an OpenAI `param`.
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// With `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// With `WWW-Authenticate`.
    pub fn challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// With a model server's refusal, passed on as it was given.
    pub fn refusal(mut self, refusal: UpstreamError) -> Self {
        self.refusal = Some(Box::new(refusal));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match &self.refusal {
            Some(r) if (400..500).contains(&r.status) => r.status,
            _ => self.kind.status(),
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> ErrorBody {
        let mut body = ErrorBody::detailed(self.kind, self.message.clone(), self.code, self.param);
        if let Some(refusal) = &self.refusal {
            if let Some(kind) = &refusal.error_type {
                body.error.error_type.clone_from(kind);
            }
            if let Some(param) = &refusal.param {
                body.error.param = Nullable::Value(param.clone());
            }
            if let Some(code) = &refusal.code {
                body.error.code = Nullable::Value(code.clone());
            }
        }
        body
    }
}
