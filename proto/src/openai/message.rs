//! Chat messages: the role, the content (a string or content parts) and R1's `reasoning_content`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Nullable;

open_enum! {
    /// Who wrote a message. A role this version does not know is kept verbatim in
    /// [`Role::Other`], so the gateway can reject it with a 400 that names it.
    pub enum Role {
        /// `system`: instructions from whoever deploys the model.
        System = "system",
        /// `developer`: OpenAI's newer name for system instructions.
        Developer = "developer",
        /// `user`: the end user.
        User = "user",
        /// `assistant`: the model.
        Assistant = "assistant",
        /// `tool`: the result of a tool call.
        Tool = "tool",
    }
}

/// One message of a conversation, in a request or in a response's `choices[].message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text or content parts. `null` for an assistant message that only calls tools; kept as sent.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub content: Nullable<MessageContent>,
    /// DeepSeek-R1's chain of thought, separate from the answer in `content`.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub reasoning_content: Nullable<String>,
    /// An optional name telling participants of the same role apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Keys not modelled here (`tool_calls`, `tool_call_id`, `refusal`, `annotations`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with plain-text content.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Nullable::Value(MessageContent::Text(text.into())),
            reasoning_content: Nullable::Absent,
            name: None,
            extra: Map::new(),
        }
    }

    /// A `system` message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    /// A `user` message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    /// An `assistant` message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// The text of the content (see [`MessageContent::text`]); empty when absent or `null`.
    pub fn text(&self) -> Cow<'_, str> {
        self.content.get().map_or(Cow::Borrowed(""), MessageContent::text)
    }

    /// The reasoning text, if the message carries one.
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning_content.get().map(String::as_str)
    }
}

/// A message's content: a plain string, or an array of typed parts (text, images, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a string or an array of content parts")]
pub enum MessageContent {
    /// `"content": "…"`.
    Text(String),
    /// `"content": [{"type": "text", "text": "…"}, …]`.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text: the string itself, or the `text` parts joined with `"\n"` (as vLLM joins them when it
    /// builds the prompt); other parts are skipped.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text),
            Self::Parts(parts) => {
                let mut texts = parts.iter().filter_map(ContentPart::as_text);
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(only), None) => Cow::Borrowed(only),
                    (Some(first), Some(second)) => {
                        let mut joined = format!("{first}\n{second}");
                        for text in texts {
                            joined.push('\n');
                            joined.push_str(text);
                        }
                        Cow::Owned(joined)
                    }
                }
            }
        }
    }
}

/// One element of an array `content`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPart {
    /// The part's `type`: `text`, `image_url`, `input_audio`, `file`, `refusal`, ….
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The rest of the part (`image_url`, `input_audio`, …), verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ContentPart {
    /// A `text` part.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            kind: "text".to_owned(),
            text: Some(text.into()),
            extra: Map::new(),
        }
    }

    /// The text, if this is a `text` part.
    pub fn as_text(&self) -> Option<&str> {
        if self.kind == "text" {
            self.text.as_deref()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_and_unknown_roles() {
        let known: Role = serde_json::from_value(json!("developer")).unwrap();
        assert_eq!(known, Role::Developer);
        assert!(known.is_known());

        let unknown: Role = serde_json::from_value(json!("Narrator")).unwrap();
        assert_eq!(unknown, Role::Other("Narrator".to_owned()));
        assert!(!unknown.is_known());
        assert_eq!(unknown.as_str(), "Narrator");
        assert_eq!(serde_json::to_value(&unknown).unwrap(), json!("Narrator"));
        assert_eq!(Role::from("user"), Role::User);
    }

    #[test]
    fn text_of_string_and_parts() {
        assert_eq!(ChatMessage::user("hi").text(), "hi");

        let parts = MessageContent::Parts(vec![
            ContentPart::text("first"),
            serde_json::from_value(json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}})).unwrap(),
            ContentPart::text("second"),
            ContentPart::text("third"),
        ]);
        assert_eq!(parts.text(), "first\nsecond\nthird");

        let single = MessageContent::Parts(vec![ContentPart::text("only")]);
        assert!(matches!(single.text(), Cow::Borrowed("only")));
        assert_eq!(MessageContent::Parts(vec![]).text(), "");
    }

    #[test]
    fn null_and_absent_content_have_empty_text() {
        let null: ChatMessage = serde_json::from_value(json!({"role": "assistant", "content": null})).unwrap();
        assert!(null.content.is_null());
        assert_eq!(null.text(), "");

        let absent: ChatMessage = serde_json::from_value(json!({"role": "assistant"})).unwrap();
        assert!(absent.content.is_absent());
        assert_eq!(serde_json::to_value(&absent).unwrap(), json!({"role": "assistant"}));
    }

    #[test]
    fn bad_content_names_what_was_expected() {
        let err = serde_json::from_value::<ChatMessage>(json!({"role": "user", "content": 42}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a string or an array of content parts"), "{err}");
    }
}
