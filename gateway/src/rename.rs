//! The answer's `model` as the client named it: a request for `deepseek-r1` that the edge pool answers
//! says `"model":"deepseek-r1"`, as the hand-off's and the cache's answers do; the pool's own model is
//! in the `x-r1-model` header.
//!
//! A proxied answer is rewritten in its bytes as it passes, never parsed: every `"model":"<pool model>"`
//! becomes `"model":"<client's name>"`. Model servers write compact JSON (r1-edge, vLLM, SGLang,
//! OpenAI's API), so the compact form is the one matched. A piece that ends part-way into the pattern
//! holds those few bytes back until the next piece (or the end) says whether they match.

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

/// Rewrites one answer's `model`.
#[derive(Debug)]
pub struct ModelRename {
    from: Finder<'static>,
    to: Vec<u8>,
    held: Vec<u8>,
}

impl ModelRename {
    /// A rename of `pool` to `client`; `None` when they are the same name (nothing to do).
    pub fn new(pool: &str, client: &str) -> Option<Self> {
        if pool == client {
            return None;
        }
        let quoted = |name: &str| {
            let mut key = b"\"model\":".to_vec();
            key.extend_from_slice(serde_json::to_string(name).unwrap_or_default().as_bytes());
            key
        };
        Some(Self {
            from: Finder::new(&quoted(pool)).into_owned(),
            to: quoted(client),
            held: Vec::new(),
        })
    }

    /// Whether the answer's length changes (a `content-length` from upstream no longer holds).
    pub fn changes_length(&self) -> bool {
        self.from.needle().len() != self.to.len()
    }

    /// Rewrites a piece of the answer on its way to the client; `end`: the last piece.
    pub fn rewrite(&mut self, body: &mut Option<Bytes>, end: bool) {
        let chunk = body.take().unwrap_or_default();
        if self.held.is_empty() && self.from.find(&chunk).is_none() && self.partial_suffix(&chunk) == 0 {
            *body = Some(chunk);
            return;
        }
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(&chunk);
        let mut out = BytesMut::with_capacity(data.len() + self.to.len());
        let mut rest = &data[..];
        while let Some(at) = self.from.find(rest) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(&self.to);
            rest = &rest[at + self.from.needle().len()..];
        }
        let keep = if end { 0 } else { self.partial_suffix(rest) };
        out.extend_from_slice(&rest[..rest.len() - keep]);
        self.held = rest[rest.len() - keep..].to_vec();
        *body = Some(out.freeze());
    }

    /// How many bytes at the end of `bytes` begin the pattern (without completing it).
    fn partial_suffix(&self, bytes: &[u8]) -> usize {
        let needle = self.from.needle();
        let longest = (needle.len() - 1).min(bytes.len());
        (1..=longest)
            .rev()
            .find(|&n| bytes[bytes.len() - n..] == needle[..n])
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(rename: &mut ModelRename, pieces: &[&str]) -> String {
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let mut body = Some(Bytes::from(piece.to_string()));
            rename.rewrite(&mut body, i + 1 == pieces.len());
            out.extend_from_slice(&body.unwrap_or_default());
        }
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn every_model_key_is_renamed_even_across_pieces() {
        let sse = "data: {\"id\":\"a\",\"model\":\"r1-edge-mini\",\"choices\":[]}\n\ndata: {\"id\":\"a\",\"model\":\"r1-edge-mini\"}\n\ndata: [DONE]\n\n";
        let want = sse.replace("r1-edge-mini", "deepseek-r1");
        for cut in 0..sse.len() {
            let mut rename = ModelRename::new("r1-edge-mini", "deepseek-r1").unwrap();
            assert_eq!(pass(&mut rename, &[&sse[..cut], &sse[cut..]]), want, "cut at {cut}");
        }
    }

    #[test]
    fn other_text_passes_untouched_and_a_held_prefix_is_flushed_at_the_end() {
        let mut rename = ModelRename::new("m", "client-name").unwrap();
        assert!(rename.changes_length());
        // The content mentions a model; only the key with the pool's name is renamed.
        let body = r#"{"model":"m","choices":[{"message":{"content":"the \"model\":\"x\" key"}}]}"#;
        assert_eq!(
            pass(&mut rename, &[body]),
            body.replacen(r#""model":"m""#, r#""model":"client-name""#, 1)
        );
        let mut rename = ModelRename::new("m", "n").unwrap();
        assert_eq!(
            pass(&mut rename, &["abc \"mod", "el\":"]),
            "abc \"model\":",
            "not the pattern after all"
        );
        assert!(ModelRename::new("same", "same").is_none());
    }
}
