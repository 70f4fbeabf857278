//! Center traffic through the task hand-off (`center.transport = "kafka"` or `"embedded"`), behind one
//! interface: [`Handoff::submit`] hands a request over and returns an [`Answering`], the stream of
//! [`AnswerEvent`]s that make the client's answer; `respond::answer` writes them. Nothing here touches
//! the client's connection.
//!
//! A submitted request becomes a task envelope (deadline = now + `timeouts.total`, `reply_to` = this
//! instance's results partition, keyed by the conversation's session key so it keeps landing on the
//! same center node). The gateway registers for the task's results *before* producing it.
//!
//! - A produce the brokers do not acknowledge within `send_timeout` is a 503 with `Retry-After`.
//! - Until the first chunk (or the first keep-alive), nothing is written, so an error that comes
//!   first — deadline, backend refusal — is a real HTTP status with an OpenAI error body.
//! - The first-token, idle and total limits of `[timeouts]` apply; a stream cut by them, or by a
//!   failed task, ends with an in-band error event, never a `[DONE]`; keep-alive comments go out
//!   every `timeouts.sse_keepalive` while the model is silent.
//! - A redelivered task (its center node died) restarts as a new attempt: a JSON answer simply
//!   starts over; a stream continues if the new run reproduces what the client already has
//!   (deterministic requests), and otherwise ends with an error event rather than a doubled answer;
//!   one that already carried tool calls, log probabilities or a second choice always ends so.
//! - Result chunks carry each choice's text, reasoning, tool-call fragments and log probabilities;
//!   a stream relays them as the model server sent them, a JSON answer merges them per choice.
//! - A client that goes away ([`Answering::cancel`]), or a timeout, publishes a cancel record so the
//!   center node stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use r1_proto::{
    CancelReason, CancelRecord, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage,
    ChunkChoice, ChunkDelta, ErrorKind, FinishReason, Nullable, ResultChunk, Role, TaskClass, TaskEnvelope, TaskError,
    TaskErrorCode, Usage, WIRE_VERSION, sse,
};
use r1_queue::kafka_transport::{BrokerCheckError, KafkaTaskSink, check_brokers, ensure_topics, spawn_results_reader};
use r1_queue::reply::{ReplyEvent, ReplyStream, ResultRouter};
use r1_queue::state::{RedisStateStore, StateStore};
use r1_queue::topics::ReplyTo;
use r1_queue::transport::{SendError, TaskSink};
use tokio::sync::watch;

use crate::config::{CenterKafkaSection, CenterTransport, CenterVersion, GatewayConfig, TimeoutsSection};
use crate::deadline::{Phase, PhaseClock};
use crate::error::{GatewayError, Source};
use crate::metrics::Metrics;

mod answer;
mod kafka;

use answer::{Answer, Step};
use kafka::run_kafka;
/// The hand-off of one gateway instance.
#[derive(Debug)]
pub struct Handoff {
    sink: Arc<dyn TaskSink>,
    router: Arc<ResultRouter>,
    reply_to: ReplyTo,
    transport: Transport,
    ready: AtomicBool,
    /// Whether r1-center nodes hold the task partitions (their consumer groups, as last seen).
    center: kafka::CenterView,
    in_flight: AtomicUsize,
    states: arc_swap::ArcSwapOption<Box<dyn StateStore>>,
    /// The task state's Redis (`[redis]`) and its calls' limit.
    redis: Option<(r1_queue::redis_conn::RedisClient, Duration)>,
    metrics: Metrics,
}

#[derive(Debug)]
enum Transport {
    Kafka {
        section: Box<CenterKafkaSection>,
        /// The client settings, secrets resolved once at start.
        settings: Box<r1_queue::kafka::KafkaSettings>,
    },
    #[cfg(feature = "embedded")]
    Embedded(crate::embedded::EmbeddedCenter),
}

