//! OpenAI's Responses API (`POST /v1/responses`: the Agents SDK's default, `client.responses.create`) on
//! top of chat completions.
//!
//! The request becomes a chat request ([`to_chat`]): `instructions` a system message, `input` (text, or
//! messages, function calls and their outputs, reasoning items) the conversation, `tools` (functions)
//! and `tool_choice` chat's, `text.format` chat's `response_format`, `max_output_tokens` chat's
//! `max_tokens`, `reasoning.effort` chat's `reasoning_effort`. What needs state the gateway does not keep
//! (`previous_response_id`, `conversation`, `store: true`, `background`), hosted tools, `include` and
//! the other parameters that do not map are a 400 naming them.
//!
//! The answer ([`Answer`]) is a `response` object whose output items are R1's reasoning (a `reasoning`
//! item with `reasoning_text` content), the message and the function calls; streamed, it is the API's
//! event sequence: `response.created`, `response.in_progress`, then per item `output_item.added`, its
//! content part and deltas (`reasoning_text.delta`, `output_text.delta`, `function_call_arguments.delta`)
//! and their `done` events, and `response.completed` (or `response.incomplete` when `max_output_tokens`
//! cut it) with the whole response and its usage. An in-band failure is an `error` event.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use r1_proto::{ChatCompletionRequest, ErrorKind};
use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::reframe::{Reframe, Said, into_chat, invalid, write_event};

fn not_a_request(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::downstream(
        ErrorKind::InvalidRequest,
        format!("not a valid Responses API request: {e}"),
    )
}

/// What the `response` object repeats of its request (its `model` is the client's).
pub type Echo = Map<String, Value>;

/// Parameters that need what this gateway does not have: refused by name.
const REFUSED: &[(&str, &str)] = &[
    (
        "previous_response_id",
        "responses are not stored here: send the whole conversation in `input`",
    ),
    (
        "conversation",
        "conversations are not stored here: send the whole conversation in `input`",
    ),
    ("prompt", "stored prompt templates are not served here"),
    ("include", "`include` is not served here"),
    ("max_tool_calls", "`max_tool_calls` is not served here"),
    (
        "top_logprobs",
        "`top_logprobs` is not served on /v1/responses; use /v1/chat/completions",
    ),
    ("context_management", "`context_management` is not served here"),
    ("prompt_cache_retention", "`prompt_cache_retention` is not served here"),
];

