//! The load generator against a scripted OpenAI-compatible upstream on a real socket: schedule,
//! latency from the schedule, routes, streaming TTFT, failures, drops, warm-up, and the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;
use r1_loadtest::{Config, Report};
use serde_json::{Value, json};

/// What the upstream does with its `n`-th request (counted from 0 in arrival order).
#[derive(Clone, Default)]
struct Plan {
    status: u16,
    route: Option<&'static str>,
    reason: Option<&'static str>,
    /// Wait this long before answering.
    delay: Duration,
    /// Answer one request at a time (a server-wide lock held through `delay`).
    serialize: bool,
}

impl Plan {
    fn ok(route: &'static str) -> Self {
        Self {
            status: 200,
            route: Some(route),
            ..Self::default()
        }
    }
}

type Script = dyn Fn(u64) -> Plan + Send + Sync;

/// The stand-in for an OpenAI-compatible upstream: answers `POST /v1/chat/completions` per its
/// script, with a JSON body or, when the request asks for `stream: true`, scripted SSE chunks.
struct Upstream {
    addr: SocketAddr,
    state: Arc<Shared>,
}

struct Shared {
    script: Box<Script>,
    received: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Request bodies and `authorization` headers, in arrival order.
    seen: Mutex<Vec<(Value, Option<String>)>>,
    serial: tokio::sync::Mutex<()>,
}

