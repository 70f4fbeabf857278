//! Result chunks turned into the client's answer: SSE events or one chat completion, replays after a redelivery, task errors as gateway errors.

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
    GatewayError::upstream(error_kind(error.code), Source::Center, error.message.clone())
}

pub(super) enum Step {
    /// Keep going; write these bytes (stream), if any.
    Continue(Option<Bytes>),
    /// The answer is complete: the last bytes (stream) or the whole JSON body.
    Done(Bytes),
    /// The task failed.
    Fail(GatewayError),
}

/// Turns result chunks into the client's answer.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) id: String,
    pub(super) model: String,
    pub(super) created: u64,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    /// Whether the stream was opened (the client has its first bytes).
    pub(super) opened: bool,
    pub(super) content: String,
    pub(super) reasoning: String,
    pub(super) finish: Option<FinishReason>,
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
    pub(super) fn new(task_id: &str, model: &str, stream: bool, include_usage: bool) -> Self {
        Self {
            id: format!("chatcmpl-{task_id}"),
            model: model.to_owned(),
            created: r1_queue::unix_ms() / 1000,
            stream,
            include_usage,
            opened: false,
            content: String::new(),
            reasoning: String::new(),
            finish: None,
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

    pub(super) fn take(&mut self, event: ReplyEvent) -> Step {
        let chunk = match event {
            ReplyEvent::Restarted { attempt } => {
                tracing::info!(id = %self.id, attempt, "the task was redelivered and runs again");
                if self.stream && self.opened {
                    // The client has this text; the new run must reproduce it before we forward more.
                    self.replay = Some((std::mem::take(&mut self.reasoning), std::mem::take(&mut self.content)));
                }
                self.last_len = (0, 0);
                self.content.clear();
                self.reasoning.clear();
                self.finish = None;
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
            let reasoning = delta.reasoning_content.unwrap_or_default();
            let content = delta.content.unwrap_or_default();
            self.reasoning.push_str(&reasoning);
            self.content.push_str(&content);
            if delta.finish_reason.is_some() {
                self.finish = delta.finish_reason;
            }
            if self.stream {
                match self.unreplayed() {
                    Err(()) => {
                        return Step::Fail(GatewayError::upstream(
                            ErrorKind::Upstream,
                            Source::Center,
                            "the center node failed mid-answer and its retry answered differently; retry the request",
                        ));
                    }
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
            }
        }
        if !done {
            return Step::Continue((!out.is_empty()).then(|| Bytes::from(out)));
        }
        let finish = self.finish.take().unwrap_or(FinishReason::Stop);
        // Without a reported usage the caller keeps its reservation (never a refund of it).
        self.used_tokens = usage.as_ref().map(|u| u.total_tokens);
        let usage = usage.unwrap_or_else(|| Usage::new(0, 0));
        let mut message = ChatMessage::assistant(self.content.clone());
        if !self.reasoning.is_empty() {
            message.reasoning_content = Nullable::Value(self.reasoning.clone());
        }
        self.completed = Some(ChatCompletionResponse::new(
            self.id.clone(),
            self.created,
            self.model.clone(),
            message,
            finish.clone(),
            usage.clone(),
        ));
        if self.stream {
            out.extend(
                self.chunk()
                    .with_choice(ChunkChoice::new(0, ChunkDelta::default()).with_finish_reason(finish))
                    .to_sse_event(),
            );
            if self.include_usage {
                let mut last = self.chunk();
                last.usage = Nullable::Value(usage);
                out.extend(last.to_sse_event());
            }
            out.extend_from_slice(sse::DONE);
            return Step::Done(Bytes::from(out));
        }
        let body = self
            .completed
            .as_ref()
            .map(serde_json::to_vec)
            .and_then(Result::ok)
            .unwrap_or_default();
        Step::Done(Bytes::from(body))
    }

    /// While replaying after a restart: `Ok(None)` while the new run is still inside what the
    /// client has, `Err` if it differs, `Ok(Some(new text))` once past it. Without a replay, the
    /// newest delta.
    pub(super) fn unreplayed(&mut self) -> Result<Option<(String, String)>, ()> {
        let Some((sent_r, sent_c)) = &self.replay else {
            return Ok(Some(self.newest()));
        };
        let (now_r, now_c) = (self.reasoning.as_str(), self.content.as_str());
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
        let fresh = (self.reasoning[r..].to_owned(), self.content[c..].to_owned());
        self.last_len = (self.reasoning.len(), self.content.len());
        fresh
    }
}
