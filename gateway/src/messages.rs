//! Anthropic's Messages API (`POST /v1/messages`: the `anthropic` SDKs, agent tools that speak it; the
//! DeepSeek API offers it too) on top of chat completions.
//!
//! The request becomes a chat request ([`to_chat`]): `system` a system message; each message's blocks
//! chat's parts — `text`, `image` (base64 or URL) as `image_url`, an assistant's `tool_use` as
//! `tool_calls` and its `thinking` as `reasoning_content` (kept or stripped by the center's
//! `reasoning_history`), a user's `tool_result` as a `tool` message; `tools` (custom tools with an
//! `input_schema`), `tool_choice` (`auto`, `any`, `tool`, `none`, `disable_parallel_tool_use`),
//! `stop_sequences`, `temperature`, `top_p`, `top_k`, `metadata.user_id` and `output_config.format` map
//! to chat's. `max_tokens` is required, as Anthropic requires it. R1 always reasons: `thinking` enabled
//! (or left out) answers its reasoning as `thinking` blocks, `disabled` leaves them out of the answer;
//! `budget_tokens` is checked as Anthropic checks it (≥ 1024, below `max_tokens`) and bounds nothing
//! more than `max_tokens` does. Server tools, `container`, `mcp_servers` and unknown parameters are a 400
//! naming them, as Anthropic's own API refuses extra inputs.
//!
//! The answer ([`Answer`]) is a `message` with `thinking`, `text` and `tool_use` blocks and Anthropic's
//! `stop_reason`; streamed, the API's events: `message_start`, per block `content_block_start`, its
//! `content_block_delta`s (`thinking_delta`, `text_delta`, `input_json_delta`) and `content_block_stop`,
//! then `message_delta` (stop reason, usage) and `message_stop`. Errors — the gateway's own and a model
//! server's refusals — are Anthropic's `{"type": "error", "error": {type, message}}`, in-band an `error`
//! event.

use bytes::BytesMut;
use r1_proto::{ChatCompletionRequest, ErrorKind};
use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::reframe::{Reframe, Said, into_chat, invalid, write_event};

fn not_a_request(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::downstream(
        ErrorKind::InvalidRequest,
        format!("not a valid Messages API request: {e}"),
    )
}

/// Whether the answer shows R1's reasoning as `thinking` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thinking(pub bool);