impl Handoff {
    /// The hand-off `config` asks for, or `None` for plain HTTP. With Kafka, the brokers are asked for
    /// metadata first (at most [`BROKER_CHECK`]): brokers that refuse the client's login, TLS handshake or
    /// protocol are a start-up error naming the `center.kafka.security` key to fix; unreachable ones are
    /// only logged. The [`HandoffService`] connects, and readiness is false until it has.
    pub fn new(
        config: &GatewayConfig,
        redis: Option<&r1_queue::redis_conn::RedisClient>,
        metrics: &Metrics,
        telemetry: &r1_telemetry::Telemetry,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let router = ResultRouter::new();
        let states = arc_swap::ArcSwapOption::empty();
        let (sink, reply_to, transport): (Arc<dyn TaskSink>, _, _) = match config.center.transport {
            CenterTransport::Http => return Ok(None),
            CenterTransport::Kafka => {
                let Some(k) = &config.center.kafka else {
                    anyhow::bail!("center.kafka is required with transport = \"kafka\"");
                };
                let instance = k.instance.clone().unwrap_or_else(default_instance);
                let settings = k
                    .settings(&crate::env::ProcessEnv)
                    .map_err(|e| anyhow::anyhow!("{}", e.problems().join("\n  ")))?;
                match check_brokers(&settings, BROKER_CHECK) {
                    Err(e) if e.is_refusal() => {
                        anyhow::bail!("Kafka refused this gateway: {}", describe_check(&e, k));
                    }
                    Err(e) => tracing::warn!(
                        error = %describe_check(&e, k),
                        "Kafka not reachable at start; the hand-off connects when it is"
                    ),
                    Ok(()) => {}
                }
                let sink = KafkaTaskSink::new(settings.clone(), k.topics(), k.send_timeout)?;
                let reply_to = ReplyTo {
                    instance,
                    partition: k.results_partition,
                };
                let transport = Transport::Kafka {
                    section: Box::new(k.clone()),
                    settings: Box::new(settings),
                };
                (Arc::new(sink), reply_to, transport)
            }
            #[cfg(feature = "embedded")]
            CenterTransport::Embedded => {
                let reply_to = ReplyTo {
                    instance: "embedded".to_owned(),
                    partition: 0,
                };
                let center =
                    crate::embedded::EmbeddedCenter::new(config, metrics, &reply_to, router.clone(), telemetry)?;
                states.store(Some(Arc::new(center.states())));
                (center.queue(), reply_to, Transport::Embedded(center))
            }
            #[cfg(not(feature = "embedded"))]
            CenterTransport::Embedded => {
                let _ = telemetry; // the in-process center's spans would be this process's
                anyhow::bail!(
                    "center.transport = \"embedded\" needs r1-gateway built with the `embedded` feature (the demo build)"
                )
            }
        };
        Ok(Some(Arc::new(Self {
            sink,
            router,
            reply_to,
            transport,
            ready: AtomicBool::new(false),
            center: kafka::CenterView::default(),
            in_flight: AtomicUsize::new(0),
            states,
            redis: redis.map(|r| (r.clone(), config.redis_timeout())),
            metrics: metrics.clone(),
        })))
    }

