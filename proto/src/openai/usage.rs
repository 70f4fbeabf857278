//! Token accounting: `usage` of responses, final stream chunks and result envelopes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Nullable;

/// Token counts of one completion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated, reasoning included.
    pub completion_tokens: u64,
    /// `prompt_tokens + completion_tokens`.
    pub total_tokens: u64,
    /// Breakdown of the generated tokens.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub completion_tokens_details: Nullable<CompletionTokensDetails>,
    /// Breakdown of the prompt tokens.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub prompt_tokens_details: Nullable<PromptTokensDetails>,
    /// Keys not modelled here (DeepSeek's `prompt_cache_hit_tokens`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Usage {
    /// Counts with `total_tokens` computed and no details.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Self::default()
        }
    }

    /// The same counts, stating how many of the completion tokens were reasoning.
    pub fn with_reasoning_tokens(mut self, reasoning_tokens: u64) -> Self {
        let details = match self.completion_tokens_details {
            Nullable::Value(details) => details,
            Nullable::Absent | Nullable::Null => CompletionTokensDetails::default(),
        };
        self.completion_tokens_details = Nullable::Value(CompletionTokensDetails {
            reasoning_tokens: Nullable::Value(reasoning_tokens),
            ..details
        });
        self
    }

    /// Reasoning tokens among the completion tokens (0 when not reported).
    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .get()
            .and_then(|details| details.reasoning_tokens.get().copied())
            .unwrap_or(0)
    }

    /// Prompt tokens served from the prefix cache (0 when not reported).
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .get()
            .and_then(|details| details.cached_tokens.get().copied())
            .unwrap_or(0)
    }
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Tokens spent thinking (R1's `reasoning_content`).
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub reasoning_tokens: Nullable<u64>,
    /// Keys not modelled here (`audio_tokens`, `accepted_prediction_tokens`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens that hit the prefix (KV) cache.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub cached_tokens: Nullable<u64>,
    /// Keys not modelled here (`audio_tokens`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_sums_and_reasoning_is_recorded() {
        let usage = Usage::new(12, 30).with_reasoning_tokens(20);
        assert_eq!(usage.total_tokens, 42);
        assert_eq!(usage.reasoning_tokens(), 20);
        assert_eq!(usage.cached_tokens(), 0);
        assert_eq!(
            serde_json::to_value(&usage).unwrap(),
            json!({
                "prompt_tokens": 12,
                "completion_tokens": 30,
                "total_tokens": 42,
                "completion_tokens_details": {"reasoning_tokens": 20}
            })
        );
    }

    #[test]
    fn null_details_count_as_zero() {
        let usage: Usage = serde_json::from_value(json!({
            "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
            "prompt_tokens_details": null
        }))
        .unwrap();
        assert_eq!(usage.cached_tokens(), 0);
        assert!(usage.prompt_tokens_details.is_null());
    }
}