/// The chat request for a Messages API request's `body`, and whether thinking is shown.
pub fn to_chat(body: &[u8]) -> Result<(ChatCompletionRequest, Thinking), GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(not_a_request)?;
    let Value::Object(mut request) = value else {
        return Err(not_a_request("a request is a JSON object"));
    };
    let mut take = |key: &str| request.remove(key).filter(|v| !v.is_null());
    let mut chat = Map::new();
    chat.insert(
        "model".to_owned(),
        take("model").ok_or_else(|| invalid("model", "`model` is required"))?,
    );
    let max_tokens = take("max_tokens")
        .ok_or_else(|| invalid("max_tokens", "`max_tokens` is required"))?
        .as_u64()
        .filter(|n| *n >= 1)
        .ok_or_else(|| invalid("max_tokens", "`max_tokens` must be a positive integer"))?;
    chat.insert("max_tokens".to_owned(), Value::from(max_tokens));

    let mut messages = Vec::new();
    match take("system") {
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(blocks @ Value::Array(_)) => {
            messages.push(json!({"role": "system", "content": text_blocks(&blocks, "system")?}));
        }
        Some(_) => return Err(invalid("system", "`system` must be text or a list of text blocks")),
        None => {}
    }
    let Some(Value::Array(turns)) = take("messages") else {
        return Err(invalid("messages", "`messages` is required: a list of messages"));
    };
    if turns.is_empty() {
        return Err(invalid("messages", "`messages` must not be empty"));
    }
    for turn in &turns {
        conversation_turn(turn, &mut messages)?;
    }
    chat.insert("messages".to_owned(), Value::Array(messages));

    for key in ["temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = take(key) {
            chat.insert(key.to_owned(), v);
        }
    }
    if let Some(stops) = take("stop_sequences") {
        if !stops.as_array().is_some_and(|s| s.iter().all(Value::is_string)) {
            return Err(invalid("stop_sequences", "`stop_sequences` must be a list of strings"));
        }
        chat.insert("stop".to_owned(), stops);
    }
    if let Some(metadata) = take("metadata") {
        if let Some(user) = metadata.get("user_id").filter(|v| !v.is_null()) {
            chat.insert("user".to_owned(), user.clone());
        }
        if let Some(key) = metadata.as_object().and_then(|m| m.keys().find(|k| *k != "user_id")) {
            return Err(invalid("metadata", format!("unknown metadata field `{key}`")));
        }
    }
    let thinking = match take("thinking") {
        None => Thinking(true),
        Some(config) => match config.get("type").and_then(Value::as_str) {
            Some("disabled") => Thinking(false),
            Some("adaptive") => Thinking(true),
            Some("enabled") => {
                let budget = config.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
                if budget < 1024 {
                    return Err(invalid(
                        "thinking.budget_tokens",
                        "`thinking.budget_tokens` must be at least 1024",
                    ));
                }
                if budget >= max_tokens {
                    return Err(invalid(
                        "thinking.budget_tokens",
                        "`max_tokens` must be greater than `thinking.budget_tokens`",
                    ));
                }
                Thinking(true)
            }
            _ => {
                return Err(invalid(
                    "thinking",
                    "`thinking.type` must be enabled, disabled or adaptive",
                ));
            }
        },
    };
    if let Some(config) = take("output_config") {
        if let Some(effort) = config.get("effort").filter(|v| !v.is_null()) {
            chat.insert("reasoning_effort".to_owned(), effort.clone());
        }
        if let Some(format) = config.get("format").filter(|v| !v.is_null()) {
            if format.get("type").and_then(Value::as_str) != Some("json_schema") {
                return Err(invalid(
                    "output_config.format",
                    "`output_config.format.type` must be json_schema",
                ));
            }
            chat.insert(
                "response_format".to_owned(),
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": format.get("schema").cloned().unwrap_or_default(), "strict": true}}),
            );
        }
    }
    if let Some(tools) = take("tools") {
        let Value::Array(list) = tools else {
            return Err(invalid("tools", "`tools` must be a list"));
        };
        if !list.is_empty() {
            chat.insert(
                "tools".to_owned(),
                Value::Array(list.iter().map(custom_tool).collect::<Result<_, _>>()?),
            );
        }
    }
    if let Some(choice) = take("tool_choice") {
        let mode = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => Value::from("auto"),
            Some("any") => Value::from("required"),
            Some("none") => Value::from("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or_default()}})
            }
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "`tool_choice.type` must be auto, any, tool or none",
                ));
            }
        };
        chat.insert("tool_choice".to_owned(), mode);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            chat.insert("parallel_tool_calls".to_owned(), Value::Bool(false));
        }
    }
    if take("service_tier").is_some_and(|v| v != "auto" && v != "standard_only") {
        return Err(invalid("service_tier", "`service_tier` must be auto or standard_only"));
    }
    if let Some(key) = request.keys().next() {
        return Err(GatewayError::downstream(
            ErrorKind::InvalidRequest,
            format!("{key}: Extra inputs are not permitted"),
        )
        .param("body"));
    }
    Ok((into_chat(chat, "Messages API")?, thinking))
}

/// A custom tool as a chat function.
fn custom_tool(tool: &Value) -> Result<Value, GatewayError> {
    if let Some(kind) = tool.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
        return Err(invalid(
            "tools",
            format!("only custom tools are served here, not `{kind}`"),
        ));
    }
    let name = tool
        .get("name")
        .filter(|n| n.is_string())
        .ok_or_else(|| invalid("tools", "a tool needs a `name`"))?;
    let mut function = json!({"name": name, "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
    if let Some(description) = tool.get("description").filter(|d| !d.is_null()) {
        function["description"] = description.clone();
    }
    if tool.get("strict") == Some(&Value::Bool(true)) {
        function["strict"] = Value::Bool(true);
    }
    Ok(json!({"type": "function", "function": function}))
}

/// The text of a list of `text` blocks.
fn text_blocks(blocks: &Value, param: &'static str) -> Result<String, GatewayError> {
    let mut text = String::new();
    for block in blocks.as_array().into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            other => {
                return Err(invalid(
                    param,
                    format!("blocks of type `{}` are not served here", other.unwrap_or("?")),
                ));
            }
        }
    }
    Ok(text)
}

