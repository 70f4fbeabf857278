//! Non-streamed chat completions response body.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CHAT_COMPLETION_OBJECT, ChatMessage, Usage};
use crate::Nullable;

open_enum! {
    /// Why generation stopped. Values a server invents (vLLM's `abort`, …) are kept in
    /// [`FinishReason::Other`].
    pub enum FinishReason {
        /// A natural end or a stop sequence.
        Stop = "stop",
        /// The token cap was reached.
        Length = "length",
        /// The model called tools.
        ToolCalls = "tool_calls",
        /// Content was withheld by a filter.
        ContentFilter = "content_filter",
        /// The model called a function (the deprecated single-function API).
        FunctionCall = "function_call",
    }
}

/// A chat completion (`"object": "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    /// The completion id (`chatcmpl-…`).
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Creation time, unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The generated choices.
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub usage: Nullable<Usage>,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub system_fingerprint: Nullable<String>,
    /// Keys not modelled here (`service_tier`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionResponse {
    /// A one-choice response in the OpenAI shape (`"logprobs": null`, no fingerprint).
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        message: ChatMessage,
        finish_reason: FinishReason,
        usage: Usage,
    ) -> Self {
        Self {
            id: id.into(),
            object: CHAT_COMPLETION_OBJECT.to_owned(),
            created,
            model: model.into(),
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason: Nullable::Value(finish_reason),
                logprobs: Nullable::Null,
                extra: Map::new(),
            }],
            usage: Nullable::Value(usage),
            system_fingerprint: Nullable::Absent,
            extra: Map::new(),
        }
    }

    /// The message of the first choice.
    pub fn first_message(&self) -> Option<&ChatMessage> {
        self.choices.first().map(|choice| &choice.message)
    }
}

/// One element of `choices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices.
    pub index: u32,
    /// The generated message.
    pub message: ChatMessage,
    /// Why generation stopped.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub finish_reason: Nullable<FinishReason>,
    /// Token log-probabilities, verbatim (`null` unless requested).
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub logprobs: Nullable<Value>,
    /// Keys not modelled here, verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_builds_the_openai_shape() {
        let response = ChatCompletionResponse::new(
            "chatcmpl-1",
            1_700_000_000,
            "r1-edge",
            ChatMessage::assistant("4"),
            FinishReason::Stop,
            Usage::new(5, 1),
        );
        assert_eq!(
            response.first_message().map(|message| message.text().into_owned()),
            Some("4".into())
        );
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "r1-edge",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "4"},
                    "finish_reason": "stop",
                    "logprobs": null
                }],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
            })
        );
    }

    #[test]
    fn unknown_finish_reason_is_kept() {
        let reason: FinishReason = serde_json::from_value(json!("abort")).unwrap();
        assert_eq!(reason, FinishReason::Other("abort".into()));
        assert_eq!(serde_json::to_value(&reason).unwrap(), json!("abort"));
        assert_eq!(FinishReason::from("length"), FinishReason::Length);
    }
}
