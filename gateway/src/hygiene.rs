//! Input hygiene: a chat request's messages are validated and normalized before anything reaches a model.
//!
//! # Wiring
//!
//! ```text
//! config:   GatewayConfig { #[serde(default)] hygiene: hygiene::HygieneSection, .. }
//!           problems.extend(self.hygiene.problems());     // r1_config::Validate; keys start `hygiene.`
//! startup:  let hygiene = Hygiene::new(&config.hygiene)?;  // compiles deny_patterns once
//! reload:   Hygiene::new(&new.hygiene) → swap it in; on Err refuse the reload (old stays)
//! request:  after the body is parsed into a ChatCompletionRequest, before routing, cache keys and limits:
//!           match hygiene.check(&mut request) {            // normalizes in place
//!               Ok(report) => { /* report.stripped_chars, report.normalized: counters, a debug line */ }
//!               Err(e) => return Err(e.to_gateway_error()), // 400, param "messages", code = e.rule,
//!           }                                               // message "messages[3]: contains a NUL character"
//! ```
//!
//! Run it before the cache key and the route decision are computed, so both see the normalized text
//! (two requests that differ only in Unicode composition or stray control characters share a cache entry).
//!
//! # Rules, in the order they are applied
//!
//! 1. `messages` must not be empty (rule `empty`), nor hold more than `max_messages` (rule `max_messages`).
//! 2. Per message, in order:
//!    - its role must be one of `system`, `developer`, `user`, `assistant`, `tool` (rule `role`);
//!    - control characters — C0, DEL and C1 (`char::is_control`), NUL included — other than `\t`, `\n` and
//!      `\r` are stripped or refused (rule `control_chars`), in the text content, every `text` part,
//!      `reasoning_content` and `name`;
//!    - the same fields are put in Unicode NFC when `unicode_nfc` is on (never a refusal);
//!    - its text (content and `reasoning_content`) may hold at most `max_message_chars` characters
//!      (rule `max_message_chars`), counted after normalization;
//!    - its content text (the string, or its `text` parts joined with `\n`) must not match any of
//!      `deny_patterns` (rule `deny_pattern`).
//! 3. All messages' text together may hold at most `max_prompt_chars` characters (rule `max_prompt_chars`).
//!
//! Non-text content parts (`image_url`, `input_audio`, …) and keys the proto does not model are left as sent.
//!
//! Cost: one pass over each text for the control-character test and one for NFC's quick check; text is
//! copied only when something is stripped or actually needs normalizing. Deny patterns run as one
//! [`RegexSet`] (linear time in the text: no pattern can make matching blow up).

use std::borrow::Cow;
use std::fmt;

use r1_config::Validate;
use r1_proto::{ChatCompletionRequest, ChatMessage, ErrorKind, MessageContent, Nullable};
use regex::{RegexSet, RegexSetBuilder};
use serde::Deserialize;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use crate::error::GatewayError;

/// The largest compiled size of all `deny_patterns` together, in bytes (a config cannot make the
/// gateway build a huge automaton).
pub const DENY_PATTERNS_SIZE_LIMIT: usize = 4 << 20;
/// The most `deny_patterns` accepted.
pub const MAX_DENY_PATTERNS: usize = 1024;

/// What to do with control characters (other than `\t`, `\n`, `\r`) in message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlChars {
    /// Remove them and go on (the request is answered; [`Report::stripped_chars`] counts them).
    #[default]
    Strip,
    /// Refuse the request with a 400 naming the message and the character.
    Refuse,
}

