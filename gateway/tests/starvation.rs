//! One tenant cannot starve the others: slow request bodies of one subject take at most its
//! `concurrent_requests` places in this replica (the next is a 429 before its body is read), a body that
//! does not arrive within `limits.body_timeout` is a 408 with its connection closed, and meanwhile
//! another tenant's requests and the model list are answered. On the real gateway in front of the
//! stand-in for the model API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::{EDGE_MODEL, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "gateway-starvation-test-secret-0123456789";

fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"user_id": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A request whose body never finishes: its head and the first bytes of a 100-byte body.
async fn slow_body(public: &str, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(public.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\""
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// The status line the connection answers within `within`, and whether it was then closed.
async fn answer(tcp: &mut TcpStream, within: Duration) -> Option<(String, bool)> {
    let mut got = Vec::new();
    let mut buf = vec![0; 8192];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => {
                return (!got.is_empty()).then(|| (status_line(&got), false));
            }
            Ok(Ok(0) | Err(_)) => return (!got.is_empty()).then(|| (status_line(&got), true)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_bodies_of_one_tenant_never_starve_another() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(2, "ok "))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("r1-gw-starve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let config = format!(
        "[auth]\nsecret_file = \"{}\"\n[limits]\nmax_in_flight = 6\nconcurrent_requests = 2\nbody_timeout = \"2s\"\n",
        dir.join("secret").display()
    );
    let gw = Gateway::start_full(&[upstream.addr()], &[], "", &config, "", reqwest::Client::new()).await;
    let (mallory, alice) = (token("mallory"), token("alice"));

    // Mallory opens more slow bodies than the gateway has places: two are held, the rest refused at once.
    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut tcp = slow_body(&gw.public, &mallory).await;
        match answer(&mut tcp, Duration::from_millis(300)).await {
            None => held.push(tcp),
            Some((status, _)) => {
                assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
                refused += 1;
            }
        }
    }
    assert_eq!(
        (held.len(), refused),
        (2, 6),
        "concurrent_requests = 2 holds before the body is read"
    );

    // Alice, and the model list, are answered meanwhile.
    let chat = json!({"model": EDGE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    for _ in 0..3 {
        let r = gw
            .client
            .post(format!("{}/v1/chat/completions", gw.public))
            .bearer_auth(&alice)
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "another tenant is not starved");
    }
    let models = gw
        .client
        .get(format!("{}/v1/models", gw.public))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);

    // The held bodies time out: 408, connection closed, within body_timeout of their start.
    for mut tcp in held {
        let (status, closed) = answer(&mut tcp, Duration::from_secs(5)).await.expect("an answer");
        assert_eq!(status, "HTTP/1.1 408 Request Timeout");
        assert!(closed, "the rest of the body is never read as a request");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Mallory's places were given back.
    let r = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.public))
        .bearer_auth(&mallory)
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A place is given back when the gateway has logged the request, just after the client read the
    // answer: polled, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.metric("r1_in_flight").await != 0.0 {
        assert!(Instant::now() < deadline, "every place given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_and_batches_pass_the_callers_limits() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let center = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(2, "ok "))
        .await
        .unwrap();
    let limits = "[limits]\nrequests_per_second = 5\nburst = 5\ntokens_per_minute = 200000\n";
    let gw = Gateway::start_full(
        &[],
        &[center.addr()],
        "",
        limits,
        "transport = \"embedded\"\n",
        reqwest::Client::new(),
    )
    .await;
    let task =
        json!({"model": support::CENTER_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8});

    // A burst of tasks is limited as a burst of chat requests is.
    let mut accepted = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let r = gw
            .client
            .post(format!("{}/v1/tasks", gw.public))
            .json(&task)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            202 => accepted += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    assert!((5..=6).contains(&accepted), "burst 5: {accepted} accepted");
    assert_eq!(accepted + limited, 20);

    // A batch needing more than a minute's token budget is refused, whole, before anything is queued.
    let line = |i: usize| {
        json!({"custom_id": format!("l{i}"), "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": support::CENTER_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32768}})
        .to_string()
    };
    let batch: String = (0..1000).map(|i| line(i) + "\n").collect();
    let r = gw
        .client
        .post(format!("{}/v1/batches", gw.public))
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let error: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "tokens_over_budget", "{error}");
    assert!(
        center.stats().snapshot().received <= accepted,
        "no line of the batch reached the model"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_embedded_batch_larger_than_the_interactive_queue_loses_no_line() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let center = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(1, "ok"))
        .await
        .unwrap();
    let gw = Gateway::start_full(
        &[],
        &[center.addr()],
        "",
        "",
        "transport = \"embedded\"\n",
        reqwest::Client::new(),
    )
    .await;
    let lines: String = (0..1500)
        .map(|i| {
            json!({"custom_id": format!("l{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": support::CENTER_MODEL, "messages": [{"role": "user", "content": format!("q{i}")}], "max_tokens": 4}})
            .to_string()
                + "\n"
        })
        .collect();
    let r = gw
        .client
        .post(format!("{}/v1/batches", gw.public))
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let batch: serde_json::Value = r.json().await.unwrap();
    let url = format!("{}/v1/batches/{}", gw.public, batch["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let v: serde_json::Value = gw.client.get(&url).send().await.unwrap().json().await.unwrap();
        if v["status"] == "completed" {
            break v;
        }
        assert!(Instant::now() < deadline, "the batch did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await; // polling, as a client of the API does
    };
    assert_eq!(
        finished["request_counts"],
        json!({"total": 1500, "completed": 1500, "failed": 0}),
        "every line was queued and answered"
    );
    gw.stop();
}

/// A member that says it is busy (429 with `Retry-After`, as r1-edge does when its queue is full or moves
/// too slowly) is skipped for that long and its refusal is retried where there is room; a pool whose
/// members are all busy counts as saturated, so requests go to the other pool, and one that may go
/// nowhere else is shed at once with 503 + `Retry-After` — the busy member is not sent more meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_member_is_skipped_and_with_no_room_left_the_request_is_shed_at_once() {
    let serve = |script: r1_mock_upstream::Script| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        r1_mock_upstream::serve(listener, script).await.unwrap()
    };
    let busy = serve(r1_mock_upstream::Script::default().per_request(|_| r1_mock_upstream::Reply::status(429))).await;
    let edge = serve(r1_mock_upstream::Script::default().content(2, "ok ")).await;
    let center = serve(r1_mock_upstream::Script::default().content(2, "ok ")).await;
    let ask = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    let received = |h: &r1_mock_upstream::Handle| h.stats().received.load(std::sync::atomic::Ordering::Relaxed);

    // Two edge members, one busy: every request is answered, the busy one is asked about once a second.
    let gw = Gateway::start(&[busy.addr(), edge.addr()], &[center.addr()], "").await;
    for _ in 0..6 {
        let r = gw.chat(ask(EDGE_MODEL)).await;
        assert_eq!(
            r.status(),
            200,
            "a busy member's refusal is retried on the other member"
        );
        assert_eq!(r.headers()["x-r1-route"], "edge");
    }
    assert_eq!(
        received(&busy),
        1,
        "skipped for its Retry-After once it said it is busy"
    );
    assert!(
        gw.metric("r1_upstream_errors_total{phase=\"busy\",route=\"edge\"}")
            .await
            >= 1.0
    );
    let pools = gw.pools().await;
    let member = pools["pools"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["address"] == busy.addr().to_string())
        .unwrap()
        .clone();
    assert_eq!(member["busy"], true, "{pools}");
    assert_eq!(member["consecutive_failures"], 0, "busy is not a failure: {pools}");
    assert_eq!(member["ejected"], false, "{pools}");
    gw.stop();

    // The edge's only member busy: a request the router sends to the edge fails over to the center...
    let before = received(&busy);
    let gw = Gateway::start(
        &[busy.addr()],
        &[center.addr()],
        "[routing]\nedge_max = 1.0\ncenter_min = 1.0\n",
    )
    .await;
    let r = gw.chat(ask("deepseek-r1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-r1-route"], "center");
    assert_eq!(r.headers()["x-r1-route-reason"], "failover_saturated");
    assert_eq!(received(&busy), before + 1, "it asked the edge first");
    // ... and while it is busy, the next ones go to the center without asking it.
    let r = gw.chat(ask("deepseek-r1")).await;
    assert_eq!(r.headers()["x-r1-route"], "center");
    assert_eq!(r.headers()["x-r1-route-reason"], "failover_saturated");
    // A request pinned to the edge (its model named) may go nowhere else: shed at once.
    let started = Instant::now();
    let r = gw.chat(ask(EDGE_MODEL)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("busy"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shed at once: {:?}",
        started.elapsed()
    );
    assert_eq!(received(&busy), before + 1, "the busy member was not sent more");
    // Counted as the gateway's own refusal, not as an error of a member it never asked.
    assert_eq!(gw.metric("r1_rejected_requests_total{kind=\"overloaded\"}").await, 1.0);
    assert_eq!(
        gw.metric("r1_upstream_errors_total{phase=\"proxy\",route=\"edge\"}")
            .await,
        0.0
    );
    gw.stop();
}
