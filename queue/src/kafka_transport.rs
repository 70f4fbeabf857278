//! The Kafka transport (librdkafka through `rdkafka`).
//!
//! Gateway: [`KafkaTaskSink`] produces tasks and cancel records (idempotent, `acks=all`, a short
//! `message.timeout.ms` so a broker outage is a fast 503, never a hung request; a fatal producer
//! error rebuilds the producer and readiness is false meanwhile); [`spawn_results_reader`] reads the
//! instance's own partition of the results topic into a [`ResultRouter`].
//!
//! Center: [`KafkaTaskSource`] consumes the task topics in a consumer group. A pump task polls all
//! the time (so a generation that runs for many minutes never trips `max.poll.interval.ms`), hands
//! tasks out interactive first, and pauses fetching while its local queue is full. Offsets are
//! stored only when [`TaskSource::finish`] says a task is done, through an [`OffsetTracker`], so an
//! earlier task still running is never skipped. [`KafkaResultSink`] produces result chunks to the
//! partition named by each task's `reply_to`, and dead letters.
//!
//! Both: [`check_brokers`] asks the brokers for metadata within a bounded time at start-up, because a
//! librdkafka client is created without contacting anyone: a wrong password, an untrusted CA or a
//! plaintext client on a TLS listener would otherwise only show as retries in the log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use r1_proto::{CancelRecord, ResultChunk, TaskClass, TaskEnvelope};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{broadcast, mpsc};

use crate::kafka::{KafkaSettings, SecuritySection};
use crate::offsets::OffsetTracker;
use crate::reply::ResultRouter;
use crate::topics::{ReplyTo, Topics};
use crate::transport::{Assignment, ClassQueues, Delivery, ResultSink, SendError, TaskSink, TaskSource};

/// Creates the topics that do not exist yet (an existing topic is left as it is), with the brokers'
/// `default.replication.factor`: a production cluster's three replicas, one on a single test broker.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &Topics,
    task_partitions: i32,
    result_partitions: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = settings.producer().create()?;
    let wanted = [
        (&topics.interactive, task_partitions),
        (&topics.batch, task_partitions),
        (&topics.results, result_partitions),
        (&topics.cancel, 1),
        (&topics.dlq, 1),
    ];
    let new: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, partitions)| NewTopic::new(name.as_str(), *partitions, BROKER_DEFAULT_REPLICATION))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| tracing::error!(%topic, "create topic"));
            }
        }
    }
    Ok(())
}

/// A replication factor of -1 asks the brokers for their default (CreateTopics v4, Kafka 2.4 and later).
/// A fixed 1 here made every topic the services created a single copy even on a cluster of three, so a
/// broker's death took its partitions, and the tasks and answers on them, away until it came back.
const BROKER_DEFAULT_REPLICATION: TopicReplication<'static> = TopicReplication::Fixed(-1);

/// Why [`check_brokers`] found the brokers unusable.
#[derive(Debug, thiserror::Error)]
pub enum BrokerCheckError {
    /// The brokers answered, and refused this client: a configuration problem that retrying does not fix.
    #[error("{answer}")]
    Refused {
        /// What was refused.
        refusal: Refusal,
        /// librdkafka's account of the broker's answer (`SASL authentication error: …`).
        answer: String,
    },
    /// No metadata within the limit: the brokers are down, unreachable or still starting (may pass).
    #[error("no answer within {within:?}: {answer}")]
    Unreachable {
        /// The limit.
        within: Duration,
        /// The last error librdkafka reported.
        answer: String,
    },
}

/// What part of the client's security the brokers refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The SASL login (mechanism, user name or password).
    Authentication,
    /// The TLS handshake: the broker's certificate is not trusted (CA file, host name), or the
    /// broker refused ours.
    Certificate,
    /// The listener speaks another protocol than `security.protocol` (plaintext against TLS, TLS
    /// against plaintext).
    Protocol,
    /// librdkafka refused the settings before contacting anyone (a file it could not load).
    Client,
}

