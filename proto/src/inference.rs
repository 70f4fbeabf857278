//! `POST /v1/r1/inference` request body: the simple prompt API, routed like a chat request.

use serde::{Deserialize, Serialize};

use crate::{ChatCompletionRequest, ChatMessage};

/// `{"prompt", "max_tokens", "stream"?}`.
///
/// Unknown keys are refused (`deny_unknown_fields`), so a misspelt or unsupported parameter
/// (`"max_token"`, `"temperature"`) gets a 400 naming it instead of being silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// The prompt, sent as a single user message.
    pub prompt: String,
    /// The cap on generated tokens.
    pub max_tokens: u32,
    /// Whether to answer as a stream of chat completion chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

impl InferenceRequest {
    /// The equivalent chat request for `model`: one user message, `max_tokens`, `stream`.
    pub fn into_chat_request(self, model: impl Into<String>) -> ChatCompletionRequest {
        ChatCompletionRequest {
            max_tokens: Some(self.max_tokens),
            stream: self.stream,
            ..ChatCompletionRequest::new(model, vec![ChatMessage::user(self.prompt)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_into_one_user_message() {
        let request: InferenceRequest =
            serde_json::from_value(json!({"prompt": "2+2?", "max_tokens": 16, "stream": true})).unwrap();
        let chat = request.into_chat_request("deepseek-r1");
        assert_eq!(
            serde_json::to_value(&chat).unwrap(),
            json!({
                "model": "deepseek-r1",
                "messages": [{"role": "user", "content": "2+2?"}],
                "max_tokens": 16,
                "stream": true
            })
        );
        assert!(chat.is_stream());
        assert_eq!(chat.effective_max_tokens(), Some(16));
    }

    #[test]
    fn stream_is_optional() {
        let request: InferenceRequest = serde_json::from_value(json!({"prompt": "hi", "max_tokens": 4})).unwrap();
        assert_eq!(request.stream, None);
        assert!(!request.into_chat_request("m").is_stream());
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let unknown =
            serde_json::from_value::<InferenceRequest>(json!({"prompt": "hi", "max_tokens": 4, "temperature": 0}))
                .unwrap_err()
                .to_string();
        assert!(unknown.contains("unknown field `temperature`"), "{unknown}");

        let missing = serde_json::from_value::<InferenceRequest>(json!({"prompt": "hi"}))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `max_tokens`"), "{missing}");
    }
}
