//! What a pool serves: learned from its members' model cards, overridden key by key from config.
//!
//! With each passing health check a member's card (`GET <capabilities.card_path>`, an OpenAI model
//! list) is read again once it is [`CARD_REFRESH`] old. From the entry for the pool's model (or the
//! only one) come r1-edge's `capabilities` whole, or just the context window from vLLM's
//! `max_model_len` on top of the pool's baseline (the edge pool: plain chat; the center: everything).
//! A member with no readable card counts as the baseline. The pool serves what all its members serve
//! ([`Capabilities::common`]), and then `[edge.capabilities]` / `[center.capabilities]` replace any
//! key they set: an operator's word beats a probe. The probe itself is `pools::MemberCheck`.

use std::time::Duration;

use r1_proto::{Capabilities, ResponseFormats};
use serde::Deserialize;

/// How old a member's card may be before the next passing health check reads it again.
pub const CARD_REFRESH: Duration = Duration::from_secs(30);

/// The most of a card that is read.
pub const CARD_LIMIT: usize = 1 << 20;

/// `[edge.capabilities]` / `[center.capabilities]`: whether members' cards are read, and what the
/// pool serves whatever they say. Live-reloadable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesSection {
    /// Read each member's model card with the health checks.
    #[serde(default = "default_discover")]
    pub discover: bool,
    /// Where the card is (an OpenAI model list).
    #[serde(default = "default_card_path")]
    pub card_path: String,
    /// Tokens of prompt plus answer the pool's model holds.
    #[serde(default)]
    pub context_length: Option<u32>,
    /// Largest `max_tokens` accepted.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The `max_tokens` the members use when a request gives none.
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// Prompt bytes per token of the model's tokenizer (low, so estimates err long).
    #[serde(default)]
    pub bytes_per_token: Option<f32>,
    /// Function calling.
    #[serde(default)]
    pub tools: Option<bool>,
    /// `response_format` kinds served besides text (`json_object`, `json_schema`).
    #[serde(default)]
    pub response_format: Option<Vec<String>>,
    /// `logprobs` / `top_logprobs`.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Most choices per request (`n`).
    #[serde(default)]
    pub max_n: Option<u32>,
    /// Image parts in messages.
    #[serde(default)]
    pub images: Option<bool>,
    /// Parameters beyond plain chat (`logit_bias`, `reasoning_effort`, a server's extensions).
    #[serde(default)]
    pub other_parameters: Option<bool>,
    /// The members serve `POST /v1/embeddings` (declared here only: a model card does not say). Off by
    /// default; with no pool declaring it, `/v1/embeddings` is a 404 naming this key.
    #[serde(default)]
    pub embeddings: bool,
}

impl Default for CapabilitiesSection {
    fn default() -> Self {
        Self {
            discover: default_discover(),
            card_path: default_card_path(),
            context_length: None,
            max_tokens: None,
            default_max_tokens: None,
            bytes_per_token: None,
            tools: None,
            response_format: None,
            logprobs: None,
            max_n: None,
            images: None,
            other_parameters: None,
            embeddings: false,
        }
    }
}

fn default_discover() -> bool {
    true
}
fn default_card_path() -> String {
    "/v1/models".to_owned()
}

impl CapabilitiesSection {
    /// `learned` with every key this section sets replaced.
    pub fn apply(&self, learned: Capabilities) -> Capabilities {
        let mut serves = learned;
        serves.context_length = self.context_length.or(serves.context_length);
        serves.max_tokens = self.max_tokens.or(serves.max_tokens);
        serves.default_max_tokens = self.default_max_tokens.or(serves.default_max_tokens);
        serves.bytes_per_token = self.bytes_per_token.or(serves.bytes_per_token);
        serves.tools = self.tools.unwrap_or(serves.tools);
        if let Some(kinds) = &self.response_format {
            // Validated: every name is known.
            serves.response_format =
                ResponseFormats::from_names(kinds.iter().map(String::as_str).filter(|k| *k != "text"))
                    .unwrap_or(serves.response_format);
        }
        serves.logprobs = self.logprobs.unwrap_or(serves.logprobs);
        serves.max_n = self.max_n.unwrap_or(serves.max_n);
        serves.images = self.images.unwrap_or(serves.images);
        serves.other_parameters = self.other_parameters.unwrap_or(serves.other_parameters);
        serves
    }