impl BrokerCheckError {
    /// Whether retrying cannot help (the settings must change).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// One line for the operator: the key of the `security` table at `key` (`kafka.security`) to look at,
    /// what happened, and the broker's answer.
    pub fn describe(&self, key: &str, security: &SecuritySection, brokers: &str) -> String {
        match self {
            Self::Refused {
                refusal: Refusal::Authentication,
                answer,
            } => {
                let mechanism = security.sasl.as_ref().map_or("?", |s| s.mechanism.as_str());
                let user = security.username().map(|u| format!(" as `{u}`")).unwrap_or_default();
                format!(
                    "{key}.sasl: the brokers at {brokers} refused the SASL login ({mechanism}{user}; check the mechanism, user name and password): {answer}"
                )
            }
            Self::Refused {
                refusal: Refusal::Certificate,
                answer,
            } => format!(
                "{key}.ca_file: the TLS handshake with the brokers at {brokers} failed (is their certificate signed by a CA in {key}.ca_file, or the system's trust store, and does it name the host?): {answer}"
            ),
            Self::Refused {
                refusal: Refusal::Protocol,
                answer,
            } => {
                let expected = if security.protocol.tls() {
                    "plaintext (protocol = \"plaintext\" or \"sasl_plaintext\")"
                } else {
                    "TLS (protocol = \"ssl\" or \"sasl_ssl\")"
                };
                format!(
                    "{key}.protocol: the brokers at {brokers} do not speak \"{}\" on that port; it seems to expect {expected}: {answer}",
                    security.protocol.as_str()
                )
            }
            Self::Refused {
                refusal: Refusal::Client,
                answer,
            } => format!("{key}: librdkafka refused the settings: {answer}"),
            Self::Unreachable { within, answer } => {
                format!("no metadata from the brokers at {brokers} within {within:?}: {answer}")
            }
        }
    }
}

/// One thing librdkafka reported: an error event's code (none for a log line), and its text.
type Report = (Option<RDKafkaErrorCode>, String);

/// Collects what librdkafka reports while [`check_brokers`] waits.
#[derive(Debug, Default, Clone)]
struct Reports(Arc<Mutex<Vec<Report>>>);

impl ClientContext for Reports {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut reports) = self.0.lock() {
            reports.push((error.rdkafka_error_code(), reason.to_owned()));
        }
    }

    /// Connection failures come as `FAIL` log lines (error events for them are not always raised).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
        if fac == "FAIL"
            && let Ok(mut reports) = self.0.lock()
        {
            reports.push((None, log_message.to_owned()));
        }
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl Reports {
    /// The first refusal reported, or else whether every broker is down (and the last report). `tls`:
    /// whether the client speaks TLS.
    fn verdict(&self, tls: bool) -> (Option<(Refusal, String)>, bool, Option<String>) {
        let Ok(reports) = self.0.lock() else {
            return (None, false, None);
        };
        let refusal = reports.iter().find_map(|(code, reason)| {
            let refusal = match code {
                Some(RDKafkaErrorCode::Authentication) => Refusal::Authentication,
                // librdkafka's own hints for a listener of another protocol.
                _ if reason.contains("security.protocol") || reason.contains("PLAINTEXT broker listener") => {
                    Refusal::Protocol
                }
                // A plaintext client whose first request (ApiVersion) the broker answers by closing the
                // connection: a TLS listener (librdkafka says so in its first report only).
                _ if !tls && reason.contains("Disconnected") && reason.contains("APIVERSION_QUERY") => {
                    Refusal::Protocol
                }
                Some(RDKafkaErrorCode::SSL) => Refusal::Certificate,
                _ if reason.contains("SSL handshake failed") => Refusal::Certificate,
                _ => return None,
            };
            Some((refusal, reason.clone()))
        });
        let all_down = reports
            .iter()
            .any(|(code, _)| *code == Some(RDKafkaErrorCode::AllBrokersDown));
        let last = reports
            .iter()
            .rev()
            .find(|(code, _)| *code != Some(RDKafkaErrorCode::AllBrokersDown))
            .map(|(_, reason)| reason.clone());
        (refusal, all_down, last)
    }
}

/// Asks the brokers for metadata with `settings`, for at most `within`: `Ok` once they answer,
/// [`BrokerCheckError::Refused`] as soon as librdkafka reports a refused login or TLS handshake,
/// [`BrokerCheckError::Unreachable`] when every broker is down or nothing answered in time. Blocking
/// (call it from `spawn_blocking` in async code).
pub fn check_brokers(settings: &KafkaSettings, within: Duration) -> Result<(), BrokerCheckError> {
    let reports = Reports::default();
    let mut config = settings.client();
    // One connection attempt per broker and a report per failure, not a silent backoff; and the FAIL log
    // lines at every level: librdkafka logs a connection the broker closed during the first request (a
    // plaintext client on a TLS listener) at debug level, and rdkafka would otherwise take the level
    // from the process's logger.
    config.set("reconnect.backoff.ms", "100");
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    let client: BaseProducer<Reports> =
        config
            .create_with_context(reports.clone())
            .map_err(|e| BrokerCheckError::Refused {
                refusal: Refusal::Client,
                answer: e.to_string(),
            })?;
    let deadline = std::time::Instant::now() + within;
    let tls = matches!(settings.security.get("security.protocol"), Some("ssl" | "sasl_ssl"));
    let mut down_since = None;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let last_error = match client
            .client()
            .fetch_metadata(None, left.min(Duration::from_millis(250)))
        {
            Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
            Ok(_) => "the metadata listed no broker".to_owned(),
            Err(e) => e.to_string(),
        };
        client.poll(Duration::ZERO);
        let (refusal, all_down, last) = reports.verdict(tls);
        if let Some((refusal, answer)) = refusal {
            return Err(BrokerCheckError::Refused { refusal, answer });
        }
        if all_down && down_since.is_none() {
            down_since = Some(std::time::Instant::now());
        }
        // Every broker down: the reason of the failure (a FAIL log line) may still be on its way, so
        // it gets a moment to arrive before the brokers count as unreachable.
        if down_since.is_some_and(|t| t.elapsed() >= REASON_GRACE) || left.is_zero() {
            return Err(BrokerCheckError::Unreachable {
                within,
                answer: last.unwrap_or(last_error),
            });
        }
    }
}

