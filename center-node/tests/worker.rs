//! The center pipeline on the in-process transport with the `onnx` backend (r1-edge's engine and the
//! shipped model, in process): answers, usage, a task past its deadline answered with a timeout and
//! not run, a duplicate delivery of an answered task dropped, a cancel record stopping a generation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use r1_center::backend::onnx::OnnxBackend;
use r1_center::claims::MemoryClaims;
use r1_center::metrics::CenterMetrics;
use r1_center::worker::{Worker, WorkerSettings};
use r1_proto::{
    CancelReason, CancelRecord, ChatCompletionRequest, ChatMessage, TaskClass, TaskEnvelope, TaskErrorCode,
    WIRE_VERSION,
};
use r1_queue::memory::MemoryQueue;
use r1_queue::reply::{ReplyEvent, ResultRouter};
use r1_queue::transport::TaskSink;

const REPLY_TO: &str = "test@0";

struct Stack {
    queue: Arc<MemoryQueue>,
    router: Arc<ResultRouter>,
    metrics: CenterMetrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn start() -> Stack {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/r1-edge-mini");
    let ort = r1_edge::config::OrtSection {
        intra_threads: 1,
        ..r1_edge::config::OrtSection::default()
    };
    let backend = OnnxBackend::load(&dir, &ort, 8, 64).unwrap();
    let queue = MemoryQueue::new(64);
    let router = ResultRouter::new();
    queue.attach(REPLY_TO, router.clone());
    let metrics = CenterMetrics::new().unwrap();
    let worker = Worker::new(
        queue.clone(),
        queue.clone(),
        Arc::new(MemoryClaims::default()),
        Arc::new(backend),
        WorkerSettings {
            node_id: "test".into(),
            max_in_flight: 4,
            max_attempts: 3,
            claim_ttl: Duration::from_secs(5),
            done_ttl: Duration::from_secs(60),
            result_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(10),
            shutdown_grace: Duration::from_secs(5),
            state_ttl: Duration::from_secs(60),
            webhook_private_networks: false,
        },
        metrics.clone(),
    );
    let (stop, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(Arc::new(worker).run(async {
        let _ = rx.await;
    }));
    Stack {
        queue,
        router,
        metrics,
        stop: Some(stop),
    }
}

fn task(id: &str, text: &str, max_tokens: u32, deadline_in_ms: i64) -> TaskEnvelope {
    let now = r1_queue::unix_ms();
    let mut request = ChatCompletionRequest::new("r1-edge-mini", vec![ChatMessage::user(text)]);
    request.max_tokens = Some(max_tokens);
    request.temperature = Some(0.0);
    TaskEnvelope {
        v: WIRE_VERSION,
        task_id: id.into(),
        created_at: now,
        deadline: now.saturating_add_signed(deadline_in_ms),
        reply_to: REPLY_TO.into(),
        tenant: "t".into(),
        class: TaskClass::Interactive,
        request,
        attempt: 0,
        model_version: None,
        affinity_key: None,
        webhook: None,
        traceparent: None,
    }
}

/// Reads a task's chunks until its last: (text, last chunk).
async fn collect(stream: &mut r1_queue::reply::ReplyStream) -> (String, r1_proto::ResultChunk) {
    let mut text = String::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap();
        let ReplyEvent::Chunk(chunk) = event else { continue };
        if let Some(delta) = &chunk.delta {
            text.push_str(delta.content.as_deref().unwrap_or_default());
        }
        if chunk.done {
            return (text, chunk);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_answered_by_the_local_model_and_duplicates_and_late_tasks_are_not_run() {
    let stack = start();
    let mut answer = stack.router.register("a");
    stack
        .queue
        .submit(
            TaskClass::Interactive,
            None,
            "k",
            &task("a", "What is 7 plus 5?", 16, 60_000),
        )
        .await
        .unwrap();
    let (text, last) = collect(&mut answer).await;
    assert!(!text.is_empty());
    assert_eq!(last.error, None);
    let usage = last.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0 && usage.completion_tokens <= 16);

    // The same task delivered again (a redelivery after a rebalance): dropped, not run again.
    stack
        .queue
        .submit(
            TaskClass::Interactive,
            None,
            "k",
            &task("a", "What is 7 plus 5?", 16, 60_000),
        )
        .await
        .unwrap();
    // A task whose deadline passed while it waited: answered with a timeout, not run.
    let mut late = stack.router.register("late");
    stack
        .queue
        .submit(TaskClass::Interactive, None, "k", &task("late", "Hi", 8, -1))
        .await
        .unwrap();
    let (text, last) = collect(&mut late).await;
    assert!(text.is_empty());
    assert_eq!(last.error.unwrap().code, TaskErrorCode::Timeout);
    // The duplicate is handled beside the late task: wait for its count (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = String::from_utf8(stack.metrics.render()).unwrap();
        // Counted just after the answer goes out: wait for both.
        if m.contains("r1_center_duplicates_suppressed_total 1") && m.contains("outcome=\"expired\"} 1") {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the duplicate was not dropped: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(m.contains("r1_center_tasks_total{outcome=\"expired\"} 1"), "{m}");
    assert!(m.contains("r1_center_tasks_total{outcome=\"ok\"} 1"), "{m}");
    drop(stack.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_record_stops_a_running_generation() {
    let stack = start();
    let mut answer = stack.router.register("long");
    let mut long = task("long", "Tell me a fact about cats.", 400, 60_000);
    long.request.extra.insert("ignore_eos".into(), serde_json::json!(true));
    stack
        .queue
        .submit(TaskClass::Interactive, None, "k", &long)
        .await
        .unwrap();
    // The first chunk: it runs. Then the client goes away.
    loop {
        if let Some(ReplyEvent::Chunk(_)) = answer.next().await {
            break;
        }
    }
    stack
        .queue
        .cancel(&CancelRecord::new(
            "long",
            CancelReason::ClientDisconnected,
            r1_queue::unix_ms(),
        ))
        .await
        .unwrap();
    let (_, last) = collect(&mut answer).await;
    assert_eq!(last.error.unwrap().code, TaskErrorCode::Cancelled);
    // The outcome is counted once the worker has finished with the task, just after its last chunk.
    let mut m = String::from_utf8(stack.metrics.render()).unwrap();
    for _ in 0..200 {
        if m.contains("r1_center_tasks_total{outcome=\"cancelled\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        m = String::from_utf8(stack.metrics.render()).unwrap();
    }
    let generated: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("r1_center_generated_tokens_total "))
        .map_or(0.0, |v| v.parse().unwrap());
    assert!(generated < 400.0, "stopped early");
    assert!(m.contains("r1_center_tasks_total{outcome=\"cancelled\"} 1"), "{m}");
    drop(stack.stop);
}
