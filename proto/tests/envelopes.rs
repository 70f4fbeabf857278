//! Kafka envelopes: exact JSON shape, round trips, and refusal of versions this build cannot read.

use r1_proto::{
    CancelReason, CancelRecord, ChatMessage, DecodeError, FinishReason, ResultChunk, ResultDelta, Role, TaskClass,
    TaskEnvelope, TaskError, TaskErrorCode, Usage, WIRE_VERSION,
};
use serde_json::{Value, json};

const TASK: &str = r#"{
  "v": 1,
  "task_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
  "created_at": 1737521410123,
  "deadline": 1737521710123,
  "reply_to": "gateway-7c9d5-2",
  "tenant": "acme",
  "class": "interactive",
  "request": {
    "model": "deepseek-r1",
    "messages": [
      {"role": "system", "content": "Think step by step."},
      {"role": "user", "content": "Prove that sqrt(2) is irrational."}
    ],
    "max_tokens": 4096,
    "temperature": 0.6,
    "stream": true,
    "stream_options": {"include_usage": true},
    "tools": []
  },
  "attempt": 2,
  "model_version": "r1-0528",
  "affinity_key": "session:5b1f"
}"#;

/// The JSON value of `bytes`, for comparisons that ignore key order and spacing.
fn as_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|error| panic!("not JSON ({error}): {bytes:?}"))
}

#[test]
fn task_envelope_round_trip() {
    let envelope = TaskEnvelope::decode(TASK.as_bytes()).unwrap();
    assert_eq!(envelope.v, WIRE_VERSION);
    assert_eq!(envelope.task_id, "0f8fad5b-d9cb-469f-a165-70867728950e");
    assert_eq!(
        (envelope.created_at, envelope.deadline),
        (1_737_521_410_123, 1_737_521_710_123)
    );
    assert_eq!(envelope.reply_to, "gateway-7c9d5-2");
    assert_eq!(envelope.tenant, "acme");
    assert_eq!(envelope.class, TaskClass::Interactive);
    assert_eq!(envelope.attempt, 2);
    assert_eq!(envelope.model_version.as_deref(), Some("r1-0528"));
    assert_eq!(envelope.affinity_key.as_deref(), Some("session:5b1f"));
    assert_eq!(envelope.request.messages[1].role, Role::User);
    assert_eq!(envelope.request.effective_max_tokens(), Some(4096));
    assert!(envelope.request.include_usage());
    assert_eq!(envelope.request.extra["tools"], json!([]));
    assert_eq!(envelope.remaining_ms(1_737_521_410_123), 300_000);

    assert_eq!(as_value(&envelope.encode()), as_value(TASK.as_bytes()));
    assert_eq!(TaskEnvelope::decode(&envelope.encode()).unwrap(), envelope);
}

#[test]
fn task_envelope_defaults_for_optional_fields() {
    let minimal = r#"{"v":1,"task_id":"t1","created_at":1,"deadline":2,"reply_to":"gw","tenant":"t","class":"batch",
        "request":{"model":"m","messages":[{"role":"user","content":"hi"}]}}"#;
    let envelope = TaskEnvelope::decode(minimal.as_bytes()).unwrap();
    assert_eq!(envelope.class, TaskClass::Batch);
    assert_eq!(envelope.attempt, 0);
    assert_eq!((envelope.model_version, envelope.affinity_key), (None, None));
    assert_eq!(envelope.request.messages, [ChatMessage::user("hi")]);
    // A field a newer writer of the same version added is ignored, not an error.
    let with_extra = minimal.replacen(r#""v":1,"#, r#""v":1,"priority":7,"#, 1);
    assert_eq!(TaskEnvelope::decode(with_extra.as_bytes()).unwrap().task_id, "t1");
}

