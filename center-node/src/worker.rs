//! The task pipeline of a center node.
//!
//! For each delivery, in this order:
//! 1. unreadable envelope → dead-letter topic at once (it can never succeed);
//! 2. deadline passed → answered with a timeout error, not run;
//! 3. claim (see [`crate::claims`]): already answered → dropped (duplicate suppressed); running
//!    elsewhere → wait for it; run `max_attempts` times already → dead-letter topic, and the client
//!    gets an error;
//! 4. run: deltas go out as result chunks as they come; the last chunk (usage, or the error) is
//!    acknowledged by the brokers before the task counts as finished;
//! 5. a failure before any output is retried here (a new attempt) up to `max_attempts`; a failure
//!    after output ends the answer with an error (the client already has part of it);
//! 6. the offset is released to the tracker only then — at-least-once, and a crash anywhere before
//!    it redelivers the task to another node.
//!
//! A cancel record, the deadline, or a lost claim stop a running generation.
//!
//! Traced (`[telemetry]`), a task is one consumer span `task` — a child of the gateway's `handoff` span
//! named in the record's `traceparent` header, from the task's `created_at` to its end — holding
//! `queue_wait` (`created_at` → taken here) and, per run, a client span `backend` (its `traceparent` goes
//! to the model server) with `first_token` (request → first token) and `generation` (first token → the
//! end). Every result chunk names the `task` span in its own `traceparent` header.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use r1_proto::{CancelRecord, ResultChunk, ResultDelta, TaskEnvelope, TaskError, TaskErrorCode};
use r1_queue::state::{StateStore, TaskState, TaskStatus, update_task};
use r1_queue::transport::{Delivery, ResultSink, TaskSource};
use r1_telemetry::{KeyValue, Span, SpanKind, Telemetry, TraceParent};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::backend::{Backend, BackendError};
use crate::claims::{Claim, Claims};
use crate::config::{CenterConfig, NodeSection};
use crate::metrics::CenterMetrics;

/// How long a node waits for an unreachable claim store before running a task unclaimed.
pub const CLAIM_STORE_PATIENCE: Duration = Duration::from_secs(2);

/// How a node runs tasks.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// This node's name (logs); claims are held as `<node_id>/<random>`, unique per process run.
    pub node_id: String,
    /// Tasks run at once.
    pub max_in_flight: usize,
    /// Runs of one task before it goes to the dead-letter topic.
    pub max_attempts: u32,
    /// How long a claim lasts without a refresh (a dead node's tasks are free again after it).
    pub claim_ttl: Duration,
    /// How long "answered" is remembered, to suppress late duplicates.
    pub done_ttl: Duration,
    /// Limit for the brokers to acknowledge a task's last chunk.
    pub result_timeout: Duration,
    /// Pause before retrying a failed run.
    pub retry_backoff: Duration,
    /// On shutdown, how long running tasks may take to finish.
    pub shutdown_grace: Duration,
    /// How long an asynchronous task's state is kept.
    pub state_ttl: Duration,
    /// Webhooks may be on private networks (`node.webhook_private_networks`).
    pub webhook_private_networks: bool,
}

/// How long a node remembers that a task was answered, to drop late duplicate deliveries.
pub const DONE_TTL: Duration = Duration::from_secs(86_400);

impl From<&NodeSection> for WorkerSettings {
    /// The settings of `[node]` — for r1-center and for the gateway's embedded worker alike. Task state
    /// lives [`r1_queue::state::TASK_STATE_TTL`], the same as the gateway keeps it.
    fn from(node: &NodeSection) -> Self {
        Self {
            node_id: node.id.clone().unwrap_or_else(crate::config::default_node_id),
            max_in_flight: node.max_in_flight,
            max_attempts: node.max_attempts,
            claim_ttl: node.claim_ttl,
            done_ttl: DONE_TTL,
            result_timeout: node.result_timeout,
            retry_backoff: node.retry_backoff,
            shutdown_grace: node.shutdown_grace,
            state_ttl: r1_queue::state::TASK_STATE_TTL,
            webhook_private_networks: node.webhook_private_networks,
        }
    }
}

impl From<&CenterConfig> for WorkerSettings {
    fn from(config: &CenterConfig) -> Self {
        Self::from(&config.node)
    }
}

