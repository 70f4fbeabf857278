//! The OpenAI error body `{"error":{"message","type","param","code"}}` and the kinds of error we send.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Nullable, sse};

wire_enum! {
    /// What went wrong, from the client's point of view: decides the HTTP status and the OpenAI
    /// `type`. [`ErrorKind::as_str`] is the metric label.
    pub enum ErrorKind {
        /// 400 `invalid_request_error`: the request is malformed or asks for something not allowed.
        InvalidRequest = "invalid_request",
        /// 401 `authentication_error`: missing, invalid or expired token.
        Authentication = "authentication",
        /// 404 `not_found_error`: no such model, task or route (or not the caller's).
        NotFound = "not_found",
        /// 413 `invalid_request_error`: the body is larger than allowed.
        PayloadTooLarge = "payload_too_large",
        /// 408 `invalid_request_error`: the client took too long to send its request.
        RequestTimeout = "request_timeout",
        /// 429 `rate_limit_error`: the caller is over a limit; retry later.
        RateLimit = "rate_limit",
        /// 502 `upstream_error`: a model backend failed or answered nonsense.
        Upstream = "upstream",
        /// 503 `overloaded_error`: no capacity now (queues full, draining, a dependency down).
        Overloaded = "overloaded",
        /// 504 `timeout_error`: a backend did not answer in time.
        Timeout = "timeout",
        /// 500 `server_error`: a bug or an unexpected state on our side.
        Internal = "internal",
    }
}

impl ErrorKind {
    /// The HTTP status code.
    pub const fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::Authentication => 401,
            Self::NotFound => 404,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::RateLimit => 429,
            Self::Internal => 500,
            Self::Upstream => 502,
            Self::Overloaded => 503,
            Self::Timeout => 504,
        }
    }

    /// The OpenAI error `type` string.
    pub const fn openai_type(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::PayloadTooLarge | Self::RequestTimeout => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::NotFound => "not_found_error",
            Self::RateLimit => "rate_limit_error",
            Self::Upstream => "upstream_error",
            Self::Overloaded => "overloaded_error",
            Self::Timeout => "timeout_error",
            Self::Internal => "server_error",
        }
    }

    /// An error body of this kind.
    pub fn body(self, message: impl Into<String>) -> ErrorBody {
        ErrorBody::new(self, message)
    }
}

/// The error response body: `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
    /// Keys not modelled here, verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A sentence for humans.
    pub message: String,
    /// The OpenAI `type` (see [`ErrorKind::openai_type`]); kept verbatim when parsed.
    #[serde(rename = "type")]
    pub error_type: String,
    /// The request parameter at fault, if one is.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub param: Nullable<String>,
    /// A machine-readable code: a string such as `model_not_found`, or a number some servers send.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub code: Nullable<Value>,
    /// Keys not modelled here, verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ErrorBody {
    /// A body of `kind` with `"param": null, "code": null`, as OpenAI writes them.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                message: message.into(),
                error_type: kind.openai_type().to_owned(),
                param: Nullable::Null,
                code: Nullable::Null,
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }

    /// A 400 body.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// A 401 body.
    pub fn authentication(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Authentication, message)
    }

    /// A 404 body.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// A 413 body.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PayloadTooLarge, message)
    }

    /// A 429 body.
    pub fn rate_limit(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimit, message)
    }

    /// A 502 body.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Upstream, message)
    }

    /// A 503 body.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Overloaded, message)
    }

    /// A 504 body.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// A 500 body.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// A body of `kind` with the optional `code` and `param` set when given.
    pub fn detailed(kind: ErrorKind, message: impl Into<String>, code: Option<&str>, param: Option<&str>) -> Self {
        let mut body = Self::new(kind, message);
        if let Some(code) = code {
            body = body.with_code(code);
        }
        if let Some(param) = param {
            body = body.with_param(param);
        }
        body
    }

    /// The same body with a string `code`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.error.code = Nullable::Value(Value::String(code.into()));
        self
    }

    /// The same body naming the request parameter at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Nullable::Value(param.into());
        self
    }

    /// The body as compact JSON, for an HTTP response.
    pub fn to_json(&self) -> Vec<u8> {
        crate::to_json(self)
    }

    /// The body as an in-band SSE event, `data: {"error":{…}}\n\n`, for a stream that fails after
    /// it started (the OpenAI SDKs raise it as an `APIError`). Send it instead of `[DONE]`.
    pub fn to_sse_event(&self) -> Vec<u8> {
        sse::event(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_and_types() {
        let table: Vec<_> = ErrorKind::ALL
            .iter()
            .map(|kind| (kind.as_str(), kind.status(), kind.openai_type()))
            .collect();
        assert_eq!(
            table,
            [
                ("invalid_request", 400, "invalid_request_error"),
                ("authentication", 401, "authentication_error"),
                ("not_found", 404, "not_found_error"),
                ("payload_too_large", 413, "invalid_request_error"),
                ("request_timeout", 408, "invalid_request_error"),
                ("rate_limit", 429, "rate_limit_error"),
                ("upstream", 502, "upstream_error"),
                ("overloaded", 503, "overloaded_error"),
                ("timeout", 504, "timeout_error"),
                ("internal", 500, "server_error"),
            ]
        );
    }

    #[test]
    fn body_shape_with_code_and_param() {
        let body = ErrorBody::not_found("The model `gpt-9` does not exist")
            .with_code("model_not_found")
            .with_param("model");
        assert_eq!(
            serde_json::from_slice::<Value>(&body.to_json()).unwrap(),
            json!({"error": {
                "message": "The model `gpt-9` does not exist",
                "type": "not_found_error",
                "param": "model",
                "code": "model_not_found"
            }})
        );
        let detailed = ErrorBody::detailed(
            ErrorKind::NotFound,
            "The model `gpt-9` does not exist",
            Some("model_not_found"),
            Some("model"),
        );
        assert_eq!(detailed, body);
        let bare = ErrorBody::detailed(ErrorKind::NotFound, "x", None, None);
        assert_eq!(bare, ErrorBody::new(ErrorKind::NotFound, "x"));
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let event = ErrorKind::Upstream
            .body("center node went away\nmid-stream")
            .to_sse_event();
        assert_eq!(
            String::from_utf8(event).unwrap(),
            "data: {\"error\":{\"message\":\"center node went away\\nmid-stream\",\
             \"type\":\"upstream_error\",\"param\":null,\"code\":null}}\n\n"
        );
    }
}
