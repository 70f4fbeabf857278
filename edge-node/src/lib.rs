//! r1-edge: an ONNX Runtime text-generation server for r1-hybrid's edge tier.
//!
//! What exists today is the runtime loader ([`runtime`]): it finds the ONNX Runtime shared library
//! through a documented search order and builds an `ort` environment from it. The generation engine,
//! dynamic batcher and OpenAI-compatible server arrive with the r1-edge issue.

pub mod runtime;