/// How long [`check_brokers`] waits, once librdkafka says every broker is down, for the reason.
const REASON_GRACE: Duration = Duration::from_millis(1000);

/// What the client library told us about the producer's health.
#[derive(Debug, Default)]
struct Health {
    fatal: AtomicBool,
    brokers_down: AtomicBool,
}

/// Notices fatal producer errors and brokers going away.
#[derive(Debug, Default, Clone)]
struct WatchContext(Arc<Health>);

impl std::ops::Deref for WatchContext {
    type Target = Health;
    fn deref(&self) -> &Health {
        &self.0
    }
}

impl ClientContext for WatchContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Fatal) => {
                tracing::error!(%error, reason, "fatal Kafka producer error: the producer will be rebuilt");
                self.fatal.store(true, Ordering::Relaxed);
            }
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                tracing::warn!(reason, "all Kafka brokers are down");
                self.brokers_down.store(true, Ordering::Relaxed);
            }
            _ => tracing::warn!(%error, reason, "Kafka client error"),
        }
    }
}

/// A producer and what its context noticed.
struct WatchedProducer {
    producer: FutureProducer<WatchContext>,
    health: Arc<Health>,
}

impl WatchedProducer {
    fn context(&self) -> &Health {
        &self.health
    }
}

impl std::ops::Deref for WatchedProducer {
    type Target = FutureProducer<WatchContext>;
    fn deref(&self) -> &Self::Target {
        &self.producer
    }
}

fn producer(settings: &KafkaSettings, message_timeout: Duration) -> Result<WatchedProducer, KafkaError> {
    let mut config = settings.producer();
    config.set("message.timeout.ms", message_timeout.as_millis().to_string());
    // Tasks and result chunks are latency-bound (a client waits): send at once; under load,
    // messages still batch while earlier requests are in flight.
    config.set("linger.ms", "0");
    let context = WatchContext::default();
    let health = context.0.clone();
    Ok(WatchedProducer {
        producer: config.create_with_context(context)?,
        health,
    })
}

/// The gateway's producer of tasks and cancel records.
pub struct KafkaTaskSink {
    settings: KafkaSettings,
    topics: Topics,
    send_timeout: Duration,
    producer: Mutex<Arc<WatchedProducer>>,
    /// Unix ms until which submissions fail at once (after a timeout: the brokers are unreachable).
    open_until: AtomicU64,
    /// Producers rebuilt after a fatal error.
    pub rebuilds: AtomicU64,
}

impl std::fmt::Debug for KafkaTaskSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTaskSink")
            .field("brokers", &self.settings.brokers)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// After a send timed out, how long further sends fail at once instead of waiting again.
const FAIL_FAST: Duration = Duration::from_secs(2);

impl KafkaTaskSink {
    /// A sink whose sends are acknowledged within `send_timeout` or fail.
    pub fn new(settings: KafkaSettings, topics: Topics, send_timeout: Duration) -> Result<Self, KafkaError> {
        let producer = Arc::new(producer(&settings, send_timeout)?);
        Ok(Self {
            settings,
            topics,
            send_timeout,
            producer: Mutex::new(producer),
            open_until: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
        })
    }

    /// The producer, rebuilt first if the current one hit a fatal error.
    fn producer(&self) -> Result<Arc<WatchedProducer>, SendError> {
        let mut current = self
            .producer
            .lock()
            .map_err(|_| SendError::Fatal("producer lock poisoned".into()))?;
        if current.context().fatal.load(Ordering::Relaxed) {
            let fresh = producer(&self.settings, self.send_timeout).map_err(|e| SendError::Fatal(e.to_string()))?;
            *current = Arc::new(fresh);
            self.rebuilds.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("Kafka producer rebuilt after a fatal error");
        }
        Ok(current.clone())
    }

