//! What a pool can serve ([`Capabilities`], advertised by r1-edge on `GET /v1/models` and declared in the
//! gateway's config), what a chat request needs ([`Needs`]), and the first need a pool leaves unmet ([`Unmet`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatCompletionRequest, MessageContent};

/// The `response_format` kinds beyond plain text.
pub const RESPONSE_FORMATS: [&str; 2] = ["json_object", "json_schema"];

/// What one pool (or one model server) can serve. An absent limit is not known to exist.
///
/// r1-edge puts this in its model card as `"capabilities"` (next to vLLM's `max_model_len`), so the
/// gateway learns it with its probes; the gateway's `[edge.capabilities]` / `[center.capabilities]`
/// override what was learned, key by key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Tokens of prompt plus answer the model holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// Largest `max_tokens` accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The `max_tokens` used when a request gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u32>,
    /// Average prompt bytes per token of the model's tokenizer, measured low (so a prompt's estimate
    /// errs long): how a router without the tokenizer estimates a prompt's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_token: Option<f32>,
    /// Function calling (`tools`, `tool_choice`).
    #[serde(default)]
    pub tools: bool,
    /// `response_format` kinds served besides `text`: a list of `json_object`, `json_schema`.
    #[serde(default)]
    pub response_format: ResponseFormats,
    /// `logprobs` / `top_logprobs`.
    #[serde(default)]
    pub logprobs: bool,
    /// Most choices per request (`n`).
    #[serde(default = "one")]
    pub max_n: u32,
    /// Image parts in messages.
    #[serde(default)]
    pub images: bool,
    /// Parameters beyond plain chat that change the answer (`logit_bias`, `reasoning_effort`,
    /// `store: true`, audio, a server's own extensions: see [`extra_key`]).
    #[serde(default)]
    pub other_parameters: bool,
}

/// What an extra request key (one [`ChatCompletionRequest`] does not model) asks of a server that
/// serves plain chat only: `Ok` when it changes nothing there (labels, hints, `store: false`, the keys
/// other capabilities cover), else `Err` with why such a server refuses it. `Err(None)`: a key plain
/// chat does not know at all.
pub fn extra_key(key: &str, value: &Value) -> Result<(), Option<&'static str>> {
    if value.is_null() {
        return Ok(());
    }
    match key {
        // Covered by their own capabilities (tools, response_format, logprobs), or nothing without tools.
        "tools"
        | "tool_choice"
        | "functions"
        | "function_call"
        | "parallel_tool_calls"
        | "response_format"
        | "logprobs"
        | "top_logprobs" => Ok(()),
        // Labels and routing hints: no effect on the answer.
        "metadata" | "prompt_cache_key" | "safety_identifier" => Ok(()),
        // vLLM's extension for benchmarks (generate to max_tokens), which r1-edge serves.
        "ignore_eos" => Ok(()),
        "store" if value == &Value::Bool(false) => Ok(()),
        "service_tier" if matches!(value.as_str(), Some("auto" | "default")) => Ok(()),
        "modalities" if value.as_array().is_some_and(|m| m.iter().all(|m| m == "text")) => Ok(()),
        "logit_bias" if value.as_object().is_some_and(serde_json::Map::is_empty) => Ok(()),
        "logit_bias" => Err(Some("this server does not apply `logit_bias`")),
        "store" => Err(Some("this server does not store completions")),
        "service_tier" => Err(Some("this server has one service tier: `auto`")),
        "modalities" | "audio" => Err(Some("this model answers in text only")),
        "reasoning_effort" => Err(Some("this model does not reason before answering")),
        "prediction" => Err(Some("this server does not use predicted outputs")),
        "web_search_options" => Err(Some("this server does not search the web")),
        "verbosity" => Err(Some("this server does not take `verbosity`")),
        _ => Err(None),
    }
}

fn one() -> u32 {
    1
}

impl Capabilities {
    /// Plain chat only, one choice, no known limits: what is assumed of a server that says nothing.
    pub const PLAIN: Self = Self {
        context_length: None,
        max_tokens: None,
        default_max_tokens: None,
        bytes_per_token: None,
        tools: false,
        response_format: ResponseFormats::NONE,
        logprobs: false,
        max_n: 1,
        images: false,
        other_parameters: false,
    };

    /// Everything the chat completions API has, no known limits (a full OpenAI-compatible server).
    pub const FULL: Self = Self {
        tools: true,
        response_format: ResponseFormats::ALL,
        logprobs: true,
        max_n: 128,
        images: true,
        other_parameters: true,
        ..Self::PLAIN
    };