/// One message as chat messages (a user's tool results are `tool` messages before its other content).
fn conversation_turn(turn: &Value, messages: &mut Vec<Value>) -> Result<(), GatewayError> {
    let role = match turn.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant")) => role,
        _ => return Err(invalid("messages", "a message's `role` must be user or assistant")),
    };
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            messages.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(invalid(
                "messages",
                "a message's `content` must be text or a list of blocks",
            ));
        }
    };
    let mut parts: Vec<Value> = Vec::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut reasoning = String::new();
    for block in blocks {
        match (role, block.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => {
                parts.push(json!({"type": "text", "text": block.get("text").cloned().unwrap_or_default()}))
            }
            ("user", Some("image")) => parts.push(image(block)?),
            ("user", Some("tool_result")) => {
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(text)) => text.clone(),
                    Some(blocks) => text_blocks(blocks, "messages")?,
                };
                let content = if block.get("is_error") == Some(&Value::Bool(true)) {
                    format!("Error: {content}")
                } else {
                    content
                };
                messages.push(json!({"role": "tool", "tool_call_id": block.get("tool_use_id").cloned().unwrap_or_default(), "content": content}));
            }
            ("assistant", Some("tool_use")) => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": serde_json::to_string(block.get("input").unwrap_or(&json!({}))).unwrap_or_default(),
                },
            })),
            ("assistant", Some("thinking")) => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or_default());
            }
            ("assistant", Some("redacted_thinking")) => {}
            (_, other) => {
                return Err(invalid(
                    "messages",
                    format!(
                        "{role} content blocks of type `{}` are not served here",
                        other.unwrap_or("?")
                    ),
                ));
            }
        }
    }
    let only_text = parts.iter().all(|p| p["type"] == "text");
    let content = if only_text {
        let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        if text.is_empty() && (!calls.is_empty() || role == "user") {
            Value::Null
        } else {
            Value::String(text)
        }
    } else {
        Value::Array(parts)
    };
    if content.is_null() && calls.is_empty() {
        return Ok(()); // a user turn of tool results only
    }
    let mut message = json!({"role": role, "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    messages.push(message);
    Ok(())
}

/// An `image` block as an `image_url` part.
fn image(block: &Value) -> Result<Value, GatewayError> {
    let source = &block["source"];
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source["media_type"].as_str().unwrap_or("image/png"),
            source["data"].as_str().unwrap_or_default()
        ),
        Some("url") => source["url"].as_str().unwrap_or_default().to_owned(),
        _ => return Err(invalid("messages", "an image's `source` must be base64 or url")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Anthropic's error `type` for an OpenAI error object.
fn error_type(error: &Value) -> &'static str {
    match error.get("type").and_then(Value::as_str) {
        Some("invalid_request_error") => "invalid_request_error",
        Some("authentication_error") => "authentication_error",
        Some("permission_error") => "permission_error",
        Some("not_found_error") => "not_found_error",
        Some("rate_limit_error") => "rate_limit_error",
        Some("overloaded_error") => "overloaded_error",
        Some("timeout_error") => "timeout_error",
        _ => "api_error",
    }
}

/// Anthropic's error body for an OpenAI error object.
pub fn error_body(error: &Value) -> Value {
    json!({"type": "error", "error": {"type": error_type(error), "message": error.get("message").cloned().unwrap_or_default()}})
}

#[derive(Debug, PartialEq)]
enum Block {
    Thinking,
    Text,
    ToolUse(u64),
}

/// A chat answer as a `message`, or its event stream.
#[derive(Debug)]
pub struct Answer {
    id: String,
    model: String,
    thinking: Thinking,
    started: bool,
    ended: bool,
    content: Vec<Value>,
    /// The open block and its text (a tool call's arguments) so far.
    open: Option<(Block, String)>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<String>,
    usage: Option<Value>,
}

impl Answer {
    /// For a request that asked `model`.
    pub fn new(model: &str, thinking: Thinking) -> Self {
        Self {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            model: model.to_owned(),
            thinking,
            started: false,
            ended: false,
            content: Vec::new(),
            open: None,
            stop_reason: None,
            stop_sequence: None,
            usage: None,
        }
    }

    fn usage(&self) -> Value {
        let usage = self.usage.as_ref();
        let count = |key: &str| usage.and_then(|u| u[key].as_u64()).unwrap_or(0);
        json!({"input_tokens": count("prompt_tokens"), "output_tokens": count("completion_tokens")})
    }

    fn message(&self, content: &[Value]) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage(),
        })
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let mut message = self.message(&[]);
        message["stop_reason"] = Value::Null;
        write_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    /// Opens `block` unless it is the open one; `start` is the block as it starts.
    fn open(&mut self, block: Block, start: Value, out: &mut BytesMut) {
        if self.open.as_ref().is_some_and(|(b, _)| *b == block) {
            return;
        }
        self.close(out);
        let index = self.content.len();
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        self.content.push(start);
        self.open = Some((block, String::new()));
    }

    /// Finishes the open block: its whole form joins the content.
    fn close(&mut self, out: &mut BytesMut) {
        let Some((block, text)) = self.open.take() else { return };
        let index = self.content.len() - 1;
        let whole = &mut self.content[index];
        match block {
            Block::Thinking => whole["thinking"] = Value::String(text),
            Block::Text => whole["text"] = Value::String(text),
            Block::ToolUse(_) => {
                whole["input"] = if text.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                }
            }
        }
        write_event(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    }
}

