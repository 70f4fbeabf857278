//! Token usage read from a proxied answer as it passes, so the caller's `tokens_per_minute` is charged
//! what was generated rather than what was reserved.
//!
//! - A JSON answer carries `usage` near its end: the tap keeps the last [`TAIL`] bytes and reads it there.
//! - A stream carries it in its last chunk when `stream_options.include_usage` is set. The gateway sets
//!   it upstream for every stream; when the client did not ask for it, the tap takes that usage-only
//!   chunk (`"choices":[]`) out of what the client receives, so the client sees the stream it asked for.
//!
//! Upstream JSON is compact (`"usage":{`) from every server we proxy (r1-edge, vLLM, SGLang, OpenAI's
//! API); the spaced form (`"usage": {`) is read too. An answer whose usage cannot be found keeps the
//! caller's reservation — never a refund of it — except a stream cut midway (the model died, a limit
//! cut it, the client left): it is charged its prompt and one token per streamed delta (the role and
//! finish deltas included, so never less than what it carried), not the whole reservation.

use bytes::{Bytes, BytesMut};
use r1_proto::Usage;

/// Bytes of a JSON answer's end kept to find its `usage`.
pub const TAIL: usize = 2048;

const KEYS: [&[u8]; 2] = [b"\"usage\":{", b"\"usage\": {"];

/// Reads one answer's usage.
#[derive(Debug)]
pub enum UsageTap {
    /// A JSON answer: its last bytes.
    Json {
        /// Up to [`TAIL`] bytes of the answer's end.
        tail: Vec<u8>,
    },
    /// A stream.
    Sse {
        /// Take the usage-only chunk out (the client did not ask for it).
        hide: bool,
        /// Usage found so far.
        found: Option<Usage>,
        /// Deltas streamed so far (a delta split between two pieces may be missed).
        deltas: u64,
    },
}

impl UsageTap {
    /// A tap for a JSON answer.
    pub fn json() -> Self {
        Self::Json { tail: Vec::new() }
    }

    /// A tap for a stream; `hide`: the client did not ask for the usage chunk.
    pub fn sse(hide: bool) -> Self {
        Self::Sse {
            hide,
            found: None,
            deltas: 0,
        }
    }

    /// Looks at a piece of the answer on its way to the client (and may take the usage chunk out).
    pub fn observe(&mut self, body: &mut Option<Bytes>) {
        let Some(chunk) = body.as_ref() else { return };
        match self {
            Self::Json { tail } => {
                tail.extend_from_slice(chunk);
                if tail.len() > TAIL {
                    tail.drain(..tail.len() - TAIL);
                }
            }
            Self::Sse { hide, found, deltas } => {
                *deltas += memchr::memmem::find_iter(chunk, b"\"delta\":").count() as u64;
                let Some((at, usage)) = find_usage(chunk) else { return };
                *found = Some(usage);
                if *hide && let Some(without) = without_event(chunk, at) {
                    *body = Some(without);
                }
            }
        }
    }

    /// The answer's `usage.total_tokens`, if it carried one.
    pub fn total_tokens(&self) -> Option<u64> {
        match self {
            Self::Json { tail } => find_usage(tail).map(|(_, u)| u.total_tokens),
            Self::Sse { found, .. } => found.as_ref().map(|u| u.total_tokens),
        }
    }

    /// For a stream cut before its usage chunk: what it generated, at most one token per delta
    /// streamed. `None` for a JSON answer (nothing of a cut one reached the client) or a stream that
    /// carried its usage.
    pub fn streamed_tokens(&self) -> Option<u64> {
        match self {
            Self::Sse {
                found: None, deltas, ..
            } => Some(*deltas),
            _ => None,
        }
    }
}

