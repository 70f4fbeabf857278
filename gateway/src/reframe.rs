//! Chat answers read as what they say ([`Said`]: reasoning, text, tool-call fragments, the finish,
//! usage, an error) and re-framed in another API's shape by a [`Reframe`] — the Responses API's and the
//! Messages API's answers are built this way, streamed or not ([`Reframed`]).

use bytes::{Bytes, BytesMut};
use r1_proto::sse::{Decoder, Frame};
use r1_proto::{ChatCompletionRequest, ErrorKind};
use serde_json::{Map, Value, json};

use crate::error::GatewayError;

/// A 400 naming `param`.
pub fn invalid(param: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::downstream(ErrorKind::InvalidRequest, message).param(param)
}

/// The chat request another API's request became (`api` names that API in errors). A stream asks for
/// the usage chunk: the API's closing event carries the usage.
pub fn into_chat(mut chat: Map<String, Value>, api: &str) -> Result<ChatCompletionRequest, GatewayError> {
    if chat.get("stream") == Some(&Value::Bool(true)) {
        chat.insert("stream_options".to_owned(), json!({"include_usage": true}));
    }
    serde_json::from_value(Value::Object(chat))
        .map_err(|e| GatewayError::downstream(ErrorKind::InvalidRequest, format!("not a valid {api} request: {e}")))
}

/// What a piece of a chat answer says, in the order it says it (choice 0 only: these APIs have one).
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    /// Reasoning text (`reasoning_content`, or vLLM's `reasoning`).
    Reasoning(String),
    /// Answer text.
    Text(String),
    /// A tool call, or a fragment of one: the first fragment of a call carries its id and name.
    ToolCall {
        /// The call's index in the answer.
        index: u64,
        /// The call id (first fragment).
        id: Option<String>,
        /// The function's name (first fragment).
        name: Option<String>,
        /// A piece of the arguments' JSON text.
        arguments: String,
    },
    /// The answer ended: chat's `finish_reason`, and the stop sequence that ended it when the server says
    /// (vLLM's `stop_reason`).
    Finish {
        /// `stop`, `length`, `tool_calls`, `content_filter`.
        reason: String,
        /// The matched stop sequence.
        stop: Option<String>,
    },
    /// The token counts (chat's `usage` object).
    Usage(Value),
    /// The answer failed: the OpenAI `error` object.
    Error(Value),
}

/// The largest SSE event of a chat stream read here: far above any chunk a model server sends; an
/// upstream that sends more ends the stream with an error event.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// One SSE event of a chat stream.
#[derive(Debug, PartialEq)]
pub enum ChatEvent {
    /// A chunk (or an error event), as what it says.
    Said(Vec<Said>),
    /// `data: [DONE]`.
    Done,
    /// Anything else (an event that is not a chunk): passed on unchanged.
    Other,
}

/// Reads the data of one SSE event of a chat stream.
pub fn read_event(data: &[u8]) -> ChatEvent {
    let data = data.trim_ascii();
    if data == b"[DONE]" {
        return ChatEvent::Done;
    }
    match serde_json::from_slice::<Value>(data) {
        Ok(value) if value.get("error").is_some() => ChatEvent::Said(vec![Said::Error(value["error"].clone())]),
        Ok(value) if value.get("choices").is_some() => ChatEvent::Said(read_chat(&value)),
        _ => ChatEvent::Other,
    }
}

