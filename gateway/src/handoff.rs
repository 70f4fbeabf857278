//! Center traffic through the task hand-off (`center.transport = "kafka"` or `"embedded"`).
//!
//! A center-routed request becomes a task envelope (deadline = now + `timeouts.total`,
//! `reply_to` = this instance's results partition, keyed by the conversation's session key so it
//! keeps landing on the same center node). The gateway registers for the task's results *before*
//! producing it, then answers the client from the result chunks: SSE chunks as they come (with
//! keep-alive comments while the model is silent), or one JSON response at the end.
//!
//! - A produce the brokers do not acknowledge within `send_timeout` is a 503 with `Retry-After`.
//! - Until the first chunk (or the first keep-alive), nothing is written, so an error that comes
//!   first — deadline, backend refusal — is a real HTTP status with an OpenAI error body.
//! - The first-token, idle and total limits of `[timeouts]` apply; a stream cut by them, or by a
//!   failed task, ends with an in-band error event, never a `[DONE]`.
//! - A redelivered task (its center node died) restarts as a new attempt: a JSON answer simply
//!   starts over; a stream continues if the new run reproduces what the client already has
//!   (deterministic requests), and otherwise ends with an error event rather than a doubled answer.
//! - A client that goes away, or a timeout, publishes a cancel record so the center node stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use r1_proto::{
    CancelReason, CancelRecord, ChatCompletionChunk, ChatCompletionResponse, ChatMessage, ChunkChoice, ChunkDelta,
    ErrorKind, FinishReason, Nullable, ResultChunk, Role, TaskClass, TaskEnvelope, TaskError, TaskErrorCode, Usage,
    WIRE_VERSION, sse,
};
use r1_queue::kafka_transport::{KafkaTaskSink, ensure_topics, spawn_results_reader};
use r1_queue::memory::MemoryQueue;
use r1_queue::reply::{ReplyEvent, ResultRouter};
use r1_queue::state::{MemoryStateStore, RedisStateStore, StateStore};
use r1_queue::topics::ReplyTo;
use r1_queue::transport::{SendError, TaskSink};

use crate::config::{CenterTransport, GatewayConfig};
use crate::deadline::{Phase, PhaseClock};
use crate::error::{GatewayError, Source};
use crate::proxy::Ctx;
use crate::state::Gateway;

/// The hand-off of one gateway instance.
#[derive(Debug)]
pub struct Handoff {
    sink: Arc<dyn TaskSink>,
    router: Arc<ResultRouter>,
    reply_to: ReplyTo,
    transport: Transport,
    ready: AtomicBool,
    in_flight: AtomicUsize,
    states: arc_swap::ArcSwapOption<Box<dyn StateStore>>,
    redis: Option<crate::config::RedisSection>,
}

#[derive(Debug)]
enum Transport {
    Kafka(crate::config::CenterKafkaSection),
    Embedded {
        queue: Arc<MemoryQueue>,
        base_url: String,
        model: String,
        memory_states: Arc<MemoryStateStore>,
    },
}

