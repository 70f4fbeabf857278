//! Asynchronous task and batch state (`POST /v1/tasks`, `POST /v1/batches`): written by the gateway
//! when it accepts the work, updated by the center node that runs it, read by `GET`. In Redis with a
//! TTL (shared by every gateway and center node), or in memory for the embedded stack.
//!
//! A state is one JSON value under `r1:async:<id>` (tasks) or `r1:batch:<id>` (batches): one key per
//! command, so a Redis Cluster needs no hash tag (the client splits a batch's `MGET` by slot). Every
//! call is bounded by a short timeout: a store that does not answer is an error, and the gateway
//! answers 503 rather than accept work it could lose.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use r1_proto::TaskError;
use serde::{Deserialize, Serialize};

/// How long an asynchronous task's (and a batch's) state is kept after its last write — by the gateway
/// that creates it and by the center node that finishes it alike, so a result never outlives its task
/// nor vanishes before it.
pub const TASK_STATE_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Where an asynchronous task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Accepted, waiting for a center node.
    Queued,
    /// A center node runs it.
    Running,
    /// Answered: `result` holds the chat completion.
    Succeeded,
    /// Failed: `error` says why.
    Failed,
    /// Cancelled by its owner.
    Cancelled,
}

impl TaskStatus {
    /// Whether nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One asynchronous task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// Task id (also the Kafka task id).
    pub id: String,
    /// Who owns it (the JWT subject); others get 404.
    pub tenant: String,
    /// Where it is.
    pub status: TaskStatus,
    /// Accepted at, unix seconds.
    pub created_at: u64,
    /// Last change, unix seconds.
    pub updated_at: u64,
    /// The batch it belongs to, and its line's `custom_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<(String, String)>,
    /// Where to POST `{id, status}` when the task is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The chat completion, once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
}

/// One batch: its lines' task ids, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchState {
    /// Batch id.
    pub id: String,
    /// Who owns it.
    pub tenant: String,
    /// Accepted at, unix seconds.
    pub created_at: u64,
    /// `(custom_id, task id)` per input line.
    pub lines: Vec<(String, String)>,
}

/// The store did not answer, or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("task state store: {0}")]
pub struct StoreError(pub String);

/// Task and batch state.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Writes a task's state (replacing it), kept for `ttl`.
    async fn put_task(&self, state: &TaskState, ttl: Duration) -> Result<(), StoreError>;
    /// Reads a task's state.
    async fn task(&self, id: &str) -> Result<Option<TaskState>, StoreError>;
    /// Reads several tasks' states (missing ones are `None`), in order.
    async fn tasks(&self, ids: &[String]) -> Result<Vec<Option<TaskState>>, StoreError>;
    /// Writes a batch, kept for `ttl`.
    async fn put_batch(&self, batch: &BatchState, ttl: Duration) -> Result<(), StoreError>;
    /// Reads a batch.
    async fn batch(&self, id: &str) -> Result<Option<BatchState>, StoreError>;
}

/// A shared store is a store (the embedded stack hands one to the gateway and its worker).
#[async_trait]
impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
    async fn put_task(&self, state: &TaskState, ttl: Duration) -> Result<(), StoreError> {
        (**self).put_task(state, ttl).await
    }
    async fn task(&self, id: &str) -> Result<Option<TaskState>, StoreError> {
        (**self).task(id).await
    }
    async fn tasks(&self, ids: &[String]) -> Result<Vec<Option<TaskState>>, StoreError> {
        (**self).tasks(ids).await
    }
    async fn put_batch(&self, batch: &BatchState, ttl: Duration) -> Result<(), StoreError> {
        (**self).put_batch(batch, ttl).await
    }
    async fn batch(&self, id: &str) -> Result<Option<BatchState>, StoreError> {
        (**self).batch(id).await
    }
}

/// Updates a task's state in place (read, change, write) unless it is already final — a cancelled
/// task stays cancelled when its late answer arrives.
pub async fn update_task(
    store: &dyn StateStore,
    id: &str,
    ttl: Duration,
    change: impl FnOnce(&mut TaskState) + Send,
) -> Result<Option<TaskState>, StoreError> {
    let Some(mut state) = store.task(id).await? else {
        return Ok(None);
    };
    if state.status.is_final() {
        return Ok(Some(state));
    }
    change(&mut state);
    state.updated_at = crate::unix_ms() / 1000;
    store.put_task(&state, ttl).await?;
    Ok(Some(state))
}

/// The Redis key of a task's state.
pub fn task_key(id: &str) -> String {
    format!("r1:async:{id}")
}

fn batch_key(id: &str) -> String {
    format!("r1:batch:{id}")
}

/// State in Redis.
#[derive(Clone)]
pub struct RedisStateStore {
    connection: crate::redis_conn::RedisConnection,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStateStore").finish_non_exhaustive()
    }
}

impl RedisStateStore {
    /// Connects through `redis` (one server or a cluster); every call is bounded by `timeout`. The
    /// connection is re-established in the background after Redis comes back. A refused login or TLS
    /// handshake is an error naming the `[redis]` key to fix.
    pub async fn connect(redis: &crate::redis_conn::RedisClient, timeout: Duration) -> Result<Self, StoreError> {
        let timeouts = crate::redis_conn::Timeouts {
            connect: timeout.max(Duration::from_millis(500)),
            response: timeout,
            retries: 1,
        };
        let connection = tokio::time::timeout(timeout * 4, redis.connect(timeouts))
            .await
            .map_err(|_| StoreError(format!("connecting to Redis timed out after {:?}", timeout * 4)))?
            .map_err(|e| StoreError(redis.explain(&e)))?;
        Ok(Self { connection, timeout })
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        tokio::time::timeout(self.timeout, command.query_async(&mut connection))
            .await
            .map_err(|_| StoreError("timed out".to_owned()))?
            .map_err(|e| StoreError(e.to_string()))
    }

