//! The OpenAI-compatible HTTP server: `POST /v1/chat/completions` (streamed and not), `GET /v1/models`,
//! `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! A request's path, top-down in `chat_completions`: read the body (bounded) → parse → validate →
//! template + tokenize → queue (bounded; full = 429) → answer as SSE or one JSON body. Every refusal
//! is an [`ApiError`], turned into an OpenAI error body in one place ([`ApiError::into_response`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use r1_proto::{
    Capabilities, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkChoice,
    ChunkDelta, ErrorBody, ErrorKind, ModelCard, ModelList, Needs, Nullable, Role, Usage, sse,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::batcher::{self, BatchSettings, Event, FinishReason, GenerationRequest, SubmitError, Submitter};
use crate::config::EdgeConfig;
use crate::metrics::EdgeMetrics;
use crate::model::LoadedModel;
use crate::sampling::SamplingParams;
use crate::text::TextCodec;

/// Most stop sequences per request (OpenAI's limit).
const MAX_STOP_SEQUENCES: usize = 4;
/// Seconds a client is told to wait when the queue is full.
const RETRY_AFTER_SECS: u64 = 1;

/// Shared by every handler.
#[derive(Debug)]
struct AppState {
    model_name: String,
    created: u64,
    submitter: Submitter,
    text: Arc<TextCodec>,
    metrics: EdgeMetrics,
    ready: AtomicBool,
    limits: Limits,
    defaults: SamplingParams,
    keepalive: std::time::Duration,
    /// Prompt bytes per token of this tokenizer, measured at start (advertised for routers).
    bytes_per_token: f32,
}

/// What a request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `max_tokens`.
    pub max_tokens_cap: u32,
    /// `max_tokens` when the request gives none.
    pub default_max_tokens: u32,
    /// Largest body (HTTP only).
    pub max_body_bytes: usize,
    /// The model's context: prompt + `max_tokens` must fit.
    pub context_length: usize,
}

/// A refusal, with everything needed to answer it.
#[derive(Debug)]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
    code: Option<&'static str>,
    param: Option<std::borrow::Cow<'static, str>>,
    retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ApiError {
    /// The kind of refusal (its status and OpenAI `type`).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl ApiError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
        }
    }

    fn invalid(param: impl Into<std::borrow::Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(ErrorKind::InvalidRequest, message)
        }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn body(&self) -> ErrorBody {
        ErrorBody::detailed(self.kind, self.message.clone(), self.code, self.param.as_deref())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_json(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Builds the router over a loaded model and starts its batcher; see [`run`].
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves `model` on `listener` until `shutdown` resolves, then drains: readiness goes false, new
/// connections are refused, running generations get `shutdown_grace` to finish and are failed after
/// it (streams end with an error event), and the batcher thread is joined.
pub async fn run(
    listener: tokio::net::TcpListener,
    mut model: LoadedModel,
    served_name: String,
    config: &EdgeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = EdgeMetrics::new()?;
    warm_up(&mut model)?;
    let text = model.text.clone();
    let bytes_per_token = text.bytes_per_token();
    let context_length = model.engine.spec().context_length;
    let defaults = default_sampling(&model);
    let settings = BatchSettings {
        dynamic: config.batching.dynamic,
        max_batch_size: config.batching.max_batch_size,
        max_queue: config.server.max_queue,
        max_queue_wait: Some(config.server.max_queue_wait).filter(|wait| !wait.is_zero()),
    };
    let (submitter, batcher) = batcher::spawn(model, settings, metrics.clone())?;
    let state = Arc::new(AppState {
        model_name: served_name,
        created: unix_now(),
        submitter,
        text,
        metrics,
        ready: AtomicBool::new(true),
        limits: Limits {
            max_tokens_cap: config.server.max_tokens_cap,
            default_max_tokens: config.server.default_max_tokens,
            max_body_bytes: config.server.max_body_bytes,
            context_length,
        },
        defaults,
        keepalive: config.server.sse_keepalive,
        bytes_per_token,
    });
    tracing::info!(addr = %listener.local_addr()?, model = %state.model_name, "r1-edge ready");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let draining = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: readiness false, draining running generations");
            let _ = stop_tx.send(true);
        }
    };
    let grace = config.server.shutdown_grace;
    let batcher = Arc::new(batcher);
    let cutoff = {
        let batcher = batcher.clone();
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
            tracing::warn!(?grace, "shutdown grace period over: failing what still runs");
            batcher.abort();
        }
    };
    let cutoff = tokio::spawn(cutoff);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(draining)
        .await?;
    cutoff.abort();
    let _ = cutoff.await; // the aborted task drops its handle to the batcher
    // The router (and with it every Submitter) is gone: the batcher ends once its batch is empty.
    if let Ok(batcher) = Arc::try_unwrap(batcher) {
        tokio::task::spawn_blocking(move || batcher.join()).await?;
    }
    Ok(())
}

