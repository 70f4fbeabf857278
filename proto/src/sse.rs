//! Server-sent events: framing `data:` events, the `[DONE]` terminator and keep-alive comments, and the
//! one reader of event streams ([`Decoder`]) that every part of r1-hybrid reading SSE uses.
//!
//! Pure bytes; reading and writing sockets is the caller's business.

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

/// One server-sent event as the WHATWG event-stream rules read it: its `event:` name and its `data:`
/// lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An event with data.
    Event {
        /// The `event:` field, if any.
        name: Option<String>,
        /// The `data:` lines, joined by `\n` (one leading space of each dropped).
        data: Vec<u8>,
    },
    /// A comment line (`: keep-alive`), without its colon.
    Comment(Vec<u8>),
}

impl Frame {
    /// The frame as bytes on the wire (`event:`, `data:` lines, a blank line).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Comment(text) => {
                let mut out = Vec::with_capacity(text.len() + 3);
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\n\n");
                out
            }
            Self::Event { name, data } => {
                let mut out = Vec::with_capacity(data.len() + 16);
                if let Some(name) = name {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'\n');
                }
                for line in data.split(|b| *b == b'\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
                out.push(b'\n');
                out
            }
        }
    }
}

/// A line or an event longer than the decoder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event is longer than {0} bytes")]
pub struct TooLarge(pub usize);

/// Reads events out of the pieces of a stream, wherever they were cut: LF, CRLF or CR line ends (a CRLF
/// split between two pieces too), `data:` with or without its space, several `data:` lines joined,
/// comments, `event:` names, other fields (`id:`, `retry:`) ignored. A line or event over
/// `max_event_bytes` is an error — never an unbounded buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_event_bytes: usize,
    line: Vec<u8>,
    /// The last piece ended on CR: an LF opening the next one belongs to it.
    after_cr: bool,
    name: Option<String>,
    data: Vec<u8>,
    has_data: bool,
}

impl Decoder {
    /// A decoder for events of at most `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            name: None,
            data: Vec::new(),
            has_data: false,
        }
    }

    /// Feeds the next piece; every frame it completes goes to `out`, in order.
    pub fn feed(&mut self, mut piece: &[u8], out: &mut impl FnMut(Frame)) -> Result<(), TooLarge> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = piece.strip_prefix(b"\n") {
                piece = rest;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', piece) {
            let whole_line = if self.line.is_empty() {
                self.end_of_line(&piece[..end], out)
            } else {
                self.line.extend_from_slice(&piece[..end]);
                let line = std::mem::take(&mut self.line);
                let done = self.end_of_line(&line, out);
                self.line = line;
                self.line.clear();
                done
            };
            whole_line?;
            if piece[end] == b'\r' {
                match piece.get(end + 1) {
                    Some(b'\n') => piece = &piece[end + 2..],
                    Some(_) => piece = &piece[end + 1..],
                    None => {
                        self.after_cr = true;
                        piece = &[];
                    }
                }
            } else {
                piece = &piece[end + 1..];
            }
        }
        if self.line.len() + piece.len() > self.max_event_bytes {
            return Err(TooLarge(self.max_event_bytes));
        }
        self.line.extend_from_slice(piece);
        Ok(())
    }

    /// The stream ended: a last line and event not followed by a blank line still count.
    pub fn finish(&mut self, out: &mut impl FnMut(Frame)) -> Result<(), TooLarge> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.end_of_line(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn end_of_line(&mut self, line: &[u8], out: &mut impl FnMut(Frame)) -> Result<(), TooLarge> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix(b":") {
            out(Frame::Comment(comment.to_vec()));
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    return Err(TooLarge(self.max_event_bytes));
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {} // id, retry, unknown fields
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut impl FnMut(Frame)) {
        let name = self.name.take();
        if std::mem::take(&mut self.has_data) {
            out(Frame::Event {
                name,
                data: std::mem::take(&mut self.data),
            });
        }
    }
}

/// Tells, piece by piece, whether a stream's bytes carry a `data:` line (an event's payload: progress)
/// or only comments and blank lines (keep-alives), without buffering anything: the clock of a proxied
/// stream asks it of every piece. Lines may be cut anywhere between pieces and end in LF, CRLF or CR.
#[derive(Debug, Clone, Default)]
pub struct DataLines {
    /// Bytes of the current line seen so far (counted up to `data:`'s five).
    column: u8,
    /// The current line stopped reading as `data:`.
    mismatched: bool,
}

