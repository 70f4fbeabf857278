//! Server-sent events framing: `data:` events, the `[DONE]` terminator and keep-alive comments.
//!
//! Pure formatting; writing the bytes is the caller's business.

use serde::Serialize;

/// The event that ends a successful OpenAI stream. Never send it after a failure: send an error
/// event ([`ErrorBody::to_sse_event`](crate::ErrorBody::to_sse_event)) instead.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// An SSE comment line, ignored by clients, that keeps idle connections open while R1 thinks.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Frames a JSON payload as one event: `data: {…}\n\n`.
///
/// A raw line break would end the `data:` line early, and in JSON one can only be whitespace between
/// tokens, so CR and LF are written as spaces: pretty-printed JSON from elsewhere frames safely.
pub fn frame(json: &[u8]) -> Vec<u8> {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend(
        json.iter()
            .map(|&byte| if byte == b'\n' || byte == b'\r' { b' ' } else { byte }),
    );
    event.extend_from_slice(b"\n\n");
    event
}

/// Serializes one of this crate's types and frames it as an event.
pub(crate) fn event<T: Serialize>(value: &T) -> Vec<u8> {
    frame(&crate::to_json(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_compact_and_pretty_json() {
        assert_eq!(frame(br#"{"a":1}"#), b"data: {\"a\":1}\n\n");
        assert_eq!(frame(b"{\r\n  \"a\": 1\n}"), b"data: {    \"a\": 1 }\n\n");
    }

    #[test]
    fn constants_are_well_formed_events() {
        assert!(DONE.starts_with(b"data: ") && DONE.ends_with(b"\n\n"));
        assert!(KEEP_ALIVE.starts_with(b":") && KEEP_ALIVE.ends_with(b"\n\n"));
    }
}