    async fn produce(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), SendError> {
        if crate::unix_ms() < self.open_until.load(Ordering::Relaxed) {
            return Err(SendError::Timeout(self.send_timeout));
        }
        let producer = self.producer()?;
        // The client library saw every broker go away: refuse at once for a while; the first send
        // after that window probes whether they are back.
        if producer.context().brokers_down.swap(false, Ordering::Relaxed) {
            self.trip();
            return Err(SendError::Timeout(self.send_timeout));
        }
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(traceparent) = traceparent {
            record = record.headers(trace_header(traceparent));
        }
        // librdkafka fails the message after `message.timeout.ms`; the outer timeout is a backstop.
        let sent = tokio::time::timeout(
            self.send_timeout + Duration::from_millis(500),
            producer.send(record, Timeout::After(self.send_timeout)),
        )
        .await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => {
                let timed_out = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::QueueFull)
                );
                if timed_out {
                    self.trip();
                    return Err(SendError::Timeout(self.send_timeout));
                }
                if producer.context().fatal.load(Ordering::Relaxed) {
                    return Err(SendError::Fatal(error.to_string()));
                }
                Err(SendError::Other(error.to_string()))
            }
            Err(_) => {
                self.trip();
                Err(SendError::Timeout(self.send_timeout))
            }
        }
    }

    fn trip(&self) {
        let until = crate::unix_ms() + u64::try_from(FAIL_FAST.as_millis()).unwrap_or(2000);
        self.open_until.store(until, Ordering::Relaxed);
    }
}

#[async_trait]
impl TaskSink for KafkaTaskSink {
    async fn submit(
        &self,
        class: TaskClass,
        version: Option<&str>,
        key: &str,
        task: &TaskEnvelope,
    ) -> Result<(), SendError> {
        let base = self.topics.tasks(class);
        let trace = task.traceparent.as_deref();
        match version {
            None => self.produce(base, key, &task.encode(), trace).await,
            Some(v) => self.produce(&format!("{base}.{v}"), key, &task.encode(), trace).await,
        }
    }

    async fn cancel(&self, record: &CancelRecord) -> Result<(), SendError> {
        self.produce(&self.topics.cancel, &record.task_id, &record.encode(), None)
            .await
    }

    fn is_ready(&self) -> bool {
        let producer = self.producer.lock().ok().map(|p| p.clone());
        producer.is_some_and(|p| !p.context().fatal.load(Ordering::Relaxed))
            && crate::unix_ms() >= self.open_until.load(Ordering::Relaxed)
    }
}

/// A consumer reading whole partitions it was assigned (no group membership, nothing committed),
/// starting at what is produced from now on.
fn tail_consumer(settings: &KafkaSettings, topic: &str, partitions: &[i32]) -> Result<StreamConsumer, KafkaError> {
    let mut config = settings.consumer(&format!("{}-tail-{}", settings.client_id, std::process::id()));
    config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    for &p in partitions {
        // The high watermark now: everything produced after this call is read, nothing before.
        let high = watermark(&consumer, topic, p)?;
        assignment.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// The high watermark of a partition, retried while a just-created topic has no leader yet.
fn watermark(consumer: &StreamConsumer, topic: &str, partition: i32) -> Result<i64, KafkaError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok((_, high)) => return Ok(high),
            Err(e)
                if std::time::Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::NotLeaderForPartition
                                | RDKafkaErrorCode::LeaderNotAvailable
                                | RDKafkaErrorCode::UnknownTopicOrPartition
                                | RDKafkaErrorCode::UnknownPartition
                        )
                    ) =>
            {
                tracing::info!(topic, partition, error = %e, "partition not ready yet; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A consumer group seen from outside: how the gateway knows whether r1-center nodes are taking
/// tasks. It never joins the group it looks at.
pub struct GroupObserver {
    consumer: rdkafka::consumer::BaseConsumer,
}

impl std::fmt::Debug for GroupObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupObserver").finish_non_exhaustive()
    }
}

/// What the group coordinator says about a group ([`GroupObserver::describe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty` or `Dead` (never existed).
    pub state: String,
    /// Members now, rebalancing ones included.
    pub members: usize,
    /// Partitions the members' last assignments give them, all together.
    pub partitions: usize,
}

impl GroupView {
    /// Whether members take tasks: they hold partitions (kept through a cooperative rebalance), or the
    /// group is stable with members. A group forming for the first time holds nothing yet.
    pub fn is_taking(&self) -> bool {
        self.members > 0 && (self.partitions > 0 || self.state == "Stable")
    }
}