    /// Whether tasks can be handed over now.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.sink.is_ready()
    }

    /// Whether center nodes take tasks now: r1-center nodes hold the task partitions (in process: always).
    /// Tasks handed over meanwhile are kept on the brokers, so asynchronous tasks are still accepted;
    /// interactive requests go elsewhere.
    pub fn has_consumers(&self) -> bool {
        self.is_embedded() || self.center.is_up()
    }

    /// Members of the center nodes' consumer groups as last seen (0 in process).
    pub fn center_members(&self) -> usize {
        self.center.members()
    }

    /// Whether the center is reached in this process (its backend is then a member of the center pool).
    pub fn is_embedded(&self) -> bool {
        !matches!(self.transport, Transport::Kafka { .. })
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

    /// The task store's state for `/admin/pools`: `connected`, `connecting` (`[redis]` is set and its
    /// first connection has not succeeded yet: `/v1/tasks` answers 503 meanwhile) or `none`.
    pub fn task_store(&self) -> &'static str {
        match (self.states.load().is_some(), self.redis.is_some()) {
            (true, _) => "connected",
            (false, true) => "connecting",
            (false, false) => "none",
        }
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

    /// Hands an interactive request over and returns its answer as it will come. `Err`: the queue did
    /// not take it, or no center node is in the group to take it (503 + `Retry-After`); nothing was sent
    /// anywhere.
    pub async fn submit(self: &Arc<Self>, submission: Submission<'_>) -> Result<Answering, GatewayError> {
        let Submission {
            request,
            tenant,
            session_key,
            started,
            config,
            answered_as,
            traceparent,
        } = submission;
        if !self.has_consumers() && !self.center.confirm().await {
            // Kafka would keep the task, but nobody would take it before the client gives up.
            self.metrics
                .handoff_produce_errors
                .with_label_values(&["no_center"])
                .inc();
            return Err(GatewayError::upstream(
                ErrorKind::Overloaded,
                Source::Queue,
                "no center node is taking tasks right now; retry shortly".to_owned(),
            )
            .retry_after(2));
        }
        let now = r1_queue::unix_ms();
        let total_ms = u64::try_from(config.timeouts.total.as_millis()).unwrap_or(u64::MAX);
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        let key = format!("{session_key:016x}");
        let version = pick_version(&config.center.versions, &key).map(str::to_owned);
        let envelope = TaskEnvelope {
            v: WIRE_VERSION,
            task_id: task_id.clone(),
            created_at: now,
            deadline: now.saturating_add(total_ms),
            reply_to: self.reply_to.to_string(),
            tenant: tenant.to_owned(),
            class: TaskClass::Interactive,
            request,
            attempt: 0,
            model_version: version.clone(),
            affinity_key: Some(key.clone()),
            webhook: None,
            traceparent,
        };
        if let Some(v) = &version {
            self.metrics.center_versions.with_label_values(&[v.as_str()]).inc();
        }
        let waiting = Waiting::enter(self.clone());
        let replies = self.router.register(&task_id);
        let sending = Instant::now();
        if let Err(e) = self
            .sink
            .submit(TaskClass::Interactive, version.as_deref(), &key, &envelope)
            .await
        {
            let reason = match e {
                SendError::Full => "full",
                SendError::Timeout(_) => "timeout",
                SendError::Fatal(_) | SendError::Other(_) => "error",
            };
            self.metrics.handoff_produce_errors.with_label_values(&[reason]).inc();
            return Err(GatewayError::upstream(
                ErrorKind::Overloaded,
                Source::Queue,
                format!("the center queue did not take the request: {e}"),
            )
            .retry_after(1));
        }
        let mut clock = PhaseClock::new(&config.timeouts, started);
        clock.sent(Instant::now());
        Ok(Answering {
            answer: Answer::new(&task_id, answered_as, &envelope.request),
            task_id,
            version,
            replies,
            clock,
            timeouts: config.timeouts.clone(),
            last_emit: Instant::now(),
            finished: false,
            sending,
            center_spans: Vec::new(),
            _waiting: waiting,
        })
    }
}

/// What [`Handoff::submit`] takes: the request (its `model` already the center's) and who asks.
#[derive(Debug)]
pub struct Submission<'a> {
    /// The request.
    pub request: ChatCompletionRequest,
    /// Its tenant.
    pub tenant: &'a str,
    /// The conversation's key (`route::session_key`): its affinity and its model version.
    pub session_key: u64,
    /// When the request arrived (the total timeout counts from there).
    pub started: Instant,
    /// The configuration the request runs under.
    pub config: &'a GatewayConfig,
    /// The model name the answer carries: the one the client asked for.
    pub answered_as: &'a str,
    /// The W3C `traceparent` r1-center's spans take as their parent (the Kafka record's header).
    pub traceparent: Option<String>,
}