/// One tiny generation before readiness, so the first client does not pay for lazy initialisation.
fn warm_up(model: &mut LoadedModel) -> anyhow::Result<()> {
    let started = Instant::now();
    let prompt = model
        .text
        .encode(&model.text.render_chat(&[ChatMessage::user("Hello")])?)?;
    let (mut batch, logits) = model.engine.prefill(&[&prompt])?;
    let first = crate::sampling::Sampler::new(SamplingParams::GREEDY)
        .sample(logits.row(0))
        .token;
    model.engine.decode(&mut batch, &[first], &[prompt.len() as i64])?;
    tracing::info!(elapsed = ?started.elapsed(), "warm-up generation done");
    Ok(())
}

/// The model's own sampling defaults (`generation_config.json`), used where a request gives none.
/// The sampling a request gets when it sets nothing: the model's `generation_config.json`.
pub fn default_sampling(model: &LoadedModel) -> SamplingParams {
    let g = &model.files.generation;
    if g.do_sample == Some(false) {
        return SamplingParams::GREEDY;
    }
    SamplingParams {
        temperature: g.temperature.unwrap_or(1.0),
        top_p: g.top_p.unwrap_or(1.0),
        top_k: g.top_k.unwrap_or(0),
        seed: None,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// The served model, with what it can serve: vLLM's `max_model_len` and r1-hybrid's `capabilities`
/// (the gateway reads them with its probes and routes what this server cannot serve elsewhere).
async fn models(State(state): State<Arc<AppState>>) -> Response {
    let limits = state.limits;
    let capabilities = Capabilities {
        context_length: u32::try_from(limits.context_length).ok(),
        max_tokens: Some(limits.max_tokens_cap),
        default_max_tokens: Some(limits.default_max_tokens),
        bytes_per_token: Some(state.bytes_per_token),
        ..Capabilities::PLAIN
    };
    let mut card = ModelCard::new(state.model_name.clone(), state.created, "r1-hybrid");
    card.extra
        .insert("max_model_len".to_owned(), Value::from(limits.context_length));
    if let Ok(value) = serde_json::to_value(capabilities) {
        card.extra.insert("capabilities".to_owned(), value);
    }
    axum::Json(ModelList::new(vec![card])).into_response()
}

/// A validated request, ready to queue.
struct Admitted {
    id: String,
    stream: bool,
    include_usage: bool,
    request: GenerationRequest,
}

async fn chat_completions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut response = match admit(&state, body, events_tx).await {
        Ok(admitted) => {
            let Admitted {
                id,
                stream,
                include_usage,
                request,
            } = admitted;
            tracing::debug!(
                prompt_tokens = request.prompt.len(),
                max_tokens = request.max_tokens,
                stream,
                "queueing"
            );
            match state.submitter.try_submit(request) {
                Ok(()) if stream => stream_response(&state.model_name, id, include_usage, state.keepalive, events),
                Ok(()) => json_response(&state, id, events).await,
                Err(SubmitError::Full) => reject(
                    &state,
                    ApiError {
                        retry_after: Some(RETRY_AFTER_SECS),
                        ..ApiError::new(
                            ErrorKind::RateLimit,
                            "the server is busy: its admission queue is full; retry shortly",
                        )
                        .with_code("queue_full")
                    },
                ),
                Err(SubmitError::Backlogged { waited }) => reject(
                    &state,
                    ApiError {
                        retry_after: Some(RETRY_AFTER_SECS),
                        ..ApiError::new(
                            ErrorKind::RateLimit,
                            format!(
                                "the server is busy: queued requests have waited {} ms for a batch slot; retry shortly",
                                waited.as_millis()
                            ),
                        )
                        .with_code("queue_backlogged")
                    },
                ),
                Err(SubmitError::Closed) => reject(
                    &state,
                    ApiError {
                        retry_after: Some(RETRY_AFTER_SECS),
                        ..ApiError::new(ErrorKind::Overloaded, "the server is shutting down")
                    },
                ),
            }
        }
        Err(error) => reject(&state, error),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn reject(state: &AppState, error: ApiError) -> Response {
    state.metrics.rejected.with_label_values(&[error.kind.as_str()]).inc();
    tracing::info!(kind = error.kind.as_str(), message = %error.message, "request refused");
    error.into_response()
}

/// Reads, parses and validates the body; renders and tokenizes the prompt.
async fn admit(state: &AppState, body: Body, events: mpsc::UnboundedSender<Event>) -> Result<Admitted, ApiError> {
    let limits = state.limits;
    let bytes = axum::body::to_bytes(body, limits.max_body_bytes).await.map_err(|_| {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than {} bytes", limits.max_body_bytes),
        )
    })?;
    let request: ChatCompletionRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("the body is not a valid chat completion request: {e}"),
        )
    })?;

    if request.model != state.model_name {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!(
                "the model `{}` does not exist; this server serves `{}`",
                request.model, state.model_name
            ),
        )
        .with_code("model_not_found"));
    }
    let generation = prepare(&request, &state.text, &state.defaults, &limits, events)?;
    Ok(Admitted {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        stream: request.is_stream(),
        include_usage: request.include_usage(),
        request: generation,
    })
}