impl Upstream {
    async fn start(script: impl Fn(u64) -> Plan + Send + Sync + 'static) -> Self {
        let state = Arc::new(Shared {
            script: Box::new(script),
            received: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            serial: tokio::sync::Mutex::new(()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> u64 {
        self.state.received.load(Ordering::SeqCst)
    }

    fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn chat(State(state): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let n = state.received.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let plan = (state.script)(n);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.seen.lock().unwrap().push((body.clone(), auth));

    let guard = if plan.serialize {
        Some(state.serial.lock().await)
    } else {
        None
    };
    tokio::time::sleep(plan.delay).await;
    drop(guard);
    state.in_flight.fetch_sub(1, Ordering::SeqCst);

    let mut response = Response::builder().status(plan.status);
    if let Some(route) = plan.route {
        response = response.header("x-r1-route", route);
    }
    if let Some(reason) = plan.reason {
        response = response.header("x-r1-route-reason", reason);
    }
    let body = if body["stream"] == true {
        response = response.header("content-type", "text/event-stream");
        Body::from_stream(sse_chunks())
    } else {
        response = response.header("content-type", "application/json");
        let answer = json!({"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}]});
        Body::from(answer.to_string())
    };
    response.body(body).unwrap()
}

/// A role-only chunk at once, the first content 60 ms later, more 120 ms after that, then `[DONE]`.
fn sse_chunks() -> impl futures::Stream<Item = Result<String, Infallible>> {
    let event = |delta: Value| {
        format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})
        )
    };
    let chunks = vec![
        (0, event(json!({"role": "assistant", "content": ""}))),
        (60, event(json!({"content": "Par"}))),
        (120, event(json!({"content": "is."}))),
        (0, "data: [DONE]\n\n".to_owned()),
    ];
    futures::stream::iter(chunks).then(|(delay_ms, text)| async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        Ok(text)
    })
}

fn config(upstream: &Upstream, rate: f64) -> Config {
    Config {
        url: upstream.url(),
        rate,
        timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_holds_the_target_rate() {
    let upstream = Upstream::start(|_| Plan::ok("edge")).await;
    let started = Instant::now();
    let report = r1_loadtest::run(&Config {
        duration: Some(Duration::from_secs(2)),
        ..config(&upstream, 200.0)
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();

    assert!((395..=405).contains(&report.sent), "{report:#?}");
    assert_eq!(upstream.received(), report.sent);
    assert_eq!(
        (report.scheduled, report.ok, report.dropped),
        (report.sent, report.sent, 0)
    );
    assert!(
        (190.0..=210.0).contains(&report.achieved_rate),
        "{}",
        report.achieved_rate
    );
    assert!(
        elapsed >= Duration::from_millis(1990) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(report.routes["edge"].sent, report.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stall_shows_in_p99_because_latency_runs_from_the_schedule() {
    // One request at a time; the 50th holds the server for 200 ms. Every request scheduled during
    // the stall waits behind it, so ~20 of 200 samples are slow, not just the one that stalled.
    let upstream = Upstream::start(|n| Plan {
        delay: Duration::from_millis(if n == 50 { 200 } else { 0 }),
        serialize: true,
        ..Plan::ok("edge")
    })
    .await;
    let report = r1_loadtest::run(&Config {
        requests: Some(200),
        duration: None,
        ..config(&upstream, 100.0)
    })
    .await
    .unwrap();

    let latency = report.latency_ms.unwrap();
    assert_eq!(latency.count, 200);
    assert!(latency.p99 >= 150.0, "the stall is missing from p99: {latency:?}");
    assert!(
        latency.p90 >= 5.0,
        "requests queued behind the stall are missing: {latency:?}"
    );
    assert!(latency.p50 < 50.0, "{latency:?}");
    assert!(
        upstream.max_in_flight() <= 30,
        "only the stalled window is in flight: {}",
        upstream.max_in_flight()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_counted_with_shares_and_reasons_and_prompts_are_sent_as_configured() {
    let upstream = Upstream::start(|n| match n % 10 {
        0..7 => Plan {
            reason: Some("below_edge_max"),
            ..Plan::ok("edge")
        },
        7 | 8 => Plan {
            reason: Some("above_center_min"),
            ..Plan::ok("center")
        },
        _ => Plan {
            status: 200,
            ..Plan::default()
        },
    })
    .await;
    let prompts = r1_loadtest::prompts::parse_jsonl(
        "{\"model\":\"other-model\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}\n\
         {\"messages\":[{\"role\":\"user\",\"content\":\"b\"}],\"max_tokens\":999}\n",
    )
    .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    let (name, value) = r1_loadtest::config::parse_header("Authorization: Bearer k").unwrap();
    headers.insert(name, value);
    let report = r1_loadtest::run(&Config {
        requests: Some(100),
        duration: None,
        prompts,
        max_tokens: Some(8),
        headers,
        ..config(&upstream, 500.0)
    })
    .await
    .unwrap();

    assert_eq!((report.sent, report.ok), (100, 100));
    let (edge, center, none) = (&report.routes["edge"], &report.routes["center"], &report.routes["none"]);
    assert_eq!((edge.sent, center.sent, none.sent), (70, 20, 10));
    assert!(
        (edge.share - 0.7).abs() < 1e-9 && (center.share - 0.2).abs() < 1e-9,
        "{report:#?}"
    );
    assert_eq!(edge.reasons["below_edge_max"], 70);
    assert_eq!(center.reasons["above_center_min"], 20);
    assert!(none.reasons.is_empty());
    assert_eq!(edge.latency_ms.unwrap().count, 70);

    let seen = upstream.state.seen.lock().unwrap();
    let models: Vec<&str> = seen.iter().filter_map(|(body, _)| body["model"].as_str()).collect();
    assert_eq!(models.iter().filter(|m| **m == "other-model").count(), 50);
    assert_eq!(models.iter().filter(|m| **m == "deepseek-r1").count(), 50);
    assert!(
        seen.iter().all(|(body, auth)| body["max_tokens"] == 8
            && body["stream"] == false
            && auth.as_deref() == Some("Bearer k"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_measures_time_to_first_content_token() {
    let upstream = Upstream::start(|_| Plan::ok("center")).await;
    let report = r1_loadtest::run(&Config {
        requests: Some(10),
        duration: None,
        stream: true,
        ..config(&upstream, 20.0)
    })
    .await
    .unwrap();

    assert_eq!(report.ok, 10, "{report:#?}");
    let (ttft, latency) = (report.ttft_ms.unwrap(), report.latency_ms.unwrap());
    assert_eq!(ttft.count, 10);
    // The role-only chunk at 0 ms does not count; the first content comes at 60 ms, the end at 180 ms.
    assert!((60.0..170.0).contains(&ttft.p50), "{ttft:?}");
    assert!(latency.p50 >= 180.0 && latency.p50 > ttft.p50 + 100.0, "{latency:?}");
    assert_eq!(report.routes["center"].ttft_ms.unwrap().count, 10);
    assert!(report.table().contains("time to first token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_status_class_and_kind() {
    let upstream = Upstream::start(|n| match n % 4 {
        0 => Plan {
            status: 500,
            ..Plan::ok("edge")
        },
        1 => Plan {
            status: 429,
            ..Plan::default()
        },
        2 => Plan {
            delay: Duration::from_secs(3),
            ..Plan::ok("edge")
        },
        _ => Plan::ok("edge"),
    })
    .await;
    let report = r1_loadtest::run(&Config {
        requests: Some(40),
        duration: None,
        timeout: Duration::from_millis(300),
        ..config(&upstream, 200.0)
    })
    .await
    .unwrap();

    assert_eq!((report.sent, report.ok, report.failed), (40, 10, 30), "{report:#?}");
    assert_eq!(report.errors.by_status["5xx"], 10);
    assert_eq!(report.errors.by_status["4xx"], 10);
    assert_eq!(report.errors.by_kind["timeout"], 10);
    // A 500 carries its route; a 429 without the header and a timeout (no response) are `none`.
    assert_eq!(report.routes["edge"].errors.by_status["5xx"], 10);
    assert_eq!(report.routes["none"].errors.by_status["4xx"], 10);
    assert_eq!(report.routes["none"].errors.by_kind["timeout"], 10);
    assert_eq!(report.latency_ms.unwrap().count, 10);
    assert!(report.has_failures());

    // Nothing listening: every request is a connect error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = r1_loadtest::run(&Config {
        url: format!("http://{closed}"),
        requests: Some(5),
        duration: None,
        ..config(&upstream, 100.0)
    })
    .await
    .unwrap();
    assert_eq!((report.sent, report.ok), (5, 0));
    assert_eq!(report.errors.by_kind["connect"], 5, "{report:#?}");
    assert!(report.latency_ms.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_max_in_flight_are_dropped_not_queued() {
    let upstream = Upstream::start(|_| Plan {
        delay: Duration::from_millis(300),
        ..Plan::ok("edge")
    })
    .await;
    let report = r1_loadtest::run(&Config {
        duration: Some(Duration::from_secs(1)),
        max_in_flight: 5,
        ..config(&upstream, 100.0)
    })
    .await
    .unwrap();

    assert_eq!(report.scheduled, 100);
    assert_eq!(report.sent + report.dropped, 100);
    assert!(report.dropped >= 60, "{report:#?}");
    assert!(upstream.max_in_flight() <= 5, "{}", upstream.max_in_flight());
    assert_eq!(upstream.received(), report.sent);
    // Sent requests left on schedule: none waited for a slot, so none took much over the 300 ms delay.
    assert!(report.latency_ms.unwrap().max < 450.0, "{report:#?}");
    assert!(report.has_failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_requests_are_sent_but_not_reported() {
    let upstream = Upstream::start(|_| Plan::ok("edge")).await;
    let report = r1_loadtest::run(&Config {
        warmup: Duration::from_millis(500),
        requests: Some(50),
        duration: None,
        ..config(&upstream, 100.0)
    })
    .await
    .unwrap();

    assert_eq!(report.sent, 50);
    assert_eq!(upstream.received(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_json_and_fails_on_error_when_asked() {
    let upstream = Upstream::start(|n| {
        if n % 5 == 0 {
            Plan {
                status: 503,
                ..Plan::default()
            }
        } else {
            Plan::ok("edge")
        }
    })
    .await;
    let run = |extra: &'static [&'static str]| {
        let url = upstream.url();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_r1-loadtest"))
                .args(["--url", &url, "--rate", "100", "--requests", "20", "--timeout", "5s"])
                .args(extra)
                .output()
                .await
                .unwrap()
        }
    };

    let output = run(&["--json", "--fail-on-error"]).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Report = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((report.sent, report.ok), (20, 16));
    assert_eq!(report.errors.by_status["5xx"], 4);

    let output = run(&[]).await;
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("latency ms") && table.contains("5xx 4"), "{table}");

    let output = run(&["--duration", "ten"]).await;
    assert_eq!(output.status.code(), Some(2), "a bad flag is a usage error");
}
