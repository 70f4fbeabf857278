//! One pass over a message's text: length, script, code and math shape, and cue-word hits.

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use super::cues::CUE_LISTS;

/// Longest text scanned per message; a longer one is read as its first [`HEAD`] and last [`TAIL`] bytes,
/// and its size-based figures are scaled up to the whole. Bounds the cost of a 100 KB paste.
pub(super) const SCAN_MAX: usize = 8 * 1024;
const HEAD: usize = 6 * 1024;
const TAIL: usize = 2 * 1024;

/// A compiled cue matcher: one automaton over every pattern of every list.
#[derive(Debug)]
pub(super) struct Matcher {
    automaton: AhoCorasick,
    /// Per pattern: its list (index into [`CUE_LISTS`]) and whether each end must be a word boundary.
    patterns: Vec<PatternInfo>,
}

#[derive(Debug, Clone, Copy)]
struct PatternInfo {
    list: u8,
    bound_start: bool,
    bound_end: bool,
}

impl Matcher {
    /// Compiles every pattern of [`CUE_LISTS`].
    pub(super) fn build() -> Result<Self, aho_corasick::BuildError> {
        let mut texts = Vec::new();
        let mut patterns = Vec::new();
        for (list, cues) in CUE_LISTS.iter().enumerate() {
            for &pattern in cues.patterns {
                let open_start = pattern.len() > 1 && pattern.starts_with('*');
                let open_end = pattern.len() > 1 && pattern.ends_with('*');
                let core = pattern.trim_start_matches('*').trim_end_matches('*');
                let word_byte = |byte: Option<&u8>| byte.is_some_and(|&b| is_word_byte(b));
                patterns.push(PatternInfo {
                    list: u8::try_from(list).unwrap_or(u8::MAX),
                    bound_start: !open_start && word_byte(core.as_bytes().first()),
                    bound_end: !open_end && word_byte(core.as_bytes().last()),
                });
                texts.push(core);
            }
        }
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(texts)?;
        Ok(Self { automaton, patterns })
    }
}

/// What one pass over a text found.
#[derive(Debug, Clone, Default)]
pub(super) struct TextStats {
    /// Estimated tokens (CJK counts per character, other text per ~4 bytes).
    pub(super) tokens: f32,
    /// Characters that are CJK (Han, kana, Hangul, CJK punctuation).
    pub(super) cjk_chars: u32,
    /// All characters.
    pub(super) chars: u32,
    /// Arithmetic operators next to a number, and math symbols (√ ∫ ∑ ≤ π ² …).
    pub(super) math_ops: u32,
    /// Code punctuation: `{` `}` `;` at line end, `=>` `->` `::` `==` `!=` `&&` `||` `()`.
    pub(super) code_marks: u32,
    /// Fenced code blocks (```), counted by fence pairs (an open fence counts too).
    pub(super) fences: u32,
    /// Lines indented by a tab or 4+ spaces (pasted code).
    pub(super) indented_lines: u32,
    /// Lines that start a list item (`1.`, `2)`, `-`, `*`, `•`, `一、`).
    pub(super) list_items: u32,
    /// Question marks (ASCII and full-width).
    pub(super) questions: u32,
    /// Hits per cue list (index into [`CUE_LISTS`]), saturating.
    pub(super) cue_hits: Vec<u8>,
    /// Cue lists (bit = index into [`CUE_LISTS`]) with a hit that opens the text: within its first
    /// [`LEAD_BYTES`] bytes after leading whitespace ("Design …", "Please prove …", "请设计…").
    pub(super) lead_cues: u64,
}

/// How far into a text a cue may start and still count as opening it.
const LEAD_BYTES: usize = 9;

