//! The gateway on real sockets in front of real r1-edge servers (in process, the shipped model):
//! routing, streaming, headers, errors, failover, mid-stream failure, live reload, admin API, and the
//! production binary's SIGTERM drain.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{CENTER_MODEL, EDGE_MODEL, Edge, Gateway, ask, header};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_by_complexity_with_headers_stream_and_json() {
    let (edge, center) = (Edge::start(EDGE_MODEL), Edge::start(CENTER_MODEL));
    let gw = Gateway::start(&[edge.addr], &[center.addr], "").await;

    let simple = gw.chat(ask("deepseek-r1", "Hello!")).await;
    assert_eq!(simple.status(), 200);
    assert_eq!(header(&simple, "x-r1-route"), "edge");
    assert_eq!(header(&simple, "x-r1-route-reason"), "below_edge_max");
    assert!(!header(&simple, "x-request-id").is_empty());
    assert_eq!(
        header(&simple, "x-r1-model"),
        EDGE_MODEL,
        "the edge pool's model answered"
    );
    let body: Value = simple.json().await.unwrap();
    assert_eq!(body["model"], "deepseek-r1", "under the name the client asked for");

    let mut hard = ask(
        "deepseek-r1",
        "Prove that there are infinitely many primes, step by step, and analyse the proof.",
    );
    hard["stream"] = json!(true);
    let response = gw.chat(hard).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-r1-route"), "center");
    assert_eq!(header(&response, "x-r1-model"), CENTER_MODEL);
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    assert_eq!(header(&response, "x-accel-buffering"), "no");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(
        chunks.len() > 2 && chunks.iter().all(|c| c["model"] == "deepseek-r1"),
        "{text}"
    );

    // The caller's request id is kept.
    let r = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.public))
        .header("x-request-id", "trace-123")
        .json(&ask(EDGE_MODEL, "Hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "trace-123");
    assert_eq!(header(&r, "x-r1-route-reason"), "rule");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_middle_band_splits_by_weights_and_a_live_edit_changes_it_without_failures() {
    let (edge, center) = (Edge::start(EDGE_MODEL), Edge::start(CENTER_MODEL));
    // Every score is in the middle band.
    let routing = "[routing]\nedge_max = 0.0\ncenter_min = 1.0\nweights = { edge = 70, center = 30 }\n";
    let gw = Gateway::start(&[edge.addr], &[center.addr], routing).await;

    // Every request is a new conversation (a conversation that reached the center would stay there).
    async fn run(gw: &Gateway, n: usize, batch: &str) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
            let answers = futures::future::join_all(chunk.iter().map(|i| {
                let mut body = ask("deepseek-r1", &format!("Tell me about number {i} of {batch}"));
                body["max_tokens"] = json!(1);
                gw.chat(body)
            }))
            .await;
            for r in answers {
                match (r.status().as_u16(), header(&r, "x-r1-route")) {
                    (200, "edge") => counts.0 += 1,
                    (200, "center") => counts.1 += 1,
                    _ => counts.2 += 1,
                }
            }
        }
        counts
    }
    let (e, c, failed) = run(&gw, 400, "before").await;
    assert_eq!(failed, 0);
    let share = e as f64 / (e + c) as f64;
    assert!((share - 0.70).abs() <= 0.03, "edge share {share} ({e}/{c})");

    // Edit the file while requests run: 30/70 applies within a couple of seconds, nothing fails.
    let text = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace("edge = 70, center = 30", "edge = 30, center = 70");
    let editing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&gw.config_path, &text).unwrap();
    };
    let ((_, _, failed_during), ()) = tokio::join!(run(&gw, 400, "during"), editing);
    assert_eq!(failed_during, 0, "no request failed across the reload");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("r1_config_reloads_total").await < 1.0 {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (e, c, failed) = run(&gw, 400, "after").await;
    assert_eq!(failed, 0);
    let share = e as f64 / (e + c) as f64;
    assert!((share - 0.30).abs() <= 0.03, "edge share after reload {share}");

    // An invalid edit is refused and the running configuration stays.
    std::fs::write(&gw.config_path, text.replace("edge = 30", "edge = 300")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("r1_config_reload_failures_total").await < 1.0 {
        assert!(Instant::now() < deadline, "invalid reload not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gw.pools().await["weights"], json!({"edge": 30, "center": 70}));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_errors_are_openai_errors_and_never_reach_a_model() {
    let (edge, center) = (Edge::start(EDGE_MODEL), Edge::start(CENTER_MODEL));
    let gw = Gateway::start(&[edge.addr], &[center.addr], "").await;
    let url = format!("{}/v1/chat/completions", gw.public);

    let r = gw.client.post(&url).body("{\"model\":").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let r = gw.chat(ask("gpt-9", "hi")).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");

    // What OpenAI's API refuses is refused here, naming the parameter, with OpenAI's code.
    for (extra, param, code) in [
        (json!({"temperature": 9e99}), "temperature", "decimal_above_max_value"),
        (json!({"top_p": 7}), "top_p", "decimal_above_max_value"),
        (
            json!({"presence_penalty": 2.5}),
            "presence_penalty",
            "decimal_above_max_value",
        ),
        (json!({"n": 1000}), "n", "integer_above_max_value"),
        (json!({"max_tokens": 0}), "max_tokens", "integer_below_min_value"),
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
            "invalid_value",
        ),
        (json!({"top_logprobs": 2}), "top_logprobs", "invalid_value"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
            "integer_above_max_value",
        ),
    ] {
        let mut body = ask("deepseek-r1", "hi");
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let r = gw.chat(body).await;
        assert_eq!(r.status(), 400, "{extra}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{extra}: {body}");
        assert_eq!(body["error"]["code"], code, "{extra}: {body}");
    }
    let form = gw
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(ask("deepseek-r1", "hi").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400, "a form-encoded body is not JSON");
    let body: Value = form.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_content_type");

    // 413 before reading the body: only the header announcing 2 MiB is sent, and the answer comes back.
    let status_line = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(gw.public.trim_start_matches("http://"))
            .await
            .unwrap();
        let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 2097152\r\n\r\n";
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(status_line, "HTTP/1.1 413 Payload Too Large");

    let r = gw.client.get(format!("{}/metrics", gw.public)).send().await.unwrap();
    assert_eq!(r.status(), 404, "metrics are never on the public listener");

    assert_eq!(gw.metric("r1_upstream_errors_total").await, 0.0);
    assert_eq!(
        gw.metric("r1_route_decisions_total").await,
        0.0,
        "refused before routing"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_edge_fails_over_before_sending_and_a_broken_stream_ends_with_an_error_event() {
    let (mut edge, center) = (Edge::start(EDGE_MODEL), Edge::start(CENTER_MODEL));
    let gw = Gateway::start(
        &[edge.addr],
        &[center.addr],
        "[routing]\nedge_max = 1.0\ncenter_min = 1.0\n",
    )
    .await;

    // A stream in progress when the edge dies: an in-band error event, no [DONE].
    let mut long = ask("deepseek-r1", "Hi");
    long["stream"] = json!(true);
    long["max_tokens"] = json!(450);
    long["ignore_eos"] = json!(true);
    let response = gw.chat(long).await;
    assert_eq!(header(&response, "x-r1-route"), "edge");
    let mut stream = response.bytes_stream();
    use futures::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let dead = edge.addr;
    edge.kill();
    // Like a killed process: wait until its port refuses connections (a probe, not a sleep).
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(dead).await.is_ok() {
        assert!(Instant::now() < deadline, "the killed edge still accepts connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rest = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains("[DONE]"),
        "no fake [DONE] after an upstream failure: {rest}"
    );
    assert!(rest.contains("\"error\""), "an in-band error event: {rest}");

    // New requests for the routed model fail over to the center; the edge's own model gets a 503.
    // (A fresh client: Pingora closes a connection whose upstream failed mid-response, and a pooled
    // connection closed under a client's feet is a client-side race, not what this test is about.)
    let mut gw = gw;
    gw.client = reqwest::Client::new();
    let r = gw.chat(ask("deepseek-r1", "Hello!")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-r1-route"), "center");
    assert_eq!(header(&r, "x-r1-route-reason"), "failover_unhealthy");
    let r = gw.chat(ask(EDGE_MODEL, "Hello!")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(header(&r, "x-r1-route"), "edge", "route headers on error answers too");
    assert_eq!(header(&r, "x-r1-route-reason"), "rule");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_explain_matches_the_routing_and_models_are_listed() {
    let (edge, center) = (Edge::start(EDGE_MODEL), Edge::start(CENTER_MODEL));
    let gw = Gateway::start(&[edge.addr], &[center.addr], "").await;
    let explain = gw
        .explain(r#"{"messages": [{"role": "user", "content": "你好"}]}"#)
        .await;
    assert_eq!(explain["route"], "edge", "{explain}");
    for key in ["score", "tier", "reason"] {
        assert!(explain.get(key).is_some(), "{key}");
    }
    let r = gw
        .client
        .post(format!("{}/admin/route/explain", gw.public))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "admin routes are never public");
    let scrape = gw
        .client
        .get(format!("{}/metrics", gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scrape.contains("r1_pool_in_flight{pool=\"edge\"} 0"),
        "in-flight gauges are exported: {scrape}"
    );
    let models: Value = gw
        .client
        .get(format!("{}/v1/models", gw.public))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"deepseek-r1") && ids.contains(&EDGE_MODEL) && ids.contains(&CENTER_MODEL),
        "{ids:?}"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_pool_serves_comes_from_its_members_cards_and_config_overrides_it_live() {
    let edge = Edge::start(EDGE_MODEL);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .model(CENTER_MODEL)
        .max_model_len(32_768);
    let center = r1_mock_upstream::serve(listener, script).await.unwrap();
    // Every prompt scores for the edge, so only what it serves decides.
    let routing = "[routing]\nedge_max = 0.99\ncenter_min = 1.0\n";
    let gw = Gateway::start(&[edge.addr], &[center.addr()], routing).await;

    // Learned with the health checks: r1-edge's card whole, the vLLM-shaped card's context window. A
    // card is read once its member's check passed, so it can come a check after the member is ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pools = loop {
        let pools = gw.pools().await;
        let learned = |p: &Value| p["members"][0].get("serves").is_some_and(|s| !s.is_null());
        if learned(&pools["pools"][0]) && learned(&pools["pools"][1]) || Instant::now() > deadline {
            break pools;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (edge_pool, center_pool) = (&pools["pools"][0], &pools["pools"][1]);
    assert_eq!(edge_pool["serves"]["max_tokens"], 1024, "{pools}");
    assert_eq!(edge_pool["serves"]["context_length"], 512, "{pools}");
    assert_eq!(edge_pool["serves"]["tools"], false, "{pools}");
    assert_eq!(edge_pool["members"][0]["serves"]["max_tokens"], 1024, "{pools}");
    assert_eq!(center_pool["serves"]["context_length"], 32_768, "{pools}");
    assert_eq!(center_pool["serves"]["tools"], true, "{pools}");

    let routed = async |body: Value| {
        let r = gw.chat(body).await;
        let status = r.status().as_u16();
        let (route, reason) = (
            header(&r, "x-r1-route").to_owned(),
            header(&r, "x-r1-route-reason").to_owned(),
        );
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "{route} {reason}: {body}");
        (route, reason)
    };

    // An SDK's default max_tokens on a simple prompt: the edge caps it at 1024, the center serves it.
    let mut sdk_default = ask("deepseek-r1", "Hello!");
    sdk_default["max_tokens"] = json!(2048);
    assert_eq!(
        routed(sdk_default).await,
        ("center".into(), "edge_cannot_serve_max_tokens".into())
    );

    // A long easy prompt with no max_tokens: with the edge's default answer it overflows its context.
    let long = json!({"model": "deepseek-r1", "messages": [{"role": "user", "content": "hello ".repeat(220)}]});
    assert_eq!(
        routed(long).await,
        ("center".into(), "edge_cannot_serve_context".into())
    );

    // A parameter the edge does not take (vLLM's min_p): the center takes it.
    let mut extension = ask("deepseek-r1", "Good afternoon!");
    extension["min_p"] = json!(0.05);
    assert_eq!(
        routed(extension).await,
        ("center".into(), "edge_cannot_serve_parameters".into())
    );

    // What the edge serves stays on the edge (another conversation: the ones above stay on the center).
    assert_eq!(
        routed(ask("deepseek-r1", "Good morning!")).await,
        ("edge".into(), "below_edge_max".into())
    );

    // The operator's word beats the card, live: the edge pool now takes at most 8 tokens.
    let text = std::fs::read_to_string(&gw.config_path).unwrap() + "\n[edge.capabilities]\nmax_tokens = 8\n";
    std::fs::write(&gw.config_path, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.pools().await["pools"][0]["serves"]["max_tokens"] != 8 {
        assert!(Instant::now() < deadline, "override not applied: {}", gw.pools().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        routed(ask("deepseek-r1", "Good evening!")).await,
        ("center".into(), "edge_cannot_serve_max_tokens".into())
    );
    let explain = gw.explain(&ask("deepseek-r1", "Good night!").to_string()).await;
    assert_eq!(explain["route"], "center", "{explain}");
    assert_eq!(explain["reason"], "edge_cannot_serve_max_tokens", "{explain}");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_are_retrieved_by_id_and_browsers_get_cors_only_from_allowed_origins() {
    let edge = Edge::start(EDGE_MODEL);
    let cors = "[cors]\nallowed_origins = [\"https://app.example\"]\n";
    let gw = Gateway::start(&[edge.addr], &[], cors).await;

    // `client.models.retrieve`: ids with a slash, raw or escaped; an unknown one is OpenAI's 404.
    for path in ["deepseek-r1", "deepseek-ai/DeepSeek-R1", "deepseek-ai%2FDeepSeek-R1"] {
        let r = gw
            .client
            .get(format!("{}/v1/models/{path}", gw.public))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let card: Value = r.json().await.unwrap();
        assert_eq!(card["object"], "model");
        assert_eq!(card["id"], path.replace("%2F", "/"));
    }
    let r = gw
        .client
        .get(format!("{}/v1/models/gpt-9", gw.public))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "model_not_found");

    // A preflight from the allowed origin: 204 with what it may send, before any token is asked for.
    let url = format!("{}/v1/chat/completions", gw.public);
    let preflight = |origin: &'static str| {
        gw.client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let r = preflight("https://app.example").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), "https://app.example");
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        "authorization, content-type"
    );
    assert!(header(&r, "access-control-allow-methods").contains("POST"));
    let r = preflight("https://evil.example").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // The answers themselves: proxied and gateway-made alike, readable by the allowed origin only.
    let r = gw
        .client
        .post(&url)
        .header("origin", "https://app.example")
        .json(&ask("deepseek-r1", "Hello!"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), "https://app.example");
    assert!(header(&r, "access-control-expose-headers").contains("x-r1-route"));
    let r = gw
        .client
        .post(&url)
        .header("origin", "https://app.example")
        .json(&ask("gpt-9", "Hello!"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "access-control-allow-origin"), "https://app.example");
    let r = gw
        .client
        .post(&url)
        .header("origin", "https://evil.example")
        .json(&ask("deepseek-r1", "Hello!"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_legacy_completions_api_is_answered_on_both_pools_stream_and_not() {
    let edge = Edge::start(EDGE_MODEL);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .model(CENTER_MODEL)
        .reasoning(2, "hmm ")
        .content(3, "center ");
    let center = r1_mock_upstream::serve(listener, script).await.unwrap();
    let routing = "[routing]\nedge_max = 0.99\ncenter_min = 1.0\n";
    let gw = Gateway::start(&[edge.addr], &[center.addr()], routing).await;
    let url = format!("{}/v1/completions", gw.public);
    let complete = async |body: Value| {
        let r = gw.client.post(&url).json(&body).send().await.unwrap();
        let route = header(&r, "x-r1-route").to_owned();
        (r.status().as_u16(), route, r.text().await.unwrap())
    };

    // The edge (no max_tokens: OpenAI's default of 16 for this API), JSON and stream.
    let (status, route, text) = complete(json!({"model": "deepseek-r1", "prompt": "Hello!", "temperature": 0})).await;
    assert_eq!((status, route.as_str()), (200, "edge"), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["model"], "deepseek-r1");
    assert!(
        answer["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")),
        "{answer}"
    );
    let whole = answer["choices"][0]["text"].as_str().unwrap().to_owned();
    assert!(!whole.is_empty());
    assert!(
        answer["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| (1..=16).contains(&n))
    );
    let (status, _, text) =
        complete(json!({"model": "deepseek-r1", "prompt": "Hello!", "temperature": 0, "stream": true})).await;
    assert_eq!(status, 200);
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"), "{text}");
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, whole, "stream and JSON agree");
    assert!(text.trim_end().ends_with("data: [DONE]"));

    // The center (the edge cannot give 2048 tokens): reasoning left out, the answer's text kept.
    let big = json!({"model": "deepseek-r1", "prompt": "Hello!", "max_tokens": 2048});
    let (status, route, text) = complete(big.clone()).await;
    assert_eq!((status, route.as_str()), (200, "center"), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["choices"][0]["text"], "center center center ");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let mut streaming = big;
    streaming["stream"] = json!(true);
    let (_, _, text) = complete(streaming).await;
    assert!(!text.contains("reasoning") && !text.contains("hmm"), "{text}");
    assert!(text.contains("\"text\":\"center \""), "{text}");

    // What a chat model cannot give is refused by name.
    let (status, _, text) = complete(json!({"model": "deepseek-r1", "prompt": "a", "echo": true})).await;
    assert_eq!(status, 400);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"]["param"], "echo");
    gw.stop();
}

/// The `data` of each SSE event, with its `event:` name.
fn named_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|e| {
            let (name, data) = e.strip_prefix("event: ")?.split_once("\ndata: ")?;
            Some((name.to_owned(), serde_json::from_str(data).ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_responses_and_messages_apis_are_answered_through_the_proxy() {
    let edge = Edge::start(EDGE_MODEL);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .model(CENTER_MODEL)
        .reasoning(2, "hmm ")
        .content(3, "center ");
    let center = r1_mock_upstream::serve(listener, script).await.unwrap();
    let gw = Gateway::start(&[edge.addr], &[center.addr()], "").await;
    let post = async |path: &str, body: Value| {
        let r = gw
            .client
            .post(format!("{}{path}", gw.public))
            .json(&body)
            .send()
            .await
            .unwrap();
        let route = header(&r, "x-r1-route").to_owned();
        (r.status().as_u16(), route, r.text().await.unwrap())
    };

    // Responses, to the center (its own model named): the reasoning item, then the message.
    let ask_center = json!({"model": CENTER_MODEL, "input": "Hello!", "instructions": "Be brief."});
    let (status, route, text) = post("/v1/responses", ask_center.clone()).await;
    assert_eq!((status, route.as_str()), (200, "center"), "{text}");
    let response: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(response["object"], "response");
    assert_eq!(response["model"], CENTER_MODEL);
    assert_eq!(response["instructions"], "Be brief.");
    assert_eq!(response["output"][0]["content"][0]["text"], "hmm hmm ");
    assert_eq!(response["output"][1]["content"][0]["text"], "center center center ");
    assert!(
        response["usage"]["total_tokens"].as_u64().is_some_and(|n| n > 0),
        "{response}"
    );
    let mut streaming = ask_center;
    streaming["stream"] = json!(true);
    let (status, _, text) = post("/v1/responses", streaming).await;
    assert_eq!(status, 200);
    let events = named_events(&text);
    assert_eq!(events.first().map(|e| e.0.as_str()), Some("response.created"), "{text}");
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("response.completed"),
        "{text}"
    );
    let streamed: String = events
        .iter()
        .filter(|e| e.0 == "response.output_text.delta")
        .filter_map(|e| e.1["delta"].as_str())
        .collect();
    assert_eq!(streamed, "center center center ");
    assert!(!text.contains("[DONE]"), "the Responses API has no [DONE]");
    assert!(
        events.last().unwrap().1["response"]["usage"]["output_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "the usage chunk reaches the translator: {text}"
    );

    // Messages, to the edge and the center, JSON and stream.
    let (status, route, text) = post(
        "/v1/messages",
        json!({"model": "deepseek-r1", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello!"}]}),
    )
    .await;
    assert_eq!((status, route.as_str()), (200, "edge"), "{text}");
    let message: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["type"], "text");
    assert!(
        message["usage"]["output_tokens"]
            .as_u64()
            .is_some_and(|n| (1..=16).contains(&n))
    );
    let ask_center = json!({"model": CENTER_MODEL, "max_tokens": 64, "stream": true,
                            "messages": [{"role": "user", "content": "Hello!"}]});
    let (status, route, text) = post("/v1/messages", ask_center).await;
    assert_eq!((status, route.as_str()), (200, "center"), "{text}");
    let events = named_events(&text);
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert_eq!(names.last(), Some(&"message_stop"), "{text}");
    let thinking: String = events
        .iter()
        .filter_map(|e| e.1["delta"]["thinking"].as_str())
        .collect();
    assert_eq!(thinking, "hmm hmm ");

    // Refusals take the API's shape: Anthropic's error body, OpenAI's with its param.
    let (status, _, text) = post(
        "/v1/messages",
        json!({"model": "deepseek-r1", "messages": [{"role": "user", "content": "Hello!"}]}),
    )
    .await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("max_tokens"),
        "{error}"
    );
    let (status, _, text) = post(
        "/v1/responses",
        json!({"model": "deepseek-r1", "input": "hi", "store": true}),
    )
    .await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["param"], "store");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_member_gets_what_the_client_sent_with_only_the_model_changed_unless_hygiene_edited_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default().model(CENTER_MODEL).record(8);
    let center = r1_mock_upstream::serve(listener, script).await.unwrap();
    let gw = Gateway::start(&[], &[center.addr()], "").await;
    let send = |body: String| {
        gw.client
            .post(format!("{}/v1/chat/completions", gw.public))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Unmodelled keys, a null, and a number as the client wrote it reach the member as sent.
    let r = send(
        r#"{"model":"deepseek-r1","messages":[{"role":"user","content":"hi"}],"max_tokens":null,
            "repetition_penalty":1.10,"metadata":{"b":1,"a":2}}"#
            .to_owned(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let upstream = center.recorded().last().unwrap().body.clone();
    assert_eq!(
        upstream,
        json!({"model": CENTER_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": null,
            "repetition_penalty": 1.10, "metadata": {"b": 1, "a": 2}})
    );
    // A stream that did not ask for usage asks the member for it.
    let r = send(r#"{"model":"deepseek-r1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#.to_owned())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let upstream = center.recorded().last().unwrap().body.clone();
    assert_eq!(upstream["stream_options"], json!({"include_usage": true}));
    assert_eq!(upstream["model"], CENTER_MODEL);
    // Text hygiene rewrote (NFC: "e" + combining acute becomes "é"): the member reads the rewritten
    // request, not the client's bytes.
    let r = send(r#"{"model":"deepseek-r1","messages":[{"role":"user","content":"caf\u0065\u0301"}]}"#.to_owned())
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let upstream = center.recorded().last().unwrap().body.clone();
    assert_eq!(upstream["messages"][0]["content"], "caf\u{e9}");
    assert_eq!(upstream["model"], CENTER_MODEL);
    gw.stop();
    center.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embeddings_go_to_the_pool_that_declares_them_and_are_a_404_naming_the_key_otherwise() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default().model(CENTER_MODEL).record(4);
    let center = r1_mock_upstream::serve(listener, script).await.unwrap();
    let embed = json!({"model": "deepseek-r1", "input": ["one text", "another"], "encoding_format": "float"});

    let gw = Gateway::start_full(
        &[],
        &[center.addr()],
        "",
        "",
        "[center.capabilities]\nembeddings = true\n",
        reqwest::Client::new(),
    )
    .await;
    let r = gw
        .client
        .post(format!("{}/v1/embeddings", gw.public))
        .json(&embed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-r1-route"), "center");
    assert_eq!(header(&r, "x-r1-route-reason"), "embeddings");
    assert_eq!(header(&r, "x-r1-model"), CENTER_MODEL);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["model"], "deepseek-r1", "the name the client asked for");
    assert_eq!(answer["data"].as_array().map(Vec::len), Some(2));
    let first: Vec<f32> = serde_json::from_value(answer["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(first, r1_mock_upstream::embedding("one text"));
    assert_eq!(answer["usage"]["prompt_tokens"], 3);
    let recorded = center.recorded();
    assert_eq!(
        recorded.last().unwrap().body["model"],
        CENTER_MODEL,
        "the pool's model upstream"
    );
    let r = gw
        .client
        .post(format!("{}/v1/embeddings", gw.public))
        .json(&json!({"model": "deepseek-r1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "input");
    gw.stop();

    let edge = Edge::start(EDGE_MODEL);
    let gw = Gateway::start(&[edge.addr], &[center.addr()], "").await;
    let r = gw
        .client
        .post(format!("{}/v1/embeddings", gw.public))
        .json(&embed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "embeddings_not_configured");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("edge.capabilities.embeddings"),
        "{error}"
    );
    gw.stop();
}

/// SIGTERM to the production binary with streams open: readiness is false at once (load balancers take
/// the replica out), the replica serves on for `listen.shutdown_grace`, then refuses new requests while
/// the streams finish with their `[DONE]` within `listen.shutdown_drain`, and the process then exits
/// cleanly (Pingora's own graceful stop would cut them at the end of its grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_makes_readiness_false_at_once_and_lets_open_streams_finish() {
    // Each answer streams 20 tokens over about 2 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .content(20, "tok ")
        .delays(Duration::from_millis(50), Duration::from_millis(100));
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let (public, admin) = (support::free_port(), support::free_port());
    let dir = std::env::temp_dir().join(format!("r1-gw-sigterm-{}-{public}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\nadmin = \"127.0.0.1:{admin}\"\n\
             shutdown_grace = \"1s\"\nshutdown_drain = \"20s\"\n\
             [auth]\nenabled = false\n[cache]\nenabled = false\n\
             [edge]\nmodel = \"{EDGE_MODEL}\"\nmembers = [\"{}\"]\nhealth = {{ interval = \"200ms\" }}\n\
             [center]\nmodel = \"{CENTER_MODEL}\"\nmembers = []\n",
            upstream.addr()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_r1-gateway"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let (public, admin) = (
        format!("http://127.0.0.1:{public}"),
        format!("http://127.0.0.1:{admin}"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pools = match client.get(format!("{admin}/admin/pools")).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if pools["pools"][0]["members"][0]["ready"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never became ready: {pools}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = |client: reqwest::Client, public: String| async move {
        client
            .get(format!("{public}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ready(client.clone(), public.clone()).await, 200);

    // Three streams open, each past its first token.
    let mut streams = Vec::new();
    for n in 0..3 {
        let body = json!({"model": EDGE_MODEL, "messages": [{"role": "user", "content": format!("stream {n}")}], "stream": true});
        let r = client
            .post(format!("{public}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let started = Instant::now();
    // The shell's own `kill`: no dependency on a procps binary.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    // Readiness is false at once (well within the 1 s grace, while the listener still answers).
    let deadline = Instant::now() + Duration::from_millis(900);
    while ready(client.clone(), public.clone()).await != 503 {
        assert!(Instant::now() < deadline, "readiness still true after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Through the grace the replica serves as before; after it, a new API request is refused (503,
    // Retry-After) while the open streams finish.
    let models = |client: reqwest::Client, public: String| async move {
        let r = client.get(format!("{public}/v1/models")).send().await.unwrap();
        (r.status().as_u16(), r.headers().get("retry-after").cloned())
    };
    assert_eq!(
        models(client.clone(), public.clone()).await.0,
        200,
        "served during the grace"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let refused = loop {
        let (status, retry_after) = models(client.clone(), public.clone()).await;
        if status == 503 {
            assert_eq!(retry_after.unwrap(), "1");
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "new requests still served after the grace");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused >= Duration::from_millis(900),
        "refused only after the 1 s grace: {refused:?}"
    );
    // Every open stream finishes with its [DONE], no error.
    for stream in streams {
        let text = stream.text().await.unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        assert!(!text.contains("\"error\""), "{text}");
        assert_eq!(text.matches("tok ").count(), 20, "the whole answer: {text}");
    }
    // And the process exits cleanly once they are done, within grace + drain.
    let deadline = Instant::now() + Duration::from_secs(25);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running {:?} after SIGTERM",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    upstream.shutdown().await.unwrap();
}