impl Handoff {
    /// The hand-off `config` asks for, or `None` for plain HTTP. Nothing connects yet: the
    /// [`HandoffService`] does, and readiness is false until it has.
    pub fn new(config: &GatewayConfig) -> anyhow::Result<Option<Arc<Self>>> {
        let router = ResultRouter::new();
        let (sink, reply_to, transport): (Arc<dyn TaskSink>, _, _) = match config.center.transport {
            CenterTransport::Http => return Ok(None),
            CenterTransport::Kafka => {
                let Some(k) = &config.center.kafka else {
                    anyhow::bail!("center.kafka is required with transport = \"kafka\"");
                };
                let instance = k.instance.clone().unwrap_or_else(default_instance);
                let sink = KafkaTaskSink::new(k.settings(), k.topics(), k.send_timeout)?;
                // A StatefulSet passes its pod's ordinal (metadata.labels['apps.kubernetes.io/pod-index']).
                let partition = match std::env::var("R1_RESULTS_PARTITION") {
                    Ok(v) => v
                        .trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|p| (0..k.result_partitions).contains(p))
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "R1_RESULTS_PARTITION=`{v}` must be 0..{} (center.kafka.result_partitions)",
                                k.result_partitions
                            )
                        })?,
                    Err(_) => k.results_partition,
                };
                let reply_to = ReplyTo { instance, partition };
                (Arc::new(sink), reply_to, Transport::Kafka(k.clone()))
            }
            CenterTransport::Embedded => {
                let queue = MemoryQueue::new(1024);
                let reply_to = ReplyTo {
                    instance: "embedded".to_owned(),
                    partition: 0,
                };
                queue.attach(&reply_to.to_string(), router.clone());
                let member = config.center.members.first().cloned().unwrap_or_default();
                let transport = Transport::Embedded {
                    queue: queue.clone(),
                    base_url: format!("http://{member}/v1"),
                    model: config.center.model.clone(),
                    memory_states: Arc::new(MemoryStateStore::default()),
                };
                (queue, reply_to, transport)
            }
        };
        let states = arc_swap::ArcSwapOption::empty();
        if let Transport::Embedded { memory_states, .. } = &transport {
            states.store(Some(Arc::new(Box::new(memory_states.clone()) as Box<dyn StateStore>)));
        }
        Ok(Some(Arc::new(Self {
            sink,
            router,
            reply_to,
            transport,
            ready: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            states,
            redis: config.redis.clone(),
        })))
    }

    /// Whether tasks can be handed over now.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.sink.is_ready()
    }

    /// Requests waiting for a result now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The results router (its counters are exported as metrics).
    pub fn router(&self) -> &ResultRouter {
        &self.router
    }

    /// Where asynchronous tasks' state lives, once connected (`[redis]`, or in memory embedded).
    pub fn states(&self) -> Option<Arc<Box<dyn StateStore>>> {
        self.states.load_full()
    }

    /// This instance's reply address.
    pub fn reply_to(&self) -> String {
        self.reply_to.to_string()
    }

    /// Hands an asynchronous task over (batch class; nobody waits on the connection).
    pub async fn submit_batch(&self, key: &str, task: &TaskEnvelope) -> Result<(), SendError> {
        if !self.is_ready() {
            return Err(SendError::Other("the task queue is not connected".to_owned()));
        }
        self.sink.submit(TaskClass::Batch, None, key, task).await
    }

    /// Publishes a cancel record.
    pub async fn cancel(&self, record: &CancelRecord) -> Result<(), SendError> {
        self.sink.cancel(record).await
    }
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map_or_else(|_| "gateway".to_owned(), |h| h.trim().to_owned());
    format!("{host}-{}", std::process::id())
}

/// Connects the hand-off and keeps its reader (Kafka) or its in-process worker (embedded) running;
/// with Kafka, it also creates the task topics of model versions as they appear in the config.
#[derive(Debug)]
pub struct HandoffService(pub Arc<Handoff>, pub Arc<Gateway>);

#[async_trait]
impl BackgroundService for HandoffService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let handoff = &self.0;
        match &handoff.transport {
            Transport::Kafka(k) => {
                let (settings, topics) = (k.settings(), k.topics());
                let mut wait = Duration::from_millis(200);
                let reader = loop {
                    let attempt = async {
                        ensure_topics(&settings, &topics, 12, k.result_partitions).await?;
                        let (settings, topics, reply_to, router) = (
                            settings.clone(),
                            topics.clone(),
                            handoff.reply_to.clone(),
                            handoff.router.clone(),
                        );
                        tokio::task::spawn_blocking(move || {
                            spawn_results_reader_blocking(&settings, &topics, &reply_to, router)
                        })
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                    };
                    match attempt.await {
                        Ok(reader) => break reader,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "Kafka hand-off not ready; retrying");
                            tokio::select! {
                                _ = shutdown.changed() => return,
                                () = tokio::time::sleep(wait) => {}
                            }
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                handoff.ready.store(true, Ordering::Relaxed);
                tracing::info!(reply_to = %handoff.reply_to, "Kafka hand-off ready");
                if let Some(redis) = handoff.redis.clone() {
                    let handoff = handoff.clone();
                    tokio::spawn(async move {
                        let mut wait = Duration::from_millis(200);
                        loop {
                            match RedisStateStore::connect(&redis.url, redis.timeout).await {
                                Ok(store) => {
                                    handoff
                                        .states
                                        .store(Some(Arc::new(Box::new(store) as Box<dyn StateStore>)));
                                    tracing::info!("asynchronous task store connected (Redis)");
                                    return;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "asynchronous task store (Redis) not reachable; retrying");
                                    tokio::time::sleep(wait).await;
                                    wait = (wait * 2).min(Duration::from_secs(5));
                                }
                            }
                        }
                    });
                }
                let mut known = std::collections::HashSet::new();
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tick.tick() => {
                            for version in &self.1.config().center.versions {
                                if known.contains(&version.name) {
                                    continue;
                                }
                                match ensure_topics(&settings, &topics.for_version(&version.name), 12, k.result_partitions).await {
                                    Ok(()) => {
                                        known.insert(version.name.clone());
                                    }
                                    Err(e) => tracing::warn!(version = %version.name, error = %e, "creating the version's topics"),
                                }
                            }
                        }
                    }
                }
                handoff.ready.store(false, Ordering::Relaxed);
                reader.abort();
            }
            Transport::Embedded {
                queue,
                base_url,
                model,
                memory_states,
            } => {
                let worker = match embedded_worker(queue.clone(), base_url, model, memory_states.clone()) {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "the embedded center worker cannot start");
                        return;
                    }
                };
                handoff.ready.store(true, Ordering::Relaxed);
                tracing::info!(backend = %base_url, "in-process hand-off ready");
                worker
                    .run(async move {
                        let _ = shutdown.changed().await;
                    })
                    .await;
            }
        }
    }
}