/// The partitions in a consumer's assignment as the group coordinator stores it (Kafka's
/// `ConsumerProtocolAssignment`: version, then per topic its name and partitions); `None` if the bytes
/// are not one.
pub fn assigned_partitions(assignment: &[u8]) -> Option<usize> {
    fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = bytes.split_first_chunk::<N>()?;
        *bytes = rest;
        Some(*head)
    }
    let mut bytes = assignment;
    if bytes.is_empty() {
        return Some(0);
    }
    let _version = i16::from_be_bytes(take::<2>(&mut bytes)?);
    let topics = i32::from_be_bytes(take::<4>(&mut bytes)?);
    let mut partitions = 0usize;
    for _ in 0..topics.max(0) {
        let name = usize::try_from(i16::from_be_bytes(take::<2>(&mut bytes)?)).ok()?;
        bytes = bytes.get(name..)?;
        let count = usize::try_from(i32::from_be_bytes(take::<4>(&mut bytes)?)).ok()?;
        bytes = bytes.get(count.checked_mul(4)?..)?;
        partitions = partitions.checked_add(count)?;
    }
    Some(partitions)
}

impl GroupObserver {
    /// An observer with the client settings (security included) of `settings`.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let consumer = settings
            .consumer(&format!("{}-observer", settings.client_id))
            .create()?;
        // The brokers' ids first: a group listing on a client that knows none yet waits a whole second
        // for them (librdkafka's broker-state wait), and the gateway's first look at the center nodes
        // would hold up the first center requests that long.
        if let Err(e) = Consumer::fetch_metadata(&consumer, None, Duration::from_secs(5)) {
            tracing::debug!(error = %e, "group observer: no metadata yet");
        }
        Ok(Self { consumer })
    }

    /// Asks the group's coordinator about `group` (blocking, at most `timeout`).
    pub fn describe(&self, group: &str, timeout: Duration) -> Result<GroupView, KafkaError> {
        let list = self.consumer.fetch_group_list(Some(group), timeout)?;
        let found = list.groups().iter().find(|g| g.name() == group);
        Ok(found.map_or_else(
            || GroupView {
                state: "Dead".to_owned(),
                members: 0,
                partitions: 0,
            },
            |g| GroupView {
                state: g.state().to_owned(),
                members: g.members().len(),
                partitions: g
                    .members()
                    .iter()
                    .filter_map(|m| m.assignment().and_then(assigned_partitions))
                    .sum(),
            },
        ))
    }
}

/// Reads the results addressed to `reply_to` (its partition) into `router`, until the returned
/// handle is aborted. Fails if the partition does not exist.
pub fn spawn_results_reader(
    settings: &KafkaSettings,
    topics: &Topics,
    reply_to: &ReplyTo,
    router: Arc<ResultRouter>,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let consumer = tail_consumer(settings, &topics.results, &[reply_to.partition])?;
    Ok(tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(message) => match message.payload().map(ResultChunk::decode) {
                    Some(Ok(mut chunk)) => {
                        chunk.traceparent = traceparent(&message);
                        router.dispatch(chunk);
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, offset = message.offset(), "unreadable result chunk"),
                    None => {}
                },
                Err(e) => {
                    tracing::warn!(error = %e, "results reader");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }))
}

/// The record header that carries a task's or a result chunk's W3C trace context.
const TRACEPARENT: &str = "traceparent";

fn trace_header(traceparent: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: TRACEPARENT,
        value: Some(traceparent),
    })
}

/// The record's `traceparent` header, if it carries one (its value checked when a span is made of it).
fn traceparent(message: &impl Message) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == TRACEPARENT)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// Keeps the offset tracker in step with the group's assignment, and the consumer lag from
/// librdkafka's statistics.
#[derive(Debug)]
struct GroupContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
    lag: Arc<std::sync::atomic::AtomicI64>,
    membership: Arc<Membership>,
}

/// What the group has given this member: nothing known until its first assignment.
#[derive(Debug, Default)]
struct Membership {
    joined: AtomicBool,
    held: std::sync::atomic::AtomicUsize,
}

