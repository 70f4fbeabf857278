//! `POST /v1/chat/completions` request body.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ChatMessage, Role};

/// A chat completions request.
///
/// Parameters are `Option`s: `null` and absent mean the same and both serialize as absent (see the
/// [crate docs](crate)). Unknown keys are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model asked for.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Whether to answer as a server-sent event stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Options of the stream (only meaningful with `stream: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// The older cap on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The newer cap on generated tokens (reasoning included); wins over `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature; `0` asks for greedy, deterministic decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling (a vLLM extension; `-1` or `0` disables it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    /// Seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Sequences that end generation, in the form the client sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// How many choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Penalty on tokens already present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Penalty proportional to how often a token already appeared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// The client's end-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Keys not modelled here (`tools`, `tool_choice`, `response_format`, `logit_bias`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionRequest {
    /// A request for `model` with `messages` and no parameters.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            ..Self::default()
        }
    }

    /// The token cap that applies: `max_completion_tokens` if given, else `max_tokens`.
    pub fn effective_max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a streaming client asked for the final usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.is_stream()
            && self
                .stream_options
                .as_ref()
                .is_some_and(|options| options.include_usage == Some(true))
    }

    /// The stop sequences, whichever form they came in (empty if none).
    pub fn stop_sequences(&self) -> &[String] {
        self.stop.as_ref().map_or(&[], Stop::as_slice)
    }

    /// The first role this version does not know, so the caller can reject the request naming it.
    pub fn first_unknown_role(&self) -> Option<&str> {
        self.messages
            .iter()
            .map(|message| &message.role)
            .find(|role| !role.is_known())
            .map(Role::as_str)
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Whether to end the stream with a usage-only chunk (`choices: []`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Keys not modelled here, verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop`: one string or an array of strings, kept in the form that was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum Stop {
    /// `"stop": "\n\n"`.
    One(String),
    /// `"stop": ["\n\n", "END"]`.
    Many(Vec<String>),
}

impl Stop {
    /// The sequences as a slice, whichever form they came in.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> ChatCompletionRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let both = parse(json!({"model": "m", "messages": [], "max_tokens": 10, "max_completion_tokens": 20}));
        assert_eq!(both.effective_max_tokens(), Some(20));
        let old = parse(json!({"model": "m", "messages": [], "max_tokens": 10}));
        assert_eq!(old.effective_max_tokens(), Some(10));
        assert_eq!(ChatCompletionRequest::new("m", vec![]).effective_max_tokens(), None);
    }

    #[test]
    fn usage_is_requested_only_on_streams() {
        let streamed = parse(json!({
            "model": "m", "messages": [], "stream": true, "stream_options": {"include_usage": true}
        }));
        assert!(streamed.is_stream());
        assert!(streamed.include_usage());

        let not_streamed = parse(json!({
            "model": "m", "messages": [], "stream": false, "stream_options": {"include_usage": true}
        }));
        assert!(!not_streamed.is_stream());
        assert!(!not_streamed.include_usage());

        let no_options = parse(json!({"model": "m", "messages": [], "stream": true}));
        assert!(!no_options.include_usage());
    }

    #[test]
    fn null_parameters_read_as_absent() {
        let request = parse(json!({"model": "m", "messages": [], "temperature": null, "stop": null}));
        assert_eq!(request.temperature, None);
        assert_eq!(request.stop, None);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"model": "m", "messages": []})
        );
    }

    #[test]
    fn first_unknown_role_is_named() {
        let request = parse(json!({"model": "m", "messages": [
            {"role": "user", "content": "a"},
            {"role": "critic", "content": "b"},
            {"role": "oracle", "content": "c"}
        ]}));
        assert_eq!(request.first_unknown_role(), Some("critic"));
        assert_eq!(
            ChatCompletionRequest::new("m", vec![ChatMessage::user("x")]).first_unknown_role(),
            None
        );
    }

    #[test]
    fn bad_stop_names_what_was_expected() {
        let err = serde_json::from_value::<ChatCompletionRequest>(json!({"model": "m", "messages": [], "stop": 3}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a string or an array of strings"), "{err}");
    }
}