    /// The most a set of servers all serve (members of one pool may differ): limits take the lowest,
    /// features only where all have them. `None` for an empty set.
    pub fn common<'a>(all: impl IntoIterator<Item = &'a Self>) -> Option<Self> {
        all.into_iter().fold(None, |acc: Option<Self>, c| {
            let Some(a) = acc else {
                return Some(*c);
            };
            let low = |x: Option<u32>, y: Option<u32>| match (x, y) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            Some(Self {
                context_length: low(a.context_length, c.context_length),
                max_tokens: low(a.max_tokens, c.max_tokens),
                default_max_tokens: low(a.default_max_tokens, c.default_max_tokens),
                bytes_per_token: match (a.bytes_per_token, c.bytes_per_token) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                },
                tools: a.tools && c.tools,
                response_format: ResponseFormats {
                    json_object: a.response_format.json_object && c.response_format.json_object,
                    json_schema: a.response_format.json_schema && c.response_format.json_schema,
                },
                logprobs: a.logprobs && c.logprobs,
                max_n: a.max_n.min(c.max_n),
                images: a.images && c.images,
                other_parameters: a.other_parameters && c.other_parameters,
            })
        })
    }

    /// The first need of `needs` this pool cannot serve, or `None` when it can serve them all.
    pub fn unmet(&self, needs: &Needs) -> Option<Unmet> {
        if let (Some(cap), Some(asked)) = (self.max_tokens, needs.max_tokens)
            && asked > cap
        {
            return Some(Unmet::MaxTokens);
        }
        if let Some(context) = self.context_length {
            let answer = needs.max_tokens.or(self.default_max_tokens).unwrap_or(0);
            // Without a measured tokenizer, 4 bytes per token (English text with a large vocabulary).
            let per_token = self.bytes_per_token.filter(|b| *b > 0.0).unwrap_or(4.0);
            let prompt = (needs.prompt_bytes as f64 / f64::from(per_token)).ceil() as u64 + 8 * needs.messages as u64;
            if prompt + u64::from(answer) > u64::from(context) {
                return Some(Unmet::Context);
            }
        }
        if needs.tools && !self.tools {
            return Some(Unmet::Tools);
        }
        if let Some(kind) = &needs.response_format
            && !self.response_format.serves(kind)
        {
            return Some(Unmet::ResponseFormat);
        }
        if needs.logprobs && !self.logprobs {
            return Some(Unmet::Logprobs);
        }
        if needs.n > self.max_n {
            return Some(Unmet::N);
        }
        if needs.images && !self.images {
            return Some(Unmet::Images);
        }
        if needs.other_parameters && !self.other_parameters {
            return Some(Unmet::Parameters);
        }
        None
    }
}

/// The `response_format` kinds a pool serves besides `text`; on the wire, a list of their names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFormats {
    /// `json_object`: any JSON object.
    pub json_object: bool,
    /// `json_schema`: JSON valid under the request's schema.
    pub json_schema: bool,
}

impl ResponseFormats {
    /// Text only.
    pub const NONE: Self = Self {
        json_object: false,
        json_schema: false,
    };
    /// Both kinds.
    pub const ALL: Self = Self {
        json_object: true,
        json_schema: true,
    };

    /// Whether `kind` is served.
    pub fn serves(self, kind: &str) -> bool {
        match kind {
            "json_object" => self.json_object,
            "json_schema" => self.json_schema,
            _ => false,
        }
    }

    /// The kinds served, by name.
    pub fn names(self) -> Vec<&'static str> {
        RESPONSE_FORMATS.into_iter().filter(|k| self.serves(k)).collect()
    }

    /// From names; `Err` names the first unknown one.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        let mut formats = Self::NONE;
        for name in names {
            match name {
                "json_object" => formats.json_object = true,
                "json_schema" => formats.json_schema = true,
                other => return Err(other),
            }
        }
        Ok(formats)
    }
}

impl Serialize for ResponseFormats {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ResponseFormats {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Kinds a newer server added are not served as far as this reader knows.
        let names = Vec::<String>::deserialize(deserializer)?;
        Ok(Self {
            json_object: names.iter().any(|n| n == "json_object"),
            json_schema: names.iter().any(|n| n == "json_schema"),
        })
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::PLAIN
    }
}

/// What serving a chat request takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// `max_completion_tokens` or `max_tokens`, if given.
    pub max_tokens: Option<u32>,
    /// Bytes of message text (for a context estimate).
    pub prompt_bytes: usize,
    /// Messages (each costs a few template tokens).
    pub messages: usize,
    /// Tools that may be called (`tools` non-empty and `tool_choice` not `"none"`).
    pub tools: bool,
    /// A `response_format` other than `text`.
    pub response_format: Option<String>,
    /// `logprobs: true`.
    pub logprobs: bool,
    /// Choices asked for.
    pub n: u32,
    /// An image part in some message.
    pub images: bool,
    /// An extra key plain chat does not serve ([`extra_key`]).
    pub other_parameters: bool,
}