/// `[hygiene]`: what a chat request's messages must look like before a model sees them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HygieneSection {
    /// Control characters (NUL, ESC, DEL, C1, … — everything `char::is_control` but `\t`, `\n`, `\r`):
    /// `"strip"` (default) removes them, `"refuse"` answers 400. Strip is the default because such
    /// characters mostly come from pasted terminal output or copy-paste accidents, where a refusal helps
    /// nobody; either way the model never sees them.
    #[serde(default)]
    pub control_chars: ControlChars,
    /// Put message text in Unicode Normalization Form C. Default `true`.
    #[serde(default = "default_true")]
    pub unicode_nfc: bool,
    /// Most messages in one request. Default 256, within 1..=100000.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Most characters (Unicode scalar values) in one message's text (content + `reasoning_content`).
    /// Default 262144.
    #[serde(default = "default_max_message_chars")]
    pub max_message_chars: usize,
    /// Most characters in all messages' text together. Default 524288 (about the 128K-token context of
    /// DeepSeek-R1 in English text); must not be below `max_message_chars`.
    #[serde(default = "default_max_prompt_chars")]
    pub max_prompt_chars: usize,
    /// Regular expressions (Rust `regex` syntax), matched case-insensitively against each message's
    /// content text; a match refuses the request (rule `deny_pattern`). A plain word is a substring
    /// match. Default none.
    #[serde(default)]
    pub deny_patterns: Vec<String>,
}

impl Default for HygieneSection {
    fn default() -> Self {
        Self {
            control_chars: ControlChars::default(),
            unicode_nfc: true,
            max_messages: default_max_messages(),
            max_message_chars: default_max_message_chars(),
            max_prompt_chars: default_max_prompt_chars(),
            deny_patterns: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_max_messages() -> usize {
    256
}
fn default_max_message_chars() -> usize {
    256 * 1024
}
fn default_max_prompt_chars() -> usize {
    512 * 1024
}

impl Validate for HygieneSection {
    /// Every problem of the table, each prefixed with its key (`hygiene.max_messages: …`).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=100_000).contains(&self.max_messages) {
            problems.push(format!(
                "hygiene.max_messages: {} must be within 1..=100000",
                self.max_messages
            ));
        }
        if self.max_message_chars == 0 {
            problems.push("hygiene.max_message_chars: must be at least 1".to_owned());
        }
        if self.max_prompt_chars < self.max_message_chars {
            problems.push(format!(
                "hygiene.max_prompt_chars: {} must not be below hygiene.max_message_chars ({})",
                self.max_prompt_chars, self.max_message_chars
            ));
        }
        if self.deny_patterns.len() > MAX_DENY_PATTERNS {
            problems.push(format!(
                "hygiene.deny_patterns: {} patterns, at most {MAX_DENY_PATTERNS}",
                self.deny_patterns.len()
            ));
        }
        for (i, pattern) in self.deny_patterns.iter().enumerate() {
            if pattern.is_empty() {
                problems.push(format!(
                    "hygiene.deny_patterns[{i}]: must not be empty (it would match everything)"
                ));
            } else if let Err(e) = compile(std::slice::from_ref(pattern)) {
                problems.push(format!("hygiene.deny_patterns[{i}]: {}", one_line(&e.to_string())));
            }
        }
        if problems.is_empty()
            && !self.deny_patterns.is_empty()
            && let Err(e) = compile(&self.deny_patterns)
        {
            problems.push(format!("hygiene.deny_patterns: {}", one_line(&e.to_string())));
        }
        problems
    }
}

fn compile(patterns: &[String]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .size_limit(DENY_PATTERNS_SIZE_LIMIT)
        .build()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `[hygiene]` table could not be turned into a [`Hygiene`] (a deny pattern does not compile).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct HygieneSetupError {
    /// The config key at fault.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The checks of a `[hygiene]` table, ready to run (deny patterns compiled).
#[derive(Clone)]
pub struct Hygiene {
    section: HygieneSection,
    deny: Option<RegexSet>,
}

impl fmt::Debug for Hygiene {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hygiene")
            .field("section", &self.section)
            .finish_non_exhaustive()
    }
}

impl Default for Hygiene {
    /// The checks of a default `[hygiene]` table (no deny patterns).
    fn default() -> Self {
        Self {
            section: HygieneSection::default(),
            deny: None,
        }
    }
}

/// What [`Hygiene::check`] changed in an accepted request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Control characters removed (with `control_chars = "strip"`).
    pub stripped_chars: usize,
    /// Text fields rewritten into NFC.
    pub normalized: usize,
    /// Characters of text in all messages, after normalization.
    pub prompt_chars: usize,
}

impl Report {
    /// Whether the request was changed.
    pub fn changed(&self) -> bool {
        self.stripped_chars > 0 || self.normalized > 0
    }
}

/// Why a request was refused: which rule, which message. Becomes a 400 with `param: "messages"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HygieneError {
    /// The rule that refused it: one of [`HygieneError::RULES`]; safe as a metric label.
    pub rule: &'static str,
    /// The index of the message at fault, when one is.
    pub message_index: Option<usize>,
    /// A sentence for the client, starting with the message's path: `messages[3]: contains a NUL character`.
    pub message: String,
}

