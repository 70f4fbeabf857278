//! Result chunks turned into the client's answer: SSE events or one chat completion, replays after a redelivery, task errors as gateway errors.

use r1_proto::{Choice, ResultDelta};
use serde_json::Value;

use super::*;

pub(super) fn error_kind(code: TaskErrorCode) -> ErrorKind {
    match code {
        TaskErrorCode::Timeout => ErrorKind::Timeout,
        TaskErrorCode::InvalidRequest => ErrorKind::InvalidRequest,
        TaskErrorCode::Overloaded => ErrorKind::Overloaded,
        TaskErrorCode::Backend => ErrorKind::Upstream,
        TaskErrorCode::Cancelled | TaskErrorCode::Internal => ErrorKind::Internal,
    }
}

pub(super) fn task_error(error: &TaskError) -> GatewayError {
    let e = GatewayError::upstream(error_kind(error.code), Source::Center, error.message.clone());
    // A model server's refusal reaches the client as the server gave it: status, type, param and code.
    match &error.upstream {
        Some(refusal) => e.refusal(refusal.clone()),
        None => e,
    }
}

pub(super) enum Step {
    /// Keep going; write these bytes (stream), if any.
    Continue(Option<Bytes>),
    /// The answer is complete: the last bytes (stream) or the whole JSON body.
    Done(Bytes),
    /// The task failed.
    Fail(GatewayError),
}

/// One choice of the answer as it grows.
#[derive(Debug, Default)]
pub(super) struct ChoiceText {
    pub(super) content: String,
    pub(super) reasoning: String,
    /// Tool calls, merged from their fragments by `index`.
    pub(super) tool_calls: Vec<ToolCall>,
    /// Token log probabilities, in order.
    pub(super) logprobs: Vec<Value>,
    pub(super) finish: Option<FinishReason>,
    /// Whether the client has had this choice's role (the first frame carries choice 0's).
    pub(super) announced: bool,
}

/// One tool call, merged from its streamed fragments.
#[derive(Debug, Default)]
pub(super) struct ToolCall {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl ChoiceText {
    fn add(&mut self, delta: &ResultDelta) {
        if let Some(reasoning) = &delta.reasoning_content {
            self.reasoning.push_str(reasoning);
        }
        if let Some(content) = &delta.content {
            self.content.push_str(content);
        }
        for fragment in delta.tool_calls.iter().flat_map(|v| v.as_array()).flatten() {
            let at = fragment["index"].as_u64().unwrap_or(0) as usize;
            if self.tool_calls.len() <= at {
                self.tool_calls.resize_with(at + 1, ToolCall::default);
            }
            let call = &mut self.tool_calls[at];
            if let Some(id) = fragment["id"].as_str() {
                call.id = Some(id.to_owned());
            }
            if let Some(kind) = fragment["type"].as_str() {
                call.kind = Some(kind.to_owned());
            }
            if let Some(name) = fragment["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(arguments) = fragment["function"]["arguments"].as_str() {
                call.arguments.push_str(arguments);
            }
        }
        if let Some(content) = delta.logprobs.as_ref().and_then(|l| l["content"].as_array()) {
            self.logprobs.extend(content.iter().cloned());
        }
        if delta.finish_reason.is_some() {
            self.finish.clone_from(&delta.finish_reason);
        }
    }

    /// The choice as one chat completion choice.
    fn choice(&self, index: u32, logprobs: bool) -> Choice {
        let mut message = ChatMessage::assistant(self.content.clone());
        if !self.reasoning.is_empty() {
            message.reasoning_content = Nullable::Value(self.reasoning.clone());
        }
        if !self.tool_calls.is_empty() {
            if self.content.is_empty() {
                message.content = Nullable::Null;
            }
            let calls = self
                .tool_calls
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "id": c.id,
                        "type": c.kind.as_deref().unwrap_or("function"),
                        "function": {"name": c.name, "arguments": c.arguments},
                    })
                })
                .collect();
            message.extra.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        Choice {
            index,
            message,
            finish_reason: Nullable::Value(self.finish.clone().unwrap_or(FinishReason::Stop)),
            logprobs: if logprobs {
                Nullable::Value(serde_json::json!({"content": self.logprobs}))
            } else {
                Nullable::Null
            },
            extra: serde_json::Map::new(),
        }
    }
}