/// The chat request for a Responses API request's `body`, and what its answer repeats.
pub fn to_chat(body: &[u8]) -> Result<(ChatCompletionRequest, Echo), GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(not_a_request)?;
    let Value::Object(mut request) = value else {
        return Err(not_a_request("a request is a JSON object"));
    };
    let mut chat = Map::new();
    let mut echo = Map::new();
    let mut take = |key: &str| request.remove(key).filter(|v| !v.is_null());

    let model = take("model").ok_or_else(|| invalid("model", "`model` is required"))?;
    chat.insert("model".to_owned(), model);
    for &(param, why) in REFUSED {
        match take(param) {
            Some(Value::Array(items)) if items.is_empty() => {}
            Some(_) => return Err(invalid(param, why)),
            None => {}
        }
    }
    if take("store").is_some_and(|v| v != Value::Bool(false)) {
        return Err(invalid(
            "store",
            "responses are not stored here: leave `store` out or set it to false",
        ));
    }
    if take("background").is_some_and(|v| v != Value::Bool(false)) {
        return Err(invalid("background", "background responses are not served here"));
    }
    if take("truncation").is_some_and(|v| v != "disabled") {
        return Err(invalid("truncation", "only `truncation: \"disabled\"` is served here"));
    }
    if take("service_tier").is_some_and(|v| v != "auto" && v != "default") {
        return Err(invalid(
            "service_tier",
            "only the `auto` and `default` service tiers are served here",
        ));
    }
    if let Some(options) = take("stream_options")
        && options
            .get("include_obfuscation")
            .is_some_and(|v| v == &Value::Bool(true))
    {
        return Err(invalid(
            "stream_options.include_obfuscation",
            "stream obfuscation is not served here",
        ));
    }

    let mut messages = Vec::new();
    if let Some(instructions) = take("instructions") {
        let Value::String(text) = &instructions else {
            return Err(invalid("instructions", "`instructions` must be a string"));
        };
        messages.push(json!({"role": "system", "content": text}));
        echo.insert("instructions".to_owned(), instructions.clone());
    }
    match take("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => conversation(items, &mut messages)?,
        Some(_) => return Err(invalid("input", "`input` must be a string or a list of items")),
        None => return Err(invalid("input", "`input` is required")),
    }
    chat.insert("messages".to_owned(), Value::Array(messages));

    // `prompt_cache_key` is a routing hint on chat too.
    for key in [
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "stream",
        "prompt_cache_key",
    ] {
        if let Some(v) = take(key) {
            echo.insert(key.to_owned(), v.clone());
            chat.insert(key.to_owned(), v);
        }
    }
    if let Some(user) = take("safety_identifier") {
        echo.insert("safety_identifier".to_owned(), user.clone());
        chat.entry("user").or_insert(user);
    }
    if let Some(limit) = take("max_output_tokens") {
        echo.insert("max_output_tokens".to_owned(), limit.clone());
        chat.insert("max_tokens".to_owned(), limit);
    }
    if let Some(metadata) = take("metadata") {
        if !metadata.is_object() {
            return Err(invalid("metadata", "`metadata` must be an object"));
        }
        echo.insert("metadata".to_owned(), metadata);
    }
    if let Some(reasoning) = take("reasoning") {
        if !reasoning.is_object() {
            return Err(invalid("reasoning", "`reasoning` must be an object"));
        }
        if let Some(effort) = reasoning.get("effort").filter(|v| !v.is_null()) {
            chat.insert("reasoning_effort".to_owned(), effort.clone());
        }
        let summary = reasoning
            .get("summary")
            .or_else(|| reasoning.get("generate_summary"))
            .filter(|v| !v.is_null());
        if summary.is_some_and(|s| s != "auto") {
            return Err(invalid(
                "reasoning.summary",
                "reasoning summaries are not made here: R1's reasoning comes whole, as the reasoning item's content",
            ));
        }
        echo.insert("reasoning".to_owned(), reasoning);
    }
    if let Some(text) = take("text") {
        if text.get("verbosity").is_some_and(|v| !v.is_null() && v != "medium") {
            return Err(invalid("text.verbosity", "`text.verbosity` is not served here"));
        }
        if let Some(format) = text.get("format").filter(|v| !v.is_null())
            && let Some(response_format) = response_format(format)?
        {
            chat.insert("response_format".to_owned(), response_format);
        }
        echo.insert("text".to_owned(), text);
    }
    if let Some(tools) = take("tools") {
        let Value::Array(list) = &tools else {
            return Err(invalid("tools", "`tools` must be a list"));
        };
        if !list.is_empty() {
            chat.insert(
                "tools".to_owned(),
                Value::Array(list.iter().map(function_tool).collect::<Result<_, _>>()?),
            );
        }
        echo.insert("tools".to_owned(), tools);
    }
    if let Some(choice) = take("tool_choice") {
        let chat_choice = match &choice {
            Value::String(mode) if ["auto", "none", "required"].contains(&mode.as_str()) => choice.clone(),
            Value::Object(o) if o.get("type").is_some_and(|t| t == "function") => {
                json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or_default()}})
            }
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "`tool_choice` must be auto, none, required or a function",
                ));
            }
        };
        chat.insert("tool_choice".to_owned(), chat_choice);
        echo.insert("tool_choice".to_owned(), choice);
    }
    if let Some(key) = request.keys().next() {
        return Err(
            GatewayError::downstream(ErrorKind::InvalidRequest, format!("unknown parameter `{key}`"))
                .code("unknown_parameter"),
        );
    }
    Ok((into_chat(chat, "Responses API")?, echo))
}

