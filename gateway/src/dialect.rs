//! The APIs the gateway answers on top of chat completions: the legacy completions API
//! ([`crate::legacy`]), OpenAI's Responses API ([`crate::responses`]) and Anthropic's Messages API
//! ([`crate::messages`]).
//!
//! Each turns its request into a chat request at admission — routed, limited and checked like any other —
//! and its answer back as it passes: proxied or handed off, streamed or not, the chat answer is read as
//! [`crate::reframe::Said`] pieces and re-framed in the client's API ([`Translator`]). Errors the gateway makes itself take the client's API's shape too
//! ([`Shape::error_body`], [`Translator::error_event`]).

use bytes::Bytes;

use crate::error::GatewayError;
use crate::reframe::{Reframed, error_object};

/// The API a chat request came through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    /// Chat completions.
    #[default]
    Chat,
    /// The simple prompt API (`/v1/r1/inference`).
    Inference,
    /// The legacy completions API, answered as `text_completion` (see [`crate::legacy`]).
    Completions,
    /// OpenAI's Responses API (see [`crate::responses`]).
    Responses,
    /// Anthropic's Messages API (see [`crate::messages`]).
    Messages,
}

/// What the answer of a request asked through another API than chat needs of that request.
#[derive(Debug, Clone)]
pub enum Dialect {
    /// The legacy completions API.
    Completions,
    /// The Responses API, with what the `response` object repeats.
    Responses(crate::responses::Echo),
    /// Anthropic's Messages API, with whether reasoning is shown.
    Messages(crate::messages::Thinking),
}

impl Dialect {
    /// The translator for an answer to a client that asked for `model`; `stream`: the answer is SSE.
    pub fn translator(&self, model: &str, stream: bool) -> Translator {
        match self {
            Self::Completions => Translator::Completions(crate::legacy::Legacy::new(stream)),
            Self::Responses(echo) => Translator::Responses(Reframed::new(
                crate::responses::Answer::new(model, echo.clone()),
                stream,
            )),
            Self::Messages(thinking) => {
                Translator::Messages(Reframed::new(crate::messages::Answer::new(model, *thinking), stream))
            }
        }
    }
}

/// Turns an answer in chat's shape into the client's API's, as it passes.
#[derive(Debug)]
pub enum Translator {
    /// The legacy completions API.
    Completions(crate::legacy::Legacy),
    /// The Responses API.
    Responses(Reframed<crate::responses::Answer>),
    /// Anthropic's Messages API.
    Messages(Reframed<crate::messages::Answer>),
}

impl Translator {
    /// Rewrites a piece on its way to the client; `end`: the last piece.
    pub fn rewrite(&mut self, body: &mut Option<Bytes>, end: bool) {
        match self {
            Self::Completions(t) => t.rewrite(body, end),
            Self::Responses(t) => t.rewrite(body, end),
            Self::Messages(t) => t.rewrite(body, end),
        }
    }

    /// The in-band error event that ends the stream, in the client's API.
    pub fn error_event(&mut self, error: &GatewayError) -> Vec<u8> {
        match self {
            Self::Completions(_) => error.body().to_sse_event(),
            Self::Responses(t) => t.error_event(error),
            Self::Messages(t) => t.error_event(error),
        }
    }
}

impl Shape {
    /// The error body of this API for `error`.
    pub fn error_body(self, error: &GatewayError) -> Vec<u8> {
        match self {
            Self::Messages => {
                serde_json::to_vec(&crate::messages::error_body(&error_object(error))).unwrap_or_default()
            }
            _ => error.body().to_json(),
        }
    }

    /// Whether an upstream refusal (its OpenAI error body) is re-shaped for this API.
    pub fn reshapes_errors(self) -> bool {
        self == Self::Messages
    }
}
