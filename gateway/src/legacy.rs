//! The legacy completions API (`POST /v1/completions`: LlamaIndex's `OpenAILike`, LangChain's
//! `OpenAI()`, older tools) on top of chat completions.
//!
//! The models behind both pools are chat models, so a completion request becomes a chat request whose
//! one user message is the prompt ([`to_chat`]), routed and checked like any other; its answer — proxied,
//! handed off or not — is turned back into `text_completion` objects as it passes ([`Legacy`]): each
//! chunk's `delta.content` becomes `text` (R1's reasoning has no place in this API and is left out),
//! `finish_reason` and `usage` are kept, error events and comments pass unchanged. What this API asks
//! that a chat model cannot give — `echo`, `suffix`, `best_of > 1`, token-array prompts, several prompts,
//! `logprobs` — is a 400 naming it. Answers are not cached (the cache holds chat answers).

use bytes::{Bytes, BytesMut};
use r1_proto::sse::{Decoder, Frame};
use r1_proto::{ChatCompletionRequest, ErrorKind};
use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::reframe::MAX_EVENT_BYTES;

/// `max_tokens` when a completion request gives none: OpenAI's default for this API.
pub const DEFAULT_MAX_TOKENS: u64 = 16;

fn invalid(param: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::downstream(ErrorKind::InvalidRequest, message).param(param)
}

/// The chat request for a completion request's `body`.
pub fn to_chat(body: &[u8]) -> Result<ChatCompletionRequest, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::downstream(
            ErrorKind::InvalidRequest,
            format!("not a valid completion request: {e}"),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err(GatewayError::downstream(
            ErrorKind::InvalidRequest,
            "a completion request is a JSON object",
        ));
    };
    let prompt = match object.remove("prompt") {
        Some(Value::String(text)) => text,
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(text)] => text.clone(),
            [] => return Err(invalid("prompt", "`prompt` must not be empty")),
            [Value::String(_), ..] => {
                return Err(invalid("prompt", "one prompt per request: several are not served here"));
            }
            _ => {
                return Err(invalid(
                    "prompt",
                    "`prompt` must be text: token arrays are not served here",
                ));
            }
        },
        Some(_) => return Err(invalid("prompt", "`prompt` must be a string")),
        None => return Err(invalid("prompt", "`prompt` is required")),
    };
    if object.remove("echo").is_some_and(|v| v == Value::Bool(true)) {
        return Err(invalid("echo", "`echo` is not served: the models here are chat models"));
    }
    if object.remove("suffix").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "suffix",
            "`suffix` (insertion) is not served: the models here are chat models",
        ));
    }
    if object
        .remove("best_of")
        .is_some_and(|v| !(v.is_null() || v == json!(1)))
    {
        return Err(invalid("best_of", "`best_of` above 1 is not served"));
    }
    if object.remove("logprobs").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "logprobs",
            "`logprobs` is not served on /v1/completions; use /v1/chat/completions",
        ));
    }
    object
        .entry("max_tokens")
        .or_insert_with(|| Value::from(DEFAULT_MAX_TOKENS));
    object.insert("messages".to_owned(), json!([{"role": "user", "content": prompt}]));
    serde_json::from_value(Value::Object(object)).map_err(|e| {
        GatewayError::downstream(
            ErrorKind::InvalidRequest,
            format!("not a valid completion request: {e}"),
        )
    })
}

/// Turns a chat answer (SSE or one JSON body) into the completions API's, piece by piece.
#[derive(Debug)]
pub struct Legacy {
    stream: bool,
    /// A stream's events.
    decoder: Decoder,
    /// A JSON body, until it is whole.
    body: Vec<u8>,
}

impl Legacy {
    /// For an answer that is a stream (`stream`) or one JSON body.
    pub fn new(stream: bool) -> Self {
        Self {
            stream,
            decoder: Decoder::new(MAX_EVENT_BYTES),
            body: Vec::new(),
        }
    }

    /// Rewrites a piece on its way to the client; `end`: the last piece. A JSON body is held until it
    /// is whole; a stream is passed on event by event.
    pub fn rewrite(&mut self, body: &mut Option<Bytes>, end: bool) {
        let piece = body.take().unwrap_or_default();
        if !self.stream {
            self.body.extend_from_slice(&piece);
            *body = Some(if end {
                let whole = std::mem::take(&mut self.body);
                match serde_json::from_slice::<Value>(&whole) {
                    Ok(answer) => Bytes::from(serde_json::to_vec(&completion(&answer)).unwrap_or_default()),
                    Err(_) => Bytes::from(whole),
                }
            } else {
                Bytes::new()
            });
            return;
        }
        let mut out = BytesMut::new();
        let mut frame = |frame: Frame| out.extend_from_slice(&translate_frame(frame));
        let mut read = self.decoder.feed(&piece, &mut frame);
        if end && read.is_ok() {
            read = self.decoder.finish(&mut frame);
        }
        if let Err(too_large) = read {
            let error = r1_proto::ErrorKind::Upstream.body(format!("the model server sent {too_large}"));
            out.extend_from_slice(&error.to_sse_event());
        }
        *body = Some(out.freeze());
    }
}

