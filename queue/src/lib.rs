//! The hand-off between r1-gateway and r1-center (DESIGN.md, "Kafka contracts"), with two transports
//! behind the same traits:
//!
//! - **Kafka** ([`kafka_transport`]): tasks on `r1.tasks.interactive` / `r1.tasks.batch` keyed by
//!   affinity, result chunks on `r1.results` in the partition named by the task's `reply_to`, cancel
//!   records on `r1.cancel`, poison tasks on `r1.tasks.dlq`;
//! - **in-process** ([`memory`]): the same flow on bounded channels, for the embedded stack.
//!
//! Pieces:
//! - [`kafka`]: librdkafka settings that carry the delivery contract (idempotent producer, offsets
//!   stored only after a task is finished), and the `security` table (TLS, SASL) both binaries share;
//! - [`topics`]: topic names and the `reply_to` address of a gateway instance;
//! - [`offsets`]: which offset may be committed when tasks of a partition finish out of order;
//! - [`transport`]: the traits both transports implement;
//! - [`redis_conn`]: the `[redis]` table both binaries share and the one place Redis connections are
//!   made (one server or a Redis Cluster, TLS, ACL users);
//! - [`state`]: asynchronous task and batch state (Redis, or in memory);
//! - [`reply`]: the gateway's side of results — one receiver per waiting request, chunks in order,
//!   duplicates and stale attempts dropped.

pub mod kafka;
pub mod kafka_transport;
pub mod memory;
pub mod offsets;
pub mod redis_conn;
pub mod reply;
pub mod state;
pub mod topics;
pub mod transport;

/// Milliseconds since the unix epoch (the envelopes' clock).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
