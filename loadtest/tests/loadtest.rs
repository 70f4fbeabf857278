//! The load generator against a scripted OpenAI-compatible upstream on a real socket: schedule,
//! latency from the schedule, routes, streaming TTFT, failures, drops, warm-up, and the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use r1_loadtest::{Config, Report};
use r1_mock_upstream::{Handle, Reply, Script};

/// The stand-in upstream (`r1-mock-upstream`) on a port-0 socket, answering per `script`.
async fn upstream(script: Script) -> Handle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    r1_mock_upstream::serve(listener, script).await.unwrap()
}

/// The default answer, with each request's reply (status, headers, delay) decided by its arrival index.
fn scripted(decide: impl Fn(u64) -> Reply + Send + Sync + 'static) -> Script {
    Script::default().per_request(decide)
}

/// A 200 carrying the gateway's route header.
fn ok(route: &str) -> Reply {
    Reply::ok().header("x-r1-route", route)
}

fn received(upstream: &Handle) -> u64 {
    upstream.stats().snapshot().received
}

fn max_in_flight(upstream: &Handle) -> u64 {
    upstream.stats().snapshot().max_in_flight
}

fn config(upstream: &Handle, rate: f64) -> Config {
    Config {
        url: upstream.url(),
        rate,
        timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_holds_the_target_rate() {
    let upstream = upstream(scripted(|_| ok("edge"))).await;
    let started = Instant::now();
    let report = r1_loadtest::run(&Config {
        duration: Some(Duration::from_secs(2)),
        ..config(&upstream, 200.0)
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();

    assert!((395..=405).contains(&report.sent), "{report:#?}");
    assert_eq!(received(&upstream), report.sent);
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
    // One request at a time; the 50th holds the server for 250 ms. Every request scheduled during
    // the stall waits behind it, so ~25 of 200 samples are slow, not just the one that stalled
    // (over 10 %, so p90 shows it even though the others are answered in well under 1 ms).
    let upstream =
        upstream(scripted(|n| ok("edge").delay(Duration::from_millis(if n == 50 { 250 } else { 0 }))).concurrency(1))
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
        max_in_flight(&upstream) <= 30,
        "only the stalled window is in flight: {}",
        max_in_flight(&upstream)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_counted_with_shares_and_reasons_and_prompts_are_sent_as_configured() {
    let upstream = upstream(
        scripted(|n| match n % 10 {
            0..7 => ok("edge").header("x-r1-route-reason", "below_edge_max"),
            7 | 8 => ok("center").header("x-r1-route-reason", "above_center_min"),
            _ => Reply::ok(),
        })
        .record(100),
    )
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

    let seen = upstream.recorded();
    assert_eq!(seen.len(), 100);
    let models: Vec<&str> = seen.iter().filter_map(|r| r.body["model"].as_str()).collect();
    assert_eq!(models.iter().filter(|m| **m == "other-model").count(), 50);
    assert_eq!(models.iter().filter(|m| **m == "deepseek-r1").count(), 50);
    assert!(seen.iter().all(|r| r.body["max_tokens"] == 8
        && r.body["stream"] == false
        && r.headers.get("authorization").is_some_and(|v| v == "Bearer k")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_measures_time_to_first_content_token() {
    // A role-only chunk at once, the first content 60 ms later, the second 120 ms after that, then the end.
    let script = scripted(|_| ok("center"))
        .content(2, "Paris ")
        .delays(Duration::from_millis(60), Duration::from_millis(120));
    let upstream = upstream(script).await;
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
    let upstream = upstream(scripted(|n| match n % 4 {
        0 => Reply::status(500).header("x-r1-route", "edge"),
        1 => Reply::status(429),
        2 => ok("edge").delay(Duration::from_secs(3)),
        _ => ok("edge"),
    }))
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
    let upstream = upstream(scripted(|_| ok("edge").delay(Duration::from_millis(300)))).await;
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
    assert!(max_in_flight(&upstream) <= 5, "{}", max_in_flight(&upstream));
    assert_eq!(received(&upstream), report.sent);
    // Sent requests left on schedule: none waited for a slot, so none took much over the 300 ms delay.
    assert!(report.latency_ms.unwrap().max < 450.0, "{report:#?}");
    assert!(report.has_failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_requests_are_sent_but_not_reported() {
    let upstream = upstream(scripted(|_| ok("edge"))).await;
    let report = r1_loadtest::run(&Config {
        warmup: Duration::from_millis(500),
        requests: Some(50),
        duration: None,
        ..config(&upstream, 100.0)
    })
    .await
    .unwrap();

    assert_eq!(report.sent, 50);
    assert_eq!(received(&upstream), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_json_and_fails_on_error_when_asked() {
    let upstream = upstream(scripted(|n| if n % 5 == 0 { Reply::status(503) } else { ok("edge") })).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_counted_by_how_they_end_and_logged_per_request() {
    // Every third stream loses its connection after one token: neither `[DONE]` nor an error event.
    let upstream = upstream(scripted(|n| {
        let reply = ok("edge").header("x-r1-route-reason", "weighted");
        if n % 3 == 2 { reply.drop_after(1) } else { reply }
    }))
    .await;
    let log = std::env::temp_dir().join(format!("r1-loadtest-{}-streams.jsonl", std::process::id()));
    let before = std::time::SystemTime::now();
    let report = r1_loadtest::run(&Config {
        requests: Some(30),
        duration: None,
        stream: true,
        request_log: Some(log.clone()),
        ..config(&upstream, 50.0)
    })
    .await
    .unwrap();
    let after = std::time::SystemTime::now();

    assert_eq!((report.sent, report.ok, report.failed), (30, 20, 10), "{report:#?}");
    let streams = report.streams.unwrap();
    assert_eq!(
        (
            streams.done,
            streams.error_event,
            streams.fake_done,
            streams.cut,
            streams.reset
        ),
        (20, 0, 0, 10, 10)
    );
    assert_eq!(report.routes["edge"].streams, Some(streams));
    assert_eq!(report.errors.by_kind["other"], 10);
    assert_eq!(report.statuses[&200], 30);
    assert_eq!(report.ttft_ms.unwrap().count, 20);
    assert!(report.table().contains("fake_done"));

    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    let entries: Vec<r1_loadtest::request_log::Entry> =
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(entries.len(), 30);
    let unix = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.i, i as u64);
        assert!((entry.at_ms - 20.0 * i as f64).abs() < 1e-6, "{entry:?}");
        assert!((unix(before)..=unix(after)).contains(&entry.unix_ms), "{entry:?}");
        assert_eq!((entry.status, entry.route.as_deref()), (Some(200), Some("edge")));
        assert!(entry.elapsed_ms.is_some_and(|ms| ms > 0.0));
    }
    let cut: Vec<_> = entries.iter().filter(|e| !e.ok).collect();
    assert_eq!(cut.len(), 10);
    assert!(
        cut.iter().all(|e| e.stream == Some(r1_loadtest::sse::StreamEnd::Cut)
            && e.reset
            && e.error.as_deref() == Some("other"))
    );
    // Every stream got its first token, the cut ones too (one token went out before the drop), and
    // the log shows it: the cut streams had started.
    assert!(entries.iter().all(|e| e.ttft_ms.is_some()), "{entries:#?}");
}
