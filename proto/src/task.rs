//! Kafka envelopes: tasks to the center, result chunks back, cancel records. Versioned JSON.
//!
//! Every envelope carries `v`. A reader refuses a version newer than [`WIRE_VERSION`] with
//! [`DecodeError::UnsupportedVersion`] (checked before the rest of the message, so the error says
//! "too new" rather than "missing field"), and ignores keys it does not know, so adding an optional
//! field does not need a new version.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ChatCompletionRequest, FinishReason, Usage};

/// The envelope version this build writes, and the newest it reads.
pub const WIRE_VERSION: u16 = 1;

wire_enum! {
    /// Which task topic and priority a task belongs to.
    pub enum TaskClass {
        /// A client is waiting on the connection.
        Interactive = "interactive",
        /// Asynchronous tasks and batches.
        Batch = "batch",
    }
}

/// A task handed to the center (topic `r1.tasks.<class>`, key = affinity key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnvelope {
    /// Envelope version; [`WIRE_VERSION`] when written by this build.
    pub v: u16,
    /// Unique task id; results and cancels refer to it, and redeliveries are deduplicated by it.
    pub task_id: String,
    /// When the gateway accepted the request, unix milliseconds.
    pub created_at: u64,
    /// When the answer stops being useful, unix milliseconds; later, the center drops the task.
    pub deadline: u64,
    /// The gateway instance holding the client connection; result chunks are addressed to it.
    pub reply_to: String,
    /// The tenant (JWT subject or organisation) the task is accounted to.
    pub tenant: String,
    /// Interactive or batch.
    pub class: TaskClass,
    /// The chat request to run.
    pub request: ChatCompletionRequest,
    /// How many times this task was attempted before (0 on first delivery).
    #[serde(default)]
    pub attempt: u32,
    /// The model version the gateway expects, when it pins one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The Kafka key (session or prefix hash) that keeps a conversation on one center node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_key: Option<String>,
    /// For asynchronous tasks: where to POST `{id, status}` when the task is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The W3C `traceparent` of the gateway's hand-off span, when the request is traced: it travels in
    /// the Kafka record's `traceparent` header (where tracing tools look for it), not in the JSON value.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

impl TaskEnvelope {
    /// Whether the deadline has passed at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline
    }

    /// Milliseconds left before the deadline at `now_ms` (0 once expired).
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.deadline.saturating_sub(now_ms)
    }
}

/// One piece of a task's answer (topic `r1.results`); duplicates are dropped by `(task_id, seq)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultChunk {
    /// Envelope version.
    pub v: u16,
    /// The task this answers.
    pub task_id: String,
    /// Position in the task's result stream, from 0 (per attempt).
    pub seq: u64,
    /// Which run of the task produced this chunk: 0 on first delivery, higher after a redelivery
    /// (a center node died mid-answer). A reader follows the newest attempt and drops older ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// New text, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<ResultDelta>,
    /// Whether this is the task's last chunk.
    pub done: bool,
    /// Token counts, on the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why the task failed, on the last chunk of a failed task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// The W3C `traceparent` of the center's span for the task, when traced: it travels in the Kafka
    /// record's `traceparent` header, not in the JSON value.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

impl ResultChunk {
    /// A chunk of new text, not the last.
    pub fn delta(task_id: impl Into<String>, seq: u64, delta: ResultDelta) -> Self {
        Self {
            v: WIRE_VERSION,
            task_id: task_id.into(),
            seq,
            attempt: 0,
            delta: Some(delta),
            done: false,
            usage: None,
            error: None,
            traceparent: None,
        }
    }

    /// The last chunk of a task that succeeded.
    pub fn finished(task_id: impl Into<String>, seq: u64, usage: Option<Usage>) -> Self {
        Self {
            delta: None,
            done: true,
            usage,
            ..Self::delta(task_id, seq, ResultDelta::default())
        }
    }

    /// The same chunk, from run `attempt` of the task.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same chunk, naming the center's span for the task (`None`: not traced).
    pub fn with_traceparent(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.map(str::to_owned);
        self
    }

