//! The `openai` backend: a streaming client for any OpenAI-compatible chat completions server.
//!
//! - always streams, with `stream_options.include_usage`, so usage (reasoning tokens included) is
//!   the server's exact count even when the client asked for one JSON answer;
//! - `reasoning_content` deltas (DeepSeek API, vLLM/SGLang reasoning parsers) and inline
//!   `<think>` blocks (servers without one) both come out as reasoning text;
//! - retries with exponential backoff on connect errors, 429 and 5xx — only before the first token;
//! - one pooled HTTP client; separate connect, first-token and inter-token limits.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use r1_proto::sse::{Decoder, Frame};
use r1_proto::{ChatCompletionChunk, ChatCompletionRequest, ResultDelta, TaskErrorCode, UpstreamError, Usage};
use tokio::sync::mpsc;

use super::think::ThinkSplitter;
use super::{Backend, BackendError};

/// Settings of the `openai` backend.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// Base URL up to and including `/v1` (e.g. `http://vllm:8000/v1`, `https://api.deepseek.com/v1`).
    pub base_url: String,
    /// Model name the server knows; the task's `model` is replaced by it.
    pub model: String,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// TCP/TLS connect limit.
    pub connect_timeout: Duration,
    /// Limit from sending the request to the first token.
    pub first_token_timeout: Duration,
    /// Longest silence between chunks once tokens flow.
    pub idle_timeout: Duration,
    /// Attempts before the first token (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled each retry.
    pub backoff: Duration,
    /// Whether earlier turns' `reasoning_content` is removed before sending.
    pub strip_reasoning_history: bool,
}

/// The backend.
#[derive(Debug, Clone)]
pub struct OpenAiBackend {
    settings: OpenAiSettings,
    client: reqwest::Client,
    url: String,
}

impl OpenAiSettings {
    /// The settings of an `openai` `[backend]`, with the API key read by the caller (from the
    /// environment variable the section names).
    pub fn from_section(section: &crate::config::BackendSection, api_key: Option<String>) -> Self {
        Self {
            base_url: section.base_url.clone().unwrap_or_default(),
            model: section.model.clone().unwrap_or_default(),
            api_key,
            connect_timeout: section.connect_timeout,
            first_token_timeout: section.first_token_timeout,
            idle_timeout: section.idle_timeout,
            attempts: section.attempts,
            backoff: section.backoff,
            strip_reasoning_history: section.reasoning_history() == crate::config::ReasoningHistory::Strip,
        }
    }
}

impl OpenAiBackend {
    /// A backend with its own connection pool.
    pub fn new(settings: OpenAiSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        let url = format!("{}/chat/completions", settings.base_url.trim_end_matches('/'));
        Ok(Self { settings, client, url })
    }

    /// Sends the request once; `Ok` once the server answered 200 with a stream.
    async fn open(
        &self,
        body: &ChatCompletionRequest,
        traceparent: Option<&str>,
    ) -> Result<reqwest::Response, BackendError> {
        let mut request = self.client.post(&self.url).json(body);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let response = tokio::time::timeout(self.settings.first_token_timeout, request.send())
            .await
            .map_err(|_| BackendError::new(TaskErrorCode::Timeout, "the backend did not answer in time", true))?
            .map_err(|e| BackendError::new(TaskErrorCode::Backend, format!("backend unreachable: {e}"), true))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<serde_json::Value>(&text).ok();
        let error = body.as_ref().map(|v| &v["error"]);
        let field = |name: &str| error.and_then(|e| e[name].as_str()).map(str::to_owned);
        let upstream = UpstreamError {
            status: status.as_u16(),
            error_type: field("type"),
            param: field("param"),
            code: error.map(|e| e["code"].clone()).filter(|c| !c.is_null()),
        };
        // The server's own sentence: a client reads it as if it had asked the server itself.
        let message = field("message").unwrap_or_else(|| format!("backend answered {status}: {text}"));
        let error = match status.as_u16() {
            429 => BackendError::new(TaskErrorCode::Overloaded, message, true),
            s if s >= 500 => BackendError::new(TaskErrorCode::Backend, message, true),
            _ => BackendError::new(TaskErrorCode::InvalidRequest, message, false),
        };
        Err(error.with_upstream(upstream))
    }
}