/// Turns result chunks into the client's answer.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) id: String,
    pub(super) model: String,
    pub(super) created: u64,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    /// The client asked for `logprobs`.
    pub(super) logprobs: bool,
    /// Whether the stream was opened (the client has its first bytes).
    pub(super) opened: bool,
    /// The choices so far (one unless `n > 1`).
    pub(super) choices: Vec<ChoiceText>,
    /// Whether the client has only had text of the first choice (what a redelivered run can be
    /// checked against and continued from).
    pub(super) plain: bool,
    /// Text of an earlier attempt the client already has; a new attempt must reproduce it.
    pub(super) replay: Option<(String, String)>,
    /// Lengths of reasoning and content already forwarded.
    pub(super) last_len: (usize, usize),
    /// Tokens the answer used (prompt + completion), once complete.
    pub(super) used_tokens: Option<u64>,
    /// The complete answer as one chat completion (for the result cache).
    pub(super) completed: Option<ChatCompletionResponse>,
}

impl Answer {
    pub(super) fn new(task_id: &str, model: &str, request: &ChatCompletionRequest) -> Self {
        Self {
            id: format!("chatcmpl-{task_id}"),
            model: model.to_owned(),
            created: r1_queue::unix_ms() / 1000,
            stream: request.is_stream(),
            include_usage: request.include_usage(),
            logprobs: request.extra.get("logprobs").and_then(Value::as_bool) == Some(true),
            opened: false,
            choices: vec![ChoiceText::default()],
            plain: true,
            replay: None,
            last_len: (0, 0),
            used_tokens: None,
            completed: None,
        }
    }

