//! Which requests may be cached ([`cacheable`]) and under which key ([`CacheKey`]).

use http::HeaderMap;
use r1_proto::ChatCompletionRequest;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::CacheSection;

/// The prefix of every cache key; the version changes whenever what a key covers or what an entry
/// holds changes, so old entries are simply never read again.
pub const KEY_PREFIX: &str = "r1:cache:v1:";

/// Request keys that do not change the answer, only how it is delivered or attributed: a streamed
/// request and a JSON one share an entry.
const NOT_IN_KEY: [&str; 3] = ["stream", "stream_options", "user"];

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

/// Where one answer lives: `r1:cache:v1:<sha256 hex>` of the tenant and everything in the request
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
    /// covered: `stream`, `stream_options` and `user`. Objects are written with sorted keys before
    /// hashing, so the order a client writes its keys in does not matter.
    ///
    /// `None` only if the request cannot be written as JSON, which a parsed request always can; treat
    /// it as not cacheable.
    pub fn new(tenant: &str, request: &ChatCompletionRequest) -> Option<Self> {
        let Ok(Value::Object(mut fields)) = serde_json::to_value(request) else {
            return None;
        };
        for key in NOT_IN_KEY {
            fields.remove(key);
        }
        let mut canonical = Vec::with_capacity(512);
        // The tenant is written as a JSON string first, so no tenant can collide with another's
        // tenant-plus-request bytes.
        write_canonical(&Value::String(tenant.to_owned()), &mut canonical);
        canonical.push(b'\n');
        write_canonical(&Value::Object(fields), &mut canonical);
        let digest = Sha256::digest(&canonical);
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

    /// The store key, `r1:cache:v1:<64 hex digits>`.
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

/// Compact JSON with object keys sorted, whatever order the map keeps them in.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a string, number, bool or null into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_at_every_depth() {
        let mut a = Vec::new();
        write_canonical(&json!({"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": "é\n"}}), &mut a);
        assert_eq!(
            String::from_utf8(a).unwrap(),
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