impl TextStats {
    /// Scans `text` (or its head and tail if longer than [`SCAN_MAX`]).
    pub(super) fn scan(text: &str, matcher: Option<&Matcher>) -> Self {
        let mut stats = Self {
            cue_hits: vec![0; CUE_LISTS.len()],
            ..Self::default()
        };
        if text.len() <= SCAN_MAX {
            stats.scan_part(text, matcher);
        } else {
            let head = &text[..floor_char_boundary(text, HEAD)];
            let tail = &text[floor_char_boundary(text, text.len() - TAIL)..];
            stats.scan_part(head, matcher);
            stats.scan_part(tail, matcher);
            // Size figures stand for the whole text; marks and cues stay those actually seen.
            #[allow(clippy::cast_precision_loss)]
            let ratio = text.len() as f32 / (head.len() + tail.len()).max(1) as f32;
            stats.tokens *= ratio;
            stats.chars = scale(stats.chars, ratio);
            stats.cjk_chars = scale(stats.cjk_chars, ratio);
        }
        stats
    }

    /// Share of CJK characters, in [0, 1].
    pub(super) fn cjk_share(&self) -> f32 {
        if self.chars == 0 {
            0.0
        } else {
            ratio(self.cjk_chars, self.chars)
        }
    }

    fn scan_part(&mut self, text: &str, matcher: Option<&Matcher>) {
        self.scan_chars(text);
        if let Some(matcher) = matcher {
            self.scan_cues(text, matcher);
        }
    }

    /// Character-level shape: length, script, code and math marks, line structure.
    fn scan_chars(&mut self, text: &str) {
        let mut tokens = 0.0f32;
        let mut prev = '\n'; // previous character
        let mut prev_solid = ' '; // previous non-whitespace character
        let mut pending_op = false; // an operator whose left side was not a number: its right side decides
        let mut line_start = true;
        let mut leading_spaces = 0u32;
        let mut backticks = 0u32;
        let mut list = List::No;
        for ch in text.chars() {
            self.chars += 1;
            // Fast path: mid-line letters, spaces and Han characters, with no operator or list marker
            // pending, change nothing but the counts (most of any text).
            if !line_start && !pending_op && backticks == 0 && matches!(list, List::No) {
                if ch.is_ascii_alphabetic() || ch == ' ' {
                    tokens += 0.25;
                    if ch != ' ' {
                        prev_solid = ch;
                    }
                    prev = ch;
                    continue;
                }
                if ('\u{4E00}'..='\u{9FFF}').contains(&ch) {
                    tokens += 0.7;
                    self.cjk_chars += 1;
                    prev_solid = ch;
                    prev = ch;
                    continue;
                }
            }
            if ch.is_ascii() {
                tokens += 0.25;
            } else if is_cjk(ch) {
                tokens += 0.7;
                self.cjk_chars += 1;
            } else {
                tokens += 0.5;
            }

            // Line structure: indentation and list items are judged on a line's first solid character.
            if line_start {
                match ch {
                    ' ' => leading_spaces += 1,
                    '\t' => leading_spaces += 4,
                    '\n' | '\r' => leading_spaces = 0,
                    _ => {
                        if leading_spaces >= 4 {
                            self.indented_lines += 1;
                        }
                        list = if matches!(ch, '-' | '*' | '•' | '·') {
                            List::Bullet
                        } else if ch.is_ascii_digit() || is_chinese_numeral(ch) {
                            List::Number
                        } else {
                            List::No
                        };
                        line_start = false;
                    }
                }
            } else {
                // A list item is a bullet and a space, or a number and `.`, `)` or `、`.
                list = match (list, ch) {
                    (List::Bullet, ' ') | (List::Number, '.' | ')' | '、' | '．' | '）') => {
                        self.list_items += 1;
                        List::No
                    }
                    (List::Number, '0'..='9') => List::Number,
                    _ => List::No,
                };
            }

            // Fences: three backticks in a row.
            if ch == '`' {
                backticks += 1;
                if backticks == 3 {
                    self.fences += 1;
                }
            } else {
                backticks = 0;
            }

            // Math: operators next to a number, or symbols that only math uses.
            match ch {
                '+' | '-' | '*' | '/' | '^' | '=' | '<' | '>' | '%' => {
                    if prev_solid.is_ascii_digit() || matches!(prev_solid, ')' | ']') {
                        self.math_ops += 1;
                    } else {
                        pending_op = true;
                    }
                }
                '√'
                | '∫'
                | '∑'
                | '∏'
                | '∞'
                | '≤'
                | '≥'
                | '≠'
                | '≈'
                | '±'
                | '×'
                | '÷'
                | 'π'
                | '∂'
                | '∈'
                | '∀'
                | '∃'
                | '²'
                | '³'
                | 'ⁿ'
                | '₀'..='₉'
                | '⁰'..='⁹' => self.math_ops += 1,
                _ if !ch.is_whitespace() && pending_op => {
                    if ch.is_ascii_digit() || ch == '(' {
                        self.math_ops += 1;
                    }
                    pending_op = false;
                }
                _ => {}
            }

            // Code punctuation.
            match (prev, ch) {
                (_, '{' | '}') => self.code_marks += 1,
                (';', '\n') => self.code_marks += 1,
                ('=' | '-', '>') | (':', ':') | ('=' | '!', '=') | ('&', '&') | ('|', '|') | ('(', ')') => {
                    self.code_marks += 1;
                }
                _ => {}
            }

            if matches!(ch, '?' | '？') {
                self.questions += 1;
            }
            if ch == '\n' {
                line_start = true;
                leading_spaces = 0;
            }
            if !ch.is_whitespace() {
                prev_solid = ch;
            }
            prev = ch;
        }
        if prev == ';' {
            self.code_marks += 1;
        }
        self.tokens += tokens;
    }