impl HygieneError {
    /// Every rule name, to pre-register metric label values.
    pub const RULES: [&'static str; 7] = [
        "empty",
        "max_messages",
        "role",
        "control_chars",
        "max_message_chars",
        "deny_pattern",
        "max_prompt_chars",
    ];

    fn at(rule: &'static str, index: usize, what: impl fmt::Display) -> Self {
        Self {
            rule,
            message_index: Some(index),
            message: format!("messages[{index}]: {what}"),
        }
    }

    fn whole(rule: &'static str, what: impl fmt::Display) -> Self {
        Self {
            rule,
            message_index: None,
            message: format!("messages: {what}"),
        }
    }

    /// The 400 answered for it: `invalid_request_error`, `param: "messages"`, `code` = the rule.
    pub fn to_gateway_error(&self) -> GatewayError {
        GatewayError::downstream(ErrorKind::InvalidRequest, self.message.clone())
            .param("messages")
            .code(self.rule)
    }
}

impl Hygiene {
    /// Compiles `section` (its deny patterns); an error names the key at fault.
    pub fn new(section: &HygieneSection) -> Result<Self, HygieneSetupError> {
        let deny = if section.deny_patterns.is_empty() {
            None
        } else {
            for (i, pattern) in section.deny_patterns.iter().enumerate() {
                if let Err(e) = compile(std::slice::from_ref(pattern)) {
                    return Err(HygieneSetupError {
                        key: format!("hygiene.deny_patterns[{i}]"),
                        message: one_line(&e.to_string()),
                    });
                }
            }
            Some(compile(&section.deny_patterns).map_err(|e| HygieneSetupError {
                key: "hygiene.deny_patterns".to_owned(),
                message: one_line(&e.to_string()),
            })?)
        };
        Ok(Self {
            section: section.clone(),
            deny,
        })
    }

    /// The table these checks were built from.
    pub fn section(&self) -> &HygieneSection {
        &self.section
    }

    /// Checks `request`'s messages and normalizes them in place (see the module docs for the rules and
    /// their order). On `Err` the request may be half-normalized: refuse it, do not forward it.
    pub fn check(&self, request: &mut ChatCompletionRequest) -> Result<Report, HygieneError> {
        let s = &self.section;
        if request.messages.is_empty() {
            return Err(HygieneError::whole("empty", "must not be empty"));
        }
        if request.messages.len() > s.max_messages {
            return Err(HygieneError::whole(
                "max_messages",
                format_args!(
                    "{} messages, more than the {} allowed",
                    request.messages.len(),
                    s.max_messages
                ),
            ));
        }
        let mut report = Report::default();
        for (index, message) in request.messages.iter_mut().enumerate() {
            if !message.role.is_known() {
                return Err(HygieneError::at(
                    "role",
                    index,
                    format_args!(
                        "unknown role {} (expected system, developer, user, assistant or tool)",
                        quoted(message.role.as_str())
                    ),
                ));
            }
            self.clean_message(message, index, &mut report)?;
            let chars = message_chars(message);
            if chars > s.max_message_chars {
                return Err(HygieneError::at(
                    "max_message_chars",
                    index,
                    format_args!(
                        "{chars} characters, more than the {} allowed in one message",
                        s.max_message_chars
                    ),
                ));
            }
            report.prompt_chars += chars;
            if let Some(deny) = &self.deny
                && let Some(content) = message.content.get()
                && let Some(pattern) = deny.matches(&content.text()).iter().next()
            {
                return Err(HygieneError::at(
                    "deny_pattern",
                    index,
                    format_args!("content matches a pattern this gateway refuses (deny_patterns[{pattern}])"),
                ));
            }
        }
        if report.prompt_chars > s.max_prompt_chars {
            return Err(HygieneError::whole(
                "max_prompt_chars",
                format_args!(
                    "{} characters in all, more than the {} allowed",
                    report.prompt_chars, s.max_prompt_chars
                ),
            ));
        }
        Ok(report)
    }

