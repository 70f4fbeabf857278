//! [`Capture`]: the upstream's answer, as it passes through to the client, turned back into one
//! [`ChatCompletionResponse`] to store — from a JSON body or from an SSE stream's chunks.

use std::collections::BTreeMap;

use r1_proto::sse::{Decoder, Frame};
use r1_proto::{
    CHAT_COMPLETION_OBJECT, ChatCompletionChunk, ChatCompletionResponse, ChatMessage, Choice, FinishReason,
    MessageContent, Nullable, Role, Usage,
};
use serde_json::{Map, Value};

use super::SkipReason;

/// Delta keys that make a stream impossible to replay faithfully from one stored message.
const UNSUPPORTED_DELTA_KEYS: [&str; 2] = ["tool_calls", "function_call"];

/// Collects an upstream answer's body, bounded by `limit` bytes of answer, and yields the complete
/// answer — or why there is none to store.
///
/// Feed it every body chunk in order ([`Capture::push`], cheap and synchronous, so it fits Pingora's
/// `response_body_filter`), then call [`Capture::finish`] once the body ended. Only a successful
/// answer's body (HTTP 200) should be fed. An SSE stream counts only if it ends with `data: [DONE]`,
/// every choice has a `finish_reason`, and no `error` event or unparsable chunk came.
#[derive(Debug)]
pub struct Capture {
    limit: usize,
    kind: Kind,
    refused: Option<SkipReason>,
}

#[derive(Debug)]
enum Kind {
    Json(Vec<u8>),
    Sse(Box<Stream>),
}

/// What the chunks of a stream told so far.
#[derive(Debug)]
struct Stream {
    /// The stream's events (each at most the capture's limit).
    decoder: Decoder,
    identity: Option<(String, u64, String)>,
    system_fingerprint: Nullable<String>,
    choices: BTreeMap<u32, Accumulated>,
    usage: Nullable<Usage>,
    done: bool,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Accumulated {
    content: String,
    reasoning: Option<String>,
    refusal: Option<String>,
    logprobs: Option<Vec<Value>>,
    finish_reason: Option<FinishReason>,
}

impl Capture {
    /// A capture of a JSON (`stream: false`) answer.
    pub fn json(limit: usize) -> Self {
        Self {
            limit,
            kind: Kind::Json(Vec::new()),
            refused: None,
        }
    }

    /// A capture of an SSE (`stream: true`) answer.
    pub fn sse(limit: usize) -> Self {
        Self {
            limit,
            kind: Kind::Sse(Box::new(Stream::new(limit))),
            refused: None,
        }
    }

    /// Adds the next body bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.refused.is_some() {
            return;
        }
        let outcome = match &mut self.kind {
            Kind::Json(body) => {
                if body.len() + bytes.len() > self.limit {
                    Err(SkipReason::TooLarge)
                } else {
                    body.extend_from_slice(bytes);
                    Ok(())
                }
            }
            Kind::Sse(stream) => stream.push(bytes, self.limit),
        };
        if let Err(reason) = outcome {
            self.refused = Some(reason);
            // What was collected is of no use any more.
            self.kind = Kind::Json(Vec::new());
        }
    }

    /// The complete answer, once the body ended; otherwise why there is none.
    pub fn finish(self) -> Result<ChatCompletionResponse, SkipReason> {
        if let Some(reason) = self.refused {
            return Err(reason);
        }
        match self.kind {
            Kind::Json(body) => serde_json::from_slice(&body).map_err(|_| SkipReason::Failed),
            Kind::Sse(mut stream) => {
                // A last event not followed by a blank line still counts.
                stream.finish(self.limit)?;
                stream.into_response()
            }
        }
    }
}

impl Stream {
    fn new(limit: usize) -> Self {
        Self {
            decoder: Decoder::new(limit),
            identity: None,
            system_fingerprint: Nullable::Absent,
            choices: BTreeMap::new(),
            usage: Nullable::Absent,
            done: false,
            bytes: 0,
        }
    }

    fn push(&mut self, bytes: &[u8], limit: usize) -> Result<(), SkipReason> {
        let mut frames = Vec::new();
        self.decoder
            .feed(bytes, &mut |f| frames.push(f))
            .map_err(|_| SkipReason::TooLarge)?;
        frames.into_iter().try_for_each(|f| self.frame(f, limit))
    }

    fn finish(&mut self, limit: usize) -> Result<(), SkipReason> {
        let mut frames = Vec::new();
        self.decoder
            .finish(&mut |f| frames.push(f))
            .map_err(|_| SkipReason::TooLarge)?;
        frames.into_iter().try_for_each(|f| self.frame(f, limit))
    }

    fn frame(&mut self, frame: Frame, limit: usize) -> Result<(), SkipReason> {
        match frame {
            Frame::Comment(_) => Ok(()), // keep-alive
            Frame::Event { name: Some(name), .. } if name == "error" => Err(SkipReason::Failed),
            Frame::Event { data, .. } => self.event_done(data, limit),
        }
    }

    fn event_done(&mut self, data: Vec<u8>, limit: usize) -> Result<(), SkipReason> {
        if self.done {
            return Ok(()); // nothing after [DONE] belongs to the answer
        }
        if data.trim_ascii() == b"[DONE]" {
            self.done = true;
            return Ok(());
        }
        // An error event (`{"error": …}`) or anything else that is not a chunk ends the capture.
        let chunk: ChatCompletionChunk = serde_json::from_slice(&data).map_err(|_| SkipReason::Failed)?;
        self.chunk(chunk)?;
        if self.bytes > limit {
            return Err(SkipReason::TooLarge);
        }
        Ok(())
    }

