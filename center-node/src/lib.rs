//! r1-center: the worker in front of the full model, fed through Kafka (or the in-process queue).
//!
//! - [`config`]: the typed configuration file;
//! - [`worker`]: the task pipeline (deadline, claim, run, stream results, acknowledge, retry, DLQ);
//! - [`claims`]: one task, one result — redeliveries recognised by task id (Redis, or in memory);
//! - [`backend`]: where tokens come from (`openai`: any OpenAI-compatible server);
//! - [`metrics`]: the node's metric families; [`gpu`]: GPU utilisation through NVML where a GPU exists.
//!
//! The Kafka client settings live in [`r1_queue::kafka`] (re-exported as [`kafka`]).

pub mod backend;
pub mod claims;
pub mod config;
pub mod gpu;
pub mod metrics;
pub mod webhook;
pub mod worker;

pub use r1_queue::kafka;