impl DataLines {
    /// Whether a `data` line is recognised in `piece` (its colon, or its end, arrives in it).
    pub fn any(&mut self, piece: &[u8]) -> bool {
        const FIELD: &[u8; 5] = b"data:";
        let mut found = false;
        let mut rest = piece;
        loop {
            let end = memchr::memchr2(b'\n', b'\r', rest);
            let line = &rest[..end.unwrap_or(rest.len())];
            for &byte in line.iter().take(usize::from(5u8.saturating_sub(self.column))) {
                let column = usize::from(self.column);
                if byte != FIELD[column] {
                    self.mismatched = true;
                }
                self.column += 1;
                if column == 4 && !self.mismatched {
                    found = true;
                }
            }
            let Some(end) = end else { return found };
            // A bare `data` line is a data field with an empty value.
            if self.column == 4 && !self.mismatched {
                found = true;
            }
            self.column = 0;
            self.mismatched = false;
            rest = &rest[end + 1..];
        }
    }
}

/// Every frame of a whole body (a test's or a replay's).
pub fn decode_all(body: &[u8], max_event_bytes: usize) -> Result<Vec<Frame>, TooLarge> {
    let mut frames = Vec::new();
    let mut decoder = Decoder::new(max_event_bytes);
    decoder.feed(body, &mut |f| frames.push(f))?;
    decoder.finish(&mut |f| frames.push(f))?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_compact_and_pretty_json() {
        assert_eq!(frame(br#"{"a":1}"#), b"data: {\"a\":1}\n\n");
        assert_eq!(frame(b"{\r\n  \"a\": 1\n}"), b"data: {    \"a\": 1 }\n\n");
    }

    fn frames(body: &[u8]) -> Vec<Frame> {
        decode_all(body, 1 << 16).unwrap()
    }

    fn event(name: Option<&str>, data: &str) -> Frame {
        Frame::Event {
            name: name.map(str::to_owned),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn every_way_of_writing_an_event_reads_the_same_wherever_the_stream_is_cut() {
        // LF, CRLF and CR line ends; `data:` with and without its space; several `data:` lines; a
        // comment; `event:` and `id:` fields; a last event without its blank line.
        let body = b": keep-alive\n\ndata: {\"a\":1}\r\n\r\ndata:{\"b\":2}\r\revent: error\ndata: one\ndata:  two\nid: 7\n\n\ndata: [DONE]";
        let expected = vec![
            Frame::Comment(b" keep-alive".to_vec()),
            event(None, "{\"a\":1}"),
            event(None, "{\"b\":2}"),
            event(Some("error"), "one\n two"),
            event(None, "[DONE]"),
        ];
        assert_eq!(frames(body), expected);
        for cut in 0..=body.len() {
            for second in cut..=body.len() {
                let mut decoder = Decoder::new(1 << 16);
                let mut got = Vec::new();
                for piece in [&body[..cut], &body[cut..second], &body[second..]] {
                    decoder.feed(piece, &mut |f| got.push(f)).unwrap();
                }
                decoder.finish(&mut |f| got.push(f)).unwrap();
                assert_eq!(got, expected, "cut at {cut} and {second}");
            }
        }
    }

    #[test]
    fn a_giant_line_or_event_is_an_error_not_an_unbounded_buffer() {
        let mut decoder = Decoder::new(64);
        let mut sink = |_| {};
        assert_eq!(decoder.feed(&[b'x'; 65], &mut sink), Err(TooLarge(64)));
        let mut decoder = Decoder::new(64);
        let line = [b"data: ".as_slice(), &[b'y'; 40], b"\n"].concat();
        decoder.feed(&line, &mut sink).unwrap();
        assert_eq!(
            decoder.feed(&line, &mut sink),
            Err(TooLarge(64)),
            "two data lines over the cap"
        );
    }

    #[test]
    fn data_lines_are_told_from_keep_alives_wherever_the_stream_is_cut() {
        let body = b": keep-alive\r\n\r\nevent: x\ndata: {}\n\n: data: in a comment\n\ndata\n\n";
        // Where each data line is recognised: at its colon, or at the end of a bare `data`.
        let colon = body.windows(6).position(|w| w == b"\ndata:").unwrap() + 5;
        let bare = body.len() - 2;
        for cut in 0..=body.len() {
            let mut lines = DataLines::default();
            let (a, b) = body.split_at(cut);
            let seen = (lines.any(a), lines.any(b));
            let expected = (cut > colon || cut > bare, cut <= colon || cut <= bare);
            assert_eq!(seen, expected, "cut at {cut}");
        }
        assert!(!DataLines::default().any(b": keep-alive\n\n"));
        assert!(!DataLines::default().any(b"datum: 1\n\n"));
        assert!(DataLines::default().any(b"data:{}\r\r"));
    }

    #[test]
    fn frames_write_back_as_they_read() {
        for frame in [
            event(Some("message_start"), "{}"),
            event(None, "a\nb"),
            Frame::Comment(b" ping".to_vec()),
        ] {
            assert_eq!(frames(&frame.to_bytes()), vec![frame]);
        }
    }

    #[test]
    fn constants_are_well_formed_events() {
        assert!(DONE.starts_with(b"data: ") && DONE.ends_with(b"\n\n"));
        assert!(KEEP_ALIVE.starts_with(b":") && KEEP_ALIVE.ends_with(b"\n\n"));
    }
}