/// The pipeline.
#[derive(Debug)]
pub struct Worker {
    source: Arc<dyn TaskSource>,
    sink: Arc<dyn ResultSink>,
    claims: Arc<dyn Claims>,
    backend: Arc<dyn Backend>,
    settings: WorkerSettings,
    owner: String,
    metrics: CenterMetrics,
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    states: Option<Arc<dyn StateStore>>,
    webhooks: reqwest::Client,
    telemetry: Telemetry,
}

/// What one run produced (kept for asynchronous tasks' stored result).
#[derive(Debug, Default)]
struct Collected {
    content: String,
    reasoning: String,
    finish: Option<r1_proto::FinishReason>,
    usage: Option<r1_proto::Usage>,
}

enum RunError {
    /// Stopped by a cancel record after `sent` chunks.
    Cancelled { sent: u64 },
    /// Another node holds the task now.
    Lost,
    /// The answer was produced but the brokers never acknowledged it.
    Undelivered(String),
    /// The generation failed after `sent` chunks went out.
    Failed { error: BackendError, sent: u64 },
}

impl Worker {
    /// A worker over its parts.
    pub fn new(
        source: Arc<dyn TaskSource>,
        sink: Arc<dyn ResultSink>,
        claims: Arc<dyn Claims>,
        backend: Arc<dyn Backend>,
        settings: WorkerSettings,
        metrics: CenterMetrics,
    ) -> Self {
        Self {
            source,
            sink,
            claims,
            backend,
            owner: format!("{}/{}", settings.node_id, uuid::Uuid::new_v4().simple()),
            webhooks: crate::webhook::client(settings.webhook_private_networks),
            settings,
            metrics,
            running: Mutex::new(HashMap::new()),
            states: None,
            telemetry: Telemetry::off(),
        }
    }

    /// With tasks traced (`[telemetry]`).
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// With a store for asynchronous tasks' state (batch-class tasks): their result is written
    /// there, and their webhook called, when they end.
    pub fn with_states(mut self, states: Arc<dyn StateStore>) -> Self {
        self.states = Some(states);
        self
    }