    async fn put(&self, key: String, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self.run::<()>(command).await
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, key: String) -> Result<Option<T>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        let raw: Option<Vec<u8>> = self.run(command).await?;
        raw.map(|r| serde_json::from_slice(&r).map_err(|e| StoreError(e.to_string())))
            .transpose()
    }
}

#[async_trait]
impl StateStore for RedisStateStore {
    async fn put_task(&self, state: &TaskState, ttl: Duration) -> Result<(), StoreError> {
        let value = serde_json::to_vec(state).map_err(|e| StoreError(e.to_string()))?;
        self.put(task_key(&state.id), value, ttl).await
    }

    async fn task(&self, id: &str) -> Result<Option<TaskState>, StoreError> {
        self.get(task_key(id)).await
    }

    async fn tasks(&self, ids: &[String]) -> Result<Vec<Option<TaskState>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("MGET");
        for id in ids {
            command.arg(task_key(id));
        }
        let raw: Vec<Option<Vec<u8>>> = self.run(command).await?;
        raw.into_iter()
            .map(|r| {
                r.map(|r| serde_json::from_slice(&r).map_err(|e| StoreError(e.to_string())))
                    .transpose()
            })
            .collect()
    }

    async fn put_batch(&self, batch: &BatchState, ttl: Duration) -> Result<(), StoreError> {
        let value = serde_json::to_vec(batch).map_err(|e| StoreError(e.to_string()))?;
        self.put(batch_key(&batch.id), value, ttl).await
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchState>, StoreError> {
        self.get(batch_key(id)).await
    }
}

/// Most lines of one batch (`POST /v1/batches`); the in-process queue holds room for several such.
pub const MAX_BATCH_LINES: usize = 50_000;

/// State in this process (the embedded stack), expired lazily.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    entries: Mutex<Entries>,
}

/// The values and their expiry, indexed by expiry so a write drops what expired without scanning.
#[derive(Debug, Default)]
struct Entries {
    values: HashMap<String, (Vec<u8>, Instant)>,
    expiries: std::collections::BTreeSet<(Instant, String)>,
}

impl MemoryStateStore {
    /// Stores `value` under `key` for `ttl`; what expired goes: O(log n) per write and per expired entry.
    fn put(&self, key: String, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().map_err(|_| StoreError("poisoned".into()))?;
        let Entries { values, expiries } = &mut *entries;
        let now = Instant::now();
        while let Some(first) = expiries.first()
            && first.0 <= now
        {
            if let Some((_, key)) = expiries.pop_first() {
                values.remove(&key);
            }
        }
        let until = now + ttl;
        if let Some((_, old)) = values.insert(key.clone(), (value, until)) {
            expiries.remove(&(old, key.clone()));
        }
        expiries.insert((until, key));
        Ok(())
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let entries = self.entries.lock().map_err(|_| StoreError("poisoned".into()))?;
        entries
            .values
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| serde_json::from_slice(v).map_err(|e| StoreError(e.to_string())))
            .transpose()
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn put_task(&self, state: &TaskState, ttl: Duration) -> Result<(), StoreError> {
        let value = serde_json::to_vec(state).map_err(|e| StoreError(e.to_string()))?;
        self.put(task_key(&state.id), value, ttl)
    }

    async fn task(&self, id: &str) -> Result<Option<TaskState>, StoreError> {
        self.get(&task_key(id))
    }

    async fn tasks(&self, ids: &[String]) -> Result<Vec<Option<TaskState>>, StoreError> {
        ids.iter().map(|id| self.get(&task_key(id))).collect()
    }

    async fn put_batch(&self, batch: &BatchState, ttl: Duration) -> Result<(), StoreError> {
        let value = serde_json::to_vec(batch).map_err(|e| StoreError(e.to_string()))?;
        self.put(batch_key(&batch.id), value, ttl)
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchState>, StoreError> {
        self.get(&batch_key(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str) -> TaskState {
        TaskState {
            id: id.into(),
            tenant: "t".into(),
            status: TaskStatus::Queued,
            created_at: 1,
            updated_at: 1,
            batch: None,
            webhook: None,
            result: None,
            error: None,
        }
    }

    #[tokio::test]
    async fn final_states_are_not_overwritten() {
        let store = MemoryStateStore::default();
        let ttl = Duration::from_secs(60);
        store.put_task(&state("a"), ttl).await.unwrap();
        update_task(&store, "a", ttl, |s| s.status = TaskStatus::Cancelled)
            .await
            .unwrap();
        let after = update_task(&store, "a", ttl, |s| s.status = TaskStatus::Succeeded)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.status, TaskStatus::Cancelled);
        assert_eq!(store.tasks(&["a".into(), "b".into()]).await.unwrap()[1], None);
    }

    #[tokio::test]
    async fn expired_entries_go_on_the_next_write_and_rewrites_keep_one_expiry() {
        let store = MemoryStateStore::default();
        store.put_task(&state("gone"), Duration::ZERO).await.unwrap();
        for _ in 0..3 {
            store.put_task(&state("kept"), Duration::from_secs(60)).await.unwrap();
        }
        assert_eq!(store.task("gone").await.unwrap(), None);
        assert!(store.task("kept").await.unwrap().is_some());
        let entries = store.entries.lock().unwrap();
        assert_eq!(entries.values.len(), 1, "the expired entry was dropped");
        assert_eq!(entries.expiries.len(), 1, "a rewritten key has one expiry");
    }
}