/// Checks a chat request against the model and `limits`, renders and tokenizes its prompt: the
/// generation to queue (results go to `events`). Everything but the model name is checked here,
/// so the HTTP server and an in-process caller (r1-center's `onnx` backend) refuse alike.
pub fn prepare(
    request: &ChatCompletionRequest,
    text: &TextCodec,
    defaults: &SamplingParams,
    limits: &Limits,
    events: mpsc::UnboundedSender<Event>,
) -> Result<GenerationRequest, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    if let Some(role) = request.first_unknown_role() {
        return Err(ApiError::invalid("messages", format!("unknown message role `{role}`")));
    }
    // OpenAI's own checks first (ranges, parameters that need another), with its codes.
    r1_proto::validate(request).map_err(|e| ApiError::invalid(e.param, e.message).with_code(e.code))?;
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is supported"));
    }
    refuse_unserved(request)?;
    let max_tokens = request.effective_max_tokens().unwrap_or(limits.default_max_tokens);
    if max_tokens == 0 || max_tokens > limits.max_tokens_cap {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("`max_tokens` must be 1..={}, got {max_tokens}", limits.max_tokens_cap),
        ));
    }
    let sampling = sampling(request, defaults)?;
    let stop = request.stop_sequences().to_vec();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOP_SEQUENCES} stop sequences"),
        ));
    }

    let prompt_text = text
        .render_chat(&request.messages)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let prompt = text
        .encode(&prompt_text)
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "the conversation renders to an empty prompt",
        ));
    }
    if prompt.len() + max_tokens as usize > limits.context_length {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "this model's context is {} tokens; the prompt has {} and max_tokens asks for {max_tokens} more",
                limits.context_length,
                prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(GenerationRequest {
        prompt,
        sampling,
        max_tokens,
        stop,
        ignore_eos: request
            .extra
            .get("ignore_eos")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        events,
        enqueued_at: Instant::now(),
    })
}