impl Membership {
    fn assignment(&self) -> Assignment {
        if self.joined.load(Ordering::Acquire) {
            Assignment::Holds(self.held.load(Ordering::Relaxed))
        } else {
            Assignment::Joining
        }
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        // Messages on the brokers not yet finished here (high watermark - stored offset), over the
        // partitions this member owns; -1 marks partitions with nothing known yet.
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|(p, _)| **p >= 0)
            .map(|(_, p)| p.consumer_lag_stored.max(0))
            .sum();
        self.lag.store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let (Ok(mut tracker), Ok(mut revoked)) = (self.tracker.lock(), self.revoked.lock()) else {
                return;
            };
            for e in list.elements() {
                tracing::info!(topic = e.topic(), partition = e.partition(), "partition revoked");
                tracker.revoke(e.topic(), e.partition());
                revoked.push((e.topic().to_owned(), e.partition()));
            }
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Cooperative rebalancing hands out and takes back increments; the first assignment (empty
        // too, when the group has more members than partitions) makes the member a full one.
        match rebalance {
            Rebalance::Assign(list) => {
                let held = self.membership.held.fetch_add(list.count(), Ordering::Relaxed) + list.count();
                let first = !self.membership.joined.swap(true, Ordering::AcqRel);
                tracing::info!(added = list.count(), held, first, "partitions assigned");
            }
            Rebalance::Revoke(list) => {
                let gone = list.count();
                let _ = self
                    .membership
                    .held
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| Some(h.saturating_sub(gone)));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "consumer group rebalance failed"),
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// The center node's task consumer.
pub struct KafkaTaskSource {
    consumer: Arc<GroupConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    lag: Arc<std::sync::atomic::AtomicI64>,
    membership: Arc<Membership>,
    receivers: ClassQueues,
    cancels: broadcast::Sender<CancelRecord>,
    pump: tokio::task::JoinHandle<()>,
    cancel_pump: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for KafkaTaskSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTaskSource").finish_non_exhaustive()
    }
}

impl Drop for KafkaTaskSource {
    fn drop(&mut self) {
        self.pump.abort();
        self.cancel_pump.abort();
    }
}

/// Tasks held locally (fetched, not yet taken by a worker) before fetching pauses. Large on
/// purpose: every pause/resume restarts the partitions' fetches, and with a small queue that
/// happened every few messages and capped a node at ~300 tasks/s (measured); the node's
/// concurrency is bounded by its in-flight permits, this only bounds memory.
const LOCAL_QUEUE: usize = 1024;

impl KafkaTaskSource {
    /// Joins `group` on the task topics of `topics` and starts polling.
    pub fn new(settings: &KafkaSettings, group: &str, topics: &Topics) -> Result<Self, KafkaError> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let lag = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let membership = Arc::new(Membership::default());
        let context = GroupContext {
            tracker: tracker.clone(),
            revoked: revoked.clone(),
            lag: lag.clone(),
            membership: membership.clone(),
        };
        let mut config = settings.consumer(group);
        config.set("statistics.interval.ms", "5000");
        let consumer: GroupConsumer = config.create_with_context(context)?;
        consumer.subscribe(&[topics.interactive.as_str(), topics.batch.as_str()])?;
        let consumer = Arc::new(consumer);
        let (itx, irx) = mpsc::channel(1);
        let (btx, brx) = mpsc::channel(1);
        let pump = tokio::spawn(pump(
            consumer.clone(),
            tracker.clone(),
            revoked,
            topics.interactive.clone(),
            itx,
            btx,
        ));
        let (cancels, _) = broadcast::channel(4096);
        let cancel_consumer = tail_consumer(settings, &topics.cancel, &[0])?;
        let cancel_pump = tokio::spawn(cancel_pump(cancel_consumer, cancels.clone()));
        Ok(Self {
            consumer,
            tracker,
            lag,
            membership,
            receivers: ClassQueues::new(irx, brx),
            cancels,
            pump,
            cancel_pump,
        })
    }
}