/// The last `usage` object in `bytes`: where its key starts, and the usage.
fn find_usage(bytes: &[u8]) -> Option<(usize, Usage)> {
    let at = KEYS
        .iter()
        .filter_map(|key| rfind(bytes, key).map(|i| (i, key.len())))
        .max()?;
    let open = at.0 + at.1 - 1;
    let close = matching_brace(&bytes[open..])? + open;
    let usage = serde_json::from_slice(&bytes[open..=close]).ok()?;
    Some((at.0, usage))
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(haystack, needle)
}

/// The index of the `}` closing the object that starts at `bytes[0]` (a usage object has no strings
/// holding braces).
fn matching_brace(bytes: &[u8]) -> Option<usize> {
    let mut depth = 0_usize;
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `chunk` without the SSE event holding byte `at`, if that whole event is in the chunk and it is a
/// usage-only chunk (`"choices":[]`).
fn without_event(chunk: &[u8], at: usize) -> Option<Bytes> {
    let start = rfind(&chunk[..at], b"\n\n").map_or(0, |i| i + 2);
    let end = memchr::memmem::find(&chunk[at..], b"\n\n")? + at + 2;
    let event = &chunk[start..end];
    if !event.starts_with(b"data:") || !(contains(event, b"\"choices\":[]") || contains(event, b"\"choices\": []")) {
        return None;
    }
    let mut out = BytesMut::with_capacity(chunk.len() - event.len());
    out.extend_from_slice(&chunk[..start]);
    out.extend_from_slice(&chunk[end..]);
    Some(out.freeze())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(tap: &mut UsageTap, piece: &str) -> String {
        let mut body = Some(Bytes::from(piece.to_owned()));
        tap.observe(&mut body);
        String::from_utf8(body.unwrap_or_default().to_vec()).unwrap_or_default()
    }

    #[test]
    fn a_json_answer_is_read_at_its_end_even_across_pieces() {
        let mut tap = UsageTap::json();
        let body = r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi {"}}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        let (a, b) = body.split_at(body.len() - 20);
        assert_eq!(pass(&mut tap, a), a);
        assert_eq!(pass(&mut tap, b), b);
        assert_eq!(tap.total_tokens(), Some(10));
        let mut spaced = UsageTap::json();
        pass(
            &mut spaced,
            r#"{"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}"#,
        );
        assert_eq!(spaced.total_tokens(), Some(2));
        let mut none = UsageTap::json();
        pass(&mut none, r#"{"choices":[]}"#);
        assert_eq!(none.total_tokens(), None);
    }

    #[test]
    fn a_stream_cut_before_its_usage_counts_its_deltas() {
        let mut tap = UsageTap::sse(true);
        pass(
            &mut tap,
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        );
        for _ in 0..3 {
            pass(
                &mut tap,
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
            );
        }
        assert_eq!((tap.total_tokens(), tap.streamed_tokens()), (None, Some(4)));
        pass(
            &mut tap,
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3,\"total_tokens\":7}}\n\n",
        );
        assert_eq!((tap.total_tokens(), tap.streamed_tokens()), (Some(7), None));
        assert_eq!(UsageTap::json().streamed_tokens(), None);
    }

    #[test]
    fn a_usage_chunk_the_client_did_not_ask_for_is_read_and_taken_out() {
        let content = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n";
        let usage =
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n";
        let done = "data: [DONE]\n\n";
        let mut hidden = UsageTap::sse(true);
        assert_eq!(pass(&mut hidden, content), content);
        assert_eq!(pass(&mut hidden, &format!("{usage}{done}")), done);
        assert_eq!(hidden.total_tokens(), Some(6));
        let mut shown = UsageTap::sse(false);
        assert_eq!(pass(&mut shown, usage), usage);
        assert_eq!(shown.total_tokens(), Some(6));
        // A usage event split across pieces is passed on whole (the client ignores a chunk without choices).
        let mut split = UsageTap::sse(true);
        let (a, b) = usage.split_at(usage.len() - 3);
        assert_eq!(pass(&mut split, a), a);
        assert_eq!(pass(&mut split, b), b);
        assert_eq!(split.total_tokens(), Some(6));
    }
}
