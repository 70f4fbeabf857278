//! The in-process transport: the embedded stack's queue (`r1-gateway demo`, single-box installs).
//! The same envelopes, encoded and decoded as on Kafka, travel on bounded channels; results go
//! straight to the gateway's [`ResultRouter`]. Nothing survives the process — use Kafka for that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use r1_proto::{CancelRecord, ResultChunk, TaskClass, TaskEnvelope};
use tokio::sync::{broadcast, mpsc};

use crate::reply::ResultRouter;
use crate::transport::{ClassQueues, Delivery, ResultSink, SendError, TaskSink, TaskSource};

/// Both ends of the in-process queue.
#[derive(Debug)]
pub struct MemoryQueue {
    interactive: mpsc::Sender<Delivery>,
    batch: mpsc::Sender<Delivery>,
    receivers: ClassQueues,
    cancels: broadcast::Sender<CancelRecord>,
    routers: Mutex<HashMap<String, Arc<ResultRouter>>>,
    offset: AtomicI64,
    /// Tasks moved to the dead-letter list.
    pub dead_lettered: AtomicU64,
}

impl MemoryQueue {
    /// A queue holding at most `capacity` waiting tasks per class.
    pub fn new(capacity: usize) -> Arc<Self> {
        Self::with_capacities(capacity, capacity)
    }

    /// A queue holding at most `interactive` waiting interactive tasks (beyond: refused at once, the
    /// client's 503) and `batch` waiting batch-class tasks (asynchronous tasks and batch lines: room for
    /// the largest batch, whose lines are all queued when it is accepted).
    pub fn with_capacities(interactive: usize, batch: usize) -> Arc<Self> {
        let (interactive, irx) = mpsc::channel(interactive.max(1));
        let (batch, brx) = mpsc::channel(batch.max(1));
        Arc::new(Self {
            interactive,
            batch,
            receivers: ClassQueues::new(irx, brx),
            cancels: broadcast::channel(1024).0,
            routers: Mutex::new(HashMap::new()),
            offset: AtomicI64::new(0),
            dead_lettered: AtomicU64::new(0),
        })
    }

    /// Results addressed to `reply_to` go to `router`.
    pub fn attach(&self, reply_to: &str, router: Arc<ResultRouter>) {
        if let Ok(mut routers) = self.routers.lock() {
            routers.insert(reply_to.to_owned(), router);
        }
    }

    fn route(&self, reply_to: &str, chunk: &ResultChunk) {
        let router = self.routers.lock().ok().and_then(|r| r.get(reply_to).cloned());
        if let Some(router) = router {
            router.dispatch(chunk.clone());
        }
    }
}

#[async_trait]
impl TaskSink for MemoryQueue {
    /// One in-process worker serves every version.
    async fn submit(
        &self,
        class: TaskClass,
        _version: Option<&str>,
        key: &str,
        task: &TaskEnvelope,
    ) -> Result<(), SendError> {
        let raw = task.encode();
        let delivery = Delivery {
            // As a Kafka record's header would, the trace context travels beside the value.
            task: TaskEnvelope::decode(&raw).map(|mut decoded| {
                decoded.traceparent.clone_from(&task.traceparent);
                decoded
            }),
            raw,
            key: Some(key.as_bytes().to_vec()),
            class,
            position: (
                format!("memory.{}", class.as_str()),
                0,
                self.offset.fetch_add(1, Ordering::Relaxed),
            ),
        };
        let queue = match class {
            TaskClass::Interactive => &self.interactive,
            TaskClass::Batch => &self.batch,
        };
        queue.try_send(delivery).map_err(|_| SendError::Full)
    }

    async fn cancel(&self, record: &CancelRecord) -> Result<(), SendError> {
        let _ = self.cancels.send(record.clone()); // no receiver: nothing runs
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[async_trait]
impl TaskSource for MemoryQueue {
    async fn next(&self) -> Option<Delivery> {
        self.receivers.next().await
    }

    fn finish(&self, _position: &(String, i32, i64)) {}

    fn cancels(&self) -> broadcast::Receiver<CancelRecord> {
        self.cancels.subscribe()
    }
}

#[async_trait]
impl ResultSink for MemoryQueue {
    fn send(&self, reply_to: &str, chunk: &ResultChunk) -> Result<(), SendError> {
        self.route(reply_to, chunk);
        Ok(())
    }

    async fn deliver(&self, reply_to: &str, chunk: &ResultChunk, _timeout: Duration) -> Result<(), SendError> {
        self.route(reply_to, chunk);
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, attempts: u32, error: &str) -> Result<(), SendError> {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::error!(position = ?delivery.position, attempts, error, "task dead-lettered (in-process queue)");
        Ok(())
    }
}
