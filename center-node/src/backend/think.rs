//! Splits `<think>…</think>` out of streamed content: servers without a reasoning parser (or models
//! served raw) put R1's reasoning inline in `content`. Tags may be split across chunks, so a
//! possible tag prefix at the end of a piece is held back until the next one decides it.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Stateful splitter over the content deltas of one answer.
#[derive(Debug, Default)]
pub struct ThinkSplitter {
    inside: bool,
    held: String,
}

/// What a piece of content turned out to be.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Reasoning text.
    pub reasoning: String,
    /// Answer text.
    pub content: String,
}

impl ThinkSplitter {
    /// Feeds the next content delta.
    pub fn push(&mut self, piece: &str) -> Split {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(piece);
        let mut out = Split::default();
        let mut rest = text.as_str();
        loop {
            let tag = if self.inside { CLOSE } else { OPEN };
            if let Some(at) = rest.find(tag) {
                self.emit(&mut out, &rest[..at]);
                rest = &rest[at + tag.len()..];
                self.inside = !self.inside;
                continue;
            }
            // Hold back a suffix that could be the start of the tag.
            let keep = (1..tag.len())
                .rev()
                .find(|&n| {
                    rest.len() >= n && rest.is_char_boundary(rest.len() - n) && tag.starts_with(&rest[rest.len() - n..])
                })
                .unwrap_or(0);
            let (now, later) = rest.split_at(rest.len() - keep);
            self.emit(&mut out, now);
            self.held = later.to_owned();
            return out;
        }
    }

    /// The end of the answer: whatever was held back is text after all.
    pub fn finish(&mut self) -> Split {
        let mut out = Split::default();
        let held = std::mem::take(&mut self.held);
        self.emit(&mut out, &held);
        out
    }

    fn emit(&self, out: &mut Split, text: &str) {
        if self.inside {
            out.reasoning.push_str(text);
        } else {
            out.content.push_str(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_across_pieces_are_found() {
        let mut s = ThinkSplitter::default();
        let pieces = [
            "<thi",
            "nk>Let me",
            " think.</th",
            "ink>\n\nThe answer",
            " is 4. <",
            "b>",
        ];
        let (mut reasoning, mut content) = (String::new(), String::new());
        for p in pieces {
            let out = s.push(p);
            reasoning += &out.reasoning;
            content += &out.content;
        }
        content += &s.finish().content;
        assert_eq!(reasoning, "Let me think.");
        assert_eq!(content, "\n\nThe answer is 4. <b>");
    }

    #[test]
    fn plain_content_and_multibyte_text_pass_through() {
        let mut s = ThinkSplitter::default();
        assert_eq!(s.push("答案是四").content, "答案是四");
        assert_eq!(s.push("a<").content, "a");
        assert_eq!(s.push("x").content, "<x");
    }
}