/// One SSE frame: a chat chunk becomes a completion chunk; a chunk with neither text, a finish nor
/// usage (a role or reasoning chunk) is dropped; anything else passes unchanged.
fn translate_frame(frame: Frame) -> Vec<u8> {
    let Frame::Event { data, .. } = &frame else {
        return frame.to_bytes();
    };
    let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
        return frame.to_bytes(); // [DONE], or not JSON
    };
    if chunk.get("object").and_then(Value::as_str) != Some("chat.completion.chunk") {
        return frame.to_bytes();
    }
    let converted = completion(&chunk);
    let says_something = converted["choices"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["text"] != "" || !c["finish_reason"].is_null()))
        || converted.get("usage").is_some_and(|u| !u.is_null());
    if !says_something {
        return Vec::new();
    }
    r1_proto::sse::frame(&serde_json::to_vec(&converted).unwrap_or_default())
}

/// A chat completion (or chunk) as a `text_completion`.
fn completion(chat: &Value) -> Value {
    let choices: Vec<Value> = chat["choices"]
        .as_array()
        .map(|choices| {
            choices
                .iter()
                .map(|c| {
                    let text = c["delta"]["content"]
                        .as_str()
                        .or_else(|| c["message"]["content"].as_str())
                        .unwrap_or_default();
                    json!({"index": c["index"], "text": text, "logprobs": null, "finish_reason": c["finish_reason"]})
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Map::new();
    // OpenAI's completion ids are `cmpl-…`.
    if let Some(id) = chat.get("id").and_then(Value::as_str) {
        let id = id
            .strip_prefix("chatcmpl-")
            .map_or_else(|| id.to_owned(), |rest| format!("cmpl-{rest}"));
        out.insert("id".to_owned(), Value::from(id));
    }
    for key in ["created", "model", "system_fingerprint"] {
        if let Some(v) = chat.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    out.insert("object".to_owned(), Value::from("text_completion"));
    out.insert("choices".to_owned(), Value::from(choices));
    if let Some(usage) = chat.get("usage") {
        out.insert("usage".to_owned(), usage.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_request_is_one_user_message_and_what_chat_cannot_give_is_refused() {
        let chat = to_chat(br#"{"model": "deepseek-r1", "prompt": "Once upon a time", "temperature": 0}"#).unwrap();
        assert_eq!(chat.messages.len(), 1);
        assert_eq!(chat.messages[0].text(), "Once upon a time");
        assert_eq!(chat.max_tokens, Some(16), "OpenAI's default for this API");
        assert_eq!(
            to_chat(br#"{"model": "m", "prompt": ["one"]}"#).unwrap().messages[0].text(),
            "one"
        );
        for (body, param) in [
            (r#"{"model": "m"}"#, "prompt"),
            (r#"{"model": "m", "prompt": [1, 2, 3]}"#, "prompt"),
            (r#"{"model": "m", "prompt": ["a", "b"]}"#, "prompt"),
            (r#"{"model": "m", "prompt": "a", "echo": true}"#, "echo"),
            (r#"{"model": "m", "prompt": "a", "suffix": "z"}"#, "suffix"),
            (r#"{"model": "m", "prompt": "a", "best_of": 3}"#, "best_of"),
            (r#"{"model": "m", "prompt": "a", "logprobs": 2}"#, "logprobs"),
        ] {
            let err = to_chat(body.as_bytes()).unwrap_err();
            assert_eq!(err.body().error.param.get().map(String::as_str), Some(param), "{body}");
        }
    }

    #[test]
    fn a_chat_stream_becomes_completion_chunks_across_pieces() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"},\"finish_reason\":null}]}\n\n",
            ": keep-alive\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let mut legacy = Legacy::new(true);
        let mut out = Vec::new();
        let (a, b) = stream.split_at(100);
        for (piece, end) in [(a, false), (b, true)] {
            let mut body = Some(Bytes::from(piece.to_owned()));
            legacy.rewrite(&mut body, end);
            out.extend_from_slice(&body.unwrap_or_default());
        }
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 4, "{text}");
        assert_eq!(events[0], ": keep-alive");
        let hello: Value = serde_json::from_str(events[1].trim_start_matches("data: ")).unwrap();
        assert_eq!(hello["object"], "text_completion");
        assert_eq!(hello["choices"][0]["text"], "Hello");
        let last: Value = serde_json::from_str(events[2].trim_start_matches("data: ")).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        assert_eq!(events[3], "data: [DONE]");
    }

    #[test]
    fn a_chat_answer_becomes_a_completion() {
        let chat = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there","reasoning_content":"r"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let mut legacy = Legacy::new(false);
        let (a, b) = chat.split_at(40);
        let mut first = Some(Bytes::from(a.to_owned()));
        legacy.rewrite(&mut first, false);
        assert_eq!(first.as_deref(), Some(&b""[..]), "held until whole");
        let mut last = Some(Bytes::from(b.to_owned()));
        legacy.rewrite(&mut last, true);
        let answer: Value = serde_json::from_slice(&last.unwrap()).unwrap();
        assert_eq!(answer["object"], "text_completion");
        assert_eq!(answer["id"], "c1");
        assert_eq!(answer["choices"][0]["text"], "Hi there");
        assert_eq!(answer["usage"]["total_tokens"], 5);
    }
}