/// One piece of a hand-off answer, for `respond::answer` to write.
#[derive(Debug)]
pub enum AnswerEvent {
    /// Stream bytes carrying tokens (the first ones open the stream with the assistant's role).
    Stream(Bytes),
    /// A keep-alive comment while the model is silent (it may open the stream too).
    KeepAlive(Bytes),
    /// The complete answer: a stream's last events and `[DONE]`, or the whole JSON body.
    Done(Bytes),
    /// The answer failed (a status while nothing was written, an in-band event after).
    Failed(GatewayError),
}

/// How a hand-off answer ended (for the access log, metrics and traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete answer.
    Complete,
    /// An error was answered (status or in-band event).
    Failed,
    /// The client went away.
    ClientGone,
}

impl Outcome {
    /// Its name (a trace attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::ClientGone => "client_gone",
        }
    }
}

/// A handed-over request's answer as it comes: result chunks turned into the client's events, with
/// the timeouts and keep-alives of `[timeouts]`. [`Answering::next`] is cancel-safe.
#[derive(Debug)]
pub struct Answering {
    answer: Answer,
    task_id: String,
    version: Option<String>,
    replies: ReplyStream,
    clock: PhaseClock,
    timeouts: TimeoutsSection,
    last_emit: Instant,
    finished: bool,
    /// When the produce began (after the look at the center nodes).
    sending: Instant,
    /// The `traceparent` of r1-center's span of each run, as the result chunks carried it.
    center_spans: Vec<String>,
    _waiting: Waiting,
}

impl Answering {
    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The center model version the task went to, when versions are configured.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.answer.stream
    }

    /// The topic the task went to (`<interactive topic>[.<version>]`; `in-process` embedded).
    pub fn topic(&self) -> String {
        match &self.waiting().transport {
            Transport::Kafka { section, .. } => {
                let topics = section.topics();
                let base = topics.tasks(TaskClass::Interactive);
                match &self.version {
                    Some(v) => format!("{base}.{v}"),
                    None => base.to_owned(),
                }
            }
            #[cfg(feature = "embedded")]
            Transport::Embedded(_) => "in-process".to_owned(),
        }
    }

    /// When the task's produce began: the time before it went to seeing whether center nodes take tasks.
    pub fn sending_since(&self) -> Instant {
        self.sending
    }

    /// The W3C `traceparent` of r1-center's span of each run of the task that answered so far (traced
    /// center nodes name theirs on the result chunks).
    pub fn center_spans(&self) -> &[String] {
        &self.center_spans
    }

    /// The next piece of the answer; `None` after the last one.
    pub async fn next(&mut self) -> Option<AnswerEvent> {
        if self.finished {
            return None;
        }
        loop {
            let next_tick = (self.last_emit + self.timeouts.sse_keepalive).min(self.clock.next_deadline());
            tokio::select! {
                event = self.replies.next() => {
                    let Some(event) = event else {
                        self.finished = true;
                        return Some(AnswerEvent::Failed(GatewayError::upstream(
                            ErrorKind::Upstream,
                            Source::Center,
                            "the center's answer stopped before it was complete",
                        )));
                    };
                    if let ReplyEvent::Chunk(chunk) = &event
                        && let Some(span) = &chunk.traceparent
                        && !self.center_spans.contains(span)
                    {
                        self.center_spans.push(span.clone());
                    }
                    match self.answer.take(event) {
                        Step::Continue(None) => {}
                        Step::Continue(Some(bytes)) => {
                            self.clock.observe(Instant::now(), true).ok();
                            self.last_emit = Instant::now();
                            return Some(AnswerEvent::Stream(self.answer.open(bytes)));
                        }
                        Step::Done(bytes) => {
                            self.finished = true;
                            let bytes = if self.answer.stream { self.answer.open(bytes) } else { bytes };
                            return Some(AnswerEvent::Done(bytes));
                        }
                        Step::Fail(error) => {
                            self.finished = true;
                            return Some(AnswerEvent::Failed(error));
                        }
                    }
                }
                () = tokio::time::sleep_until(next_tick.into()) => {
                    let now = Instant::now();
                    if let Err(phase) = self.clock.check(now) {
                        self.finished = true;
                        self.cut(phase);
                        return Some(AnswerEvent::Failed(GatewayError::upstream(
                            ErrorKind::Timeout,
                            Source::Center,
                            phase.message(&self.timeouts),
                        )));
                    }
                    if self.answer.stream && self.last_emit + self.timeouts.sse_keepalive <= now {
                        self.last_emit = now;
                        let keepalive = self.answer.open(Bytes::from_static(sse::KEEP_ALIVE));
                        return Some(AnswerEvent::KeepAlive(keepalive));
                    }
                }
            }
        }
    }

    /// A timeout ended the answer: counted, and the center node told to stop.
    fn cut(&self, phase: Phase) {
        self.waiting()
            .metrics
            .upstream_errors
            .with_label_values(&["center", phase.as_str()])
            .inc();
        let reason = if phase == Phase::Total {
            CancelReason::DeadlineExceeded
        } else {
            CancelReason::Other
        };
        let (handoff, task_id) = (self.waiting().clone(), self.task_id.clone());
        tokio::spawn(async move { publish_cancel(&handoff, &task_id, reason).await });
    }

    fn waiting(&self) -> &Arc<Handoff> {
        &self._waiting.0
    }

    /// The complete answer as one chat completion (for the result cache), once [`AnswerEvent::Done`] came.
    pub fn take_completed(&mut self) -> Option<ChatCompletionResponse> {
        self.answer.completed.take()
    }

    /// Tokens the answer used (prompt + completion), when the center reported them.
    pub fn used_tokens(&self) -> Option<u64> {
        self.answer.used_tokens
    }

    /// Tells the center node to stop (the client went away).
    pub async fn cancel(&self, reason: CancelReason) {
        publish_cancel(self.waiting(), &self.task_id, reason).await;
    }
}

