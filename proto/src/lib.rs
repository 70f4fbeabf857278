//! Wire types of r1-hybrid: OpenAI-compatible bodies, Kafka envelopes, error bodies, route decisions.
//!
//! Serde types and pure formatting only: no I/O, no async runtime. Every consumer (gateway, edge,
//! center, load generator) speaks through these types, so a wire change is made here, once.
//!
//! - **OpenAI chat API** — [`ChatCompletionRequest`], [`ChatMessage`], [`ChatCompletionResponse`],
//!   [`ChatCompletionChunk`], [`Usage`], [`ModelList`]. Every object keeps keys it does not model in a
//!   flattened `extra` map, so tools, `tool_choice`, `response_format`, `logit_bias`, `tool_calls`,
//!   `refusal` and whatever OpenAI adds next pass through untouched.
//! - **Simple prompt API** — [`InferenceRequest`] (`POST /v1/r1/inference`).
//! - **Kafka** — [`TaskEnvelope`], [`ResultChunk`], [`CancelRecord`], versioned by [`WIRE_VERSION`],
//!   with `decode`/`encode`.
//! - **Errors** — [`ErrorBody`] and [`ErrorKind`] (HTTP status and OpenAI `type`); [`sse`] framing.
//! - **Routing** — [`RouteDecision`].
//!
//! # `null` versus absent, deliberately
//!
//! - **Request parameters** (`max_tokens`, `temperature`, `stop`, …) are `Option`s: every
//!   OpenAI-compatible server reads `null` as "not given", so `"temperature": null` parses as `None`
//!   and is written back as a missing key. Numbers are written in serde_json's form (`"top_p": 1`
//!   comes back as `1.0`), which servers read the same.
//! - **What servers write with explicit nulls** — message `content` and `reasoning_content`,
//!   `finish_reason`, `logprobs`, stream `usage`, `system_fingerprint`, usage details, error `param`
//!   and `code` — is a [`Nullable`] and round-trips exactly: an assistant tool-call message's
//!   `"content": null` stays `null`, a missing key stays missing.
//! - Keys in `extra` are kept exactly, `null`s included.

#![warn(missing_docs)]

#[macro_use]
mod macros;

mod error;
mod inference;
pub mod net;
mod nullable;
mod openai;
mod route;
pub mod sse;
mod task;

pub use error::{ErrorBody, ErrorDetail, ErrorKind};
pub use inference::InferenceRequest;
pub use nullable::Nullable;
pub use openai::{
    CHAT_COMPLETION_CHUNK_OBJECT, CHAT_COMPLETION_OBJECT, Capabilities, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatMessage, Choice, ChunkChoice, ChunkDelta, CompletionTokensDetails, ContentPart,
    FinishReason, Invalid, MAX_N, MAX_TOP_LOGPROBS, MessageContent, ModelCard, ModelList, Needs, PromptTokensDetails,
    RESPONSE_FORMATS, ResponseFormats, Role, Stop, StreamOptions, Unmet, Usage, extra_key, validate,
};
pub use route::{Route, RouteDecision, RouteReason, Tier};
pub use task::{
    CancelReason, CancelRecord, DecodeError, ResultChunk, ResultDelta, TaskClass, TaskEnvelope, TaskError,
    TaskErrorCode, UpstreamError, WIRE_VERSION,
};

/// Compact JSON of one of this crate's types.
///
/// Serializing them cannot fail: every map has string keys and no `Serialize` impl here returns an
/// error (a non-finite float would be written as `null`). So the impossible error becomes an empty
/// body rather than a `Result` every caller would have to carry.
fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
