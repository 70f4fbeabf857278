//! Model backends: where a center node gets its tokens.
//!
//! - [`openai::OpenAiBackend`]: any OpenAI-compatible server — vLLM, SGLang, TensorRT-LLM, the
//!   DeepSeek API, or an r1-edge — streamed, with reasoning text kept apart from the answer;
//! - [`onnx::OnnxBackend`]: r1-edge's engine in process (single-box installs, tests).
//!
//! A backend streams [`ResultDelta`]s and returns the usage; it retries on its own only before the
//! first token. Dropping the future stops the generation (the HTTP request is closed).

pub mod onnx;
pub mod openai;
pub mod think;

use async_trait::async_trait;
use r1_proto::{ChatCompletionRequest, ResultDelta, TaskErrorCode, UpstreamError, Usage};
use tokio::sync::mpsc;

/// Why a generation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// The kind of failure.
    pub code: TaskErrorCode,
    /// What happened.
    pub message: String,
    /// Whether running the task again may succeed.
    pub retryable: bool,
    /// The model server's refusal (status, `type`, `param`, `code`), passed on to the client.
    pub upstream: Option<Box<UpstreamError>>,
}

impl BackendError {
    /// A failure of `code`.
    pub fn new(code: TaskErrorCode, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code,
            message: message.into(),
            retryable,
            upstream: None,
        }
    }

    /// The same error, with the model server's refusal.
    pub fn with_upstream(mut self, upstream: UpstreamError) -> Self {
        self.upstream = Some(Box::new(upstream));
        self
    }
}

/// A source of tokens.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Runs `request`, sending deltas to `out` as they come; returns the usage (`None` if the
    /// server did not report it). `traceparent`, when the task is traced, is the W3C trace context a
    /// model server's own spans take as their parent (vLLM and SGLang read it).
    async fn generate(
        &self,
        request: ChatCompletionRequest,
        out: &mpsc::UnboundedSender<ResultDelta>,
        traceparent: Option<&str>,
    ) -> Result<Option<Usage>, BackendError>;
}