async fn cancel_pump(consumer: StreamConsumer, cancels: broadcast::Sender<CancelRecord>) {
    loop {
        match consumer.recv().await {
            Ok(m) => {
                if let Some(Ok(record)) = m.payload().map(CancelRecord::decode) {
                    let _ = cancels.send(record);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cancel reader");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn delivery(message: &rdkafka::message::BorrowedMessage<'_>, interactive_topic: &str) -> Delivery {
    let raw = message.payload().unwrap_or_default().to_vec();
    let class = if message.topic() == interactive_topic {
        TaskClass::Interactive
    } else {
        TaskClass::Batch
    };
    Delivery {
        task: TaskEnvelope::decode(&raw).map(|mut task| {
            task.traceparent = traceparent(message);
            task
        }),
        raw,
        key: message.key().map(<[u8]>::to_vec),
        class,
        position: (message.topic().to_owned(), message.partition(), message.offset()),
    }
}

/// Polls without pause (keeping the group membership alive through long generations), queues
/// tasks locally by class, and pauses fetching while the local queue is full.
async fn pump(
    consumer: Arc<GroupConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
    interactive_topic: String,
    interactive: mpsc::Sender<Delivery>,
    batch: mpsc::Sender<Delivery>,
) {
    let mut held = Held::default();
    let mut paused = false;
    loop {
        held.forget_revoked(&revoked);
        let local = &mut held.queues;
        let held_count = local[0].len() + local[1].len();
        if held_count >= LOCAL_QUEUE && !paused {
            paused = set_paused(&consumer, true);
        } else if held_count < LOCAL_QUEUE / 2 && paused {
            paused = !set_paused(&consumer, false);
        }
        tokio::select! {
            biased;
            permit = interactive.reserve(), if !local[0].is_empty() => {
                let Ok(permit) = permit else { return };
                if let Some(d) = local[0].pop_front() { permit.send(d) }
            }
            permit = batch.reserve(), if !local[1].is_empty() && local[0].is_empty() => {
                let Ok(permit) = permit else { return };
                if let Some(d) = local[1].pop_front() { permit.send(d) }
            }
            message = consumer.recv() => match message {
                Ok(message) => {
                    let d = delivery(&message, &interactive_topic);
                    if let Ok(mut tracker) = tracker.lock() {
                        tracker.start(&d.position.0, d.position.1, d.position.2);
                    }
                    held.received(d, &revoked);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "task consumer");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
}

/// Tasks fetched and not yet handed to a worker: interactive, batch.
#[derive(Default)]
struct Held {
    queues: [VecDeque<Delivery>; 2],
}

impl Held {
    /// Forgets what was fetched from the partitions revoked since the last call: their new owner runs it.
    fn forget_revoked(&mut self, revoked: &Mutex<Vec<(String, i32)>>) {
        if let Ok(mut gone) = revoked.lock()
            && !gone.is_empty()
        {
            for queue in &mut self.queues {
                queue.retain(|d| !gone.iter().any(|(t, p)| *t == d.position.0 && *p == d.position.1));
            }
            gone.clear();
        }
    }

    /// A message the consumer just returned. The revocations its poll ran are applied first: they concern
    /// what was fetched before. The message itself comes from the assignment as it is now (librdkafka
    /// drops what it had fetched for a partition it gives up), even when that partition was revoked and
    /// assigned again inside the same poll — as when the group coordinator's broker dies and the member
    /// rejoins. Forgetting it then (as the revocation was applied after it) lost the task: never run, its
    /// client never answered, and the partition's offset never stored past it.
    fn received(&mut self, delivery: Delivery, revoked: &Mutex<Vec<(String, i32)>>) {
        self.forget_revoked(revoked);
        self.queues[usize::from(delivery.class == TaskClass::Batch)].push_back(delivery);
    }
}

fn set_paused(consumer: &GroupConsumer, pause: bool) -> bool {
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, pause, "pausing/resuming the task consumer");
            false
        }
    }
}

#[async_trait]
impl TaskSource for KafkaTaskSource {
    async fn next(&self) -> Option<Delivery> {
        self.receivers.next().await
    }

    fn finish(&self, position: &(String, i32, i64)) {
        let storable = self
            .tracker
            .lock()
            .ok()
            .and_then(|mut t| t.finish(&position.0, position.1, position.2));
        if let Some(offset) = storable
            && let Err(e) = self.consumer.store_offset(&position.0, position.1, offset)
        {
            // Revoked meanwhile: the new owner redelivers it and the dedupe answers.
            tracing::info!(error = %e, ?position, "offset not stored");
        }
    }

    fn cancels(&self) -> broadcast::Receiver<CancelRecord> {
        self.cancels.subscribe()
    }

    fn lag(&self) -> Option<i64> {
        Some(self.lag.load(Ordering::Relaxed))
    }

    fn assignment(&self) -> Assignment {
        self.membership.assignment()
    }
}

/// The center node's producer of result chunks and dead letters.
pub struct KafkaResultSink {
    producer: WatchedProducer,
    topics: Topics,
}

impl std::fmt::Debug for KafkaResultSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaResultSink")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaResultSink {
    /// A result producer; `message_timeout` bounds how long a chunk may wait for the brokers.
    pub fn new(settings: &KafkaSettings, topics: Topics, message_timeout: Duration) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer(settings, message_timeout)?,
            topics,
        })
    }

    fn record<'a>(
        &'a self,
        reply_to: &str,
        key: &'a str,
        payload: &'a [u8],
        traceparent: Option<&str>,
    ) -> Result<FutureRecord<'a, str, [u8]>, SendError> {
        let to = ReplyTo::parse(reply_to).ok_or_else(|| SendError::Other(format!("bad reply_to `{reply_to}`")))?;
        let record = FutureRecord::to(&self.topics.results)
            .partition(to.partition)
            .key(key)
            .payload(payload);
        Ok(match traceparent {
            Some(traceparent) => record.headers(trace_header(traceparent)),
            None => record,
        })
    }
}

