//! `r1-loadtest`: an open-loop load generator for an OpenAI-compatible chat endpoint, with a report
//! split by the `x-r1-route` response header.
//!
//! Open loop means requests leave on a fixed schedule (`start + i / rate`) whatever the server does,
//! and every latency is measured from the request's *scheduled* send time, so a stall shows up in all
//! the requests that should have gone out during it (no coordinated omission). A request that cannot
//! start because `max_in_flight` are already out is counted as dropped, never queued.
//!
//! The pieces, in the order a run uses them: [`config`] (what to send and when to stop), [`prompts`]
//! (request bodies), [`run`](mod@run) (the schedule and one request's measurement), [`stats`] (tallies and
//! percentiles), [`report`] (the JSON shape and the human table).

pub mod config;
pub mod prompts;
pub mod report;
pub mod run;
pub mod stats;

pub use config::Config;
pub use report::Report;
pub use run::run;