    pub(super) fn chunk(&self) -> ChatCompletionChunk {
        let mut c = ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone());
        if self.include_usage {
            c.usage = Nullable::Null;
        }
        c
    }

    /// Stream bytes to send; the first ones are preceded by the assistant's role frame.
    pub(super) fn open(&mut self, bytes: Bytes) -> Bytes {
        if self.opened {
            return bytes;
        }
        self.opened = true;
        let mut out = Vec::with_capacity(256 + bytes.len());
        out.extend_from_slice(&self.first_frame());
        out.extend_from_slice(&bytes);
        Bytes::from(out)
    }

    pub(super) fn first_frame(&self) -> Bytes {
        let delta = ChunkDelta {
            content: Nullable::Value(String::new()),
            ..ChunkDelta::role(Role::Assistant)
        };
        Bytes::from(self.chunk().with_choice(ChunkChoice::new(0, delta)).to_sse_event())
    }

    fn diverged() -> Step {
        Step::Fail(GatewayError::upstream(
            ErrorKind::Upstream,
            Source::Center,
            "the center node failed mid-answer and its retry answered differently; retry the request",
        ))
    }

    pub(super) fn take(&mut self, event: ReplyEvent) -> Step {
        let chunk = match event {
            ReplyEvent::Restarted { attempt } => {
                tracing::info!(id = %self.id, attempt, "the task was redelivered and runs again");
                if self.stream && self.opened {
                    if !self.plain {
                        // Tool calls, log probabilities and other choices carry ids and
                        // numbers a new run does not reproduce: no continuation to check.
                        return Self::diverged();
                    }
                    // The client has this text; the new run must reproduce it before we forward more.
                    let first = std::mem::take(&mut self.choices[0]);
                    self.replay = Some((first.reasoning, first.content));
                }
                self.last_len = (0, 0);
                self.choices = vec![ChoiceText::default()];
                return Step::Continue(None);
            }
            ReplyEvent::Chunk(chunk) => chunk,
        };
        let ResultChunk {
            delta,
            done,
            usage,
            error,
            ..
        } = chunk;
        if let Some(error) = error {
            return Step::Fail(task_error(&error));
        }
        let mut out = Vec::new();
        if let Some(delta) = delta {
            let at = delta.index as usize;
            // Bounded by the request's `n`, checked at admission; a larger index is a broken server.
            if at >= 128 {
                return Self::diverged();
            }
            if self.choices.len() <= at {
                self.choices.resize_with(at + 1, ChoiceText::default);
            }
            self.choices[at].add(&delta);
            let plain = delta.index == 0 && delta.tool_calls.is_none() && delta.logprobs.is_none();
            if self.stream {
                if plain {
                    match self.unreplayed() {
                        Err(()) => return Self::diverged(),
                        Ok(Some((reasoning, content))) => {
                            if !reasoning.is_empty() || !content.is_empty() {
                                let mut d = ChunkDelta::default();
                                if !reasoning.is_empty() {
                                    d.reasoning_content = Nullable::Value(reasoning);
                                }
                                if !content.is_empty() {
                                    d.content = Nullable::Value(content);
                                }
                                out.extend(self.chunk().with_choice(ChunkChoice::new(0, d)).to_sse_event());
                            }
                        }
                        Ok(None) => {}
                    }
                } else {
                    if self.replay.is_some() {
                        return Self::diverged();
                    }
                    self.plain = false;
                    out.extend(self.chunk().with_choice(self.verbatim(delta)).to_sse_event());
                }
            }
        }
        if !done {
            return Step::Continue((!out.is_empty()).then(|| Bytes::from(out)));
        }
        // Without a reported usage the caller keeps its reservation (never a refund of it), and the
        // answer is not cached (a hit could not say what it cost).
        self.used_tokens = usage.as_ref().map(|u| u.total_tokens);
        let reported = usage.is_some();
        let usage = usage.unwrap_or_else(|| Usage::new(0, 0));
        let choices: Vec<Choice> = (0u32..)
            .zip(&self.choices)
            .map(|(index, c)| c.choice(index, self.logprobs))
            .collect();
        let mut completed = ChatCompletionResponse::new(
            self.id.clone(),
            self.created,
            self.model.clone(),
            ChatMessage::assistant(""),
            FinishReason::Stop,
            usage.clone(),
        );
        completed.choices = choices;
        if self.stream {
            for choice in &completed.choices {
                let finish = choice.finish_reason.clone().into_option().unwrap_or(FinishReason::Stop);
                out.extend(
                    self.chunk()
                        .with_choice(ChunkChoice::new(choice.index, ChunkDelta::default()).with_finish_reason(finish))
                        .to_sse_event(),
                );
            }
            if self.include_usage {
                let mut last = self.chunk();
                last.usage = Nullable::Value(usage);
                out.extend(last.to_sse_event());
            }
            out.extend_from_slice(sse::DONE);
            self.completed = Some(Self::for_cache(completed, reported));
            return Step::Done(Bytes::from(out));
        }
        let body = serde_json::to_vec(&completed).unwrap_or_default();
        self.completed = Some(Self::for_cache(completed, reported));
        Step::Done(Bytes::from(body))
    }

    /// The completion as the cache sees it: without usage when the model server reported none.
    fn for_cache(mut completed: ChatCompletionResponse, reported: bool) -> ChatCompletionResponse {
        if !reported {
            completed.usage = Nullable::Null;
        }
        completed
    }

    /// A delta that is not plain text of the first choice, as one chunk choice: tool-call fragments
    /// and log probabilities exactly as the model server sent them.
    fn verbatim(&mut self, delta: ResultDelta) -> ChunkChoice {
        let mut d = ChunkDelta::default();
        if let Some(reasoning) = delta.reasoning_content {
            d.reasoning_content = Nullable::Value(reasoning);
        }
        if let Some(content) = delta.content {
            d.content = Nullable::Value(content);
        }
        if let Some(calls) = delta.tool_calls {
            d.extra.insert("tool_calls".to_owned(), calls);
        }
        if delta.index == 0 {
            // The first choice's text was forwarded up to here: keep the replay bookkeeping level.
            let first = &self.choices[0];
            self.last_len = (first.reasoning.len(), first.content.len());
        } else if !self.choices[delta.index as usize].announced {
            self.choices[delta.index as usize].announced = true;
            d.role = Nullable::Value(Role::Assistant);
        }
        let mut choice = ChunkChoice::new(delta.index, d);
        if let Some(logprobs) = delta.logprobs {
            choice.logprobs = Nullable::Value(logprobs);
        }
        choice
    }

    /// While replaying after a restart: `Ok(None)` while the new run is still inside what the
    /// client has, `Err` if it differs, `Ok(Some(new text))` once past it. Without a replay, the
    /// newest delta of the first choice.
    pub(super) fn unreplayed(&mut self) -> Result<Option<(String, String)>, ()> {
        let Some((sent_r, sent_c)) = &self.replay else {
            return Ok(Some(self.newest()));
        };
        let first = &self.choices[0];
        let (now_r, now_c) = (first.reasoning.as_str(), first.content.as_str());
        let consistent = |sent: &str, now: &str| sent.starts_with(now) || now.starts_with(sent);
        // Reasoning comes before content: content while the reasoning is still short is a different answer.
        if !consistent(sent_r, now_r) || !consistent(sent_c, now_c) || (!now_c.is_empty() && now_r.len() < sent_r.len())
        {
            return Err(());
        }
        if now_r.len() >= sent_r.len() && now_c.len() >= sent_c.len() {
            let fresh = (now_r[sent_r.len()..].to_owned(), now_c[sent_c.len()..].to_owned());
            self.last_len = (now_r.len(), now_c.len());
            self.replay = None;
            return Ok(Some(fresh));
        }
        Ok(None)
    }

    pub(super) fn newest(&mut self) -> (String, String) {
        let (r, c) = self.last_len;
        let first = &self.choices[0];
        let fresh = (first.reasoning[r..].to_owned(), first.content[c..].to_owned());
        self.last_len = (first.reasoning.len(), first.content.len());
        fresh
    }
}