#[async_trait]
impl ResultSink for KafkaResultSink {
    fn send(&self, reply_to: &str, chunk: &ResultChunk) -> Result<(), SendError> {
        let payload = chunk.encode();
        let record = self.record(reply_to, &chunk.task_id, &payload, chunk.traceparent.as_deref())?;
        match self.producer.send_result(record) {
            Ok(_delivery) => Ok(()), // acknowledged (or failed) with the task's last chunk
            Err((e, _)) => Err(SendError::Other(e.to_string())),
        }
    }

    async fn deliver(&self, reply_to: &str, chunk: &ResultChunk, timeout: Duration) -> Result<(), SendError> {
        let payload = chunk.encode();
        let record = self.record(reply_to, &chunk.task_id, &payload, chunk.traceparent.as_deref())?;
        match tokio::time::timeout(timeout, self.producer.send(record, Timeout::After(timeout))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(SendError::Other(e.to_string())),
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, attempts: u32, error: &str) -> Result<(), SendError> {
        let (topic, partition, offset) = &delivery.position;
        let (partition, offset, attempts) = (partition.to_string(), offset.to_string(), attempts.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "r1-error",
                value: Some(error),
            })
            .insert(Header {
                key: "r1-attempts",
                value: Some(&attempts),
            })
            .insert(Header {
                key: "r1-source-topic",
                value: Some(topic),
            })
            .insert(Header {
                key: "r1-source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "r1-source-offset",
                value: Some(&offset),
            });
        let trace = delivery.task.as_ref().ok().and_then(|t| t.traceparent.as_deref());
        let headers = match trace {
            Some(traceparent) => headers.insert(Header {
                key: TRACEPARENT,
                value: Some(traceparent),
            }),
            None => headers,
        };
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topics.dlq)
            .payload(&delivery.raw)
            .headers(headers);
        if let Some(key) = &delivery.key {
            record = record.key(key);
        }
        match self
            .producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await
        {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(SendError::Other(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `ConsumerProtocolAssignment` as the Java and librdkafka clients write it.
    fn assignment(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend_from_slice(&i32::try_from(topics.len()).unwrap().to_be_bytes());
        for (name, partitions) in topics {
            out.extend_from_slice(&i16::try_from(name.len()).unwrap().to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&i32::try_from(partitions.len()).unwrap().to_be_bytes());
            for p in *partitions {
                out.extend_from_slice(&p.to_be_bytes());
            }
        }
        out.extend_from_slice(&(-1i32).to_be_bytes()); // no user data
        out
    }

    #[test]
    fn assignments_are_counted_across_topics_and_garbage_is_none() {
        let two_topics = assignment(1, &[("r1.tasks.interactive", &[0, 3, 7]), ("r1.tasks.batch", &[2])]);
        assert_eq!(assigned_partitions(&two_topics), Some(4));
        assert_eq!(assigned_partitions(&assignment(0, &[])), Some(0));
        assert_eq!(assigned_partitions(&[]), Some(0), "a member given nothing yet");
        assert_eq!(assigned_partitions(&two_topics[..9]), None, "cut short");
        let mut huge = assignment(1, &[("t", &[0])]);
        huge[9..13].copy_from_slice(&i32::MAX.to_be_bytes()); // a partition count the bytes do not hold
        assert_eq!(assigned_partitions(&huge), None);
    }

    fn delivery(partition: i32, offset: i64) -> Delivery {
        Delivery {
            task: TaskEnvelope::decode(b"-"),
            raw: Vec::new(),
            key: None,
            class: TaskClass::Interactive,
            position: ("tasks".to_owned(), partition, offset),
        }
    }

    #[test]
    fn a_task_fetched_after_its_partition_came_back_in_the_same_poll_is_kept() {
        let revoked = Mutex::new(Vec::new());
        let mut held = Held::default();
        held.received(delivery(0, 10), &revoked);
        held.received(delivery(1, 20), &revoked);
        // One poll: the member loses partition 0, gets it back, and returns the next task of it.
        revoked.lock().unwrap().push(("tasks".to_owned(), 0));
        held.received(delivery(0, 11), &revoked);
        held.forget_revoked(&revoked); // the pump's next turn
        let kept: Vec<_> = held.queues[0].iter().map(|d| d.position.2).collect();
        assert_eq!(
            kept,
            [20, 11],
            "what was fetched before the revocation goes; the task after it stays"
        );
    }
}
