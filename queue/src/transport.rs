//! What a transport does, for each side. The gateway holds a [`TaskSink`] and feeds a
//! [`reply::ResultRouter`](crate::reply::ResultRouter) from its results source; a center node
//! holds a [`TaskSource`] and a [`ResultSink`].

use std::time::Duration;

use async_trait::async_trait;
use r1_proto::{CancelRecord, TaskClass, TaskEnvelope};

/// Why a hand-off did not happen. Every variant is "not accepted": the caller answers 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The queue did not acknowledge in time (broker down, partition leaderless).
    #[error("the task queue did not acknowledge within {0:?}")]
    Timeout(Duration),
    /// The local queue is full.
    #[error("the task queue is full")]
    Full,
    /// The producer failed for good and is being rebuilt.
    #[error("the task queue producer failed: {0}")]
    Fatal(String),
    /// Anything else the client library reported.
    #[error("the task queue refused the message: {0}")]
    Other(String),
}

/// The gateway's side of the hand-off.
#[async_trait]
pub trait TaskSink: Send + Sync + std::fmt::Debug {
    /// Hands `task` over durably (`acks=all`) on its class's topic — of model `version`, if given
    /// (`<topic>.<version>`) — keyed by `key`; returns once the queue has it, or an error within
    /// the transport's send timeout.
    async fn submit(
        &self,
        class: TaskClass,
        version: Option<&str>,
        key: &str,
        task: &TaskEnvelope,
    ) -> Result<(), SendError>;

    /// Publishes a cancel record (best effort: the task's deadline still bounds the work).
    async fn cancel(&self, record: &CancelRecord) -> Result<(), SendError>;

    /// Whether the transport can take tasks now (readiness).
    fn is_ready(&self) -> bool;
}

/// One task as a center node receives it.
#[derive(Debug)]
pub struct Delivery {
    /// The task, or why its bytes could not be read (such a task goes to the dead-letter topic).
    pub task: Result<TaskEnvelope, r1_proto::DecodeError>,
    /// The raw value, for the dead-letter topic.
    pub raw: Vec<u8>,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// Which class's topic it came from.
    pub class: TaskClass,
    /// Where it came from, for logs and offset bookkeeping: (topic, partition, offset).
    pub position: (String, i32, i64),
}

/// The center node's source of tasks.
#[async_trait]
pub trait TaskSource: Send + Sync + std::fmt::Debug {
    /// The next task (interactive before batch), waiting for one. `None`: the source is closed.
    async fn next(&self) -> Option<Delivery>;

    /// The task at `position` is finished (its result fully produced, or it was dead-lettered):
    /// its offset may be committed once every earlier one is.
    fn finish(&self, position: &(String, i32, i64));

    /// Cancel records as they arrive (every node sees every record).
    fn cancels(&self) -> tokio::sync::broadcast::Receiver<CancelRecord>;

    /// Tasks waiting on the brokers for this node's partitions, when the transport knows.
    fn lag(&self) -> Option<i64> {
        None
    }

    /// This node's share of the work: whether its consumer group has given it partitions yet.
    fn assignment(&self) -> Assignment {
        Assignment::Local
    }
}

/// A center node's place in its consumer group ([`TaskSource::assignment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// No group: every task reaches this node (in process).
    Local,
    /// Subscribed, but the group has not assigned this node its partitions yet: tasks produced now wait
    /// on the brokers until it has (or until another member takes them).
    Joining,
    /// A group member holding this many partitions (0 when the group has more members than partitions).
    Holds(usize),
}

impl Assignment {
    /// Whether the node takes its share of tasks (readiness).
    pub fn is_ready(self) -> bool {
        !matches!(self, Self::Joining)
    }
}

/// The center node's way back.
#[async_trait]
pub trait ResultSink: Send + Sync + std::fmt::Debug {
    /// Queues one chunk for `reply_to` without waiting for the acknowledgement. Chunks of one task
    /// keep their order.
    fn send(&self, reply_to: &str, chunk: &r1_proto::ResultChunk) -> Result<(), SendError>;

    /// Sends a task's last chunk and waits for its acknowledgement. The producer is idempotent and
    /// the chunks of a task share a partition, so this one acknowledged means all before it are.
    async fn deliver(&self, reply_to: &str, chunk: &r1_proto::ResultChunk, timeout: Duration) -> Result<(), SendError>;

    /// Moves a task that failed too often to the dead-letter topic, with the reason in headers.
    async fn dead_letter(&self, delivery: &Delivery, attempts: u32, error: &str) -> Result<(), SendError>;
}

/// Tasks waiting by class, taken interactive first (both transports' [`TaskSource::next`]).
#[derive(Debug)]
pub(crate) struct ClassQueues(
    tokio::sync::Mutex<(
        tokio::sync::mpsc::Receiver<Delivery>,
        tokio::sync::mpsc::Receiver<Delivery>,
    )>,
);

impl ClassQueues {
    pub(crate) fn new(
        interactive: tokio::sync::mpsc::Receiver<Delivery>,
        batch: tokio::sync::mpsc::Receiver<Delivery>,
    ) -> Self {
        Self(tokio::sync::Mutex::new((interactive, batch)))
    }

    /// The next task, interactive before batch; `None` once both are closed.
    pub(crate) async fn next(&self) -> Option<Delivery> {
        let mut receivers = self.0.lock().await;
        let (interactive, batch) = &mut *receivers;
        tokio::select! {
            biased;
            Some(d) = interactive.recv() => Some(d),
            Some(d) = batch.recv() => Some(d),
            else => None,
        }
    }
}