/// `text.format` as chat's `response_format` (`None`: plain text).
fn response_format(format: &Value) -> Result<Option<Value>, GatewayError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key) {
                    schema.insert(key.to_owned(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(invalid(
            "text.format",
            "`text.format.type` must be text, json_object or json_schema",
        )),
    }
}

/// A Responses function tool as chat's.
fn function_tool(tool: &Value) -> Result<Value, GatewayError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(invalid(
            "tools",
            format!(
                "only function tools are served here, not `{}`",
                tool.get("type").and_then(Value::as_str).unwrap_or("?")
            ),
        ));
    }
    let mut function = Map::new();
    for key in ["name", "description", "parameters", "strict"] {
        if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
            function.insert(key.to_owned(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// The chat messages of an `input` list.
fn conversation(items: Vec<Value>, messages: &mut Vec<Value>) -> Result<(), GatewayError> {
    // Reasoning items belong to the assistant turn that follows them.
    let mut reasoning: Option<String> = None;
    for item in items {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        match kind {
            "message" => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("developer" | "system") => "system",
                    Some("user") => "user",
                    Some("assistant") => "assistant",
                    _ => {
                        return Err(invalid(
                            "input",
                            "a message's `role` must be user, assistant, system or developer",
                        ));
                    }
                };
                let content = message_content(item.get("content").unwrap_or(&Value::Null))?;
                let mut message = json!({"role": role, "content": content});
                if role == "assistant"
                    && let Some(text) = reasoning.take()
                {
                    message["reasoning_content"] = Value::String(text);
                }
                messages.push(message);
            }
            "function_call" => {
                let call = json!({
                    "id": item.get("call_id").cloned().unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": item.get("name").cloned().unwrap_or_default(),
                        "arguments": item.get("arguments").cloned().unwrap_or_else(|| Value::from("{}")),
                    },
                });
                // Calls of one turn are one assistant message (with the turn's text, if it came first).
                let joins = messages
                    .last()
                    .is_some_and(|m| m["role"] == "assistant" && reasoning.is_none());
                if joins && let Some(last) = messages.last_mut() {
                    match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    }
                } else {
                    let mut message = json!({"role": "assistant", "content": null, "tool_calls": [call]});
                    if let Some(text) = reasoning.take() {
                        message["reasoning_content"] = Value::String(text);
                    }
                    messages.push(message);
                }
            }
            "function_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(parts @ Value::Array(_)) => text_of(parts),
                    _ => return Err(invalid("input", "a function_call_output's `output` must be text")),
                };
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": item.get("call_id").cloned().unwrap_or_default(),
                    "content": output,
                }));
            }
            "reasoning" => {
                let text = item
                    .get("content")
                    .map(text_of)
                    .filter(|t| !t.is_empty())
                    .or_else(|| item.get("summary").map(text_of));
                reasoning = text.filter(|t| !t.is_empty());
            }
            other => {
                return Err(invalid(
                    "input",
                    format!("input items of type `{other}` are not served here"),
                ));
            }
        }
    }
    Ok(())
}

/// The text of a list of parts (`input_text`, `output_text`, `reasoning_text`, `summary_text`).
fn text_of(parts: &Value) -> String {
    parts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}

