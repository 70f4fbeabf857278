//! The `onnx` backend: r1-edge's engine inside the center node — the shipped small model, or any
//! ONNX causal LM in the Optimum layout — for single-box installs and tests without a model server.
//! The same request checks as r1-edge's HTTP server ([`r1_edge::server::prepare`]), the same
//! iteration-level batcher.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use r1_edge::batcher::{self, BatchSettings, BatcherHandle, Event, SubmitError, Submitter};
use r1_edge::config::OrtSection;
use r1_edge::sampling::SamplingParams;
use r1_edge::server::Limits;
use r1_edge::text::TextCodec;
use r1_proto::{ChatCompletionRequest, ErrorKind, FinishReason, ResultDelta, TaskErrorCode, Usage};
use tokio::sync::mpsc;

use super::{Backend, BackendError};

/// The model, its batcher, and what requests may ask for.
#[derive(Debug)]
pub struct OnnxBackend {
    submitter: Submitter,
    text: Arc<TextCodec>,
    defaults: SamplingParams,
    limits: Limits,
    batcher: BatcherHandle,
}

impl OnnxBackend {
    /// Loads `dir` and starts its batcher (`max_batch_size` rows, `max_queue` waiting).
    pub fn load(dir: &Path, ort: &OrtSection, max_batch_size: usize, max_queue: usize) -> anyhow::Result<Self> {
        let model = r1_edge::model::load(&r1_edge::runtime::LibrarySearch::from_env(), dir, ort)?;
        let text = model.text.clone();
        let defaults = r1_edge::server::default_sampling(&model);
        let limits = Limits {
            max_tokens_cap: u32::try_from(model.engine.spec().context_length).unwrap_or(u32::MAX),
            default_max_tokens: 256,
            max_body_bytes: usize::MAX,
            context_length: model.engine.spec().context_length,
        };
        let settings = BatchSettings {
            dynamic: true,
            max_batch_size,
            max_queue,
            // The worker's own in-flight bound admits tasks; a queued task waits its turn.
            max_queue_wait: None,
        };
        let (submitter, batcher) = batcher::spawn(model, settings, r1_edge::metrics::EdgeMetrics::new()?)?;
        Ok(Self {
            submitter,
            text,
            defaults,
            limits,
            batcher,
        })
    }
}

impl Drop for OnnxBackend {
    fn drop(&mut self) {
        self.batcher.abort();
    }
}

#[async_trait]
impl Backend for OnnxBackend {
    async fn generate(
        &self,
        request: ChatCompletionRequest,
        out: &mpsc::UnboundedSender<ResultDelta>,
        _traceparent: Option<&str>, // in process: nothing to pass it to
    ) -> Result<Option<Usage>, BackendError> {
        let (tx, mut events) = mpsc::unbounded_channel();
        let generation =
            r1_edge::server::prepare(&request, &self.text, &self.defaults, &self.limits, tx).map_err(|e| {
                let code = if e.kind() == ErrorKind::Internal {
                    TaskErrorCode::Internal
                } else {
                    TaskErrorCode::InvalidRequest
                };
                BackendError::new(code, e.to_string(), false)
            })?;
        self.submitter.try_submit(generation).map_err(|e| match e {
            SubmitError::Full | SubmitError::Backlogged { .. } => {
                BackendError::new(TaskErrorCode::Overloaded, "the local model's queue is full", true)
            }
            SubmitError::Closed => BackendError::new(TaskErrorCode::Backend, "the local model has stopped", false),
        })?;
        // Dropping `events` (this future dropped: a cancel, a deadline) stops the generation.
        while let Some(event) = events.recv().await {
            match event {
                Event::Text(piece) => {
                    let _ = out.send(ResultDelta::content(piece));
                }
                Event::Done {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => {
                    let finish = match reason {
                        batcher::FinishReason::Stop => FinishReason::Stop,
                        batcher::FinishReason::Length => FinishReason::Length,
                    };
                    let _ = out.send(ResultDelta {
                        finish_reason: Some(finish),
                        ..ResultDelta::default()
                    });
                    return Ok(Some(Usage::new(prompt_tokens.into(), completion_tokens.into())));
                }
                Event::Failed(message) => return Err(BackendError::new(TaskErrorCode::Backend, message, false)),
            }
        }
        Err(BackendError::new(
            TaskErrorCode::Backend,
            "the local model ended without a result",
            false,
        ))
    }
}