fn spawn_results_reader_blocking(
    settings: &r1_queue::kafka::KafkaSettings,
    topics: &r1_queue::topics::Topics,
    reply_to: &ReplyTo,
    router: Arc<ResultRouter>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    Ok(spawn_results_reader(settings, topics, reply_to, router)?)
}

fn embedded_worker(
    queue: Arc<MemoryQueue>,
    base_url: &str,
    model: &str,
    states: Arc<MemoryStateStore>,
) -> anyhow::Result<Arc<r1_center::worker::Worker>> {
    use r1_center::backend::openai::{OpenAiBackend, OpenAiSettings};
    let backend = OpenAiBackend::new(OpenAiSettings {
        base_url: base_url.to_owned(),
        model: model.to_owned(),
        api_key: None,
        connect_timeout: Duration::from_secs(2),
        first_token_timeout: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(120),
        attempts: 3,
        backoff: Duration::from_millis(200),
    })?;
    Ok(Arc::new(
        r1_center::worker::Worker::new(
            queue.clone(),
            queue,
            Arc::new(r1_center::claims::MemoryClaims::default()),
            Arc::new(backend),
            r1_center::worker::WorkerSettings {
                node_id: "embedded".to_owned(),
                max_in_flight: 64,
                max_attempts: 3,
                claim_ttl: Duration::from_secs(15),
                done_ttl: Duration::from_secs(600),
                result_timeout: Duration::from_secs(5),
                retry_backoff: Duration::from_millis(200),
                shutdown_grace: Duration::from_secs(5),
                state_ttl: crate::tasks::STATE_TTL,
            },
            r1_center::metrics::CenterMetrics::new()?,
        )
        .with_states(states),
    ))
}

fn error_kind(code: TaskErrorCode) -> ErrorKind {
    match code {
        TaskErrorCode::Timeout => ErrorKind::Timeout,
        TaskErrorCode::InvalidRequest => ErrorKind::InvalidRequest,
        TaskErrorCode::Overloaded => ErrorKind::Overloaded,
        TaskErrorCode::Backend => ErrorKind::Upstream,
        TaskErrorCode::Cancelled | TaskErrorCode::Internal => ErrorKind::Internal,
    }
}

fn task_error(error: &TaskError) -> GatewayError {
    GatewayError::upstream(error_kind(error.code), Source::Center, error.message.clone())
}

/// Counts a waiting request for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a hand-off answer ended (for the access log and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete answer.
    Complete,
    /// An error was answered (status or in-band event).
    Failed,
    /// The client went away.
    ClientGone,
}