/// A message's content as chat's: text as it is, images as `image_url` parts.
fn message_content(content: &Value) -> Result<Value, GatewayError> {
    let parts = match content {
        Value::String(_) => return Ok(content.clone()),
        Value::Array(parts) => parts,
        _ => {
            return Err(invalid(
                "input",
                "a message's `content` must be text or a list of parts",
            ));
        }
    };
    if parts.iter().all(|p| p.get("text").is_some()) {
        return Ok(Value::String(text_of(content)));
    }
    parts
        .iter()
        .map(|part| match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "refusal") => Ok(json!({"type": "text", "text": part
                .get("text")
                .or_else(|| part.get("refusal"))
                .cloned()
                .unwrap_or_default()})),
            Some("input_image") => {
                let url = part.get("image_url").filter(|u| u.is_string()).ok_or_else(|| {
                    invalid(
                        "input",
                        "an input_image needs an `image_url` (file ids are not served here)",
                    )
                })?;
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                    image["detail"] = detail.clone();
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            }
            other => Err(invalid(
                "input",
                format!("content parts of type `{}` are not served here", other.unwrap_or("?")),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The output item being written.
#[derive(Debug)]
struct Open {
    kind: Kind,
    id: String,
    /// The text, or a call's arguments, so far.
    text: String,
}

#[derive(Debug, PartialEq)]
enum Kind {
    Reasoning,
    Message,
    Call { index: u64, call_id: String, name: String },
}

/// A chat answer as a `response` object, or its event stream.
#[derive(Debug)]
pub struct Answer {
    id: String,
    created_at: u64,
    model: String,
    echo: Echo,
    sequence: u64,
    started: bool,
    output: Vec<Value>,
    open: Option<Open>,
    finish: Option<String>,
    usage: Option<Value>,
    ended: bool,
}

impl Answer {
    /// For a request that asked `model` and repeats `echo`.
    pub fn new(model: &str, echo: Echo) -> Self {
        Self {
            id: new_id("resp"),
            created_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: model.to_owned(),
            echo,
            sequence: 0,
            started: false,
            output: Vec::new(),
            open: None,
            finish: None,
            usage: None,
            ended: false,
        }
    }

    fn emit(&mut self, out: &mut BytesMut, kind: &str, mut data: Value) {
        data["type"] = Value::from(kind);
        data["sequence_number"] = Value::from(self.sequence);
        self.sequence += 1;
        write_event(out, kind, &data);
    }

    /// The `response` object with `status`.
    fn response(&self, status: &str) -> Value {
        let field = |key: &str, default: Value| self.echo.get(key).cloned().unwrap_or(default);
        let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": field("instructions", Value::Null),
            "max_output_tokens": field("max_output_tokens", Value::Null),
            "metadata": field("metadata", json!({})),
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": field("parallel_tool_calls", Value::Bool(true)),
            "previous_response_id": null,
            "reasoning": field("reasoning", json!({"effort": null, "summary": null})),
            "store": false,
            "temperature": field("temperature", Value::from(1.0)),
            "text": field("text", json!({"format": {"type": "text"}})),
            "tool_choice": field("tool_choice", Value::from("auto")),
            "tools": field("tools", json!([])),
            "top_p": field("top_p", Value::from(1.0)),
            "truncation": "disabled",
            "usage": self.usage.as_ref().map(usage),
            "user": field("user", Value::Null),
        })
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.response("in_progress");
        self.emit(out, "response.created", json!({"response": response}));
        let response = self.response("in_progress");
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    /// Opens an item of `kind` unless the open one is it.
    fn open(&mut self, mut kind: Kind, out: &mut BytesMut) {
        if self.open.as_ref().is_some_and(|o| same_item(&o.kind, &kind)) {
            return;
        }
        self.close(out);
        let output_index = self.output.len();
        let (id, item, part) = match &mut kind {
            Kind::Reasoning => {
                let id = new_id("rs");
                let item =
                    json!({"id": id, "type": "reasoning", "summary": [], "content": [], "status": "in_progress"});
                (id, item, Some(json!({"type": "reasoning_text", "text": ""})))
            }
            Kind::Message => {
                let id = new_id("msg");
                let item =
                    json!({"id": id, "type": "message", "role": "assistant", "status": "in_progress", "content": []});
                (
                    id,
                    item,
                    Some(json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})),
                )
            }
            Kind::Call { call_id, name, .. } => {
                if call_id.is_empty() {
                    *call_id = new_id("call");
                }
                let id = new_id("fc");
                let item = json!({"id": id, "type": "function_call", "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"});
                (id, item, None)
            }
        };
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        if let Some(part) = part {
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": output_index, "content_index": 0, "part": part}),
            );
        }
        self.open = Some(Open {
            kind,
            id,
            text: String::new(),
        });
    }

    /// Finishes the open item: its `done` events, and it joins the output.
    fn close(&mut self, out: &mut BytesMut) {
        let Some(open) = self.open.take() else { return };
        let output_index = self.output.len();
        let at = json!({"item_id": open.id, "output_index": output_index, "content_index": 0});
        let item = match &open.kind {
            Kind::Reasoning => {
                let part = json!({"type": "reasoning_text", "text": open.text});
                self.emit(out, "response.reasoning_text.done", with(&at, "text", &open.text));
                self.emit(out, "response.content_part.done", with(&at, "part", &part));
                json!({"id": open.id, "type": "reasoning", "summary": [], "content": [part], "status": "completed"})
            }
            Kind::Message => {
                let part = json!({"type": "output_text", "text": open.text, "annotations": [], "logprobs": []});
                let mut done = with(&at, "text", &open.text);
                done["logprobs"] = json!([]);
                self.emit(out, "response.output_text.done", done);
                self.emit(out, "response.content_part.done", with(&at, "part", &part));
                json!({"id": open.id, "type": "message", "role": "assistant", "status": "completed", "content": [part]})
            }
            Kind::Call { call_id, name, .. } => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": open.id, "output_index": output_index, "name": name, "arguments": open.text}),
                );
                json!({"id": open.id, "type": "function_call", "call_id": call_id, "name": name, "arguments": open.text, "status": "completed"})
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
    }

    fn status(&self) -> &'static str {
        if self.finish.as_deref() == Some("length") {
            "incomplete"
        } else {
            "completed"
        }
    }
}