/// What this server does not serve is refused, naming the parameter — never answered as if it had
/// not been asked (the gateway routes such requests to a pool that serves them, from the capabilities
/// in `GET /v1/models`).
fn refuse_unserved(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    let needs = Needs::of(request);
    let extra = &request.extra;
    if needs.tools {
        return Err(ApiError::invalid(
            "tools",
            "this model does not support function calling",
        ));
    }
    // A `tool_choice` other than `none` needs tools (`validate` refused it otherwise): refused above.
    if needs.response_format.is_some() {
        return Err(ApiError::invalid(
            "response_format",
            "this model answers in plain text only (`response_format` `text`)",
        ));
    }
    if needs.logprobs || extra.get("top_logprobs").is_some_and(|v| !v.is_null()) {
        let param = if needs.logprobs { "logprobs" } else { "top_logprobs" };
        return Err(ApiError::invalid(
            param,
            "this server does not return log probabilities",
        ));
    }
    if needs.images {
        return Err(ApiError::invalid(
            "messages",
            "this model takes text only, not image parts",
        ));
    }
    refuse_other_keys(extra)
}

/// Keys beyond the modelled ones (`r1_proto::extra_key`): those that change nothing here are taken
/// (`parallel_tool_calls` without tools, `metadata`, hints such as `prompt_cache_key`), those asking for
/// what this server does not do are refused by name, and any other key is refused as OpenAI's API
/// refuses it. The gateway reads `other_parameters: false` in the card and sends such requests elsewhere.
fn refuse_other_keys(extra: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in extra {
        match r1_proto::extra_key(key, value) {
            Ok(()) => {}
            Err(Some(why)) => return Err(ApiError::invalid(key.clone(), why)),
            Err(None) => {
                return Err(ApiError::invalid(
                    key.clone(),
                    format!("Unrecognized request argument supplied: {key}"),
                ));
            }
        }
    }
    Ok(())
}

fn sampling(request: &ChatCompletionRequest, defaults: &SamplingParams) -> Result<SamplingParams, ApiError> {
    let temperature = request.temperature.map_or(defaults.temperature, |t| t as f32);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            "`temperature` must be between 0 and 2",
        ));
    }
    // `top_p: 0` keeps only the most likely token (the smallest nucleus), as OpenAI's API takes it.
    let top_p = request
        .top_p
        .map_or(defaults.top_p, |p| (p as f32).max(f32::MIN_POSITIVE));
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p", "`top_p` must be in [0, 1]"));
    }
    let top_k = match request.top_k {
        None => defaults.top_k,
        Some(k) if k <= 0 => 0,
        Some(k) => k as usize,
    };
    let penalty = |value: Option<f64>, param: &'static str| match value {
        None => Ok(0.0),
        Some(p) if (-2.0..=2.0).contains(&p) => Ok(p as f32),
        Some(_) => Err(ApiError::invalid(param, format!("`{param}` must be between -2 and 2"))),
    };
    Ok(SamplingParams {
        temperature,
        top_p,
        top_k,
        seed: request.seed.map(|s| s as u64),
        presence_penalty: penalty(request.presence_penalty, "presence_penalty")?,
        frequency_penalty: penalty(request.frequency_penalty, "frequency_penalty")?,
    })
}

fn finish_reason(reason: FinishReason) -> r1_proto::FinishReason {
    match reason {
        FinishReason::Stop => r1_proto::FinishReason::Stop,
        FinishReason::Length => r1_proto::FinishReason::Length,
    }
}

/// Waits for the whole generation and answers with one `chat.completion` body.
async fn json_response(state: &AppState, id: String, mut events: mpsc::UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Done {
                reason,
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                let usage = Usage::new(prompt_tokens.into(), completion_tokens.into());
                let message = ChatMessage::assistant(text);
                let body = ChatCompletionResponse::new(
                    id,
                    unix_now(),
                    state.model_name.clone(),
                    message,
                    finish_reason(reason),
                    usage,
                );
                return axum::Json(body).into_response();
            }
            Event::Failed(message) => return ApiError::new(ErrorKind::Internal, message).into_response(),
        }
    }
    ApiError::new(ErrorKind::Internal, "the generation ended without a result").into_response()
}