/// Serves a center-routed request through the hand-off. The caller has written nothing yet.
pub async fn serve(gateway: &Gateway, handoff: &Handoff, session: &mut Session, ctx: &mut Ctx) -> Result<Outcome> {
    let config = gateway.config();
    let Some(request) = ctx.request.clone() else {
        return Ok(Outcome::Failed);
    };
    let now = r1_queue::unix_ms();
    let total_ms = u64::try_from(config.timeouts.total.as_millis()).unwrap_or(u64::MAX);
    let task_id = uuid::Uuid::new_v4().simple().to_string();
    let key = format!(
        "{:016x}",
        crate::route::session_key(
            &request,
            session
                .req_header()
                .headers
                .get(config.routing.session_header.as_str())
                .and_then(|v| v.to_str().ok())
        )
    );
    let version = pick_version(&config.center.versions, &key).map(str::to_owned);
    let envelope = TaskEnvelope {
        v: WIRE_VERSION,
        task_id: task_id.clone(),
        created_at: now,
        deadline: now.saturating_add(total_ms),
        reply_to: handoff.reply_to.to_string(),
        tenant: ctx.tenant.clone().unwrap_or_else(|| crate::proxy::ANONYMOUS.to_owned()),
        class: TaskClass::Interactive,
        request,
        attempt: 0,
        model_version: version.clone(),
        affinity_key: Some(key.clone()),
        webhook: None,
    };
    ctx.task_id = Some(task_id.clone());
    ctx.model_version.clone_from(&version);
    if let Some(v) = &version {
        gateway.metrics.center_versions.with_label_values(&[v.as_str()]).inc();
    }
    handoff.in_flight.fetch_add(1, Ordering::Relaxed);
    let _waiting = Waiting(&handoff.in_flight);
    let mut replies = handoff.router.register(&task_id);
    if let Err(e) = handoff
        .sink
        .submit(TaskClass::Interactive, version.as_deref(), &key, &envelope)
        .await
    {
        let status = match e {
            SendError::Full => "full",
            SendError::Timeout(_) => "timeout",
            SendError::Fatal(_) | SendError::Other(_) => "error",
        };
        gateway
            .metrics
            .handoff_produce_errors
            .with_label_values(&[status])
            .inc();
        tracing::warn!(request_id = %ctx.request_id, error = %e, "task hand-off failed");
        let error = GatewayError::upstream(
            ErrorKind::Overloaded,
            Source::Center,
            format!("the center queue did not take the request: {e}"),
        )
        .retry_after(1);
        write_error(session, ctx, &error).await?;
        return Ok(Outcome::Failed);
    }
    let started = ctx.started.unwrap_or_else(Instant::now);
    let mut clock = PhaseClock::new(&config.timeouts, started);
    clock.sent(Instant::now());
    let mut answer = Answer::new(
        &task_id,
        &config.center.model,
        ctx.stream,
        ctx.request.as_ref().is_some_and(|r| r.include_usage()),
    );
    let keepalive = config.timeouts.sse_keepalive;
    let mut last_write = Instant::now();
    let mut watch_client = true;
    let outcome = loop {
        let next_tick = (last_write + keepalive).min(clock.next_deadline());
        tokio::select! {
            event = replies.next() => {
                let Some(event) = event else { break Outcome::Failed };
                match answer.take(event) {
                    Step::Continue(bytes) => {
                        clock.observe(Instant::now(), true).ok();
                        if let Some(bytes) = bytes {
                            if !write(session, ctx, &mut answer, bytes).await {
                                break Outcome::ClientGone;
                            }
                            last_write = Instant::now();
                            observe_ttft(gateway, ctx);
                        }
                    }
                    Step::Done(bytes) => {
                        if !answer.header_sent && !answer.stream {
                            write_json(session, ctx, bytes).await?;
                        } else if !write(session, ctx, &mut answer, bytes).await {
                            break Outcome::ClientGone;
                        } else {
                            let _ = session.write_response_body(None, true).await;
                        }
                        observe_ttft(gateway, ctx);
                        break Outcome::Complete;
                    }
                    Step::Fail(error) => {
                        fail(session, ctx, &mut answer, &error).await?;
                        break Outcome::Failed;
                    }
                }
            }
            () = tokio::time::sleep_until(next_tick.into()) => {
                if let Err(phase) = clock.check(Instant::now()) {
                    gateway.metrics.upstream_errors.with_label_values(&["center", phase.as_str()]).inc();
                    let error = GatewayError::upstream(ErrorKind::Timeout, Source::Center, phase.message(&config.timeouts));
                    fail(session, ctx, &mut answer, &error).await?;
                    cancel(handoff, &task_id, if phase == Phase::Total { CancelReason::DeadlineExceeded } else { CancelReason::Other }).await;
                    break Outcome::Failed;
                }
                if answer.stream && last_write + keepalive <= Instant::now() {
                    if !write(session, ctx, &mut answer, Bytes::from_static(sse::KEEP_ALIVE)).await {
                        break Outcome::ClientGone;
                    }
                    last_write = Instant::now();
                }
            }
            closed = session.read_body_or_idle(true), if watch_client => {
                match closed {
                    Err(_) => break Outcome::ClientGone,
                    Ok(_) => watch_client = false, // bytes from a pipelining client: stop watching
                }
            }
        }
    };
    // A complete answer fills the cache entry this request was the first for (if any).
    if outcome == Outcome::Complete
        && let (Some(fill), Some(response), Some(cache)) =
            (ctx.cache_fill.take(), answer.completed.take(), gateway.cache())
    {
        fill.complete(cache.clone(), response);
    }
    // The caller's token budget is charged what the answer really used (its estimate until now).
    if let (Some(used), Some(admission)) = (answer.used_tokens, ctx.admission.take()) {
        admission.record_usage(used);
    }
    if outcome == Outcome::ClientGone {
        tracing::info!(request_id = %ctx.request_id, %task_id, "client went away: cancelling the task");
        cancel(handoff, &task_id, CancelReason::ClientDisconnected).await;
    }
    drop(replies);
    Ok(outcome)
}