/// Whether an open item of kind `a` takes the pieces of `b`.
fn same_item(a: &Kind, b: &Kind) -> bool {
    match (a, b) {
        (Kind::Call { index: x, .. }, Kind::Call { index: y, .. }) => x == y,
        _ => a == b,
    }
}

fn with(base: &Value, key: &str, value: impl serde::Serialize) -> Value {
    let mut v = base.clone();
    v[key] = serde_json::to_value(value).unwrap_or_default();
    v
}

/// Chat's usage object as the Responses API's.
fn usage(chat: &Value) -> Value {
    let input = chat["prompt_tokens"].as_u64().unwrap_or(0);
    let output = chat["completion_tokens"].as_u64().unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": chat["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": chat["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap_or(0)},
        "total_tokens": chat["total_tokens"].as_u64().unwrap_or(input + output),
    })
}

impl Reframe for Answer {
    fn said(&mut self, said: Said, out: &mut BytesMut) {
        self.start(out);
        let (kind, event, delta) = match said {
            Said::Reasoning(text) => (Kind::Reasoning, "response.reasoning_text.delta", text),
            Said::Text(text) => (Kind::Message, "response.output_text.delta", text),
            Said::ToolCall {
                index,
                id,
                name,
                arguments,
            } => (
                Kind::Call {
                    index,
                    call_id: id.unwrap_or_default(),
                    name: name.unwrap_or_default(),
                },
                "response.function_call_arguments.delta",
                arguments,
            ),
            Said::Finish { reason, .. } => {
                self.close(out);
                self.finish = Some(reason);
                return;
            }
            Said::Usage(usage) => {
                self.usage = Some(usage);
                return;
            }
            Said::Error(_) => return,
        };
        self.open(kind, out);
        let output_index = self.output.len();
        let Some(open) = self.open.as_mut() else { return };
        if delta.is_empty() {
            return;
        }
        open.text.push_str(&delta);
        let mut data = json!({"item_id": open.id, "output_index": output_index, "delta": delta});
        match open.kind {
            Kind::Reasoning => data["content_index"] = Value::from(0),
            Kind::Message => {
                data["content_index"] = Value::from(0);
                data["logprobs"] = json!([]);
            }
            Kind::Call { .. } => {}
        }
        self.emit(out, event, data);
    }

