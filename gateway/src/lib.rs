//! r1-gateway: r1-hybrid's front door, on Pingora.
//!
//! - [`config`]: the configuration file's typed tree and validation;
//! - [`auth`]: JWT bearer authentication (`[auth]`, HS256 secrets, JWKS keys, reason-labelled refusals);
//! - [`score`]: the complexity scorer;
//! - [`deadline`]: the time-to-first-token, idle and total timeouts of an exchange;
//! - [`route`]: the route decision (rules → score → thresholds → weights → sticky → failover);
//! - [`explain`]: decisions for JSON lines of requests, with no network (`r1-gateway explain`);
//! - [`proxy`]: the request path (Pingora hooks), [`error`]: errors and their OpenAI bodies;
//! - [`handoff`]: center traffic through the task queue (Kafka or in-process) and results back;
//! - [`tasks`]: asynchronous tasks (`/v1/tasks`) and batches (`/v1/batches`);
//! - [`pools`]: the edge and center pools, [`state`]: shared state and live reload;
//! - [`admin`]: the admin listener, [`metrics`]: metric families, [`server`]: assembly;
//! - [`tls`]: HTTPS on the public listener (rustls, certificates reloaded on change);
//! - [`demo`]: the embedded stack (`r1-gateway demo`).

pub mod admin;
pub mod auth;
pub mod cache;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod error;
pub mod explain;
pub mod handoff;
pub mod hygiene;
pub mod limits;
pub mod metrics;
pub mod pools;
pub mod proxy;
pub mod request_id;
pub mod route;
pub mod score;
pub mod server;
pub mod state;
pub mod tasks;
pub mod tls;