/// The model version of a conversation (by its key): a stable bucket of the versions' total
/// weight, so a conversation stays on one version while the weights stay the same.
fn pick_version<'a>(versions: &'a [crate::config::CenterVersion], key: &str) -> Option<&'a str> {
    let total: u64 = versions.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return None;
    }
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut bucket = hash % total;
    for v in versions {
        let w = u64::from(v.weight);
        if bucket < w {
            return Some(&v.name);
        }
        bucket -= w;
    }
    None
}

fn observe_ttft(gateway: &Gateway, ctx: &mut Ctx) {
    if ctx.first_byte.is_none() {
        ctx.first_byte = Some(Instant::now());
        if let Some(started) = ctx.started {
            gateway
                .metrics
                .time_to_first_token
                .with_label_values(&["center"])
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

async fn cancel(handoff: &Handoff, task_id: &str, reason: CancelReason) {
    let record = CancelRecord::new(task_id, reason, r1_queue::unix_ms());
    if let Err(e) = handoff.sink.cancel(&record).await {
        tracing::warn!(%task_id, error = %e, "cancel record not published (the task's deadline still bounds it)");
    }
}

fn header(ctx: &Ctx, status: u16, content_type: &str) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(8))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(d) = &ctx.decision {
        header.insert_header("x-r1-route", d.route.as_str())?;
        header.insert_header("x-r1-route-reason", d.reason.as_str())?;
    }
    if let Some(task) = &ctx.task_id {
        header.insert_header("x-r1-task-id", task.as_str())?;
    }
    if let Some(version) = &ctx.model_version {
        header.insert_header("x-r1-model-version", version.as_str())?;
    }
    Ok(header)
}

/// Writes stream bytes, sending the SSE header first if it has not gone yet. `false`: the client is gone.
async fn write(session: &mut Session, ctx: &Ctx, answer: &mut Answer, bytes: Bytes) -> bool {
    if !answer.header_sent {
        let Ok(mut h) = header(ctx, 200, "text/event-stream") else {
            return false;
        };
        let _ = h.insert_header("cache-control", "no-cache");
        let _ = h.insert_header("transfer-encoding", "chunked");
        let _ = h.insert_header("x-accel-buffering", "no");
        if session.write_response_header(Box::new(h), false).await.is_err() {
            return false;
        }
        answer.header_sent = true;
        let first = answer.first_frame();
        if session.write_response_body(Some(first), false).await.is_err() {
            return false;
        }
    }
    session.write_response_body(Some(bytes), false).await.is_ok()
}

async fn write_json(session: &mut Session, ctx: &Ctx, body: Bytes) -> Result<()> {
    let mut h = header(ctx, 200, "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

async fn write_error(session: &mut Session, ctx: &Ctx, error: &GatewayError) -> Result<()> {
    let body = Bytes::from(error.body().to_json());
    let mut h = header(ctx, error.status(), "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    if let Some(seconds) = error.retry_after {
        h.insert_header("retry-after", seconds.to_string())?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Ends the answer with `error`: a status if nothing was written yet, an in-band event otherwise.
async fn fail(session: &mut Session, ctx: &mut Ctx, answer: &mut Answer, error: &GatewayError) -> Result<()> {
    tracing::warn!(request_id = %ctx.request_id, kind = error.kind.as_str(), message = %error.message, "center answer failed");
    if answer.header_sent {
        let _ = session
            .write_response_body(Some(Bytes::from(error.body().to_sse_event())), true)
            .await;
        Ok(())
    } else {
        write_error(session, ctx, error).await
    }
}

enum Step {
    /// Keep going; write these bytes (stream), if any.
    Continue(Option<Bytes>),
    /// The answer is complete: the last bytes (stream) or the whole JSON body.
    Done(Bytes),
    /// The task failed.
    Fail(GatewayError),
}

/// Turns result chunks into the client's answer.
struct Answer {
    id: String,
    model: String,
    created: u64,
    stream: bool,
    include_usage: bool,
    header_sent: bool,
    content: String,
    reasoning: String,
    finish: Option<FinishReason>,
    /// Text of an earlier attempt the client already has; a new attempt must reproduce it.
    replay: Option<(String, String)>,
    /// Lengths of reasoning and content already forwarded.
    last_len: (usize, usize),
    /// Tokens the answer used (prompt + completion), once complete.
    used_tokens: Option<u64>,
    /// The complete answer as one chat completion (for the result cache).
    completed: Option<ChatCompletionResponse>,
}

impl Answer {
    fn new(task_id: &str, model: &str, stream: bool, include_usage: bool) -> Self {
        Self {
            id: format!("chatcmpl-{task_id}"),
            model: model.to_owned(),
            created: r1_queue::unix_ms() / 1000,
            stream,
            include_usage,
            header_sent: false,
            content: String::new(),
            reasoning: String::new(),
            finish: None,
            replay: None,
            last_len: (0, 0),
            used_tokens: None,
            completed: None,
        }
    }

    fn chunk(&self) -> ChatCompletionChunk {
        let mut c = ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone());
        if self.include_usage {
            c.usage = Nullable::Null;
        }
        c
    }

    fn first_frame(&self) -> Bytes {
        let delta = ChunkDelta {
            content: Nullable::Value(String::new()),
            ..ChunkDelta::role(Role::Assistant)
        };
        Bytes::from(self.chunk().with_choice(ChunkChoice::new(0, delta)).to_sse_event())
    }

    fn take(&mut self, event: ReplyEvent) -> Step {
        let chunk = match event {
            ReplyEvent::Restarted { attempt } => {
                tracing::info!(id = %self.id, attempt, "the task was redelivered and runs again");
                if self.stream && self.header_sent {
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
        let usage = usage.unwrap_or_else(|| Usage::new(0, 0));
        self.used_tokens = Some(usage.total_tokens);
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
    fn unreplayed(&mut self) -> Result<Option<(String, String)>, ()> {
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

    fn newest(&mut self) -> (String, String) {
        let (r, c) = self.last_len;
        let fresh = (self.reasoning[r..].to_owned(), self.content[c..].to_owned());
        self.last_len = (self.reasoning.len(), self.content.len());
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CenterVersion;

    #[test]
    fn versions_split_by_weight_and_a_conversation_keeps_its_version() {
        let versions = vec![
            CenterVersion {
                name: "current".into(),
                weight: 95,
            },
            CenterVersion {
                name: "next".into(),
                weight: 5,
            },
        ];
        let keys: Vec<String> = (0..10_000).map(|i| format!("{i:016x}")).collect();
        let next = keys
            .iter()
            .filter(|k| pick_version(&versions, k) == Some("next"))
            .count();
        assert!((400..=600).contains(&next), "{next} of 10000 on the 5 % version");
        assert_eq!(pick_version(&versions, "abc"), pick_version(&versions, "abc"));
        let rolled_back = vec![
            CenterVersion {
                name: "current".into(),
                weight: 100,
            },
            CenterVersion {
                name: "next".into(),
                weight: 0,
            },
        ];
        assert!(keys.iter().all(|k| pick_version(&rolled_back, k) == Some("current")));
        assert_eq!(pick_version(&[], "abc"), None);
    }
}