impl Needs {
    /// What `request` needs. Malformed values (a `response_format` without a `type`) are the
    /// validator's to refuse; here they count as asked for.
    pub fn of(request: &ChatCompletionRequest) -> Self {
        let extra = &request.extra;
        let listed = |key: &str| extra.get(key).and_then(Value::as_array).is_some_and(|t| !t.is_empty());
        // `functions` / `function_call`: the deprecated form of tools, still sent by older clients.
        let tools = (listed("tools") && extra.get("tool_choice").and_then(Value::as_str) != Some("none"))
            || (listed("functions") && extra.get("function_call").and_then(Value::as_str) != Some("none"));
        let response_format = extra.get("response_format").and_then(|f| match f {
            Value::Null => None,
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some("text") => None,
                Some(kind) => Some(kind.to_owned()),
                None => Some(String::new()),
            },
            _ => Some(String::new()),
        });
        let mut prompt_bytes = 0;
        let mut images = false;
        for message in &request.messages {
            prompt_bytes += message.text().len() + message.reasoning().map_or(0, str::len);
            if let Some(MessageContent::Parts(parts)) = message.content.get() {
                images |= parts.iter().any(|p| p.kind == "image_url" || p.kind == "input_image");
            }
            // Tool calls and tool results in the history are prompt text too.
            if let Some(calls) = message.extra.get("tool_calls") {
                prompt_bytes += json_len(calls);
            }
        }
        if let Some(tools) = extra.get("tools") {
            prompt_bytes += json_len(tools);
        }
        Self {
            max_tokens: request.effective_max_tokens(),
            prompt_bytes,
            messages: request.messages.len(),
            tools,
            response_format,
            logprobs: extra.get("logprobs").and_then(Value::as_bool).unwrap_or(false),
            n: request.n.unwrap_or(1).max(1),
            images,
            other_parameters: extra.iter().any(|(k, v)| extra_key(k, v).is_err()),
        }
    }
}

/// The length of `value` as compact JSON, counted without building the text (this runs per request).
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

wire_enum! {
    /// A need a pool cannot serve: a bounded set, safe as a metric label and in `x-r1-route-reason`.
    pub enum Unmet {
        /// `max_tokens` above the pool's cap.
        MaxTokens = "max_tokens",
        /// Prompt plus answer longer than the pool's context.
        Context = "context",
        /// Function calling.
        Tools = "tools",
        /// A `response_format` kind the pool does not serve.
        ResponseFormat = "response_format",
        /// `logprobs`.
        Logprobs = "logprobs",
        /// More choices than the pool gives.
        N = "n",
        /// Image input.
        Images = "images",
        /// A parameter beyond plain chat (`logit_bias`, `reasoning_effort`, a server's extension).
        Parameters = "parameters",
    }
}

