//! r1-gateway: r1-hybrid's front door, on Pingora. A request's path, top-down:
//!
//! - [`proxy`]: the Pingora hooks, each a few lines calling the modules below;
//! - [`admit`]: the request's policy in order — in-flight bound, [`auth`] (JWT), body, parse,
//!   [`hygiene`], [`limits`] with the [`cache`] lookup alongside — then the [`route`] decision
//!   ([`score`]: the complexity scorer);
//! - [`respond`]: the one writer of the responses the gateway makes itself;
//! - [`handoff`]: center traffic through the task queue (Kafka or in-process), answers as events;
//! - [`dialect`]: the APIs answered on top of chat — [`legacy`] completions, OpenAI's [`responses`],
//!   Anthropic's [`messages`] — their requests turned into chat requests, their answers re-framed;
//! - [`usage`]: the token usage of a proxied answer, charged to the caller;
//! - [`deadline`]: the time-to-first-token, idle and total timeouts of an exchange;
//! - [`ctx`]: per-request state, [`error`]: errors and their OpenAI bodies.
//!
//! Around it: [`config`] (the typed file and its validation), [`env`](mod@env) (the one reader of the process
//! environment), [`state`] (shared state and live
//! reload), [`pools`] (the edge and center pools), [`tasks`] (`/v1/tasks`, `/v1/batches`),
//! [`admin`] (the admin listener), [`metrics`], [`tls`] (HTTPS, certificates reloaded on change),
//! [`server`] (assembly), [`explain`] (decisions for JSON lines of requests, no network), and with the
//! `embedded` feature `embedded` (the center in this process) and `demo` (`r1-gateway demo`).

pub mod admin;
pub mod admit;
pub mod auth;
pub mod cache;
pub mod card;
pub mod config;
pub mod cors;
pub mod ctx;
pub mod deadline;
#[cfg(feature = "embedded")]
pub mod demo;
pub mod dialect;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod env;
pub mod error;
pub mod explain;
pub mod handoff;
pub mod hygiene;
pub mod legacy;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod pools;
pub mod proxy;
pub mod reframe;
pub mod rename;
pub mod request_id;
pub mod respond;
pub mod responses;
pub mod route;
pub mod score;
pub mod server;
pub mod splice;
pub mod state;
pub mod tasks;
pub mod tls;
pub mod trace;
pub mod usage;