#[async_trait]
impl Backend for OpenAiBackend {
    async fn generate(
        &self,
        mut request: ChatCompletionRequest,
        out: &mpsc::UnboundedSender<ResultDelta>,
        traceparent: Option<&str>,
    ) -> Result<Option<Usage>, BackendError> {
        request.model = self.settings.model.clone();
        if self.settings.strip_reasoning_history {
            for message in &mut request.messages {
                message.reasoning_content = r1_proto::Nullable::Absent;
            }
        }
        request.stream = Some(true);
        let mut options = request.stream_options.take().unwrap_or_default();
        options.include_usage = Some(true);
        request.stream_options = Some(options);
        let mut backoff = self.settings.backoff;
        let mut attempt = 1;
        let response = loop {
            match self.open(&request, traceparent).await {
                Ok(response) => break response,
                Err(e) if e.retryable && attempt < self.settings.attempts => {
                    tracing::warn!(error = %e, attempt, "backend failed before the first token; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        read_stream(
            response,
            out,
            self.settings.first_token_timeout,
            self.settings.idle_timeout,
        )
        .await
    }
}

/// The largest SSE event read from a backend: far above any chunk a model server sends.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// Reads an SSE chat completion stream into deltas.
async fn read_stream(
    response: reqwest::Response,
    out: &mpsc::UnboundedSender<ResultDelta>,
    first_token: Duration,
    idle: Duration,
) -> Result<Option<Usage>, BackendError> {
    let mut body = response.bytes_stream();
    let mut decoder = Decoder::new(MAX_EVENT_BYTES);
    // One per choice (`n > 1`): each choice has its own `<think>` block.
    let mut splitters: Vec<ThinkSplitter> = vec![ThinkSplitter::default()];
    let mut usage = None;
    let mut started = false;
    loop {
        let limit = if started { idle } else { first_token };
        let piece = match tokio::time::timeout(limit, body.next()).await {
            Err(_) => {
                return Err(BackendError::new(
                    TaskErrorCode::Timeout,
                    format!("the backend was silent for {limit:?}"),
                    !started,
                ));
            }
            Ok(None) => {
                return Err(BackendError::new(
                    TaskErrorCode::Backend,
                    "the backend closed the stream before [DONE]",
                    !started,
                ));
            }
            Ok(Some(Err(e))) => {
                return Err(BackendError::new(
                    TaskErrorCode::Backend,
                    format!("the backend stream broke: {e}"),
                    !started,
                ));
            }
            Ok(Some(Ok(piece))) => piece,
        };
        let mut frames = Vec::new();
        decoder
            .feed(&piece, &mut |f| frames.push(f))
            .map_err(|e| BackendError::new(TaskErrorCode::Backend, format!("the backend sent {e}"), !started))?;
        for frame in frames {
            let Frame::Event { data, .. } = frame else {
                continue; // a comment (keep-alive)
            };
            let data = data.as_slice();
            if data == b"[DONE]" {
                for (index, splitter) in (0u32..).zip(splitters.iter_mut()) {
                    let tail = splitter.finish();
                    send(
                        out,
                        ResultDelta {
                            index,
                            content: (!tail.content.is_empty()).then_some(tail.content),
                            reasoning_content: (!tail.reasoning.is_empty()).then_some(tail.reasoning),
                            ..ResultDelta::default()
                        },
                    );
                }
                return Ok(usage);
            }
            let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| {
                BackendError::new(
                    TaskErrorCode::Backend,
                    format!("unreadable stream event: {e}"),
                    !started,
                )
            })?;
            if let Some(message) = value
                .get("error")
                .map(|e| e["message"].as_str().unwrap_or("backend error"))
            {
                return Err(BackendError::new(
                    TaskErrorCode::Backend,
                    format!("the backend failed mid-stream: {message}"),
                    !started,
                ));
            }
            let chunk: ChatCompletionChunk = serde_json::from_value(value).map_err(|e| {
                BackendError::new(TaskErrorCode::Backend, format!("unexpected chunk shape: {e}"), !started)
            })?;
            if let Some(u) = chunk.usage.into_option() {
                usage = Some(u);
            }
            for choice in chunk.choices {
                let index = choice.index;
                let at = index as usize;
                if splitters.len() <= at {
                    splitters.resize_with(at + 1, ThinkSplitter::default);
                }
                let splitter = &mut splitters[at];
                let mut reasoning = choice.delta.reasoning_content.into_option().unwrap_or_default();
                let split = splitter.push(&choice.delta.content.into_option().unwrap_or_default());
                reasoning.push_str(&split.reasoning);
                let mut content = split.content;
                let finish = choice.finish_reason.into_option();
                let mut extra = choice.delta.extra;
                let tool_calls = extra.remove("tool_calls").filter(|v| !v.is_null());
                let logprobs = choice.logprobs.into_option().filter(|v| !v.is_null());
                if !reasoning.is_empty() || !content.is_empty() || tool_calls.is_some() {
                    started = true;
                }
                if finish.is_some() {
                    let tail = splitter.finish();
                    reasoning.push_str(&tail.reasoning);
                    content.push_str(&tail.content);
                }
                send(
                    out,
                    ResultDelta {
                        index,
                        content: (!content.is_empty()).then_some(content),
                        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                        tool_calls,
                        logprobs,
                        finish_reason: finish,
                    },
                );
            }
        }
    }
}

/// Sends a delta that adds something.
fn send(out: &mpsc::UnboundedSender<ResultDelta>, delta: ResultDelta) {
    let empty = ResultDelta {
        index: delta.index,
        ..ResultDelta::default()
    };
    if delta != empty {
        let _ = out.send(delta);
    }
}