    fn chunk(&mut self, chunk: ChatCompletionChunk) -> Result<(), SkipReason> {
        if self.identity.is_none() {
            self.identity = Some((chunk.id, chunk.created, chunk.model));
        }
        if let Nullable::Value(fingerprint) = chunk.system_fingerprint {
            self.system_fingerprint = Nullable::Value(fingerprint);
        }
        if let Nullable::Value(usage) = chunk.usage {
            self.usage = Nullable::Value(usage);
        }
        for choice in chunk.choices {
            if UNSUPPORTED_DELTA_KEYS
                .iter()
                .any(|key| choice.delta.extra.get(*key).is_some_and(|v| !v.is_null()))
            {
                return Err(SkipReason::Unsupported);
            }
            let acc = self.choices.entry(choice.index).or_default();
            if let Some(text) = choice.delta.content.get() {
                acc.content.push_str(text);
                self.bytes += text.len();
            }
            if let Some(text) = choice.delta.reasoning_content.get() {
                acc.reasoning.get_or_insert_with(String::new).push_str(text);
                self.bytes += text.len();
            }
            if let Some(Value::String(text)) = choice.delta.extra.get("refusal") {
                acc.refusal.get_or_insert_with(String::new).push_str(text);
                self.bytes += text.len();
            }
            if let Nullable::Value(logprobs) = &choice.logprobs
                && let Some(Value::Array(items)) = logprobs.get("content")
            {
                self.bytes += items.len() * 64;
                acc.logprobs.get_or_insert_with(Vec::new).extend(items.iter().cloned());
            }
            if let Nullable::Value(reason) = choice.finish_reason {
                acc.finish_reason = Some(reason);
            }
        }
        Ok(())
    }

    fn into_response(self) -> Result<ChatCompletionResponse, SkipReason> {
        let (Some((id, created, model)), true) = (self.identity, self.done) else {
            return Err(SkipReason::Incomplete);
        };
        if self.choices.is_empty() {
            return Err(SkipReason::Incomplete);
        }
        let mut choices = Vec::with_capacity(self.choices.len());
        for (index, acc) in self.choices {
            let finish_reason = acc.finish_reason.ok_or(SkipReason::Incomplete)?;
            let mut extra = Map::new();
            if let Some(refusal) = acc.refusal {
                extra.insert("refusal".to_owned(), Value::String(refusal));
            }
            let message = ChatMessage {
                role: Role::Assistant,
                content: Nullable::Value(MessageContent::Text(acc.content)),
                reasoning_content: Nullable::or_absent(acc.reasoning),
                name: None,
                extra,
            };
            let logprobs = acc.logprobs.map_or(Nullable::Null, |content| {
                let mut object = Map::new();
                object.insert("content".to_owned(), Value::Array(content));
                Nullable::Value(Value::Object(object))
            });
            choices.push(Choice {
                index,
                message,
                finish_reason: Nullable::Value(finish_reason),
                logprobs,
                extra: Map::new(),
            });
        }
        Ok(ChatCompletionResponse {
            id,
            object: CHAT_COMPLETION_OBJECT.to_owned(),
            created,
            model,
            choices,
            usage: self.usage,
            system_fingerprint: self.system_fingerprint,
            extra: Map::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const STREAM: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\", world\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],",
        "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_stream_split_anywhere_assembles_to_the_same_answer() {
        for split in [1, 7, 50, STREAM.len()] {
            let mut capture = Capture::sse(1 << 20);
            for piece in STREAM.as_bytes().chunks(split) {
                capture.push(piece);
            }
            let response = capture.finish().unwrap();
            let message = response.first_message().unwrap();
            assert_eq!(message.text(), "Hello, world");
            assert_eq!(message.reasoning(), Some("hmm"));
            assert_eq!(response.choices[0].finish_reason, Nullable::Value(FinishReason::Stop));
            assert_eq!(response.usage.get().unwrap().total_tokens, 7);
            assert_eq!(response.object, "chat.completion");
        }
    }

    #[test]
    fn truncated_failed_and_oversized_streams_are_refused() {
        let without_done = STREAM.replace("data: [DONE]\n\n", "");
        let mut capture = Capture::sse(1 << 20);
        capture.push(without_done.as_bytes());
        assert_eq!(capture.finish().unwrap_err(), SkipReason::Incomplete);

        let with_error = STREAM.replace(
            "data: [DONE]",
            "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"code\":null}}",
        );
        let mut capture = Capture::sse(1 << 20);
        capture.push(with_error.as_bytes());
        assert_eq!(capture.finish().unwrap_err(), SkipReason::Failed);

        let mut capture = Capture::sse(8);
        capture.push(STREAM.as_bytes());
        assert_eq!(capture.finish().unwrap_err(), SkipReason::TooLarge);

        let mut capture = Capture::json(8);
        capture.push(b"{\"id\": \"this is longer than eight bytes\"}");
        assert_eq!(capture.finish().unwrap_err(), SkipReason::TooLarge);
    }

    #[test]
    fn tool_call_streams_are_not_captured() {
        let tools = STREAM.replace(
            "{\"content\":\"Hello\"}",
            "{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}",
        );
        let mut capture = Capture::sse(1 << 20);
        capture.push(tools.as_bytes());
        assert_eq!(capture.finish().unwrap_err(), SkipReason::Unsupported);
    }
}
