//! `r1-loadtest`: an open-loop load generator for an OpenAI-compatible chat endpoint, with a report
//! split by the `x-r1-route` response header.
//!
//! Open loop means requests leave on a fixed schedule (`start + i / rate`) whatever the server does,
//! and every latency is measured from the request's *scheduled* send time, so a stall shows up in all
//! the requests that should have gone out during it (no coordinated omission). A request that cannot
//! start because `max_in_flight` are already out is counted as dropped, never queued.
//!
//! Streamed answers are read to their end: a stream counts as ok only if it ended with `data: [DONE]`
//! and carried no in-band error event, and the report counts how every stream ended (done, error
//! event, both — a "fake `[DONE]`" — or neither), so a failure drill can check the gateway's rule that
//! a stream failing midway ends with an error event, never a `[DONE]`.
//!
//! The pieces, in the order a run uses them: [`config`] (what to send and when to stop), [`prompts`]
//! (request bodies), [`run`](mod@run) (the schedule and one request's measurement), [`sse`] (a
//! stream's first token and end markers), [`stats`] (tallies and percentiles), [`report`] (the JSON
//! shape and the human table), [`request_log`] (one line per request, for drills).

pub mod config;
pub mod prompts;
pub mod report;
pub mod request_log;
pub mod run;
pub mod sse;
pub mod stats;

pub use config::Config;
pub use report::Report;
pub use run::run;
