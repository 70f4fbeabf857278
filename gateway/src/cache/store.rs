//! Where cache entries live: [`RedisStore`] (shared by every gateway replica) or [`MemoryStore`] (this
//! process, bounded). Both keep an entry for the TTL it was written with, then forget it.
//!
//! Stores do not bound their own calls: [`Cache`](super::Cache) wraps every call in its
//! `redis_timeout` and turns any failure into a miss.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use r1_queue::redis_conn::{RedisClient, RedisConnection, Timeouts};

/// A store call failed. The cache counts it and carries on as if the entry were missing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A key-value store with per-entry expiry.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The entry under `key`, if there is a live one.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    /// Writes `value` under `key` (replacing any entry), kept for `ttl`.
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError>;
    /// `redis` or `memory`, for logs.
    fn kind(&self) -> &'static str;
}

/// Entries in Redis: `GET` and `SET … PX` (one key each: any cluster slot will do), through one
/// multiplexed connection (one per node of a cluster) that is re-established in the background after
/// Redis comes back.
#[derive(Clone)]
pub struct RedisStore {
    connection: RedisConnection,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on an existing connection (shared with other users of the same Redis).
    pub fn new(connection: RedisConnection) -> Self {
        Self { connection }
    }

    /// A store on `redis` (one server or a cluster) that connects on first use, so a Redis that is down
    /// when the gateway starts costs cache misses, not a failed start. `timeout` bounds each connection
    /// attempt (at least 500 ms) and each response. Must be called within a Tokio runtime.
    pub fn lazy(redis: &RedisClient, timeout: Duration) -> Result<Self, redis::RedisError> {
        let connection = redis.lazy(Timeouts {
            connect: timeout.max(Duration::from_millis(500)),
            response: timeout,
            retries: 1,
        })?;
        Ok(Self { connection })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let mut connection = self.connection.clone();
        let raw: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(&mut connection).await?;
        Ok(raw.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(key)
            .arg(value.as_ref())
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// One in-memory entry: the bytes and how long they live from when they were written.
#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

/// Each entry expires after its own TTL, counted from its last write.
struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(&self, _: &String, entry: &Entry, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Entries in this process (no `[redis]`): at most `max_entries`, the least useful evicted first
/// (moka's TinyLFU), each expiring after its TTL. Never fails.
#[derive(Clone)]
pub struct MemoryStore {
    entries: moka::sync::Cache<String, Entry>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store holding at most `max_entries`.
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.entries.get(key).map(|entry| entry.value))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.entries.insert(key.to_owned(), Entry { value, ttl });
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
