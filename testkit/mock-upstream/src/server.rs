//! The HTTP side: routes, the scripted chat answer (JSON or SSE), error bodies, counters.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use r1_proto::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkChoice, ChunkDelta,
    ErrorBody, ErrorKind, FinishReason, ModelCard, ModelList, Nullable, Role, Usage, sse,
};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::script::{Reply, Script};

/// Counters of chat requests (`POST /v1/chat/completions` only), shared with the caller.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received.
    pub received: AtomicU64,
    /// Answers sent to the end (JSON written, or `[DONE]` sent).
    pub completed: AtomicU64,
    /// Answered with an error status (scripted, or a body that is not a chat request).
    pub failed: AtomicU64,
    /// Connections aborted by the script.
    pub dropped: AtomicU64,
    /// Received and not yet finished (waiting for a slot, delayed, or streaming).
    pub in_flight: AtomicU64,
    /// The most ever in flight at once.
    pub max_in_flight: AtomicU64,
}

/// The counters at one moment, as `GET /stats` writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs)] // the fields are `Stats`'s
pub struct StatsSnapshot {
    pub received: u64,
    pub completed: u64,
    pub failed: u64,
    pub dropped: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
}

impl Stats {
    /// The current counts.
    pub fn snapshot(&self) -> StatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        StatsSnapshot {
            received: read(&self.received),
            completed: read(&self.completed),
            failed: read(&self.failed),
            dropped: read(&self.dropped),
            in_flight: read(&self.in_flight),
            max_in_flight: read(&self.max_in_flight),
        }
    }
}

/// A chat request as it arrived (kept when [`Script::record`] asks).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The body as JSON (`null` if it was not JSON).
    pub body: serde_json::Value,
    /// The request headers.
    pub headers: HeaderMap,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) script: Script,
    pub(crate) stats: Arc<Stats>,
    pub(crate) recorded: Mutex<Vec<Recorded>>,
    slots: Option<Arc<Semaphore>>,
    created: u64,
}

impl Shared {
    pub(crate) fn new(script: Script) -> Self {
        Self {
            slots: script.concurrency.map(|limit| Arc::new(Semaphore::new(limit.max(1)))),
            script,
            stats: Arc::default(),
            recorded: Mutex::default(),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        // r1-edge's probe, the gateway's default, and vLLM's: any health check passes.
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/health", get(|| async { "ok" }))
        .route("/stats", get(stats))
        .with_state(shared)
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let mut card = ModelCard::new(shared.script.model.clone(), shared.created, "mock");
    card.extra
        .insert("max_model_len".to_owned(), shared.script.max_model_len.into());
    let list = ModelList::new(vec![card]);
    json_response(StatusCode::OK, serde_json::to_vec(&list).unwrap_or_default())
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&shared.stats.snapshot()).unwrap_or_default(),
    )
}

/// Holds a request's place in `in_flight` (and its concurrency slot) until the answer is done or
/// the client went away.
struct InFlight {
    stats: Arc<Stats>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    fn enter(stats: &Arc<Stats>) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self {
            stats: stats.clone(),
            _slot: None,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = shared.stats.received.fetch_add(1, Ordering::SeqCst);
    let mut in_flight = InFlight::enter(&shared.stats);
    if n < shared.script.record as u64
        && let Ok(mut recorded) = shared.recorded.lock()
    {
        recorded.push(Recorded {
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            headers: headers.clone(),
        });
    }
    let reply = shared.script.reply_to(n, &body);
    if let Some(slots) = &shared.slots {
        // The semaphore is never closed, so acquiring only fails if it were; then run unbounded.
        in_flight._slot = slots.clone().acquire_owned().await.ok();
    }
    sleep(reply.delay).await;

    let mut response = if reply.status == 200 {
        match serde_json::from_slice::<ChatCompletionRequest>(&body) {
            Ok(request) => answer(&shared, &request, n, &reply, in_flight).await,
            Err(e) => {
                shared.stats.failed.fetch_add(1, Ordering::SeqCst);
                error_response(400, &format!("not a chat completion request: {e}"))
            }
        }
    } else {
        shared.stats.failed.fetch_add(1, Ordering::SeqCst);
        error_response(reply.status, "scripted failure")
    };
    for (name, value) in &reply.headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().insert(name, value);
            }
            _ => tracing::warn!(name, value, "scripted header is not a valid header; left out"),
        }
    }
    response
}