    /// What is wrong with the section, each problem prefixed with `key` (`edge.capabilities`).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.card_path.starts_with('/') {
            problems.push(format!("{key}.card_path: `{}` must start with /", self.card_path));
        }
        for (name, value) in [
            ("context_length", self.context_length),
            ("max_tokens", self.max_tokens),
            ("default_max_tokens", self.default_max_tokens),
            ("max_n", self.max_n),
        ] {
            if value == Some(0) {
                problems.push(format!("{key}.{name}: must be at least 1"));
            }
        }
        if let (Some(default), Some(cap)) = (self.default_max_tokens, self.max_tokens)
            && default > cap
        {
            problems.push(format!(
                "{key}.default_max_tokens: {default} is above max_tokens ({cap})"
            ));
        }
        if let (Some(cap), Some(context)) = (self.max_tokens, self.context_length)
            && cap > context
        {
            problems.push(format!("{key}.max_tokens: {cap} is above context_length ({context})"));
        }
        if let Some(b) = self.bytes_per_token
            && !(b.is_finite() && (0.5..=64.0).contains(&b))
        {
            problems.push(format!("{key}.bytes_per_token: must be 0.5..=64"));
        }
        for kind in self.response_format.iter().flatten() {
            if kind != "text" && ResponseFormats::from_names([kind.as_str()]).is_err() {
                problems.push(format!(
                    "{key}.response_format: `{kind}` is unknown (text, json_object, json_schema)"
                ));
            }
        }
        problems
    }
}

/// One entry of an OpenAI model list, as far as routing cares.
#[derive(Debug, Deserialize)]
struct CardEntry {
    #[serde(default)]
    id: String,
    #[serde(default)]
    max_model_len: Option<u64>,
    #[serde(default)]
    capabilities: Option<Capabilities>,
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<CardEntry>,
}

/// What a member serves by its card `body`: the entry for `model`, else the only entry, else the first
/// that says anything; `None` when the body is no model list or says nothing.
pub fn read_card(body: &[u8], model: &str, baseline: Capabilities) -> Option<Capabilities> {
    let list: ModelList = serde_json::from_slice(body).ok()?;
    let entry = list
        .data
        .iter()
        .find(|e| e.id == model)
        .or_else(|| (list.data.len() == 1).then(|| &list.data[0]))
        .or_else(|| {
            list.data
                .iter()
                .find(|e| e.capabilities.is_some() || e.max_model_len.is_some())
        })?;
    let context = entry.max_model_len.and_then(|n| u32::try_from(n).ok());
    match entry.capabilities {
        Some(mut capabilities) => {
            capabilities.context_length = capabilities.context_length.or(context);
            Some(capabilities)
        }
        None => context.map(|context_length| Capabilities {
            context_length: Some(context_length),
            ..baseline
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_gives_r1_edge_capabilities_whole_and_vllm_its_context() {
        let edge = br#"{"object":"list","data":[{"id":"r1-edge-mini","object":"model","max_model_len":512,
            "capabilities":{"context_length":512,"max_tokens":1024,"default_max_tokens":256,"bytes_per_token":3.1,
            "tools":false,"response_format":[],"logprobs":false,"max_n":1,"images":false}}]}"#;
        let learned = read_card(edge, "r1-edge-mini", Capabilities::PLAIN).unwrap();
        assert_eq!(learned.max_tokens, Some(1024));
        assert_eq!(learned.context_length, Some(512));
        assert_eq!(learned.bytes_per_token, Some(3.1));

        let vllm = br#"{"object":"list","data":[{"id":"other","max_model_len":4096},
            {"id":"deepseek-ai/DeepSeek-R1","object":"model","max_model_len":163840}]}"#;
        let learned = read_card(vllm, "deepseek-ai/DeepSeek-R1", Capabilities::FULL).unwrap();
        assert_eq!(
            learned,
            Capabilities {
                context_length: Some(163_840),
                ..Capabilities::FULL
            }
        );

        // A card that says nothing, or no card at all, leaves the member at the baseline.
        assert_eq!(read_card(br#"{"data":[{"id":"x"}]}"#, "y", Capabilities::FULL), None);
        assert_eq!(read_card(b"<html>", "y", Capabilities::FULL), None);
    }

    #[test]
    fn config_keys_replace_what_was_learned() {
        let section: CapabilitiesSection =
            toml::from_str("max_tokens = 8192\ntools = true\nresponse_format = [\"text\", \"json_object\"]\n").unwrap();
        let learned = Capabilities {
            max_tokens: Some(1024),
            context_length: Some(32_768),
            ..Capabilities::PLAIN
        };
        let serves = section.apply(learned);
        assert_eq!(serves.max_tokens, Some(8192));
        assert_eq!(serves.context_length, Some(32_768));
        assert!(serves.tools && serves.response_format.json_object && !serves.response_format.json_schema);
        assert!(!serves.logprobs);
        assert!(section.problems("edge.capabilities").is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let section: CapabilitiesSection = toml::from_str(
            "card_path = \"v1/models\"\nmax_tokens = 100\ndefault_max_tokens = 200\nmax_n = 0\nresponse_format = [\"yaml\"]\n",
        )
        .unwrap();
        let keys: Vec<String> = section
            .problems("edge.capabilities")
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "edge.capabilities.card_path",
                "edge.capabilities.max_n",
                "edge.capabilities.default_max_tokens",
                "edge.capabilities.response_format"
            ]
        );
    }
}
