//! `POST /v1/r1/inference` request body: the simple prompt API, routed like a chat request.

use serde::{Deserialize, Serialize};

use crate::{ChatCompletionRequest, ChatMessage, Stop};

/// `{"prompt", "max_tokens"?, "temperature"?, "top_p"?, "stop"?, "stream"?}`.
///
/// Unknown keys are refused (`deny_unknown_fields`), so a misspelt or unsupported parameter
/// (`"max_token"`, `"top_k"`) gets a 400 naming it instead of being silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// The prompt, sent as a single user message.
    pub prompt: String,
    /// The cap on generated tokens (absent: the serving pool's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0..=2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop sequences: one string or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Whether to answer as a stream of chat completion chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

impl InferenceRequest {
    /// The equivalent chat request for `model`: one user message and the same parameters.
    pub fn into_chat_request(self, model: impl Into<String>) -> ChatCompletionRequest {
        ChatCompletionRequest {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop,
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
    fn sampling_parameters_are_optional_and_carried() {
        let request: InferenceRequest = serde_json::from_value(json!({"prompt": "hi"})).unwrap();
        assert_eq!(request.clone().into_chat_request("m").effective_max_tokens(), None);
        let request: InferenceRequest = serde_json::from_value(
            json!({"prompt": "hi", "max_tokens": 8, "temperature": 0.2, "top_p": 0.9, "stop": ["\n"]}),
        )
        .unwrap();
        let chat = request.into_chat_request("m");
        assert_eq!((chat.temperature, chat.top_p), (Some(0.2), Some(0.9)));
        assert_eq!(chat.stop_sequences(), ["\n"]);
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let unknown = serde_json::from_value::<InferenceRequest>(json!({"prompt": "hi", "max_tokens": 4, "top_k": 0}))
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `top_k`"), "{unknown}");

        let missing = serde_json::from_value::<InferenceRequest>(json!({"max_tokens": 4}))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `prompt`"), "{missing}");
    }
}