/// The tokens of one answer, in order.
struct Plan {
    reasoning: u32,
    content: u32,
    /// The function to call instead of answering in text, when the request offers tools (as vLLM's
    /// tool parsers and DeepSeek's API do): `tool_choice`'s function, else the first tool.
    tool: Option<String>,
    finish: FinishReason,
    usage: Usage,
}

/// The arguments of a scripted tool call, streamed in these pieces.
const TOOL_ARGUMENTS: [&str; 3] = ["{\"query\": ", "\"mock", "\"}"];

fn tool_to_call(request: &ChatCompletionRequest) -> Option<String> {
    let tools = request.extra.get("tools")?.as_array()?;
    match request.extra.get("tool_choice") {
        Some(serde_json::Value::String(choice)) if choice == "none" => None,
        Some(serde_json::Value::Object(choice)) => choice
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_owned),
        _ => tools
            .first()
            .and_then(|t| t.get("function"))
            .and_then(|f| f.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_owned),
    }
}

impl Plan {
    fn new(script: &Script, request: &ChatCompletionRequest) -> Self {
        let cap = request.effective_max_tokens().unwrap_or(u32::MAX);
        let tool = tool_to_call(request);
        let reasoning = script.reasoning.min(cap);
        let content = if tool.is_some() {
            0
        } else {
            script.chunks.min(cap - reasoning)
        };
        let finish = if tool.is_some() {
            FinishReason::ToolCalls
        } else if reasoning + content < script.reasoning.saturating_add(script.chunks) {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        // A rough stand-in for a tokenizer: four characters a token.
        let chars: usize = request.messages.iter().map(|m| m.text().chars().count()).sum();
        let mut usage = Usage::new(chars.div_ceil(4).max(1) as u64, u64::from(reasoning + content));
        if reasoning > 0 {
            usage = usage.with_reasoning_tokens(u64::from(reasoning));
        }
        Self {
            reasoning,
            content,
            tool,
            finish,
            usage,
        }
    }

    fn tokens(&self) -> u32 {
        self.reasoning + self.content
    }

    /// When token `i` (from 0) is ready, counted from the end of the reply's own delay.
    fn ready_at(script: &Script, i: u32) -> Duration {
        script.first_delay + script.chunk_delay * i
    }
}

async fn answer(
    shared: &Shared,
    request: &ChatCompletionRequest,
    n: u64,
    reply: &Reply,
    in_flight: InFlight,
) -> Response {
    let script = &shared.script;
    let plan = Plan::new(script, request);
    let id = format!("chatcmpl-mock-{n}");
    if request.is_stream() {
        let events = stream_events(script, request, &plan, &id, shared.created, reply.drop_after);
        return sse_response(events, shared.stats.clone(), in_flight);
    }

    let sent = reply.drop_after.map_or(plan.tokens(), |k| k.min(plan.tokens()));
    if sent > 0 {
        sleep(Plan::ready_at(script, sent - 1)).await;
    }
    let mut message = ChatMessage::assistant(script.text.repeat(plan.content as usize));
    if plan.reasoning > 0 {
        message.reasoning_content = Nullable::Value(script.reasoning_text.repeat(plan.reasoning as usize));
    }
    if let Some(name) = &plan.tool {
        message.content = Nullable::Null;
        message.extra.insert(
            "tool_calls".to_owned(),
            serde_json::json!([{
                "id": format!("call_mock_{n}"),
                "type": "function",
                "function": {"name": name, "arguments": TOOL_ARGUMENTS.concat()},
            }]),
        );
    }
    let response = ChatCompletionResponse::new(id, shared.created, &request.model, message, plan.finish, plan.usage);
    let body = serde_json::to_vec(&response).unwrap_or_default();
    if reply.drop_after.is_some() {
        // The headers promise the whole body; the connection ends before it does.
        shared.stats.dropped.fetch_add(1, Ordering::SeqCst);
        let length = body.len();
        let half = Bytes::from(body).slice(..length / 2);
        let truncated = futures::stream::iter([Some(half), None]).then(|part| async move {
            match part {
                Some(bytes) => Ok(bytes),
                None => {
                    tokio::task::yield_now().await; // flush the half first, as for a stream
                    Err(io::Error::other("scripted connection drop"))
                }
            }
        });
        let mut response = Response::new(Body::from_stream(truncated));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        drop(in_flight);
        return response;
    }
    shared.stats.completed.fetch_add(1, Ordering::SeqCst);
    drop(in_flight);
    json_response(StatusCode::OK, body)
}

/// One step of a streamed answer: wait, then send an event or abort the connection.
enum Step {
    Event(Bytes),
    Abort,
}

/// The whole stream, precomputed: `(delay before, step)`.
fn stream_events(
    script: &Script,
    request: &ChatCompletionRequest,
    plan: &Plan,
    id: &str,
    created: u64,
    drop_after: Option<u32>,
) -> Vec<(Duration, Step)> {
    let chunk = |delta: ChunkDelta| {
        let chunk = ChatCompletionChunk::new(id, created, &request.model).with_choice(ChunkChoice::new(0, delta));
        Step::Event(Bytes::from(chunk.to_sse_event()))
    };
    let mut steps = vec![(Duration::ZERO, chunk(ChunkDelta::role(Role::Assistant)))];
    for i in 0..plan.tokens() {
        let wait = if i == 0 { script.first_delay } else { script.chunk_delay };
        if drop_after == Some(i) {
            steps.push((wait, Step::Abort));
            return steps;
        }
        let delta = if i < plan.reasoning {
            ChunkDelta::reasoning(script.reasoning_text.as_str())
        } else {
            ChunkDelta::content(script.text.as_str())
        };
        // A long silence carries keep-alive comments, as a real server's would.
        let mut wait = wait;
        if let Some(every) = script.keepalive.filter(|e| !e.is_zero()) {
            while wait > every {
                steps.push((every, Step::Event(Bytes::from_static(b": keep-alive\n\n"))));
                wait -= every;
            }
        }
        steps.push((wait, chunk(delta)));
    }
    if drop_after.is_some() {
        steps.push((Duration::ZERO, Step::Abort));
        return steps;
    }
    if let Some(name) = &plan.tool {
        // The call's id, type and name first, then its arguments in pieces, as vLLM streams them.
        let mut fragments = vec![serde_json::json!([{
            "index": 0,
            "id": format!("call_{id}"),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }])];
        fragments.extend(
            TOOL_ARGUMENTS
                .iter()
                .map(|piece| serde_json::json!([{"index": 0, "function": {"arguments": piece}}])),
        );
        for calls in fragments {
            let mut delta = ChunkDelta::default();
            delta.extra.insert("tool_calls".to_owned(), calls);
            steps.push((script.chunk_delay, chunk(delta)));
        }
    }
    let finish = ChatCompletionChunk::new(id, created, &request.model)
        .with_choice(ChunkChoice::new(0, ChunkDelta::default()).with_finish_reason(plan.finish.clone()));
    steps.push((Duration::ZERO, Step::Event(Bytes::from(finish.to_sse_event()))));
    if request.include_usage() {
        let usage = ChatCompletionChunk::usage_only(id, created, &request.model, plan.usage.clone());
        steps.push((Duration::ZERO, Step::Event(Bytes::from(usage.to_sse_event()))));
    }
    steps.push((Duration::ZERO, Step::Event(Bytes::from_static(sse::DONE))));
    steps
}

fn sse_response(steps: Vec<(Duration, Step)>, stats: Arc<Stats>, in_flight: InFlight) -> Response {
    // `in_flight` lives in the stream's state, so it ends when the body is done or dropped.
    let stream = futures::stream::unfold((steps.into_iter(), in_flight), move |(mut steps, in_flight)| {
        let stats = stats.clone();
        async move {
            let (wait, step) = steps.next()?;
            sleep(wait).await;
            let item = match step {
                Step::Event(bytes) => {
                    if steps.len() == 0 {
                        stats.completed.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(bytes)
                }
                Step::Abort => {
                    // One `Pending` first, so hyper flushes what was sent before the connection is cut
                    // (as a crashed server's last writes reach the client).
                    tokio::task::yield_now().await;
                    stats.dropped.fetch_add(1, Ordering::SeqCst);
                    Err(io::Error::other("scripted connection drop"))
                }
            };
            Some((item, (steps, in_flight)))
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An OpenAI error body with `status`; 429 and 503 say `retry-after: 1`.
fn error_response(status: u16, message: &str) -> Response {
    let kind = match status {
        400 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimit,
        502 => ErrorKind::Upstream,
        503 => ErrorKind::Overloaded,
        504 => ErrorKind::Timeout,
        _ => ErrorKind::Internal,
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, ErrorBody::new(kind, message).to_json());
    if matches!(status.as_u16(), 429 | 503) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Sleeps, without touching the timer for a zero wait (the zero-delay script is the fast path).
async fn sleep(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}
