//! r1-center: the worker in front of the full model, fed through Kafka.
//!
//! What exists today: the typed configuration ([`config`]) and the Kafka client settings that every
//! r1-center consumer and producer is built from ([`kafka`]): idempotent producers with `acks=all`,
//! and consumers whose offsets are stored only after a task is finished (at-least-once). The task
//! pipeline, backends and dedupe arrive with the Kafka hand-off issue.

pub mod config;
pub mod kafka;