    /// Takes tasks until `shutdown` resolves, then lets running ones finish within the grace period
    /// (what does not finish is not acknowledged, and is redelivered to another node).
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let permits = Arc::new(Semaphore::new(self.settings.max_in_flight.max(1)));
        let cancels = tokio::spawn(self.clone().listen_for_cancels());
        let lag = tokio::spawn({
            let worker = self.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    if let Some(lag) = worker.source.lag() {
                        worker.metrics.queue_lag.set(lag);
                    }
                }
            }
        });
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let delivery = tokio::select! {
                _ = &mut shutdown => break,
                d = self.source.next() => match d {
                    Some(d) => d,
                    None => break,
                },
            };
            let worker = self.clone();
            tokio::spawn(async move {
                worker.metrics.in_flight.inc();
                worker.process(delivery).await;
                worker.metrics.in_flight.dec();
                drop(permit);
            });
        }
        tracing::info!(grace = ?self.settings.shutdown_grace, "shutting down: no new tasks; waiting for running ones");
        let all = u32::try_from(self.settings.max_in_flight.max(1)).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.settings.shutdown_grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("grace period over: unfinished tasks will be redelivered to another node");
        }
        cancels.abort();
        lag.abort();
    }

    async fn listen_for_cancels(self: Arc<Self>) {
        let mut cancels = self.source.cancels();
        loop {
            match cancels.recv().await {
                Ok(CancelRecord { task_id, reason, .. }) => {
                    if let Some(stop) = self.running.lock().ok().and_then(|r| r.get(&task_id).cloned()) {
                        tracing::info!(%task_id, reason = reason.as_str(), "cancel record: stopping the task");
                        let _ = stop.send(true);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "cancel records missed (their tasks run to their deadline)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn process(&self, delivery: Delivery) {
        let task = match &delivery.task {
            Ok(task) => task.clone(),
            Err(e) => {
                tracing::error!(position = ?delivery.position, error = %e, "unreadable task: dead-lettered");
                self.dead_letter(&delivery, 0, &e.to_string()).await;
                return;
            }
        };
        let span = self.task_span(&task, &delivery);
        let outcome = self.process_task(&task, &delivery, span.as_ref()).await;
        if let Some(span) = span {
            span.set(KeyValue::new("r1.outcome", outcome));
            if !matches!(outcome, "ok" | "duplicate" | "cancelled") {
                span.fail(format!("the task ended {outcome}"));
            }
            span.end(SystemTime::now());
        }
    }

    /// The task's span, when traced: from its `created_at`, with its wait in the queue recorded.
    fn task_span(&self, task: &TaskEnvelope, delivery: &Delivery) -> Option<Span> {
        let parent = task.traceparent.as_deref().and_then(TraceParent::parse);
        let taken = SystemTime::now();
        // The gateway's clock wrote `created_at`: a skew never puts the wait's end before its start.
        let created = r1_telemetry::unix_ms(task.created_at).min(taken);
        let span = self.telemetry.start_span("task", SpanKind::Consumer, parent, created)?;
        let (topic, partition, offset) = &delivery.position;
        span.set_all(vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", topic.clone()),
            KeyValue::new("messaging.destination.partition.id", partition.to_string()),
            KeyValue::new("messaging.kafka.offset", *offset),
            KeyValue::new("messaging.message.id", task.task_id.clone()),
            KeyValue::new("r1.node", self.settings.node_id.clone()),
            KeyValue::new("r1.class", task.class.as_str()),
        ]);
        span.record("queue_wait", SpanKind::Internal, (created, taken), Vec::new());
        Some(span)
    }

    /// Runs the task to its end: what became of it (`ok`, `expired`, `duplicate`, `dead_lettered`,
    /// `cancelled`, `undelivered`, `lost`, `error`).
    async fn process_task(&self, task: &TaskEnvelope, delivery: &Delivery, span: Option<&Span>) -> &'static str {
        let trace = span.map(|s| s.traceparent().to_string());
        let trace = trace.as_deref();
        let now = r1_queue::unix_ms();
        if task.is_expired(now) {
            tracing::info!(task_id = %task.task_id, late_ms = now - task.deadline, "deadline passed before the task started");
            let error = TaskError::new(
                TaskErrorCode::Timeout,
                "the task's deadline passed before it started",
                false,
            );
            self.answer_error(task, 0, 0, error, trace).await;
            self.finish(task, delivery, "expired").await;
            return "expired";
        }
        let Some((mut attempt, claimed)) = self.claim(task).await else {
            self.source.finish(&delivery.position);
            return "duplicate";
        };
        self.record(task, TaskStatus::Running, None, None).await;
        loop {
            if attempt >= self.settings.max_attempts {
                let message = format!("the task failed {attempt} times");
                tracing::error!(task_id = %task.task_id, attempt, "dead-lettered after too many attempts");
                self.answer_error(
                    task,
                    attempt,
                    0,
                    TaskError::new(TaskErrorCode::Backend, &message, false),
                    trace,
                )
                .await;
                self.dead_letter(delivery, attempt, &message).await;
                let _ = self.claims.complete(&task.task_id, self.settings.done_ttl).await;
                return "dead_lettered";
            }
            if attempt > 0 {
                self.metrics.redeliveries.inc();
            }
            match self.run_once(task, attempt, claimed, span).await {
                Ok(collected) => {
                    let result = self.states.is_some().then(|| completion(task, collected));
                    self.record(task, TaskStatus::Succeeded, result, None).await;
                    self.finish(task, delivery, "ok").await;
                    return "ok";
                }
                Err(RunError::Cancelled { sent }) => {
                    // The client is gone (or asked to stop): say so, in case it still listens.
                    let error = TaskError::new(TaskErrorCode::Cancelled, "the task was cancelled", false);
                    self.answer_error(task, attempt, sent, error, trace).await;
                    self.finish(task, delivery, "cancelled").await;
                    return "cancelled";
                }
                Err(RunError::Undelivered(e)) => {
                    // Not acknowledged, not finished: the offset stays uncommitted and the claim
                    // lapses, so the task runs again after a restart or rebalance.
                    tracing::error!(task_id = %task.task_id, error = %e, "result not delivered; the task stays unacknowledged");
                    self.metrics.tasks.with_label_values(&["undelivered"]).inc();
                    return "undelivered";
                }
                Err(RunError::Lost) => {
                    tracing::warn!(task_id = %task.task_id, "claim lost: another node runs the task now");
                    self.source.finish(&delivery.position);
                    return "lost";
                }
                Err(RunError::Failed { error, sent }) => {
                    let retry = error.retryable && sent == 0 && !task.is_expired(r1_queue::unix_ms());
                    tracing::warn!(task_id = %task.task_id, attempt, retry, error = %error, "generation failed");
                    if !retry {
                        let code = if task.is_expired(r1_queue::unix_ms()) {
                            TaskErrorCode::Timeout
                        } else {
                            error.code
                        };
                        self.answer_error(
                            task,
                            attempt,
                            sent,
                            TaskError::new(code, error.message, false).with_upstream(error.upstream.map(|u| *u)),
                            trace,
                        )
                        .await;
                        self.finish(task, delivery, "error").await;
                        return "error";
                    }
                    tokio::time::sleep(self.settings.retry_backoff).await;
                    attempt = match self.claims.bump(&task.task_id).await {
                        Ok(n) => n,
                        Err(e) => {
                            self.metrics.claim_errors.inc();
                            tracing::warn!(error = %e, "counting the retry");
                            attempt + 1
                        }
                    };
                }
            }
        }
    }

    /// Claims the task: `(attempt, claimed)`, or `None` if it must not run here (answered already,
    /// or its deadline passed while another node held it). If the claim store stays unreachable
    /// for [`CLAIM_STORE_PATIENCE`], the task runs unclaimed (fail open: an outage of the store
    /// must not stop the center; the gateway still drops duplicate chunks).
    async fn claim(&self, task: &TaskEnvelope) -> Option<(u32, bool)> {
        let ttl = self.settings.claim_ttl;
        let mut unreachable_since: Option<Instant> = None;
        loop {
            match self.claims.claim(&task.task_id, &self.owner, ttl).await {
                Ok(Claim::Acquired { attempt }) => return Some((attempt, true)),
                Ok(Claim::Done) => {
                    tracing::info!(task_id = %task.task_id, "duplicate delivery of an answered task: dropped");
                    self.metrics.duplicates.inc();
                    return None;
                }
                Ok(Claim::Busy) => {
                    tracing::debug!(task_id = %task.task_id, "another node runs the task; waiting for it");
                }
                Err(e) => {
                    self.metrics.claim_errors.inc();
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= CLAIM_STORE_PATIENCE {
                        tracing::warn!(task_id = %task.task_id, error = %e, "claim store unreachable: running the task unclaimed");
                        return Some((0, false));
                    }
                    tracing::warn!(task_id = %task.task_id, error = %e, "cannot claim the task; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            }
            if task.is_expired(r1_queue::unix_ms()) {
                return None; // whoever holds it answers the timeout
            }
            tokio::time::sleep(ttl / 4).await;
        }
    }

    /// One run: streams deltas as chunks, then the acknowledged last chunk.
    async fn run_once(
        &self,
        task: &TaskEnvelope,
        attempt: u32,
        claimed: bool,
        trace: Option<&Span>,
    ) -> Result<Collected, RunError> {
        let span = trace.map(|t| {
            let span = t.child("backend", SpanKind::Client, SystemTime::now());
            span.set_all(vec![
                KeyValue::new("r1.attempt", i64::from(attempt)),
                KeyValue::new("gen_ai.operation.name", "chat"),
            ]);
            span
        });
        let started_at = SystemTime::now();
        let mut first_token: Option<SystemTime> = None;
        let ran = self
            .run_traced(task, attempt, claimed, trace, span.as_ref(), &mut first_token)
            .await;
        if let Some(span) = span {
            let end = SystemTime::now();
            if let Some(first) = first_token {
                span.record("first_token", SpanKind::Internal, (started_at, first), Vec::new());
                span.record("generation", SpanKind::Internal, (first, end), Vec::new());
            }
            match &ran {
                Ok(collected) => {
                    if let Some(usage) = &collected.usage {
                        span.set_all(vec![
                            KeyValue::new(
                                "gen_ai.usage.input_tokens",
                                i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX),
                            ),
                            KeyValue::new(
                                "gen_ai.usage.output_tokens",
                                i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX),
                            ),
                        ]);
                    }
                }
                Err(RunError::Failed { error, .. }) => span.fail(error.message.clone()),
                Err(RunError::Cancelled { .. }) => span.set(KeyValue::new("r1.cancelled", true)),
                Err(RunError::Lost) => span.fail("the claim was lost"),
                Err(RunError::Undelivered(e)) => span.fail(format!("result not delivered: {e}")),
            }
            span.end(end);
        }
        ran
    }

    /// [`Worker::run_once`]'s work: `first_token` is set when the first token came.
    async fn run_traced(
        &self,
        task: &TaskEnvelope,
        attempt: u32,
        claimed: bool,
        trace: Option<&Span>,
        backend_span: Option<&Span>,
        first_token: &mut Option<SystemTime>,
    ) -> Result<Collected, RunError> {
        let traceparent = trace.map(|t| t.traceparent().to_string());
        let traceparent = traceparent.as_deref();
        // Not traced here (an unsampled caller, or tracing off): the caller's context still goes on, so
        // the model server follows the same decision.
        let backend_parent = match backend_span {
            Some(span) => Some(span.traceparent().to_string()),
            None => task.traceparent.clone(),
        };
        let (stop_tx, mut stop) = watch::channel(false);
        if let Ok(mut running) = self.running.lock() {
            running.insert(task.task_id.clone(), stop_tx);
        }
        let _unregister = Unregister(&self.running, &task.task_id);
        let started = Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel::<ResultDelta>();
        let generation = self
            .backend
            .generate(task.request.clone(), &tx, backend_parent.as_deref());
        tokio::pin!(generation);
        let remaining = Duration::from_millis(task.remaining_ms(r1_queue::unix_ms()));
        let deadline = tokio::time::sleep(remaining);
        tokio::pin!(deadline);
        let mut heartbeat = tokio::time::interval(self.settings.claim_ttl / 3);
        heartbeat.tick().await;
        let mut seq = 0u64;
        let mut collected = Collected::default();
        let usage = loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return Err(RunError::Cancelled { sent: seq }),
                _ = &mut deadline => {
                    return Err(RunError::Failed {
                        error: BackendError::new(TaskErrorCode::Timeout, "the task's deadline passed", false),
                        sent: seq,
                    });
                }
                _ = heartbeat.tick(), if claimed => {
                    match self.claims.refresh(&task.task_id, &self.owner, self.settings.claim_ttl).await {
                        Ok(true) => {}
                        Ok(false) => return Err(RunError::Lost),
                        Err(e) => {
                            self.metrics.claim_errors.inc();
                            tracing::warn!(error = %e, "refreshing the task claim");
                        }
                    }
                }
                Some(delta) = rx.recv() => {
                    first_token.get_or_insert_with(SystemTime::now);
                    self.emit(task, (attempt, traceparent), &mut seq, delta, started, &mut collected)?;
                }
                result = &mut generation => {
                    while let Ok(delta) = rx.try_recv() {
                        first_token.get_or_insert_with(SystemTime::now);
                        self.emit(task, (attempt, traceparent), &mut seq, delta, started, &mut collected)?;
                    }
                    match result {
                        Ok(usage) => break usage,
                        Err(error) => return Err(RunError::Failed { error, sent: seq }),
                    }
                }
            }
        };
        if let Some(u) = &usage {
            self.metrics.generated_tokens.inc_by(u.completion_tokens);
        }
        collected.usage.clone_from(&usage);
        let last = ResultChunk::finished(&task.task_id, seq, usage)
            .with_attempt(attempt)
            .with_traceparent(traceparent);
        self.sink
            .deliver(&task.reply_to, &last, self.settings.result_timeout)
            .await
            .map_err(|e| RunError::Undelivered(e.to_string()))?;
        Ok(collected)
    }

    /// Sends `delta` as the next chunk of run `attempt` (naming the task's span `traceparent`, if traced).
    fn emit(
        &self,
        task: &TaskEnvelope,
        (attempt, traceparent): (u32, Option<&str>),
        seq: &mut u64,
        delta: ResultDelta,
        started: Instant,
        collected: &mut Collected,
    ) -> Result<(), RunError> {
        if self.states.is_some() && task.class == r1_proto::TaskClass::Batch {
            collected.content.push_str(delta.content.as_deref().unwrap_or_default());
            collected
                .reasoning
                .push_str(delta.reasoning_content.as_deref().unwrap_or_default());
            if delta.finish_reason.is_some() {
                collected.finish = delta.finish_reason.clone();
            }
        }
        if *seq == 0 {
            self.metrics
                .time_to_first_token
                .observe(started.elapsed().as_secs_f64());
        }
        let chunk = ResultChunk::delta(&task.task_id, *seq, delta)
            .with_attempt(attempt)
            .with_traceparent(traceparent);
        *seq += 1;
        self.sink.send(&task.reply_to, &chunk).map_err(|e| RunError::Failed {
            error: BackendError::new(TaskErrorCode::Internal, format!("result not sent: {e}"), false),
            sent: *seq,
        })
    }

    /// Sends a task's last chunk carrying `error`, after the `seq` chunks already sent.
    async fn answer_error(&self, task: &TaskEnvelope, attempt: u32, seq: u64, error: TaskError, trace: Option<&str>) {
        let status = if error.code == TaskErrorCode::Cancelled {
            TaskStatus::Cancelled
        } else {
            TaskStatus::Failed
        };
        self.record(task, status, None, Some(error.clone())).await;
        let chunk = ResultChunk::failed(&task.task_id, seq, error)
            .with_attempt(attempt)
            .with_traceparent(trace);
        if let Err(e) = self
            .sink
            .deliver(&task.reply_to, &chunk, self.settings.result_timeout)
            .await
        {
            tracing::warn!(task_id = %task.task_id, error = %e, "error answer not delivered");
        }
    }

    /// Records an asynchronous task's new state (batch-class tasks only), and calls its webhook
    /// once the state is final.
    async fn record(
        &self,
        task: &TaskEnvelope,
        status: TaskStatus,
        result: Option<serde_json::Value>,
        error: Option<TaskError>,
    ) {
        let Some(states) = &self.states else {
            return;
        };
        if task.class != r1_proto::TaskClass::Batch {
            return;
        }
        let updated = update_task(states.as_ref(), &task.task_id, self.settings.state_ttl, |s| {
            s.status = status;
            s.result = result;
            s.error = error;
        })
        .await;
        match updated {
            Ok(Some(state)) if status.is_final() => {
                if let Some(url) = &task.webhook {
                    self.call_webhook(url, &state).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(task_id = %task.task_id, error = %e, "asynchronous task state not written"),
        }
    }

    /// POSTs `{id, status}` to the task's webhook: three tries, best effort (the state is in the
    /// store either way).
    async fn call_webhook(&self, url: &str, state: &TaskState) {
        if let Err(refused) = crate::webhook::check(url, self.settings.webhook_private_networks) {
            self.metrics.webhooks_refused.inc();
            tracing::warn!(url, task_id = %state.id, %refused, "webhook not called");
            return;
        }
        let body = serde_json::json!({"id": state.id, "object": "r1.task", "status": state.status});
        for attempt in 1..=3u32 {
            let sent = self
                .webhooks
                .post(url)
                .timeout(Duration::from_secs(5))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => tracing::warn!(url, status = %r.status(), attempt, "webhook refused"),
                Err(e) => tracing::warn!(url, error = %e, attempt, "webhook failed"),
            }
            tokio::time::sleep(Duration::from_millis(200) * attempt).await;
        }
    }

    async fn finish(&self, task: &TaskEnvelope, delivery: &Delivery, outcome: &str) {
        if let Err(e) = self.claims.complete(&task.task_id, self.settings.done_ttl).await {
            self.metrics.claim_errors.inc();
            tracing::warn!(task_id = %task.task_id, error = %e, "marking the task answered");
        }
        self.metrics.tasks.with_label_values(&[outcome]).inc();
        self.source.finish(&delivery.position);
    }

    async fn dead_letter(&self, delivery: &Delivery, attempts: u32, error: &str) {
        match self.sink.dead_letter(delivery, attempts, error).await {
            Ok(()) => {
                self.metrics.dead_lettered.inc();
                self.metrics.tasks.with_label_values(&["dead_lettered"]).inc();
                self.source.finish(&delivery.position);
            }
            // Not acknowledged: the task stays uncommitted and comes back after a restart.
            Err(e) => tracing::error!(position = ?delivery.position, error = %e, "dead-letter produce failed"),
        }
    }
}

/// The chat completion an asynchronous task's owner reads.
fn completion(task: &TaskEnvelope, c: Collected) -> serde_json::Value {
    let mut message = r1_proto::ChatMessage::assistant(c.content);
    if !c.reasoning.is_empty() {
        message.reasoning_content = r1_proto::Nullable::Value(c.reasoning);
    }
    let response = r1_proto::ChatCompletionResponse::new(
        format!("chatcmpl-{}", task.task_id),
        r1_queue::unix_ms() / 1000,
        task.request.model.clone(),
        message,
        c.finish.unwrap_or(r1_proto::FinishReason::Stop),
        c.usage.unwrap_or_else(|| r1_proto::Usage::new(0, 0)),
    );
    serde_json::to_value(response).unwrap_or_default()
}

struct Unregister<'a>(&'a Mutex<HashMap<String, watch::Sender<bool>>>, &'a str);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.0.lock() {
            running.remove(self.1);
        }
    }
}
