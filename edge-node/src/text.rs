//! Text in and out: the chat template, the tokenizer, and incremental detokenization for streaming.

use minijinja::{Environment, ErrorKind, context};
use r1_proto::ChatMessage;
use serde::Serialize;
use tokenizers::Tokenizer;

use crate::model::{ModelError, ModelFiles};

/// ChatML, used when a model ships no template (with a warning): Qwen's format.
const FALLBACK_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Why a prompt could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The model's chat template refused the conversation (e.g. `raise_exception` on role order).
    #[error("chat template: {0}")]
    Template(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Text a tokenizer's bytes per token are measured on: everyday English and Chinese, code and numbers.
const CALIBRATION_TEXT: &str = "What is the capital of France? Please explain briefly why it became the capital. \
Write a Python function that returns the n-th Fibonacci number, with tests. The meeting is at 10:30 on 2024-05-17. \
请用简单的语言解释一下什么是机器学习，并举一个例子。今天天气很好，我们去公园散步吧。";

/// The model's tokenizer and chat template.
#[derive(Debug)]
pub struct TextCodec {
    tokenizer: Tokenizer,
    templates: Environment<'static>,
    bos_token: String,
    eos_token: String,
    pad_id: u32,
}

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: std::borrow::Cow<'a, str>,
}

impl TextCodec {
    /// Prompt bytes per token, measured on a fixed English and Chinese sample and rounded down by a
    /// tenth, so an estimate made from it errs long: what a router without this tokenizer needs to
    /// tell whether a prompt fits the context.
    pub fn bytes_per_token(&self) -> f32 {
        let tokens = self.encode(CALIBRATION_TEXT).map_or(0, |t| t.len());
        if tokens == 0 {
            return 1.0;
        }
        let measured = CALIBRATION_TEXT.len() as f32 / tokens as f32;
        ((measured * 0.9 * 100.0).floor() / 100.0).max(0.5)
    }

    /// Loads `tokenizer.json` and the chat template (`chat_template.jinja` or `tokenizer_config.json`).
    pub fn load(files: &ModelFiles) -> Result<Self, ModelError> {
        let path = files.dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| ModelError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let source = match &files.tokenizer_config.chat_template {
            Some(t) => t.clone(),
            None => {
                tracing::warn!(
                    model = %files.dir.display(),
                    "no chat template (neither chat_template.jinja nor tokenizer_config.json's chat_template); using ChatML"
                );
                FALLBACK_TEMPLATE.to_owned()
            }
        };
        let mut templates = Environment::new();
        templates.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        templates.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        templates
            .add_template_owned("chat", source)
            .map_err(|e| ModelError::File {
                path: files.chat_template_file.clone(),
                reason: format!("chat_template: {e}"),
            })?;

        let tc = &files.tokenizer_config;
        let pad_id = files
            .generation
            .pad_token_id
            .or_else(|| tc.pad_token.as_deref().and_then(|t| tokenizer.token_to_id(t)))
            .or_else(|| files.eos_ids().first().copied())
            .unwrap_or(0);
        Ok(Self {
            bos_token: tc.bos_token.clone().unwrap_or_default(),
            eos_token: tc.eos_token.clone().unwrap_or_default(),
            tokenizer,
            templates,
            pad_id,
        })
    }

    /// The id used for left padding (never attended to).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Renders the conversation with the model's template, ending with the assistant's turn.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, PromptError> {
        let messages: Vec<TemplateMessage<'_>> = messages
            .iter()
            .map(|m| TemplateMessage {
                role: m.role.as_str(),
                content: m.text(),
            })
            .collect();
        let template = self
            .templates
            .get_template("chat")
            .map_err(|e| PromptError::Template(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| PromptError::Template(e.to_string()))
    }

    /// Token ids of an already-templated prompt (special tokens in the text are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PromptError> {
        // The template already wrote BOS/specials where the model wants them.
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| PromptError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    /// Token id of an exact token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
}

/// Turns a growing list of token ids into text pieces, never splitting a UTF-8 character that spans
/// tokens (byte-level BPE): the same method as TGI and vLLM (decode a short window twice, emit the
/// difference once it no longer ends in a replacement character).
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Adds one token; returns the text it completes (often empty for a partial character).
    pub fn push(&mut self, codec: &TextCodec, id: u32) -> String {
        self.ids.push(id);
        let before = codec.decode(&self.ids[self.prefix_offset..self.read_offset]);
        let after = codec.decode(&self.ids[self.prefix_offset..]);
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let piece = match after.strip_prefix(before.as_str()) {
                Some(rest) => rest.to_owned(),
                // Decoding a longer window changed earlier text (rare normaliser effects): emit the tail.
                None => after.get(before.len()..).unwrap_or_default().to_owned(),
            };
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            piece
        } else {
            String::new()
        }
    }
}