    /// The last chunk of a task that failed.
    pub fn failed(task_id: impl Into<String>, seq: u64, error: TaskError) -> Self {
        Self {
            error: Some(error),
            ..Self::finished(task_id, seq, None)
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a result chunk adds to one choice of the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultDelta {
    /// The choice it belongs to (`n > 1`); 0 for the first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index: u32,
    /// New answer text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// New reasoning text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool-call fragments, exactly as the model server streamed them (OpenAI's `delta.tool_calls`:
    /// each with its `index`, the first with `id`, `type` and `function.name`, then `arguments` pieces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    /// Token log probabilities of this piece, as the model server sent them (`{"content": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Why generation stopped, on the delta that ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
}

impl ResultDelta {
    /// A delta of answer text.
    pub fn content(text: impl Into<String>) -> Self {
        Self {
            content: Some(text.into()),
            ..Self::default()
        }
    }

    /// A delta of reasoning text.
    pub fn reasoning(text: impl Into<String>) -> Self {
        Self {
            reasoning_content: Some(text.into()),
            ..Self::default()
        }
    }
}

wire_enum! {
    /// What kind of failure ended a task. A code from a newer writer reads as [`TaskErrorCode::Internal`].
    pub enum TaskErrorCode {
        /// The deadline passed.
        Timeout = "timeout",
        /// A cancel record or the client stopped it.
        Cancelled = "cancelled",
        /// The model backend failed.
        Backend = "backend",
        /// The backend refused the request as invalid.
        InvalidRequest = "invalid_request",
        /// The backend had no capacity.
        Overloaded = "overloaded",
        /// Anything else.
        #[serde(other)]
        Internal = "internal",
    }
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// The kind of failure.
    pub code: TaskErrorCode,
    /// A sentence for logs and, when safe, for the client.
    pub message: String,
    /// Whether running the task again (elsewhere) may succeed.
    pub retryable: bool,
    /// The model server's own error, when it refused the request: its HTTP status and the
    /// `type`, `param` and `code` of its OpenAI error body, for the client's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamError>,
}

/// A model server's refusal, as its OpenAI error body gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamError {
    /// Its HTTP status.
    pub status: u16,
    /// `error.type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// `error.param`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// `error.code` (a string or a number on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
}

impl TaskError {
    /// A task error.
    pub fn new(code: TaskErrorCode, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code,
            message: message.into(),
            retryable,
            upstream: None,
        }
    }

    /// The same error, carrying the model server's refusal.
    pub fn with_upstream(mut self, upstream: Option<UpstreamError>) -> Self {
        self.upstream = upstream;
        self
    }
}

wire_enum! {
    /// Why a task was cancelled. A reason from a newer writer reads as [`CancelReason::Other`].
    pub enum CancelReason {
        /// The client closed the connection.
        ClientDisconnected = "client_disconnected",
        /// The client cancelled it (`DELETE /v1/tasks/{id}`).
        ClientCancelled = "client_cancelled",
        /// The deadline passed.
        DeadlineExceeded = "deadline_exceeded",
        /// The gateway is shutting down without a place to send the answer.
        Shutdown = "shutdown",
        /// Anything else.
        #[serde(other)]
        Other = "other",
    }
}

/// A request to stop working on a task (topic `r1.cancel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRecord {
    /// Envelope version.
    pub v: u16,
    /// The task to stop.
    pub task_id: String,
    /// Why.
    pub reason: CancelReason,
    /// When it was cancelled, unix milliseconds.
    pub at: u64,
}

impl CancelRecord {
    /// A cancel record.
    pub fn new(task_id: impl Into<String>, reason: CancelReason, at: u64) -> Self {
        Self {
            v: WIRE_VERSION,
            task_id: task_id.into(),
            reason,
            at,
        }
    }
}

/// Why bytes from a topic could not be read as an envelope.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The envelope's `v` is one this build cannot read (0, or newer than [`WIRE_VERSION`]).
    #[error(
        "{kind}: wire version {found} is not supported (this build reads versions 1 to {supported}); \
         upgrade this reader before the writers"
    )]
    UnsupportedVersion {
        /// Which envelope.
        kind: &'static str,
        /// The version in the message.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// Not JSON, no `v`, or a field missing or of the wrong type.
    #[error("{kind}: malformed: {error}")]
    Malformed {
        /// Which envelope.
        kind: &'static str,
        /// What serde_json found wrong (line, column and field).
        error: serde_json::Error,
    },
}

