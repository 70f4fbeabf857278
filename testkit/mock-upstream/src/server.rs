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
use crate::structured;

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
        .route("/v1/embeddings", post(embeddings))
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

/// Dimensions of the mock's embeddings.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// The mock's embedding of `text`: unit-length, the same for the same text (FNV-1a of the bytes spread
/// over the dimensions), different for different texts.
pub fn embedding(text: &str) -> Vec<f32> {
    let mut vector = [0f32; EMBEDDING_DIMENSIONS];
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, byte) in text.bytes().enumerate() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        vector[i % EMBEDDING_DIMENSIONS] += f32::from(u8::try_from(hash >> 56).unwrap_or(0)) / 255.0 - 0.5;
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::EPSILON);
    vector.iter().map(|v| v / norm).collect()
}

/// `POST /v1/embeddings` as OpenAI answers it: one embedding per input (float, or base64 of
/// little-endian f32s with `encoding_format: "base64"`, the openai SDK's default).
async fn embeddings(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    use base64::Engine as _;
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error_response(400, "not JSON");
    };
    let inputs: Vec<String> = match &request["input"] {
        serde_json::Value::String(text) => vec![text.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        _ => return error_response(400, "`input` is required"),
    };
    let base64 = request["encoding_format"] == "base64";
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding(text);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(vector)
            };
            serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count().max(1)).sum();
    let answer = serde_json::json!({
        "object": "list",
        "data": data,
        "model": request["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    if let Ok(mut recorded) = shared.recorded.lock()
        && recorded.len() < shared.script.record
    {
        recorded.push(Recorded { body: request, headers });
    }
    json_response(StatusCode::OK, serde_json::to_vec(&answer).unwrap_or_default())
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

/// The tokens of one answer, in order, the same for each of its `n` choices.
struct Plan {
    reasoning: u32,
    /// The content tokens' texts: the script's, or a JSON document in pieces for `response_format`.
    content: Vec<String>,
    /// The function to call instead of answering in text, when the request offers tools (as vLLM's
    /// tool parsers and DeepSeek's API do).
    tool: Option<ToolCall>,
    /// Choices per answer (`n`).
    choices: u32,
    /// With `logprobs: true`, the alternatives each content token lists (`top_logprobs`).
    logprobs: Option<usize>,
    finish: FinishReason,
    usage: Usage,
}

/// A scripted tool call: `tool_choice`'s function, else the first tool, with arguments that fit its
/// parameters ([`structured::tool_arguments`]).
struct ToolCall {
    name: String,
    /// The arguments in the pieces they stream in.
    arguments: Vec<String>,
}

fn tool_to_call(request: &ChatCompletionRequest) -> Option<ToolCall> {
    let tools = request.extra.get("tools")?.as_array()?;
    let name_of = |value: &serde_json::Value| {
        value
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_owned)
    };
    let name = match request.extra.get("tool_choice") {
        Some(serde_json::Value::String(choice)) if choice == "none" => None,
        Some(choice @ serde_json::Value::Object(_)) => name_of(choice),
        _ => tools.first().and_then(name_of),
    }?;
    let parameters = tools
        .iter()
        .find(|tool| name_of(tool).as_deref() == Some(name.as_str()))
        .and_then(|tool| tool.get("function"))
        .and_then(|f| f.get("parameters"));
    Some(ToolCall {
        arguments: structured::tool_arguments(parameters),
        name,
    })
}

impl Plan {
    fn new(script: &Script, request: &ChatCompletionRequest) -> Self {
        let cap = request.effective_max_tokens().unwrap_or(u32::MAX);
        let tool = tool_to_call(request);
        let reasoning = script.reasoning.min(cap);
        let scripted: Vec<String> = match structured::response_document(&request.extra) {
            Some(document) => structured::split(&document, structured::JSON_PIECES),
            None => vec![script.text.clone(); script.chunks as usize],
        };
        let content: Vec<String> = if tool.is_some() {
            Vec::new()
        } else {
            scripted.iter().take((cap - reasoning) as usize).cloned().collect()
        };
        let finish = if tool.is_some() {
            FinishReason::ToolCalls
        } else if content.len() < scripted.len() || reasoning < script.reasoning {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        let choices = request.n.unwrap_or(1).max(1);
        let logprobs = (request.extra.get("logprobs") == Some(&serde_json::Value::Bool(true))).then(|| {
            let top = request.extra.get("top_logprobs").and_then(serde_json::Value::as_u64);
            top.unwrap_or(0) as usize
        });
        let tokens = reasoning + content.len() as u32;
        // A rough stand-in for a tokenizer: four characters a token.
        let chars: usize = request.messages.iter().map(|m| m.text().chars().count()).sum();
        let mut usage = Usage::new(chars.div_ceil(4).max(1) as u64, u64::from(tokens * choices));
        if reasoning > 0 {
            usage = usage.with_reasoning_tokens(u64::from(reasoning * choices));
        }
        Self {
            reasoning,
            content,
            tool,
            choices,
            logprobs,
            finish,
            usage,
        }
    }

    fn tokens(&self) -> u32 {
        self.reasoning + self.content.len() as u32
    }

    /// When token `i` (from 0) is ready, counted from the end of the reply's own delay.
    fn ready_at(script: &Script, i: u32) -> Duration {
        script.first_delay + script.chunk_delay * i
    }

    /// The `logprobs` of a choice that said `tokens`: `{"content": [entry per token]}`.
    fn logprobs_of<'a>(&self, tokens: impl IntoIterator<Item = &'a String>) -> Nullable<serde_json::Value> {
        match self.logprobs {
            Some(top) => {
                let entries: Vec<_> = tokens
                    .into_iter()
                    .map(|token| structured::logprob_entry(token, top))
                    .collect();
                Nullable::Value(serde_json::json!({ "content": entries }))
            }
            None => Nullable::Null,
        }
    }

    /// A tool call's id: the answer's for choice 0, with the choice's index after it for the others.
    fn call_id(base: String, index: u32) -> String {
        if index == 0 { base } else { format!("{base}_{index}") }
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
    let mut message = ChatMessage::assistant(plan.content.concat());
    if plan.reasoning > 0 {
        message.reasoning_content = Nullable::Value(script.reasoning_text.repeat(plan.reasoning as usize));
    }
    if plan.tool.is_some() {
        message.content = Nullable::Null;
    }
    let mut response = ChatCompletionResponse::new(
        id,
        shared.created,
        &request.model,
        message,
        plan.finish.clone(),
        plan.usage.clone(),
    );
    let first = response.choices.remove(0);
    response.choices = (0..plan.choices)
        .map(|index| {
            let mut choice = first.clone();
            choice.index = index;
            choice.logprobs = plan.logprobs_of(&plan.content);
            if let Some(tool) = &plan.tool {
                choice.message.extra.insert(
                    "tool_calls".to_owned(),
                    serde_json::json!([{
                        "id": Plan::call_id(format!("call_mock_{n}"), index),
                        "type": "function",
                        "function": {"name": tool.name, "arguments": tool.arguments.concat()},
                    }]),
                );
            }
            choice
        })
        .collect();
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

/// The whole stream, precomputed: `(delay before, step)`. With `n` choices each step of generation
/// sends one chunk per choice (its `index` in it), as vLLM does.
fn stream_events(
    script: &Script,
    request: &ChatCompletionRequest,
    plan: &Plan,
    id: &str,
    created: u64,
    drop_after: Option<u32>,
) -> Vec<(Duration, Step)> {
    let event = |choice: ChunkChoice| {
        let chunk = ChatCompletionChunk::new(id, created, &request.model).with_choice(choice);
        Step::Event(Bytes::from(chunk.to_sse_event()))
    };
    // One chunk per choice; the first waits `wait`, the others follow at once.
    let each_choice = |steps: &mut Vec<(Duration, Step)>, wait: Duration, choice: &dyn Fn(u32) -> ChunkChoice| {
        for index in 0..plan.choices {
            let wait = if index == 0 { wait } else { Duration::ZERO };
            steps.push((wait, event(choice(index))));
        }
    };
    let mut steps = Vec::new();
    each_choice(&mut steps, Duration::ZERO, &|index| {
        ChunkChoice::new(index, ChunkDelta::role(Role::Assistant))
    });
    for i in 0..plan.tokens() {
        let wait = if i == 0 { script.first_delay } else { script.chunk_delay };
        if drop_after == Some(i) {
            steps.push((wait, Step::Abort));
            return steps;
        }
        let content = i.checked_sub(plan.reasoning).map(|c| &plan.content[c as usize]);
        // A long silence carries keep-alive comments, as a real server's would.
        let mut wait = wait;
        if let Some(every) = script.keepalive.filter(|e| !e.is_zero()) {
            while wait > every {
                steps.push((every, Step::Event(Bytes::from_static(b": keep-alive\n\n"))));
                wait -= every;
            }
        }
        each_choice(&mut steps, wait, &|index| match content {
            Some(text) => {
                let mut choice = ChunkChoice::new(index, ChunkDelta::content(text.as_str()));
                if plan.logprobs.is_some() {
                    choice.logprobs = plan.logprobs_of([text]);
                }
                choice
            }
            None => ChunkChoice::new(index, ChunkDelta::reasoning(script.reasoning_text.as_str())),
        });
    }
    if drop_after.is_some() {
        steps.push((Duration::ZERO, Step::Abort));
        return steps;
    }
    if let Some(tool) = &plan.tool {
        // The call's id, type and name first, then its arguments in pieces, as vLLM streams them.
        let head = |index: u32| {
            serde_json::json!([{
                "index": 0,
                "id": Plan::call_id(format!("call_{id}"), index),
                "type": "function",
                "function": {"name": tool.name, "arguments": ""},
            }])
        };
        let fragments = std::iter::once(None).chain(tool.arguments.iter().map(Some));
        for piece in fragments {
            each_choice(&mut steps, script.chunk_delay, &|index| {
                let calls = match piece {
                    None => head(index),
                    Some(piece) => serde_json::json!([{"index": 0, "function": {"arguments": piece}}]),
                };
                let mut delta = ChunkDelta::default();
                delta.extra.insert("tool_calls".to_owned(), calls);
                ChunkChoice::new(index, delta)
            });
        }
    }
    each_choice(&mut steps, Duration::ZERO, &|index| {
        ChunkChoice::new(index, ChunkDelta::default()).with_finish_reason(plan.finish.clone())
    });
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