impl Unmet {
    /// The request parameter that asks for it (the `param` of a 400).
    pub fn param(self) -> &'static str {
        match self {
            Self::MaxTokens => "max_tokens",
            Self::Context | Self::Images => "messages",
            Self::Tools => "tools",
            Self::ResponseFormat => "response_format",
            Self::Logprobs => "logprobs",
            Self::N => "n",
            Self::Parameters => "request",
        }
    }

    /// What a client reads in the 400 when no pool serves it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::MaxTokens => "`max_tokens` is larger than any pool serves",
            Self::Context => "the conversation is longer than any pool's context",
            Self::Tools => "no pool serving this model supports function calling",
            Self::ResponseFormat => "no pool serving this model supports this `response_format`",
            Self::Logprobs => "no pool serving this model returns `logprobs`",
            Self::N => "`n` is larger than any pool serves",
            Self::Images => "no pool serving this model takes image input",
            Self::Parameters => "no pool serving this model takes every parameter of this request",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatMessage, ContentPart};
    use serde_json::json;

    fn request(extra: Value) -> ChatCompletionRequest {
        let mut r = ChatCompletionRequest::new("m", vec![ChatMessage::user("hello")]);
        if let Value::Object(map) = extra {
            r.extra = map;
        }
        r
    }

    #[test]
    fn needs_of_a_request() {
        let plain = Needs::of(&request(json!({})));
        assert!(!plain.tools && plain.response_format.is_none() && !plain.logprobs && plain.n == 1);
        assert_eq!(Capabilities::PLAIN.unmet(&plain), None);

        let tools = json!({"tools": [{"type": "function", "function": {"name": "f"}}]});
        assert!(Needs::of(&request(tools.clone())).tools);
        let mut none = tools.clone();
        none["tool_choice"] = json!("none");
        assert!(!Needs::of(&request(none)).tools, "tool_choice none calls no tool");
        assert!(!Needs::of(&request(json!({"tools": []}))).tools);
        for (extra, other) in [
            (
                json!({"metadata": {"a": "b"}, "store": false, "parallel_tool_calls": true}),
                false,
            ),
            (json!({"logit_bias": {}}), false),
            (json!({"logit_bias": {"1": 5}}), true),
            (json!({"reasoning_effort": "high"}), true),
            (json!({"min_p": 0.1}), true),
        ] {
            assert_eq!(Needs::of(&request(extra.clone())).other_parameters, other, "{extra}");
        }
        let functions = json!({"functions": [{"name": "f", "parameters": {}}]});
        assert!(Needs::of(&request(functions)).tools, "the deprecated form is tools too");

        let text = Needs::of(&request(json!({"response_format": {"type": "text"}})));
        assert_eq!(text.response_format, None);
        let schema = Needs::of(&request(json!({"response_format": {"type": "json_schema"}})));
        assert_eq!(schema.response_format.as_deref(), Some("json_schema"));

        let mut image = ChatCompletionRequest::new("m", vec![ChatMessage::user("")]);
        image.messages[0].content = crate::Nullable::Value(MessageContent::Parts(vec![
            ContentPart::text("what is this"),
            serde_json::from_value(json!({"type": "image_url", "image_url": {"url": "data:"}})).unwrap(),
        ]));
        assert!(Needs::of(&image).images);
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        assert_eq!(json_len(&tools), tools.to_string().len());
    }

    #[test]
    fn the_first_unmet_need() {
        let edge = Capabilities {
            context_length: Some(512),
            max_tokens: Some(1024),
            default_max_tokens: Some(256),
            bytes_per_token: Some(2.0),
            ..Capabilities::PLAIN
        };
        let mut r = request(json!({}));
        r.max_tokens = Some(2048);
        assert_eq!(edge.unmet(&Needs::of(&r)), Some(Unmet::MaxTokens));
        assert_eq!(Capabilities::FULL.unmet(&Needs::of(&r)), None);

        // 600 bytes at 2 bytes a token + the default answer of 256 > 512.
        let long = ChatCompletionRequest::new("m", vec![ChatMessage::user("x".repeat(600))]);
        assert_eq!(edge.unmet(&Needs::of(&long)), Some(Unmet::Context));
        let mut short_answer = long.clone();
        short_answer.max_tokens = Some(100);
        assert_eq!(edge.unmet(&Needs::of(&short_answer)), None);

        let tools = request(json!({"tools": [{"type": "function", "function": {"name": "f"}}]}));
        assert_eq!(edge.unmet(&Needs::of(&tools)), Some(Unmet::Tools));
        assert_eq!(Unmet::Tools.param(), "tools");
        let mut two = request(json!({}));
        two.n = Some(2);
        assert_eq!(edge.unmet(&Needs::of(&two)), Some(Unmet::N));
        assert_eq!(
            edge.unmet(&Needs::of(&request(json!({"logprobs": true})))),
            Some(Unmet::Logprobs)
        );
    }

    #[test]
    fn common_capabilities_of_members() {
        let a = Capabilities {
            context_length: Some(4096),
            ..Capabilities::FULL
        };
        let b = Capabilities {
            context_length: Some(2048),
            tools: false,
            response_format: ResponseFormats {
                json_object: true,
                json_schema: false,
            },
            ..Capabilities::FULL
        };
        let both = Capabilities::common([&a, &b]).unwrap();
        assert_eq!(both.context_length, Some(2048));
        assert!(!both.tools && both.logprobs);
        assert_eq!(both.response_format.names(), vec!["json_object"]);
        assert_eq!(Capabilities::common([]), None);
    }

    #[test]
    fn wire_shape() {
        let parsed: Capabilities = serde_json::from_value(json!({"context_length": 512, "tools": true})).unwrap();
        assert_eq!(parsed.max_n, 1);
        assert!(parsed.tools && !parsed.logprobs);
        assert_eq!(serde_json::to_value(parsed).unwrap()["context_length"], 512);
        let full = serde_json::to_value(Capabilities::FULL).unwrap();
        assert_eq!(full["response_format"], json!(["json_object", "json_schema"]));
        let read: Capabilities = serde_json::from_value(full).unwrap();
        assert_eq!(read, Capabilities::FULL);
        let newer: Capabilities =
            serde_json::from_value(json!({"response_format": ["json_object", "grammar"]})).unwrap();
        assert!(newer.response_format.json_object && !newer.response_format.json_schema);
    }
}