/// What a chat completion, or one chunk of one, says.
pub fn read_chat(chat: &Value) -> Vec<Said> {
    let mut said = Vec::new();
    let first = chat["choices"]
        .as_array()
        .and_then(|choices| choices.iter().find(|c| c["index"].as_u64().unwrap_or(0) == 0));
    if let Some(choice) = first {
        // A chunk's `delta`, or a whole answer's `message`.
        let message = if choice.get("delta").is_some() {
            &choice["delta"]
        } else {
            &choice["message"]
        };
        let reasoning = message["reasoning_content"]
            .as_str()
            .or_else(|| message["reasoning"].as_str());
        if let Some(text) = reasoning.filter(|t| !t.is_empty()) {
            said.push(Said::Reasoning(text.to_owned()));
        }
        if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
            said.push(Said::Text(text.to_owned()));
        }
        for (position, call) in message["tool_calls"].as_array().into_iter().flatten().enumerate() {
            said.push(Said::ToolCall {
                index: call["index"].as_u64().unwrap_or(position as u64),
                id: call["id"].as_str().map(str::to_owned),
                name: call["function"]["name"].as_str().map(str::to_owned),
                arguments: call["function"]["arguments"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            said.push(Said::Finish {
                reason: reason.to_owned(),
                stop: choice["stop_reason"].as_str().map(str::to_owned),
            });
        }
    }
    if let Some(usage) = chat.get("usage").filter(|u| u.is_object()) {
        said.push(Said::Usage(usage.clone()));
    }
    said
}

/// An API re-framed on top of chat: what each [`Said`] becomes.
pub trait Reframe {
    /// Writes the stream events for `said` into `out` (a stream); either way, keeps what the whole answer
    /// needs.
    fn said(&mut self, said: Said, out: &mut BytesMut);
    /// The chat stream ended (`[DONE]`, or its last byte): writes the closing events (once).
    fn end(&mut self, out: &mut BytesMut);
    /// The whole answer, once everything was said (a non-streamed request).
    fn answer(&mut self) -> Value;
    /// The error body of this API for an OpenAI `error` object.
    fn error_body(&self, error: &Value) -> Value;
    /// The in-band error event ending a stream of this API, for an OpenAI `error` object.
    fn error_event(&mut self, error: &Value) -> Vec<u8>;
}

/// Re-frames a chat answer (SSE or one JSON body) piece by piece.
#[derive(Debug)]
pub struct Reframed<R> {
    inner: R,
    stream: bool,
    /// A stream's events.
    decoder: Decoder,
    /// A JSON body, until it is whole.
    body: Vec<u8>,
    ended: bool,
}

impl<R: Reframe> Reframed<R> {
    /// For an answer that is a stream (`stream`) or one JSON body.
    pub fn new(inner: R, stream: bool) -> Self {
        Self {
            inner,
            stream,
            decoder: Decoder::new(MAX_EVENT_BYTES),
            body: Vec::new(),
            ended: false,
        }
    }

    /// Rewrites a piece on its way to the client; `end`: the last piece. A JSON body is held until it is
    /// whole; a stream is passed on event by event.
    pub fn rewrite(&mut self, body: &mut Option<Bytes>, end: bool) {
        let piece = body.take().unwrap_or_default();
        if !self.stream {
            self.body.extend_from_slice(&piece);
            *body = Some(if end { self.whole_answer() } else { Bytes::new() });
            return;
        }
        let mut frames = Vec::new();
        let mut read = self.decoder.feed(&piece, &mut |f| frames.push(f));
        if end && read.is_ok() {
            read = self.decoder.finish(&mut |f| frames.push(f));
        }
        let mut out = BytesMut::new();
        for frame in frames {
            self.frame(frame, &mut out);
        }
        if let Err(too_large) = read
            && !self.ended
        {
            let error = json!({"message": format!("the model server sent {too_large}"), "type": "upstream_error"});
            out.extend_from_slice(&self.inner.error_event(&error));
            self.ended = true;
        }
        if end && !self.ended {
            self.inner.end(&mut out);
            self.ended = true;
        }
        *body = Some(out.freeze());
    }

    /// A whole JSON answer (or refusal) in this API's shape.
    fn whole_answer(&mut self) -> Bytes {
        let whole = std::mem::take(&mut self.body);
        match serde_json::from_slice::<Value>(&whole) {
            Ok(value) if value.get("error").is_some() => json_bytes(&self.inner.error_body(&value["error"])),
            Ok(chat) => {
                let mut scratch = BytesMut::new();
                for said in read_chat(&chat) {
                    self.inner.said(said, &mut scratch);
                }
                json_bytes(&self.inner.answer())
            }
            Err(_) => Bytes::from(whole),
        }
    }

    /// One frame of the chat stream, re-framed into `out`.
    fn frame(&mut self, frame: Frame, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        let Frame::Event { data, .. } = &frame else {
            out.extend_from_slice(&frame.to_bytes()); // keep-alive comments pass
            return;
        };
        match read_event(data) {
            ChatEvent::Said(said) => {
                for said in said {
                    if let Said::Error(error) = &said {
                        out.extend_from_slice(&self.inner.error_event(error));
                        self.ended = true;
                        return;
                    }
                    self.inner.said(said, out);
                }
            }
            ChatEvent::Done => {
                self.inner.end(out);
                self.ended = true;
            }
            ChatEvent::Other => out.extend_from_slice(&frame.to_bytes()),
        }
    }

    /// The in-band error event that ends this stream (nothing once it ended).
    pub fn error_event(&mut self, error: &GatewayError) -> Vec<u8> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        self.inner.error_event(&error_object(error))
    }
}

fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// The OpenAI `error` object of a gateway error.
pub fn error_object(error: &GatewayError) -> Value {
    serde_json::to_value(error.body().error).unwrap_or_else(|_| json!({"message": error.message}))
}

/// Writes one SSE event `name` with `data`.
pub fn write_event(out: &mut BytesMut, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&serde_json::to_vec(data).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `data` of each named event of a re-framed stream (comments left out), checking that each
    /// event's name is its `type`, as the Responses and Messages APIs send them.
    pub(crate) fn events(text: &str) -> Vec<Value> {
        text.split("\n\n")
            .filter(|e| !e.is_empty() && !e.starts_with(':'))
            .map(|e| {
                let (name, data) = e.split_once("\ndata: ").unwrap();
                let data: Value = serde_json::from_str(data).unwrap();
                assert_eq!(name.trim_start_matches("event: "), data["type"], "{e}");
                data
            })
            .collect()
    }

    #[test]
    fn a_chunk_says_reasoning_text_tool_calls_the_finish_and_usage_in_order() {
        let chunk = json!({
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"reasoning_content": "hm", "content": "ok", "tool_calls": [
                {"index": 1, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]},
                "finish_reason": "stop", "stop_reason": "END"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        });
        assert_eq!(
            read_chat(&chunk),
            vec![
                Said::Reasoning("hm".into()),
                Said::Text("ok".into()),
                Said::ToolCall {
                    index: 1,
                    id: Some("call_1".into()),
                    name: Some("f".into()),
                    arguments: "{\"a\"".into()
                },
                Said::Finish {
                    reason: "stop".into(),
                    stop: Some("END".into())
                },
                Said::Usage(chunk["usage"].clone()),
            ]
        );
        // Other choices than the first say nothing; an empty delta says nothing.
        let other = json!({"choices": [{"index": 1, "delta": {"content": "x"}}, {"index": 0, "delta": {}}]});
        assert!(read_chat(&other).is_empty());
    }

    #[test]
    fn event_data_is_read_as_chunks_the_end_or_something_else() {
        assert_eq!(
            read_event(b"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}"),
            ChatEvent::Said(vec![Said::Text("a".into())])
        );
        assert_eq!(read_event(b" [DONE]"), ChatEvent::Done);
        assert_eq!(
            read_event(b"{\"error\":{\"message\":\"m\"}}"),
            ChatEvent::Said(vec![Said::Error(json!({"message": "m"}))])
        );
        assert_eq!(read_event(b"{\"type\":\"ping\"}"), ChatEvent::Other);
    }
}
