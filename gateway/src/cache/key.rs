//! Which requests may be cached ([`cacheable`]) and under which key ([`CacheKey`]).

use http::HeaderMap;
use r1_proto::ChatCompletionRequest;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::CacheSection;

/// The prefix of every cache key; the version changes whenever what a key covers or what an entry
/// holds changes, so old entries are simply never read again.
pub const KEY_PREFIX: &str = "r1:cache:v2:";

/// Why a request may be answered from (and stored in) the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Why {
    /// `temperature` is exactly 0: greedy decoding, one right answer.
    Deterministic,
    /// The client opted in with the opt-in header set to `on`.
    Header,
    /// The model is listed in `always_models`.
    ModelRule,
}

impl Why {
    /// Every value (to pre-register metric label values).
    pub const ALL: [Self; 3] = [Self::Deterministic, Self::Header, Self::ModelRule];

    /// A short name for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Deterministic => "deterministic",
            Self::Header => "header",
            Self::ModelRule => "model_rule",
        }
    }
}

/// Whether `request` may be answered from the cache, and why; `None` when it may not.
///
/// In order: never when the cache is disabled, when the opt-in header says `off` (any of its values),
/// or when `n > 1` (several samples are asked for, so one stored answer is the wrong answer). Then:
/// `temperature` exactly 0 ([`Why::Deterministic`]; a missing temperature is the server's default,
/// usually 1, and is *not* deterministic), the opt-in header `on` ([`Why::Header`]), or the model in
/// `always_models` ([`Why::ModelRule`]). Header values are compared case-insensitively, trimmed.
pub fn cacheable(request: &ChatCompletionRequest, headers: &HeaderMap, section: &CacheSection) -> Option<Why> {
    if !section.enabled || request.n.is_some_and(|n| n > 1) {
        return None;
    }
    let mut opted_in = false;
    for value in headers.get_all(section.opt_in_header.as_str()) {
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") {
            return None;
        }
        opted_in |= value.eq_ignore_ascii_case("on");
    }
    if request.temperature == Some(0.0) {
        Some(Why::Deterministic)
    } else if opted_in {
        Some(Why::Header)
    } else if section.always_models.contains(&request.model) {
        Some(Why::ModelRule)
    } else {
        None
    }
}

/// Where one answer lives: `r1:cache:v2:<sha256 hex>` of the tenant and everything in the request
/// that can change the answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    key: String,
    model: String,
}

impl CacheKey {
    /// The key of `request` for `tenant` (the JWT subject; `""` when auth is off).
    ///
    /// Covered: the tenant, the model, the messages, every sampling parameter (`temperature`, `top_p`,
    /// `top_k`, `seed`, penalties, `max_tokens`, `max_completion_tokens`, `stop`, `n`) and every key the
    /// request types do not model (`tools`, `tool_choice`, `response_format`, `logit_bias`,
    /// `logprobs`, …), exactly as sent — a missing parameter differs from any value of it. Not
    /// covered: `stream`, `stream_options` and `user`.
    ///
    /// The request is written as compact JSON straight into the hash, nothing built on the way: the
    /// modelled fields in their declared order, then every map (the unmodelled keys, and any object
    /// inside a value) with its keys sorted, so the order a client writes its keys in does not matter.
    ///
    /// `None` only if the request cannot be written as JSON, which a parsed request always can; treat
    /// it as not cacheable.
    pub fn new(tenant: &str, request: &ChatCompletionRequest) -> Option<Self> {
        let mut hash = HashWriter(Sha256::new());
        // The tenant is written as a JSON string first, so no tenant can collide with another's
        // tenant-plus-request bytes.
        serde_json::to_writer(&mut hash, tenant).ok()?;
        hash.0.update(b"\n");
        serde_json::to_writer(&mut hash, &Covered::of(request)).ok()?;
        let digest = hash.0.finalize();
        let mut key = String::with_capacity(KEY_PREFIX.len() + 64);
        key.push_str(KEY_PREFIX);
        for byte in digest.iter() {
            use std::fmt::Write as _;
            let _ = write!(key, "{byte:02x}");
        }
        Some(Self {
            key,
            model: request.model.clone(),
        })
    }

    /// The store key, `r1:cache:v2:<64 hex digits>`.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The model the request named (it selects the TTL).
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

/// What of a request the key covers, borrowed: all of it but `stream`, `stream_options` and `user`.
#[derive(Serialize)]
struct Covered<'a> {
    model: &'a str,
    messages: &'a [r1_proto::ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a r1_proto::Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> Covered<'a> {
    fn of(request: &'a ChatCompletionRequest) -> Self {
        // Every field named, none skipped with `..`: a field added to the request type does not
        // compile here until it is either covered or left out on purpose.
        let ChatCompletionRequest {
            model,
            messages,
            stream: _,
            stream_options: _,
            max_tokens,
            max_completion_tokens,
            temperature,
            top_p,
            top_k,
            seed,
            stop,
            n,
            presence_penalty,
            frequency_penalty,
            user: _,
            extra,
        } = request;
        Self {
            model,
            messages,
            max_tokens: *max_tokens,
            max_completion_tokens: *max_completion_tokens,
            temperature: *temperature,
            top_p: *top_p,
            top_k: *top_k,
            seed: *seed,
            stop: stop.as_ref(),
            n: *n,
            presence_penalty: *presence_penalty,
            frequency_penalty: *frequency_penalty,
            extra,
        }
    }
}

/// Feeds what serde writes into the hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn maps_are_written_with_sorted_keys_at_every_depth() {
        // The key's order independence rests on serde_json's map being sorted (its `preserve_order`
        // feature off in this build); this fails if a dependency ever turns it on.
        let value = json!({"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": "é\n"}});
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"a":{"c":"é\n","d":[1,{"x":1,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn keys_look_like_the_contract() {
        let request: ChatCompletionRequest =
            serde_json::from_value(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        let key = CacheKey::new("t", &request).unwrap();
        let hex = key.as_str().strip_prefix(KEY_PREFIX).unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(key.model(), "m");
    }
}
