//! Streamed chat completions chunk (`"object": "chat.completion.chunk"`), one per SSE `data:` event.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CHAT_COMPLETION_CHUNK_OBJECT, FinishReason, Role, Usage};
use crate::{Nullable, sse};

/// One chunk of a streamed completion.
///
/// The usage-only chunk that ends a stream with `stream_options.include_usage` has `choices: []`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The completion id, the same in every chunk of a stream.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Creation time, unix seconds, the same in every chunk.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub system_fingerprint: Nullable<String>,
    /// The deltas of this chunk; empty in the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Token counts: `null` on each chunk and a value on the last when usage was requested (OpenAI),
    /// or on the finishing chunk (DeepSeek).
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub usage: Nullable<Usage>,
    /// Keys not modelled here (`service_tier`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionChunk {
    /// A chunk with no choices yet; add them with [`Self::with_choice`].
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: CHAT_COMPLETION_CHUNK_OBJECT.to_owned(),
            created,
            model: model.into(),
            system_fingerprint: Nullable::Absent,
            choices: Vec::new(),
            usage: Nullable::Absent,
            extra: Map::new(),
        }
    }

    /// The final usage-only chunk: `choices: []` and `usage`.
    pub fn usage_only(id: impl Into<String>, created: u64, model: impl Into<String>, usage: Usage) -> Self {
        Self {
            usage: Nullable::Value(usage),
            ..Self::new(id, created, model)
        }
    }

    /// The same chunk with one more choice.
    pub fn with_choice(mut self, choice: ChunkChoice) -> Self {
        self.choices.push(choice);
        self
    }

    /// The chunk as one SSE event: `data: {…}\n\n`.
    pub fn to_sse_event(&self) -> Vec<u8> {
        sse::event(self)
    }
}

/// One element of a chunk's `choices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice this delta extends.
    pub index: u32,
    /// The new text.
    pub delta: ChunkDelta,
    /// Token log-probabilities, verbatim.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub logprobs: Nullable<Value>,
    /// `null` until the chunk that ends the choice.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub finish_reason: Nullable<FinishReason>,
    /// Keys not modelled here, verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChunkChoice {
    /// A choice delta with `"finish_reason": null`, as OpenAI writes mid-stream.
    pub fn new(index: u32, delta: ChunkDelta) -> Self {
        Self {
            index,
            delta,
            logprobs: Nullable::Absent,
            finish_reason: Nullable::Null,
            extra: Map::new(),
        }
    }

    /// The same choice, ending with `finish_reason`.
    pub fn with_finish_reason(mut self, finish_reason: FinishReason) -> Self {
        self.finish_reason = Nullable::Value(finish_reason);
        self
    }
}

/// The new part of a message: the role (first chunk only), answer text or reasoning text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDelta {
    /// `assistant` in the first chunk of a choice, absent afterwards.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub role: Nullable<Role>,
    /// New answer text.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub content: Nullable<String>,
    /// New reasoning text (R1's chain of thought).
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub reasoning_content: Nullable<String>,
    /// Keys not modelled here (`tool_calls`, `refusal`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChunkDelta {
    /// The opening delta: the role and an empty `content`, as OpenAI sends first.
    pub fn role(role: Role) -> Self {
        Self {
            role: Nullable::Value(role),
            content: Nullable::Value(String::new()),
            ..Self::default()
        }
    }

    /// A delta of answer text.
    pub fn content(text: impl Into<String>) -> Self {
        Self {
            content: Nullable::Value(text.into()),
            ..Self::default()
        }
    }

    /// A delta of reasoning text.
    pub fn reasoning(text: impl Into<String>) -> Self {
        Self {
            reasoning_content: Nullable::Value(text.into()),
            ..Self::default()
        }
    }

    /// Whether the delta carries no role, text or other key (the shape of a pure finish chunk).
    pub fn is_empty(&self) -> bool {
        self.role.is_absent()
            && self.content.get().is_none_or(String::is_empty)
            && self.reasoning_content.get().is_none_or(String::is_empty)
            && self.extra.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skeletons_serialize_as_openai_does() {
        let first =
            ChatCompletionChunk::new("c1", 7, "r1").with_choice(ChunkChoice::new(0, ChunkDelta::role(Role::Assistant)));
        assert_eq!(
            serde_json::to_value(&first).unwrap(),
            json!({
                "id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "r1",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]
            })
        );

        let last = ChatCompletionChunk::new("c1", 7, "r1")
            .with_choice(ChunkChoice::new(0, ChunkDelta::default()).with_finish_reason(FinishReason::Length));
        assert_eq!(
            serde_json::to_value(&last).unwrap()["choices"],
            json!([{"index": 0, "delta": {}, "finish_reason": "length"}])
        );

        let usage = ChatCompletionChunk::usage_only("c1", 7, "r1", Usage::new(1, 2));
        let value = serde_json::to_value(&usage).unwrap();
        assert_eq!(value["choices"], json!([]));
        assert_eq!(value["usage"]["total_tokens"], json!(3));
    }

    #[test]
    fn delta_emptiness() {
        assert!(ChunkDelta::default().is_empty());
        assert!(ChunkDelta::content("").is_empty());
        assert!(!ChunkDelta::reasoning("hm").is_empty());
        assert!(!ChunkDelta::role(Role::Assistant).is_empty());
    }
}
