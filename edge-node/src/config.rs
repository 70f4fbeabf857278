//! r1-edge's settings: an optional TOML file (`--config`), with the command-line flags the Kubernetes
//! manifests use taking precedence.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8081"
//! max_queue = 256
//! max_queue_wait = "5s"
//!
//! [batching]
//! dynamic = true
//! max_batch_size = 32
//!
//! [onnxruntime]
//! intra_threads = 2
//! optimization = "all"
//! execution_providers = ["cpu"]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use r1_config::Validate;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The model and how it is named.
    #[serde(default)]
    pub model: ModelSection,
    /// HTTP server and admission.
    #[serde(default)]
    pub server: ServerSection,
    /// The dynamic batcher.
    #[serde(default)]
    pub batching: BatchingSection,
    /// ONNX Runtime session options.
    #[serde(default)]
    pub onnxruntime: OrtSection,
}

/// `[model]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model directory (Optimum layout). `--model` overrides it.
    pub dir: Option<PathBuf>,
    /// Name clients use in `model`; defaults to the directory's name.
    pub served_name: Option<String>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Listen address. `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Requests waiting for a batch slot; beyond it, 429 with `Retry-After`.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// While the oldest queued request has waited longer than this, new requests are refused with 429
    /// and `Retry-After` (they would wait longer still): an overloaded server says so at once instead of
    /// letting every stream's first token slip. `"0s"` turns the bound off (only `max_queue` applies).
    #[serde(default = "default_max_queue_wait", with = "humantime_serde")]
    pub max_queue_wait: Duration,
    /// Largest `max_tokens` a request may ask for; more is a 400.
    #[serde(default = "default_max_tokens_cap")]
    pub max_tokens_cap: u32,
    /// `max_tokens` when a request gives none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
    /// Largest request body.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// On SIGTERM, how long running generations may take to finish before they are cut.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// While a stream is silent (queued, or a reasoning model thinking), an SSE comment is sent this
    /// often so proxies and clients keep the connection; the gateway's idle timeout counts on it.
    #[serde(default = "default_sse_keepalive", with = "humantime_serde")]
    pub sse_keepalive: Duration,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_queue: default_max_queue(),
            max_queue_wait: default_max_queue_wait(),
            max_tokens_cap: default_max_tokens_cap(),
            default_max_tokens: default_max_tokens(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace: default_grace(),
            sse_keepalive: default_sse_keepalive(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_max_queue() -> usize {
    256
}
fn default_max_queue_wait() -> Duration {
    Duration::from_secs(5)
}
fn default_max_tokens_cap() -> u32 {
    1024
}
fn default_max_tokens() -> u32 {
    256
}
fn default_max_body_bytes() -> usize {
    1 << 20
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_sse_keepalive() -> Duration {
    Duration::from_secs(15)
}

/// `[batching]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSection {
    /// Iteration-level batching: requests join and leave at every decode step. When false, a batch is
    /// formed from what is queued and runs to completion before the next one starts.
    #[serde(default = "default_true")]
    pub dynamic: bool,
    /// Most rows in the running batch.
    #[serde(default = "default_max_batch")]
    pub max_batch_size: usize,
}

impl Default for BatchingSection {
    fn default() -> Self {
        Self {
            dynamic: true,
            max_batch_size: default_max_batch(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_max_batch() -> usize {
    32
}

/// ONNX Runtime graph optimization level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Optimization {
    /// No graph rewrites.
    Disable,
    /// Semantics-preserving rewrites (constant folding, redundant node removal).
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything, layout optimizations included.
    #[default]
    All,
}

/// An execution provider, in preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// The default CPU provider (always available).
    Cpu,
    /// NVIDIA CUDA (needs a GPU build of ONNX Runtime).
    Cuda,
    /// NVIDIA TensorRT (needs a GPU build with TensorRT).
    Tensorrt,
}

/// `[onnxruntime]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrtSection {
    /// Threads inside one operator; 0 lets ONNX Runtime choose (one per core).
    #[serde(default)]
    pub intra_threads: usize,
    /// Threads across operators (parallel execution mode only); 0 lets ONNX Runtime choose.
    #[serde(default)]
    pub inter_threads: usize,
    /// Whether ONNX Runtime's intra-op threads spin-wait for the next operator's work instead of
    /// sleeping (ONNX Runtime's own default is to spin). Spinning saves a wake-up per operator on
    /// cores the server has to itself; on cores shared with other processes it burns the time they
    /// need: off was 1.5–1.9× faster in decode on 2 shared cores (docs/BENCHMARKS.md).
    #[serde(default = "default_spin")]
    pub spin: bool,
    /// Graph optimization level.
    #[serde(default)]
    pub optimization: Optimization,
    /// Execution providers in order of preference. A provider the loaded library lacks is an error
    /// at start-up, never a silent fall-back.
    #[serde(default = "default_providers")]
    pub execution_providers: Vec<Provider>,
}

impl Default for OrtSection {
    fn default() -> Self {
        Self {
            intra_threads: 0,
            inter_threads: 0,
            spin: default_spin(),
            optimization: Optimization::All,
            execution_providers: default_providers(),
        }
    }
}

fn default_spin() -> bool {
    false
}

fn default_providers() -> Vec<Provider> {
    vec![Provider::Cpu]
}

impl Validate for EdgeConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let s = &self.server;
        if s.max_queue == 0 {
            problems.push("server.max_queue: must be at least 1".to_owned());
        }
        if s.default_max_tokens == 0 || s.default_max_tokens > s.max_tokens_cap {
            problems.push(format!(
                "server.default_max_tokens: must be 1..=server.max_tokens_cap ({})",
                s.max_tokens_cap
            ));
        }
        if s.sse_keepalive < Duration::from_millis(100) {
            problems.push("server.sse_keepalive: must be at least 100ms".to_owned());
        }
        if s.max_body_bytes < 1024 {
            problems.push("server.max_body_bytes: must be at least 1024".to_owned());
        }
        if !(1..=1024).contains(&self.batching.max_batch_size) {
            problems.push("batching.max_batch_size: must be 1..=1024".to_owned());
        }
        if self.onnxruntime.execution_providers.is_empty() {
            problems.push("onnxruntime.execution_providers: list at least one (\"cpu\")".to_owned());
        }
        if let Some(name) = &self.model.served_name
            && name.trim().is_empty()
        {
            problems.push("model.served_name: must not be empty".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let c: EdgeConfig = r1_config::parse("", "t").unwrap();
        assert!(c.batching.dynamic);
        assert_eq!(c.batching.max_batch_size, 32);
        assert_eq!(c.onnxruntime.execution_providers, [Provider::Cpu]);
        assert!(!c.onnxruntime.spin, "spin-wait is off unless asked for");
        let spin: EdgeConfig = r1_config::parse("[onnxruntime]\nspin = true\n", "t").unwrap();
        assert!(spin.onnxruntime.spin);
        let err = r1_config::parse::<EdgeConfig>(
            "[server]\nmax_queue = 0\n[batching]\nmax_batch_size = 0\n[onnxruntime]\nexecution_providers = []\n",
            "edge.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("server.max_queue") && err.contains("batching.max_batch_size"),
            "{err}"
        );
        assert!(err.contains("onnxruntime.execution_providers"), "{err}");
        assert!(r1_config::parse::<EdgeConfig>("[onnxruntime]\nexecution_providers = [\"tpu\"]\n", "t").is_err());
    }
}
