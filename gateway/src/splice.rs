//! The upstream body made from the client's bytes: its top-level `model` value replaced by the pool's
//! model, and for a stream `"stream_options":{"include_usage":true}` added, everything else passed on
//! byte for byte. Cheaper than writing the parsed request out again (no second serializer pass over
//! the messages, no allocation per field), and what the client sent is what the member reads.
//!
//! Only for a body that parsed as the request the gateway checked, which nothing changed since
//! (hygiene made no edit, it came through the chat API). [`model`] finds the top-level keys it needs
//! with a borrowing parse of the same bytes and gives up (`None`: the caller serializes the request)
//! on anything it would have to guess about — a `model` key given twice, a `stream_options` already
//! there when one must be added.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The top-level keys a splice needs, borrowed from the body; every other key is skipped unread.
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow)]
    model: &'a RawValue,
    /// Present in the body at all, `null` included (`Option<&RawValue>` would read `null` as absent).
    #[serde(default, borrow, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// `body` with its top-level `model` value replaced by `pool_model` and, when `add_usage`,
/// `"stream_options":{"include_usage":true}` added as its first key. `None` when the body does not
/// allow it: not a JSON object with one `model` key, or `stream_options` present while `add_usage`.
pub fn model(body: &[u8], pool_model: &str, add_usage: bool) -> Option<Vec<u8>> {
    // serde's derive refuses a duplicated known field, so `model` given twice is an error here.
    let top: Top<'_> = serde_json::from_slice(body).ok()?;
    if add_usage && top.stream_options.is_some() {
        return None;
    }
    let (start, end) = span(body, top.model.get())?;
    let open = body.iter().position(|&b| b == b'{')?;
    let mut out = Vec::with_capacity(body.len() + pool_model.len() + 40);
    out.extend_from_slice(&body[..=open]);
    if add_usage {
        out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
    }
    out.extend_from_slice(&body[open + 1..start]);
    serde_json::to_writer(&mut out, pool_model).ok()?;
    out.extend_from_slice(&body[end..]);
    Some(out)
}

/// Where `part`, a slice of `body`, lies in it.
fn span(body: &[u8], part: &str) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= body.len()).then_some((start, end))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::{Value, json};

    fn spliced(body: &str, add_usage: bool) -> Option<String> {
        model(body.as_bytes(), "pool-model", add_usage).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn only_the_model_value_changes_and_the_rest_stays_byte_for_byte() {
        let body = r#"{ "messages": [{"role":"user","content":"say \"model\": x"}], "model" : "r1-hybrid",
            "temperature": 0.70, "extra": {"model": "inner"} }"#;
        let out = spliced(body, false).unwrap();
        assert_eq!(out, body.replace(r#""r1-hybrid""#, r#""pool-model""#));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["model"], "pool-model");
        assert_eq!(v["extra"]["model"], "inner", "a nested model key is not the request's");
    }

    #[test]
    fn a_stream_gets_its_usage_chunk_asked_for() {
        let out = spliced(r#"{"model":"m","stream":true,"messages":[]}"#, true).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({"model": "pool-model", "stream": true, "messages": [], "stream_options": {"include_usage": true}})
        );
    }

    #[test]
    fn what_it_cannot_do_without_guessing_is_left_to_the_serializer() {
        // model twice (which one would the member read?), stream_options present (null included)
        // while one must be added, a body that is not an object, or has no model string at all.
        assert_eq!(spliced(r#"{"model":"a","messages":[],"model":"b"}"#, false), None);
        assert_eq!(spliced(r#"{"model":"a","stream_options":null}"#, true), None);
        assert_eq!(spliced(r#"{"model":"a","stream_options":{"x":1}}"#, true), None);
        assert!(spliced(r#"{"model":"a","stream_options":null}"#, false).is_some());
        assert_eq!(spliced(r#"["model"]"#, false), None);
        assert_eq!(spliced(r#"{"messages":[]}"#, false), None);
    }

    #[test]
    fn the_pool_model_is_written_as_a_json_string() {
        let out = model(br#"{"model":"m"}"#, "a\"b\\c", false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "a\"b\\c");
    }
}
