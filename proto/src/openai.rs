//! OpenAI-compatible chat completions API bodies: request, response, stream chunk, usage, model list.
//!
//! How `null`, absent and unknown keys are handled is described in the [crate docs](crate).

mod capabilities;
mod chunk;
mod message;
mod models;
mod request;
mod response;
mod usage;
mod validate;

pub use capabilities::{Capabilities, Needs, RESPONSE_FORMATS, ResponseFormats, Unmet, extra_key};
pub use chunk::{ChatCompletionChunk, ChunkChoice, ChunkDelta};
pub use message::{ChatMessage, ContentPart, MessageContent, Role};
pub use models::{ModelCard, ModelList};
pub use request::{ChatCompletionRequest, Stop, StreamOptions};
pub use response::{ChatCompletionResponse, Choice, FinishReason};
pub use usage::{CompletionTokensDetails, PromptTokensDetails, Usage};
pub use validate::{Invalid, MAX_N, MAX_TOP_LOGPROBS, validate};

/// The `object` of a non-streamed chat completion.
pub const CHAT_COMPLETION_OBJECT: &str = "chat.completion";

/// The `object` of a streamed chat completion chunk.
pub const CHAT_COMPLETION_CHUNK_OBJECT: &str = "chat.completion.chunk";
