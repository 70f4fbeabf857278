//! Reads a streamed answer's SSE events as they arrive (with the project's one SSE reader,
//! `r1_proto::sse::Decoder`, as a client reads them): when the first token came, whether the stream
//! ended with `data: [DONE]`, and whether it carried an in-band error event (`data: {"error": …}`).
//!
//! DESIGN.md's rule is that a stream that fails after it started ends with an error event and never
//! with `[DONE]`; [`StreamEnd`] names the four ways a stream can end so the report can count them.

use std::time::Duration;

use r1_proto::sse::{Decoder, Frame};
use serde::{Deserialize, Serialize};

/// Longest SSE line or event accepted; a longer one fails the request (a misbehaving server cannot make
/// the generator buffer without bound).
pub const MAX_SSE_LINE: usize = 1 << 20;

/// How a streamed 2xx body ended, by the markers it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamEnd {
    /// `data: [DONE]` and no error event: a completed stream.
    Done,
    /// An in-band error event and no `[DONE]`: a failure reported as the rules ask.
    ErrorEvent,
    /// An error event *and* `[DONE]`: a failure dressed up as a success (must never happen).
    FakeDone,
    /// Neither marker before the body ended: a reset connection, an end without `[DONE]`, or the
    /// generator's own timeout.
    Cut,
}

impl StreamEnd {
    /// The label in the report and the per-request log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::ErrorEvent => "error_event",
            Self::FakeDone => "fake_done",
            Self::Cut => "cut",
        }
    }
}

/// The SSE body was not line-based text we can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// What the events of one streamed body said so far. Feed it the body's chunks in order.
#[derive(Debug, Clone)]
pub struct SseScan {
    decoder: Decoder,
    /// When the first event whose delta carries text arrived (the time passed to [`feed`](Self::feed)).
    pub first_token: Option<Duration>,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// An event whose JSON has a top-level `error` was seen.
    pub error_event: bool,
}

impl Default for SseScan {
    fn default() -> Self {
        Self {
            decoder: Decoder::new(MAX_SSE_LINE),
            first_token: None,
            done: false,
            error_event: false,
        }
    }
}

impl SseScan {
    /// Scans the events `chunk` completes (a partial last one waits for the next chunk); `at` is when
    /// the chunk arrived, the time a first token in it is given.
    pub fn feed(&mut self, chunk: &[u8], at: Duration) -> Result<(), LineTooLong> {
        let mut events = Vec::new();
        self.decoder
            .feed(chunk, &mut |frame| {
                if let Frame::Event { data, .. } = frame {
                    events.push(data);
                }
            })
            .map_err(|_| LineTooLong)?;
        for data in events {
            self.scan_event(&data, at);
        }
        Ok(())
    }

    /// How the stream ended, given everything fed so far.
    pub fn end(&self) -> StreamEnd {
        match (self.error_event, self.done) {
            (true, true) => StreamEnd::FakeDone,
            (true, false) => StreamEnd::ErrorEvent,
            (false, true) => StreamEnd::Done,
            (false, false) => StreamEnd::Cut,
        }
    }

    fn scan_event(&mut self, data: &[u8], at: Duration) {
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        // Parse only the events that can change what we know: until the first token, every one; after
        // it, only those that may be an error (content chunks are the hot path and say nothing new).
        let may_be_error = contains(data, br#""error""#);
        if self.first_token.is_some() && !may_be_error {
            return;
        }
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        if event.get("error").is_some_and(|e| !e.is_null()) {
            self.error_event = true;
        } else if self.first_token.is_none() && has_text(&event) {
            self.first_token = Some(at);
        }
    }
}

/// Whether a chunk's delta carries text (`content` or `reasoning_content`). A role-only first chunk
/// does not count.
fn has_text(event: &serde_json::Value) -> bool {
    let Some(choices) = event["choices"].as_array() else {
        return false;
    };
    choices.iter().any(|choice| {
        ["content", "reasoning_content"]
            .iter()
            .any(|key| choice["delta"][key].as_str().is_some_and(|text| !text.is_empty()))
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Each line sent as one event (followed by its blank line).
    fn scan(lines: &[&str]) -> SseScan {
        let mut scan = SseScan::default();
        for line in lines {
            scan.feed(format!("{line}\n\n").as_bytes(), MS).unwrap();
        }
        scan
    }

    #[test]
    fn first_token_means_text_in_a_delta() {
        for line in [
            r#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#,
            r#"data:{"choices":[{"delta":{"reasoning_content":"so"}}]}"#,
        ] {
            assert_eq!(scan(&[line]).first_token, Some(MS), "{line}");
        }
        for line in [
            r#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            "data: [DONE]",
            ": keep-alive",
            r#"event: x {"choices":[{"delta":{"content":"Hi"}}]}"#,
        ] {
            assert_eq!(scan(&[line]).first_token, None, "{line}");
        }
    }

    #[test]
    fn the_four_ends() {
        let token = r#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#;
        let error = r#"data: {"error":{"message":"the upstream model failed","type":"upstream_error"}}"#;
        assert_eq!(scan(&[token, "data: [DONE]"]).end(), StreamEnd::Done);
        assert_eq!(scan(&[token, error]).end(), StreamEnd::ErrorEvent);
        assert_eq!(scan(&[token, error, "data: [DONE]"]).end(), StreamEnd::FakeDone);
        // The order does not matter: an error after a [DONE] is just as fake.
        assert_eq!(scan(&["data: [DONE]", error]).end(), StreamEnd::FakeDone);
        assert_eq!(scan(&[token, token]).end(), StreamEnd::Cut);
        assert_eq!(scan(&[]).end(), StreamEnd::Cut);
        // An error event before any token (a stream that failed at once) is still an error event.
        assert_eq!(scan(&[error]).end(), StreamEnd::ErrorEvent);
    }

    #[test]
    fn look_alikes_are_not_markers() {
        // Text that mentions errors, a null `error`, `[DONE]` inside content, a comment.
        let lines = [
            r#"data: {"choices":[{"delta":{"content":"an \"error\" here"}}]}"#,
            r#"data: {"choices":[{"delta":{"content":"x"}}],"error":null}"#,
            r#"data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}"#,
            ": error [DONE]",
        ];
        let scan = scan(&lines);
        assert!(!scan.error_event && !scan.done, "{scan:?}");
        assert_eq!(scan.end(), StreamEnd::Cut);
    }

    #[test]
    fn lines_split_across_chunks_and_crlf() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\ndata: {\"error\":{\"message\":\"x\"}}\r\n\r\n";
        for split in 0..body.len() {
            let mut scan = SseScan::default();
            scan.feed(&body.as_bytes()[..split], MS).unwrap();
            scan.feed(&body.as_bytes()[split..], 2 * MS).unwrap();
            assert!(scan.first_token.is_some(), "split at {split}");
            assert_eq!(scan.end(), StreamEnd::ErrorEvent, "split at {split}");
        }
        // Byte by byte: the token is dated by the chunk that completed its event (the blank line).
        let mut scan = SseScan::default();
        for (i, byte) in body.bytes().enumerate() {
            scan.feed(&[byte], MS * i as u32).unwrap();
        }
        let event_end = body.find("\r\n\r\n").unwrap() + 2; // the blank line ends at its CR
        assert_eq!(scan.first_token, Some(MS * event_end as u32));
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut scan = SseScan::default();
        let chunk = vec![b'x'; MAX_SSE_LINE / 2 + 1];
        assert_eq!(scan.feed(&chunk, MS), Ok(()));
        assert_eq!(scan.feed(&chunk, MS), Err(LineTooLong));
    }
}