    /// Control characters and NFC on every text field of one message.
    fn clean_message(&self, message: &mut ChatMessage, index: usize, report: &mut Report) -> Result<(), HygieneError> {
        match &mut message.content {
            Nullable::Value(MessageContent::Text(text)) => self.clean(text, index, report)?,
            Nullable::Value(MessageContent::Parts(parts)) => {
                for part in parts.iter_mut().filter(|p| p.kind == "text") {
                    if let Some(text) = part.text.as_mut() {
                        self.clean(text, index, report)?;
                    }
                }
            }
            Nullable::Absent | Nullable::Null => {}
        }
        if let Nullable::Value(reasoning) = &mut message.reasoning_content {
            self.clean(reasoning, index, report)?;
        }
        if let Some(name) = message.name.as_mut() {
            self.clean(name, index, report)?;
        }
        Ok(())
    }

    /// One text field: control characters stripped or refused, then NFC.
    fn clean(&self, text: &mut String, index: usize, report: &mut Report) -> Result<(), HygieneError> {
        if let Some(bad) = text.chars().find(|&c| is_refused_control(c)) {
            match self.section.control_chars {
                ControlChars::Refuse => {
                    let what = if bad == '\0' {
                        "contains a NUL character".to_owned()
                    } else {
                        format!("contains the control character U+{:04X}", u32::from(bad))
                    };
                    return Err(HygieneError::at("control_chars", index, what));
                }
                ControlChars::Strip => {
                    let before = text.len();
                    text.retain(|c| {
                        let strip = is_refused_control(c);
                        if strip {
                            report.stripped_chars += 1;
                        }
                        !strip
                    });
                    debug_assert!(text.len() < before);
                }
            }
        }
        if self.section.unicode_nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
            let normalized: String = text.nfc().collect();
            if normalized != *text {
                *text = normalized;
                report.normalized += 1;
            }
        }
        Ok(())
    }
}

/// Control characters other than the whitespace ones a prompt legitimately holds.
fn is_refused_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Characters of a message's text: its content (string or `text` parts) and `reasoning_content`.
fn message_chars(message: &ChatMessage) -> usize {
    let content = match message.content.get() {
        Some(MessageContent::Text(text)) => text.chars().count(),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|p| p.as_text())
            .map(|t| t.chars().count())
            .sum(),
        None => 0,
    };
    content + message.reasoning().map_or(0, |r| r.chars().count())
}

/// A client-supplied string for an error message: quoted, escaped, at most 64 characters.
fn quoted(value: &str) -> String {
    const MAX: usize = 64;
    let shown: Cow<'_, str> = match value.char_indices().nth(MAX) {
        Some((end, _)) => Cow::Owned(format!("{}…", &value[..end])),
        None => Cow::Borrowed(value),
    };
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_and_truncates() {
        assert_eq!(quoted("narrator"), "\"narrator\"");
        assert_eq!(quoted("a\u{0}b"), "\"a\\0b\"");
        let long = "x".repeat(100);
        assert_eq!(quoted(&long), format!("\"{}…\"", "x".repeat(64)));
    }

    #[test]
    fn default_section_is_valid() {
        assert_eq!(HygieneSection::default().problems(), Vec::<String>::new());
    }
}