/// Reads the version first, then the whole message.
fn decode<T: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    #[derive(Deserialize)]
    struct Version {
        v: u16,
    }

    let malformed = |error| DecodeError::Malformed { kind, error };
    let Version { v } = serde_json::from_slice(bytes).map_err(malformed)?;
    if v == 0 || v > WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            kind,
            found: v,
            supported: WIRE_VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(malformed)
}

macro_rules! envelope {
    ($name:ident, $kind:literal) => {
        impl $name {
            /// What error messages call this envelope.
            pub const KIND: &'static str = $kind;

            /// Reads an envelope, refusing a version this build does not know.
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                decode(Self::KIND, bytes)
            }

            /// Writes the envelope as compact JSON.
            pub fn encode(&self) -> Vec<u8> {
                crate::to_json(self)
            }
        }
    };
}

envelope!(TaskEnvelope, "task envelope");
envelope!(ResultChunk, "result chunk");
envelope!(CancelRecord, "cancel record");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_zero_and_newer_are_refused() {
        for v in [0, WIRE_VERSION + 1] {
            let bytes = serde_json::to_vec(&json!({"v": v, "task_id": "t", "reason": "shutdown", "at": 1})).unwrap();
            match CancelRecord::decode(&bytes) {
                Err(DecodeError::UnsupportedVersion { kind, found, supported }) => {
                    assert_eq!((kind, found, supported), ("cancel record", v, WIRE_VERSION));
                }
                other => panic!("expected an unsupported version, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_version_and_bad_json_are_malformed() {
        let missing = CancelRecord::decode(br#"{"task_id":"t","reason":"shutdown","at":1}"#).unwrap_err();
        assert!(matches!(missing, DecodeError::Malformed { .. }));
        assert!(missing.to_string().contains("missing field `v`"), "{missing}");

        let garbage = ResultChunk::decode(b"not json").unwrap_err();
        assert!(garbage.to_string().starts_with("result chunk: malformed:"), "{garbage}");
    }

    #[test]
    fn unknown_codes_degrade() {
        let error: TaskError =
            serde_json::from_value(json!({"code": "gpu_on_fire", "message": "m", "retryable": true})).unwrap();
        assert_eq!(error.code, TaskErrorCode::Internal);
        let reason: CancelReason = serde_json::from_value(json!("preempted")).unwrap();
        assert_eq!(reason, CancelReason::Other);
    }

    #[test]
    fn deadline_arithmetic() {
        let envelope = TaskEnvelope {
            v: WIRE_VERSION,
            task_id: "t".into(),
            created_at: 1_000,
            deadline: 5_000,
            reply_to: "gw-0".into(),
            tenant: "acme".into(),
            class: TaskClass::Interactive,
            request: ChatCompletionRequest::new("m", vec![]),
            attempt: 0,
            model_version: None,
            affinity_key: None,
            webhook: None,
            traceparent: None,
        };
        assert_eq!(envelope.remaining_ms(4_000), 1_000);
        assert!(!envelope.is_expired(4_999));
        assert!(envelope.is_expired(5_000));
        assert_eq!(envelope.remaining_ms(9_000), 0);
    }

    #[test]
    fn constructors_set_the_version_and_terminal_flags() {
        let delta = ResultChunk::delta("t", 0, ResultDelta::reasoning("hm"));
        assert_eq!((delta.v, delta.done), (WIRE_VERSION, false));
        let failed = ResultChunk::failed("t", 3, TaskError::new(TaskErrorCode::Backend, "502 from vLLM", true));
        assert!(failed.done && failed.delta.is_none() && failed.usage.is_none());
        assert_eq!(failed.error.map(|error| error.code), Some(TaskErrorCode::Backend));
        assert_eq!(CancelRecord::new("t", CancelReason::Shutdown, 9).v, WIRE_VERSION);
    }
}