#[test]
fn future_version_is_refused_by_name() {
    let future =
        TASK.replacen(r#""v": 1"#, r#""v": 2"#, 1)
            .replacen(r#""class": "interactive""#, r#""class": {"lane": 3}"#, 1);
    let error = TaskEnvelope::decode(future.as_bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            DecodeError::UnsupportedVersion {
                kind: "task envelope",
                found: 2,
                supported: 1
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "task envelope: wire version 2 is not supported (this build reads versions 1 to 1); \
         upgrade this reader before the writers"
    );
    assert!(ResultChunk::decode(br#"{"v":9,"task_id":"t","seq":0,"done":true}"#).is_err());
}

#[test]
fn result_chunks_round_trip() {
    let stream = [
        r#"{"v":1,"task_id":"t1","seq":0,"delta":{"reasoning_content":"Suppose sqrt(2) = p/q"},"done":false}"#,
        r#"{"v":1,"task_id":"t1","seq":1,"delta":{"content":"Hence sqrt(2) is irrational."},"done":false}"#,
        r#"{"v":1,"task_id":"t1","seq":2,"delta":{"finish_reason":"stop"},"done":true,"usage":{"prompt_tokens":20,"completion_tokens":300,"total_tokens":320,"completion_tokens_details":{"reasoning_tokens":250}}}"#,
    ];
    let chunks: Vec<ResultChunk> = stream
        .iter()
        .map(|text| {
            let chunk = ResultChunk::decode(text.as_bytes()).unwrap();
            assert_eq!(as_value(&chunk.encode()), as_value(text.as_bytes()));
            chunk
        })
        .collect();

    assert_eq!(
        chunks[0],
        ResultChunk::delta("t1", 0, ResultDelta::reasoning("Suppose sqrt(2) = p/q"))
    );
    assert_eq!(
        chunks[1],
        ResultChunk::delta("t1", 1, ResultDelta::content("Hence sqrt(2) is irrational."))
    );
    let last = &chunks[2];
    assert!(last.done);
    assert_eq!(
        last.delta.as_ref().and_then(|delta| delta.finish_reason.clone()),
        Some(FinishReason::Stop)
    );
    assert_eq!(last.usage.as_ref().map(Usage::reasoning_tokens), Some(250));
    assert_eq!(chunks.iter().map(|chunk| chunk.seq).collect::<Vec<_>>(), [0, 1, 2]);
}

#[test]
fn failed_result_chunk_shape() {
    let failed = ResultChunk::failed(
        "t1",
        4,
        TaskError::new(TaskErrorCode::Overloaded, "vLLM answered 503: no free KV blocks", true),
    );
    let expected = json!({
        "v": 1, "task_id": "t1", "seq": 4, "done": true,
        "error": {"code": "overloaded", "message": "vLLM answered 503: no free KV blocks", "retryable": true}
    });
    assert_eq!(as_value(&failed.encode()), expected);
    assert_eq!(ResultChunk::decode(&failed.encode()).unwrap(), failed);

    let finished = ResultChunk::finished("t1", 5, Some(Usage::new(1, 1)));
    assert_eq!(
        as_value(&finished.encode()),
        json!({"v": 1, "task_id": "t1", "seq": 5, "done": true,
               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    );
}

#[test]
fn cancel_record_round_trip() {
    let text =
        r#"{"v":1,"task_id":"0f8fad5b-d9cb-469f-a165-70867728950e","reason":"client_disconnected","at":1737521412000}"#;
    let record = CancelRecord::decode(text.as_bytes()).unwrap();
    assert_eq!(
        record,
        CancelRecord::new(
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            CancelReason::ClientDisconnected,
            1_737_521_412_000
        )
    );
    assert_eq!(as_value(&record.encode()), as_value(text.as_bytes()));
    let labels: Vec<_> = CancelReason::ALL.iter().map(|reason| reason.as_str()).collect();
    assert_eq!(
        labels,
        [
            "client_disconnected",
            "client_cancelled",
            "deadline_exceeded",
            "shutdown",
            "other"
        ]
    );
}

#[test]
fn error_codes_on_the_wire() {
    let codes: Vec<_> = TaskErrorCode::ALL
        .iter()
        .map(|code| serde_json::to_value(code).unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            json!("timeout"),
            json!("cancelled"),
            json!("backend"),
            json!("invalid_request"),
            json!("overloaded"),
            json!("internal")
        ]
    );
}