async fn publish_cancel(handoff: &Handoff, task_id: &str, reason: CancelReason) {
    let record = CancelRecord::new(task_id, reason, r1_queue::unix_ms());
    if let Err(e) = handoff.sink.cancel(&record).await {
        tracing::warn!(%task_id, error = %e, "cancel record not published (the task's deadline still bounds it)");
    }
}

/// Counts a waiting request in [`Handoff::in_flight`] for as long as it lives.
#[derive(Debug)]
struct Waiting(Arc<Handoff>);

impl Waiting {
    fn enter(handoff: Arc<Handoff>) -> Self {
        handoff.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(handoff)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map_or_else(|_| "gateway".to_owned(), |h| h.trim().to_owned());
    format!("{host}-{}", std::process::id())
}

/// Connects the hand-off and keeps its reader (Kafka) or its in-process worker (embedded) running;
/// with Kafka, it also creates the task topics of model versions as they appear in the configuration
/// (watched through `config`).
#[derive(Debug)]
pub struct HandoffService {
    /// The hand-off.
    pub handoff: Arc<Handoff>,
    /// The configuration as it is reloaded.
    pub config: watch::Receiver<Arc<GatewayConfig>>,
}

#[async_trait]
impl BackgroundService for HandoffService {
    async fn start(&self, shutdown: ShutdownWatch) {
        match &self.handoff.transport {
            Transport::Kafka { section, settings } => {
                run_kafka(&self.handoff, section, settings, self.config.clone(), shutdown).await;
            }
            #[cfg(feature = "embedded")]
            Transport::Embedded(center) => {
                self.handoff.ready.store(true, Ordering::Relaxed);
                center.run(shutdown).await;
            }
        }
    }
}

/// How long the start-up check waits for the brokers' metadata.
pub const BROKER_CHECK: Duration = Duration::from_secs(10);

/// The operator's line for a failed broker check: the security key to look at and the brokers' answer.
fn describe_check(e: &BrokerCheckError, k: &CenterKafkaSection) -> String {
    e.describe(crate::config::SECURITY_KEY, &k.security, &k.brokers)
}

/// The model version of a conversation (by its key): a stable bucket of the versions' total
/// weight, so a conversation stays on one version while the weights stay the same.
fn pick_version<'a>(versions: &'a [CenterVersion], key: &str) -> Option<&'a str> {
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