    fn end(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start(out);
        self.close(out);
        let status = self.status();
        let response = self.response(status);
        let name = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, name, json!({"response": response}));
    }

    fn answer(&mut self) -> Value {
        let mut scratch = BytesMut::new();
        self.close(&mut scratch);
        self.response(self.status())
    }

    fn error_body(&self, error: &Value) -> Value {
        json!({"error": error})
    }

    fn error_event(&mut self, error: &Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        let data = json!({"code": error.get("code"), "message": error.get("message"), "param": error.get("param")});
        self.emit(&mut out, "error", data);
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
    fn a_request_becomes_chat_with_instructions_messages_calls_and_outputs() {
        let (chat, echo) = to_chat(
            br#"{"model": "deepseek-r1", "instructions": "Be brief.", "max_output_tokens": 64,
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
                    {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "call it"}]},
                    {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "18C"}
                ],
                "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
                "tool_choice": {"type": "function", "name": "weather"},
                "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
                "metadata": {"k": "v"}, "stream": true}"#,
        )
        .unwrap();
        let chat = serde_json::to_value(&chat).unwrap();
        assert_eq!(chat["max_tokens"], 64);
        assert_eq!(chat["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            chat["messages"][1],
            json!({"role": "user", "content": "Weather in Paris?"})
        );
        assert_eq!(chat["messages"][2]["reasoning_content"], "call it");
        assert_eq!(chat["messages"][2]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"})
        );
        assert_eq!(chat["tools"][0]["function"]["name"], "weather");
        assert_eq!(
            chat["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
        assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(echo["metadata"], json!({"k": "v"}));
        assert_eq!(echo["instructions"], "Be brief.");
    }

    #[test]
    fn what_needs_state_or_does_not_map_is_refused_by_name() {
        for (body, param) in [
            (r#"{"model": "m"}"#, "input"),
            (r#"{"input": "hi"}"#, "model"),
            (
                r#"{"model": "m", "input": "hi", "previous_response_id": "resp_1"}"#,
                "previous_response_id",
            ),
            (r#"{"model": "m", "input": "hi", "store": true}"#, "store"),
            (r#"{"model": "m", "input": "hi", "background": true}"#, "background"),
            (
                r#"{"model": "m", "input": "hi", "include": ["file_search_call.results"]}"#,
                "include",
            ),
            (
                r#"{"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}"#,
                "tools",
            ),
            (
                r#"{"model": "m", "input": "hi", "reasoning": {"summary": "detailed"}}"#,
                "reasoning.summary",
            ),
            (
                r#"{"model": "m", "input": [{"type": "item_reference", "id": "x"}]}"#,
                "input",
            ),
        ] {
            let err = to_chat(body.as_bytes()).unwrap_err();
            assert_eq!(err.body().error.param.get().map(String::as_str), Some(param), "{body}");
        }
        let err = to_chat(br#"{"model": "m", "input": "hi", "frobnicate": 1}"#).unwrap_err();
        assert!(err.message.contains("frobnicate"), "{}", err.message);
        // What clients send by default is taken.
        assert!(
            to_chat(br#"{"model": "m", "input": "hi", "store": false, "include": [], "truncation": "disabled"}"#)
                .is_ok()
        );
    }

    #[test]
    fn a_chat_stream_becomes_the_event_sequence_with_reasoning_text_and_a_call() {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let stream = [
            chunk(json!({"role": "assistant"}), Value::Null),
            chunk(json!({"reasoning_content": "think"}), Value::Null),
            ": keep-alive\n\n".to_owned(),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            format!("data: {}\n\n", json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let mut answer = Reframed::new(Answer::new("deepseek-r1", Echo::new()), true);
        let mut out = Vec::new();
        // Cut at arbitrary places: events are read whole.
        for (i, piece) in stream.as_bytes().chunks(37).enumerate() {
            let mut body = Some(Bytes::copy_from_slice(piece));
            answer.rewrite(&mut body, i == stream.len().div_ceil(37) - 1);
            out.extend_from_slice(&body.unwrap());
        }
        let text = String::from_utf8(out).unwrap();
        let (comments, rest): (Vec<&str>, Vec<&str>) = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .partition(|e| e.starts_with(':'));
        assert_eq!(comments, [": keep-alive"]);
        let events = events(&rest.join("\n\n"));
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let sequence: Vec<u64> = events.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(sequence, (0..events.len() as u64).collect::<Vec<_>>());
        let done = &events[20]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["model"], "deepseek-r1");
        assert_eq!(done["id"], events[0]["response"]["id"]);
        assert_eq!(done["output"][0]["content"][0]["text"], "think");
        assert_eq!(done["output"][1]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][2]["call_id"], "call_9");
        assert_eq!(done["output"][2]["arguments"], "{\"a\":1}");
        assert_eq!(done["usage"]["input_tokens"], 5);
        assert_eq!(done["usage"]["total_tokens"], 12);
    }

    #[test]
    fn a_chat_answer_becomes_a_response_and_a_cut_one_is_incomplete() {
        let chat = json!({"id": "c", "object": "chat.completion", "model": "m", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "Hi", "reasoning_content": "r"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let mut answer = Reframed::new(Answer::new("deepseek-r1", Echo::new()), false);
        let mut body = Some(Bytes::from(chat.to_string()));
        answer.rewrite(&mut body, true);
        let response: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "incomplete");
        assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(response["output"][0]["type"], "reasoning");
        assert_eq!(response["output"][1]["content"][0]["text"], "Hi");
        assert_eq!(response["usage"]["output_tokens"], 2);
    }

    #[test]
    fn malformed_upstream_framing_is_read_and_a_giant_event_ends_the_stream_with_an_error() {
        // CRLF line ends, `data:` without its space, a chunk's JSON over two `data:` lines, no [DONE].
        let stream = "data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\n\
                      data: {\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\" there\"},\"finish_reason\":\"stop\"}]}\r\n\r\n";
        let mut answer = Reframed::new(Answer::new("m", Echo::new()), true);
        let mut body = Some(Bytes::from(stream));
        answer.rewrite(&mut body, true);
        let read = events(std::str::from_utf8(&body.unwrap()).unwrap());
        let last = read.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Hi there");

        let mut answer = Reframed::new(Answer::new("m", Echo::new()), true);
        let giant = format!("data: {}", "x".repeat(crate::reframe::MAX_EVENT_BYTES + 1));
        let mut body = Some(Bytes::from(giant));
        answer.rewrite(&mut body, false);
        let events = events(std::str::from_utf8(&body.unwrap()).unwrap());
        assert_eq!(events.last().unwrap()["type"], "error");
        let mut after = Some(Bytes::from_static(b"data: [DONE]\n\n"));
        answer.rewrite(&mut after, true);
        assert_eq!(after.as_deref(), Some(&b""[..]), "nothing after the error event");
    }

    #[test]
    fn an_in_band_failure_is_an_error_event() {
        let mut answer = Reframed::new(Answer::new("m", Echo::new()), true);
        let mut body = Some(Bytes::from_static(
            b"data: {\"error\": {\"message\": \"boom\", \"type\": \"upstream_error\", \"code\": \"x\"}}\n\n",
        ));
        answer.rewrite(&mut body, false);
        let events = events(std::str::from_utf8(&body.unwrap()).unwrap());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "error");
        assert_eq!(events[0]["message"], "boom");
        assert_eq!(events[0]["code"], "x");
    }
}