    /// Cue words: every match of every pattern, kept where its word boundaries hold.
    fn scan_cues(&mut self, text: &str, matcher: &Matcher) {
        let bytes = text.as_bytes();
        let lead_end = text.len() - text.trim_start().len() + LEAD_BYTES;
        for found in matcher.automaton.find_overlapping_iter(text) {
            let Some(info) = matcher.patterns.get(found.pattern().as_usize()) else {
                continue;
            };
            let start = found.start();
            let end = found.end();
            if info.bound_start && start > 0 && bytes.get(start - 1).is_some_and(|&b| is_word_byte(b)) {
                continue;
            }
            if info.bound_end && bytes.get(end).is_some_and(|&b| is_word_byte(b)) {
                continue;
            }
            if let Some(hits) = self.cue_hits.get_mut(usize::from(info.list)) {
                *hits = hits.saturating_add(1);
            }
            if start <= lead_end && info.list < 64 {
                self.lead_cues |= 1 << info.list;
            }
        }
    }
}

/// Where the start of a line stands on being a list item.
#[derive(Debug, Clone, Copy)]
enum List {
    No,
    Bullet,
    Number,
}

fn is_chinese_numeral(ch: char) -> bool {
    matches!(ch, '一' | '二' | '三' | '四' | '五' | '六' | '七' | '八' | '九' | '十')
}

/// ASCII letters, digits and `_`: what a word is made of, for boundary checks.
fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Han ideographs, kana, Hangul, CJK punctuation and full-width forms.
fn is_cjk(ch: char) -> bool {
    matches!(ch,
        '\u{3000}'..='\u{303F}' // CJK punctuation
        | '\u{3040}'..='\u{30FF}' // Hiragana, Katakana
        | '\u{3400}'..='\u{4DBF}' // Han extension A
        | '\u{4E00}'..='\u{9FFF}' // Han
        | '\u{AC00}'..='\u{D7AF}' // Hangul syllables
        | '\u{F900}'..='\u{FAFF}' // Han compatibility
        | '\u{FF00}'..='\u{FFEF}' // full-width forms
        | '\u{20000}'..='\u{2FFFF}' // Han extensions B–F
    )
}

/// The largest char boundary of `text` at or below `index`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn scale(count: u32, ratio: f32) -> u32 {
    (count as f32 * ratio).min(u32::MAX as f32) as u32
}

#[allow(clippy::cast_precision_loss)]
fn ratio(part: u32, whole: u32) -> f32 {
    part as f32 / whole as f32
}