/// Chat's `finish_reason` as Anthropic's `stop_reason`.
fn stop_reason(reason: &str, stop: Option<&str>) -> &'static str {
    match reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ if stop.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

impl Reframe for Answer {
    fn said(&mut self, said: Said, out: &mut BytesMut) {
        self.start(out);
        let (delta, text) = match said {
            Said::Reasoning(text) => {
                if !self.thinking.0 {
                    return;
                }
                self.open(
                    Block::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    out,
                );
                (json!({"type": "thinking_delta", "thinking": text}), text)
            }
            Said::Text(text) => {
                self.open(Block::Text, json!({"type": "text", "text": ""}), out);
                (json!({"type": "text_delta", "text": text}), text)
            }
            Said::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let start = json!({
                    "type": "tool_use",
                    "id": id.unwrap_or_else(|| format!("toolu_{}", uuid::Uuid::new_v4().simple())),
                    "name": name.unwrap_or_default(),
                    "input": {},
                });
                self.open(Block::ToolUse(index), start, out);
                if arguments.is_empty() {
                    return;
                }
                (
                    json!({"type": "input_json_delta", "partial_json": arguments}),
                    arguments,
                )
            }
            Said::Finish { reason, stop } => {
                self.close(out);
                self.stop_reason = Some(stop_reason(&reason, stop.as_deref()));
                self.stop_sequence = stop;
                return;
            }
            Said::Usage(usage) => {
                self.usage = Some(usage);
                return;
            }
            Said::Error(_) => return,
        };
        if let Some((_, so_far)) = self.open.as_mut() {
            so_far.push_str(&text);
        }
        let index = self.content.len() - 1;
        write_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn end(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start(out);
        self.close(out);
        let usage = self.usage();
        write_event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": self.stop_sequence},
                "usage": usage,
            }),
        );
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn answer(&mut self) -> Value {
        let mut scratch = BytesMut::new();
        self.close(&mut scratch);
        if self.stop_reason.is_none() {
            self.stop_reason = Some("end_turn");
        }
        self.message(&self.content)
    }

    fn error_body(&self, error: &Value) -> Value {
        error_body(error)
    }

    fn error_event(&mut self, error: &Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_event(&mut out, "error", &error_body(error));
        out.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reframe::Reframed;
    use crate::reframe::tests::events;
    use bytes::Bytes;

    #[test]
    fn a_request_becomes_chat_with_system_images_tool_use_and_results() {
        let (chat, thinking) = to_chat(
            br#"{"model": "deepseek-r1", "max_tokens": 2048, "system": [{"type": "text", "text": "Be brief."}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                    {"role": "assistant", "content": [{"type": "thinking", "thinking": "look", "signature": "s"},
                        {"type": "tool_use", "id": "toolu_1", "name": "zoom", "input": {"x": 1}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"}]}
                ],
                "tools": [{"name": "zoom", "description": "zooms", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "stop_sequences": ["END"], "top_k": 5, "metadata": {"user_id": "u1"},
                "thinking": {"type": "enabled", "budget_tokens": 1024}, "stream": true}"#,
        )
        .unwrap();
        assert_eq!(thinking, Thinking(true));
        let chat = serde_json::to_value(&chat).unwrap();
        assert_eq!(chat["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            chat["messages"][1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(
            chat["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(chat["messages"][2]["reasoning_content"], "look");
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"})
        );
        assert_eq!(chat["messages"].as_array().unwrap().len(), 4);
        assert_eq!(chat["tools"][0]["function"]["parameters"], json!({"type": "object"}));
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["top_k"], 5);
        assert_eq!(chat["user"], "u1");
        assert_eq!(chat["stream_options"]["include_usage"], true);
    }

    #[test]
    fn what_anthropic_refuses_is_refused_by_name() {
        for (body, param) in [
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#,
                "max_tokens",
            ),
            (r#"{"model": "m", "max_tokens": 10, "messages": []}"#, "messages"),
            (
                r#"{"model": "m", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}"#,
                "messages",
            ),
            (
                r#"{"model": "m", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "enabled", "budget_tokens": 10}}"#,
                "thinking.budget_tokens",
            ),
            (
                r#"{"model": "m", "max_tokens": 1500, "messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "enabled", "budget_tokens": 1500}}"#,
                "thinking.budget_tokens",
            ),
            (
                r#"{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}"#,
                "tools",
            ),
            (
                r#"{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "mcp_servers": []}"#,
                "body",
            ),
        ] {
            let err = to_chat(body.as_bytes()).unwrap_err();
            assert_eq!(err.body().error.param.get().map(String::as_str), Some(param), "{body}");
        }
        let (_, thinking) = to_chat(br#"{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "disabled"}}"#).unwrap();
        assert_eq!(thinking, Thinking(false));
    }

    #[test]
    fn a_chat_stream_becomes_message_events_with_thinking_text_and_tool_use() {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let stream = [
            chunk(json!({"role": "assistant"}), Value::Null),
            chunk(json!({"reasoning_content": "think"}), Value::Null),
            chunk(json!({"content": "Hi"}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\": 1}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            format!(
                "data: {}\n\n",
                json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}})
            ),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let mut answer = Reframed::new(Answer::new("deepseek-r1", Thinking(true)), true);
        let mut body = Some(Bytes::from(stream));
        answer.rewrite(&mut body, true);
        let events = events(std::str::from_utf8(&body.unwrap()).unwrap());
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(events[0]["message"]["model"], "deepseek-r1");
        assert_eq!(events[1]["content_block"]["type"], "thinking");
        assert_eq!(
            events[2]["delta"],
            json!({"type": "thinking_delta", "thinking": "think"})
        );
        assert_eq!(events[5]["delta"], json!({"type": "text_delta", "text": "Hi"}));
        assert_eq!(events[7]["content_block"]["id"], "call_1");
        assert_eq!(events[7]["index"], 2);
        assert_eq!(events[8]["delta"]["partial_json"], "{\"a\": 1}");
        assert_eq!(events[10]["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[10]["usage"], json!({"input_tokens": 4, "output_tokens": 9}));
    }

    #[test]
    fn a_chat_answer_becomes_a_message_and_errors_take_anthropics_shape() {
        let chat = json!({"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "END",
            "message": {"role": "assistant", "content": "Hi", "reasoning_content": "r",
                        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let mut answer = Reframed::new(Answer::new("deepseek-r1", Thinking(false)), false);
        let mut body = Some(Bytes::from(chat.to_string()));
        answer.rewrite(&mut body, true);
        let message: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(message["type"], "message");
        assert_eq!(
            message["content"][0],
            json!({"type": "text", "text": "Hi"}),
            "thinking disabled: no thinking block"
        );
        assert_eq!(message["content"][1]["input"], json!({"a": 1}));
        assert_eq!(message["stop_reason"], "stop_sequence");
        assert_eq!(message["stop_sequence"], "END");
        assert_eq!(message["usage"], json!({"input_tokens": 3, "output_tokens": 2}));

        let mut refused = Reframed::new(Answer::new("m", Thinking(true)), false);
        let mut body = Some(Bytes::from_static(
            br#"{"error": {"message": "too long", "type": "invalid_request_error", "param": "messages"}}"#,
        ));
        refused.rewrite(&mut body, true);
        let error: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(
            error,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "too long"}})
        );
    }
}
