//! r1-gateway: r1-hybrid's front door.
//!
//! What exists today is the configuration file's typed tree and validation ([`config`]). The Pingora
//! proxy, routing, edge pool, Kafka hand-off and admin API arrive with the gateway issue.

pub mod config;