/// Answers as server-sent events: a role chunk, content chunks, a finishing chunk, an optional usage
/// chunk, `[DONE]` — or, after a failure, an in-band error event and no `[DONE]`.
fn stream_response(
    model: &str,
    id: String,
    include_usage: bool,
    keepalive: std::time::Duration,
    events: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let created = unix_now();
    let model = model.to_owned();
    let chunk = move |choice: Option<ChunkChoice>| {
        let mut chunk = ChatCompletionChunk::new(id.clone(), created, model.clone());
        if include_usage {
            chunk.usage = Nullable::Null;
        }
        if let Some(choice) = choice {
            chunk = chunk.with_choice(choice);
        }
        chunk
    };
    let first = Bytes::from(
        chunk(Some(ChunkChoice::new(
            0,
            ChunkDelta {
                content: Nullable::Value(String::new()),
                ..ChunkDelta::role(Role::Assistant)
            },
        )))
        .to_sse_event(),
    );
    // A comment every `keepalive` of silence (queued, or thinking) so the connection is kept.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = tokio_stream::StreamExt::timeout_repeating(
        tokio_stream::wrappers::UnboundedReceiverStream::new(events),
        ticker,
    );
    let body = futures::stream::once(async move { first })
        .chain(events.flat_map(move |event| {
            let Ok(event) = event else {
                return futures::stream::iter(vec![Bytes::from_static(sse::KEEP_ALIVE)]);
            };
            let frames: Vec<Bytes> = match event {
                Event::Text(piece) => vec![
                    chunk(Some(ChunkChoice::new(0, ChunkDelta::content(piece))))
                        .to_sse_event()
                        .into(),
                ],
                Event::Done {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => {
                    let mut frames = vec![
                        chunk(Some(
                            ChunkChoice::new(0, ChunkDelta::default()).with_finish_reason(finish_reason(reason)),
                        ))
                        .to_sse_event()
                        .into(),
                    ];
                    if include_usage {
                        let mut last = chunk(None);
                        last.usage = Nullable::Value(Usage::new(prompt_tokens.into(), completion_tokens.into()));
                        frames.push(last.to_sse_event().into());
                    }
                    frames.push(Bytes::from_static(sse::DONE));
                    frames
                }
                Event::Failed(message) => vec![ErrorBody::new(ErrorKind::Internal, message).to_sse_event().into()],
            };
            futures::stream::iter(frames)
        }))
        .map(Ok::<Bytes, Infallible>);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_carries_keep_alive_comments_until_its_events_arrive() {
        let (tx, rx) = mpsc::unbounded_channel();
        let response = stream_response("m", "id".into(), false, Duration::from_secs(15), rx);
        let mut body = response.into_body().into_data_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: ") && first.windows(9).any(|w| w == b"assistant"));
        // 40 s of silence (a queued request, a model thinking): two comments, 15 s apart.
        let started = tokio::time::Instant::now();
        for expected in [15, 30] {
            assert_eq!(body.next().await.unwrap().unwrap(), sse::KEEP_ALIVE);
            assert_eq!(started.elapsed().as_secs(), expected);
        }
        tx.send(Event::Text("hello".into())).unwrap();
        let text = body.next().await.unwrap().unwrap();
        assert!(text.windows(5).any(|w| w == b"hello"));
        assert_eq!(started.elapsed().as_secs(), 30, "an event goes out at once");
        tx.send(Event::Done {
            reason: FinishReason::Stop,
            prompt_tokens: 1,
            completion_tokens: 1,
            confidence: 1.0,
        })
        .unwrap();
        drop(tx);
        let rest: Vec<Bytes> = body.map(Result::unwrap).collect().await;
        assert_eq!(rest.last().unwrap().as_ref(), sse::DONE);
        assert!(!rest.iter().any(|b| b.as_ref() == sse::KEEP_ALIVE));
    }
}
