//! r1-edge: an ONNX Runtime text-generation server for r1-hybrid's edge tier.
//!
//! - [`runtime`] finds and loads the ONNX Runtime shared library;
//! - [`model`] reads an Optimum-layout model directory and discovers the graph's shape;
//! - [`engine`] runs prefill and decode steps over a batch with its KV cache;

pub mod batcher;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod model;
pub mod runtime;
pub mod sampling;
pub mod server;
pub mod text;
