//! The Kafka hand-off end to end, on the real broker and Redis the test command starts
//! (`scripts/services.sh up`): the gateway in process, real `r1-center` processes, and behind them a
//! real OpenAI-compatible server (r1-edge) — or, where a slow scripted stream is needed to kill a
//! node mid-answer, the mock of the external model API.
//!
//! Every test uses its own topics and consumer group, so tests do not see each other's tasks. The first
//! one also runs over the broker's SASL_SSL listener (SCRAM-SHA-512, the test CA): the same answers,
//! with the gateway's password from the environment and the node's from a file — and over the SASL_SSL
//! listeners of the three-broker cluster (`scripts/services.sh up kafka-cluster`; its broker failover
//! drills are `tests/kafka_failover.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::kafka::{
    Center, Listener, Names, ask_center, direct_answer, kafka_gateway, kafka_gateway_on, kafka_gateway_with, read_sse,
    read_topic,
};
use support::{CENTER_MODEL, Edge, header};

/// Asks `question` through `gw` (streamed or not) in a task: its answer's content, once it is a 200 that
/// ended cleanly.
fn ask_for_content(gw: &support::Gateway, question: &str, stream: bool) -> tokio::task::JoinHandle<String> {
    let (client, url, body) = (
        gw.client.clone(),
        format!("{}/v1/chat/completions", gw.public),
        ask_center(question, stream),
    );
    tokio::spawn(async move {
        let r = client.post(url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => v["choices"][0]["message"]["content"].as_str().unwrap().to_owned(),
            Err(_) => {
                let (t, _, done, error) = read_sse(&text);
                assert!(done && error.is_none(), "{text}");
                t
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn center_requests_go_through_kafka_to_r1_center_and_stream_back() {
    requests_go_through_kafka_and_stream_back(&Listener::target()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hand_off_works_the_same_over_sasl_ssl_with_scram_sha_512() {
    let Some(listener) = Listener::sasl_ssl("SCRAM-SHA-512") else {
        return;
    };
    requests_go_through_kafka_and_stream_back(&listener).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hand_off_works_the_same_on_a_three_broker_cluster_over_sasl_ssl() {
    let Some(listener) = Listener::cluster_sasl_ssl("SCRAM-SHA-512") else {
        return;
    };
    requests_go_through_kafka_and_stream_back(&listener).await;
}

async fn requests_go_through_kafka_and_stream_back(listener: &Listener) {
    let names = Names::new();
    // The center's backend: a real OpenAI-compatible server (r1-edge serving under the center's name).
    let backend = Edge::start(CENTER_MODEL);
    let direct = direct_answer(
        &format!("http://{}", backend.addr),
        "Prove that there are infinitely many primes.",
    )
    .await;
    let expected = direct["choices"][0]["message"]["content"].as_str().unwrap().to_owned();

    let center = Center::start_on(&names, "center-a", &format!("http://{}", backend.addr), listener);
    let edge = Edge::start(support::EDGE_MODEL);
    let gw = kafka_gateway_on(&names, &[edge.addr], 0, listener).await;
    center.wait_until_serving().await;
    gw.wait_until_center_seen().await;

    // Not streamed: one JSON answer, identical to the backend's own.
    let r = gw
        .chat(ask_center("Prove that there are infinitely many primes.", false))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-r1-route"), "center");
    assert!(!header(&r, "x-r1-task-id").is_empty());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], expected.as_str(), "{body}");
    assert_eq!(body["usage"], direct["usage"], "usage is the backend's own count");

    // Streamed: the same text, usage, [DONE].
    let r = gw
        .chat(ask_center("Prove that there are infinitely many primes.", true))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let (text, usage, done, error) = read_sse(&r.text().await.unwrap());
    assert_eq!(error, None);
    assert!(done, "a complete stream ends with [DONE]");
    assert_eq!(text, expected);
    assert_eq!(usage.unwrap(), direct["usage"]);

    // Routed traffic: simple prompts stay on the edge (HTTP), complex ones go through Kafka.
    let r = gw
        .chat(json!({"model": "deepseek-r1", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}))
        .await;
    assert_eq!(header(&r, "x-r1-route"), "edge");
    assert_eq!(
        center.metric_once("r1_center_tasks_total{outcome=\"ok\"}", 2.0).await,
        2.0
    );
    let exposition = reqwest::get(&center.metrics).await.unwrap().text().await.unwrap();
    assert!(exposition.contains("r1_center_queue_lag "), "{exposition}");
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        assert!(
            !exposition.contains("r1_center_gpu"),
            "no GPU here: GPU metrics absent, not zero"
        );
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_and_two_center_nodes_never_cross_their_results() {
    let names = Names::new();
    let backend = Edge::start(CENTER_MODEL);
    let url = format!("http://{}", backend.addr);
    let centers = [
        Center::start(&names, "center-a", &url),
        Center::start(&names, "center-b", &url),
    ];
    let edge = Edge::start(support::EDGE_MODEL);
    let gw_a = kafka_gateway(&names, &[edge.addr], 0, "").await;
    let gw_b = kafka_gateway(&names, &[edge.addr], 1, "").await;
    for c in &centers {
        c.wait_until_serving().await;
    }
    gw_a.wait_until_center_seen().await;
    gw_b.wait_until_center_seen().await;
    // Each question has its own answer; 24 requests over two gateways at once.
    let questions: Vec<String> = (0..12).map(|i| format!("What is {i} plus {}?", i + 3)).collect();
    let mut expected = Vec::new();
    for q in &questions {
        let direct = direct_answer(&url, q).await;
        expected.push(direct["choices"][0]["message"]["content"].as_str().unwrap().to_owned());
    }
    let mut calls = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        for gw in [&gw_a, &gw_b] {
            calls.push(ask_for_content(gw, q, i % 2 == 0));
        }
    }
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap(),
            expected[i / 2],
            "answer {i} reached the right client"
        );
    }
    // Every answer reached its own client, and no gateway saw a result addressed to the other.
    for gw in [&gw_a, &gw_b] {
        let pools = gw.pools().await;
        assert_eq!(pools["handoff"]["results_orphaned"], 0, "{pools}");
    }
    // A node counts a task once its last chunk is acknowledged, which can be just after the client read
    // it: wait for the count (bounded), then check it is exactly one per request.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ok = loop {
        let ok: f64 = centers[0].metric("r1_center_tasks_total{outcome=\"ok\"}").await
            + centers[1].metric("r1_center_tasks_total{outcome=\"ok\"}").await;
        if ok >= 24.0 || std::time::Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ok, 24.0);
    gw_a.stop();
    gw_b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_center_node_killed_mid_answer_is_replaced_and_the_client_gets_one_complete_answer() {
    let names = Names::new();
    // A slow, deterministic stream from the stand-in for the big-model API: 40 tokens, 100 ms apart.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .content(40, "word ")
        .delays(Duration::from_millis(50), Duration::from_millis(100));
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let url = format!("http://{}", upstream.addr());
    let mut a = Center::start(&names, "center-a", &url);
    let edge = Edge::start(support::EDGE_MODEL);
    let gw = kafka_gateway(&names, &[edge.addr], 0, "").await;
    a.wait_until_serving().await;
    gw.wait_until_center_seen().await;

    let mut request = ask_center("Write a long essay.", true);
    request["max_tokens"] = json!(100);
    let response = gw.chat(request).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut body = String::new();
    use futures::StreamExt;
    // Read until a few words arrived, then kill the node that runs the task.
    while body.matches("word").count() < 5 {
        body.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    let b = Center::start(&names, "center-b", &url);
    b.wait_until_serving().await;
    a.kill();
    // The rest arrives once b owns the partition and a's claim has lapsed: one complete answer.
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(piece) = stream.next().await {
            body.push_str(std::str::from_utf8(&piece.unwrap()).unwrap());
        }
    })
    .await;
    assert!(rest.is_ok(), "the answer did not complete: {body}");
    let (text, _, done, error) = read_sse(&body);
    assert_eq!(error, None, "{body}");
    assert!(done);
    assert_eq!(text, "word ".repeat(40), "exactly one complete answer, nothing doubled");
    assert_eq!(b.metric("r1_center_redeliveries_total").await, 1.0);
    gw.stop();
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_task_ends_in_the_dead_letter_topic_after_its_attempts_while_others_keep_flowing() {
    let names = Names::new();
    // The model server fails every request carrying the poison prompt, and answers the rest.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .content(4, "ok ")
        .delays(Duration::from_millis(20), Duration::from_millis(20))
        .poison("POISON", 500);
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let center = Center::start(&names, "center-a", &format!("http://{}", upstream.addr()));
    let edge = Edge::start(support::EDGE_MODEL);
    let gw = kafka_gateway(&names, &[edge.addr], 0, "").await;
    center.wait_until_serving().await;
    gw.wait_until_center_seen().await;

    let poison = {
        let (client, url) = (gw.client.clone(), format!("{}/v1/chat/completions", gw.public));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&ask_center("POISON pill", false))
                .send()
                .await
                .unwrap()
        })
    };
    let mut others = Vec::new();
    for i in 0..10 {
        let (client, url) = (gw.client.clone(), format!("{}/v1/chat/completions", gw.public));
        others.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&ask_center(&format!("question {i}"), false))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
        }));
    }
    for other in others {
        assert_eq!(other.await.unwrap(), "ok ok ok ok ");
    }
    // The poison task: tried max_attempts (3) times, then dead-lettered; its client gets an error.
    let r = poison.await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("failed 3 times"),
        "{body}"
    );
    let letters = read_topic(&names.topic("dlq"), 1).await;
    let (payload, headers) = &letters[0];
    let task = r1_proto::TaskEnvelope::decode(payload).unwrap();
    assert!(task.request.messages[0].text().contains("POISON"));
    assert_eq!(headers["r1-attempts"], "3");
    assert!(headers["r1-error"].contains("failed 3 times"), "{headers:?}");
    assert_eq!(center.metric_once("r1_center_dead_lettered_total", 1.0).await, 1.0);
    assert_eq!(
        center.metric_once("r1_center_tasks_total{outcome=\"ok\"}", 10.0).await,
        10.0
    );
    gw.stop();
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_versions_split_by_weight_and_a_live_rollback_loses_no_task() {
    let names = Names::new();
    // Two versions of the center model, each behind its own r1-center node and its own backend.
    let serve = |text: &'static str, chunks: u32, between: u64| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let script = r1_mock_upstream::Script::default()
            .content(chunks, text)
            .delays(Duration::from_millis(10), Duration::from_millis(between));
        r1_mock_upstream::serve(listener, script).await.unwrap()
    };
    let (current, next) = (serve("one ", 12, 100).await, serve("two ", 3, 5).await);
    let a = Center::start_version(
        &names,
        "center-current",
        &format!("http://{}", current.addr()),
        Some("current"),
    );
    let b = Center::start_version(&names, "center-next", &format!("http://{}", next.addr()), Some("next"));
    let edge = Edge::start(support::EDGE_MODEL);
    let versions =
        "[[center.versions]]\nname = \"current\"\nweight = 100\n[[center.versions]]\nname = \"next\"\nweight = 0\n";
    let gw = kafka_gateway_with(&names, &[edge.addr], 0, "", versions).await;
    a.wait_until_serving().await;
    b.wait_until_serving().await;
    gw.wait_until_center_seen().await;

    let ask = |i: usize| {
        let mut body = ask_center(&format!("conversation {i}"), false);
        body["max_tokens"] = json!(100);
        let (client, url) = (gw.client.clone(), format!("{}/v1/chat/completions", gw.public));
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let version = header(&r, "x-r1-model-version").to_owned();
            let v: Value = r.json().await.unwrap();
            (
                version,
                v["choices"][0]["message"]["content"].as_str().unwrap().to_owned(),
            )
        }
    };
    for i in 0..4 {
        assert_eq!(ask(i).await, ("current".to_owned(), "one ".repeat(12)));
    }
    // A slow answer of the current version is running when the rollout flips the weights.
    let running = tokio::spawn(ask(100));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.metric("r1_center_in_flight").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the slow task did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reloads = gw.metric("r1_config_reloads_total").await;
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let flipped = text
        .replace("name = \"current\"\nweight = 100", "name = \"current\"\nweight = 0")
        .replace("name = \"next\"\nweight = 0", "name = \"next\"\nweight = 100");
    std::fs::write(&gw.config_path, flipped).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.metric("r1_config_reloads_total").await <= reloads {
        assert!(
            std::time::Instant::now() < deadline,
            "the edited config was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 4..8 {
        assert_eq!(ask(i).await, ("next".to_owned(), "two ".repeat(3)));
    }
    // The task the old version had finishes there: nothing is lost by the switch.
    assert_eq!(running.await.unwrap(), ("current".to_owned(), "one ".repeat(12)));
    assert_eq!(
        gw.metric("r1_center_version_tasks_total{version=\"current\"}").await,
        5.0
    );
    assert_eq!(gw.metric("r1_center_version_tasks_total{version=\"next\"}").await, 4.0);
    assert_eq!(b.metric_once("r1_center_tasks_total{outcome=\"ok\"}", 4.0).await, 4.0);
    gw.stop();
}

/// Receives webhook calls: the JSON bodies, as they come.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break body.to_owned();
                    }
                }
                if n == 0 {
                    break String::new();
                }
            };
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = tx.send(serde_json::from_str(&body).unwrap_or(Value::Null));
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_tasks_and_batches_are_stored_answered_and_cancellable() {
    let names = Names::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .content(5, "async ")
        .delays(Duration::from_millis(10), Duration::from_millis(10))
        .when("SLOW", r1_mock_upstream::Reply::ok().delay(Duration::from_secs(30)));
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let center = Center::start(&names, "center-a", &format!("http://{}", upstream.addr()));
    let edge = Edge::start(support::EDGE_MODEL);
    // The webhook receiver listens on loopback: allowed here (refused by default, tasks::tests).
    let redis = format!(
        "[redis]\n{}[tasks]\nwebhook_private_networks = true\n",
        support::redis_target::keys()
    );
    let gw = kafka_gateway(&names, &[edge.addr], 0, &redis).await;
    center.wait_until_serving().await;
    gw.wait_until_center_seen().await;
    let client = &gw.client;
    let api = |path: &str| format!("{}{path}", gw.public);

    // A task with a webhook: 202 + Location, then succeeded with the chat completion.
    let (hook, mut calls) = webhook_receiver().await;
    let r = client
        .post(api("/v1/tasks"))
        .json(&json!({"request": ask_center("Summarise the history of Rome.", false), "webhook": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["status"], "queued");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/tasks/{id}"));
    let done = poll(client, &api(&location), |v| v["status"] == "succeeded").await;
    assert_eq!(done["result"]["choices"][0]["message"]["content"], "async ".repeat(5));
    assert_eq!(done["result"]["object"], "chat.completion");
    // The center node wrote that final state: it is kept as long as the gateway keeps a new task's.
    let timeouts = r1_queue::redis_conn::Timeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_secs(2),
        retries: 1,
    };
    let mut redis = support::redis_target::client().connect(timeouts).await.unwrap();
    let kept_ms: i64 = redis::cmd("PTTL")
        .arg(r1_queue::state::task_key(&id))
        .query_async(&mut redis)
        .await
        .unwrap();
    let full_ms = i64::try_from(r1_queue::state::TASK_STATE_TTL.as_millis()).unwrap();
    assert!(
        kept_ms > full_ms - 60_000 && kept_ms <= full_ms,
        "a finished task is kept {kept_ms} ms, not the {full_ms} ms of a new one"
    );
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call, json!({"id": id, "object": "r1.task", "status": "succeeded"}));

    // The guide's prompt shape is a task too.
    let r = client
        .post(api("/v1/tasks"))
        .json(&json!({"prompt": "Summarise the history of Carthage.", "max_tokens": 64, "temperature": 0.3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let prompt_task: Value = r.json().await.unwrap();
    let url = api(&format!("/v1/tasks/{}", prompt_task["id"].as_str().unwrap()));
    let done = poll(client, &url, |v| v["status"] == "succeeded").await;
    assert_eq!(done["result"]["choices"][0]["message"]["content"], "async ".repeat(5));
    let r = client
        .post(api("/v1/tasks"))
        .json(&json!({"prompt": "hi", "temperature": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the same checks as a chat request");

    // DELETE cancels a task the model is still thinking about: the node stops it at once.
    let r = client
        .post(api("/v1/tasks"))
        .json(&ask_center("SLOW thinking", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let slow: Value = r.json().await.unwrap();
    let slow_url = api(&format!("/v1/tasks/{}", slow["id"].as_str().unwrap()));
    poll(client, &slow_url, |v| v["status"] == "running").await;
    let r = client.delete(&slow_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while center.metric("r1_center_tasks_total{outcome=\"cancelled\"}").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the center node did not stop the cancelled task"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(poll(client, &slow_url, |_| true).await["status"], "cancelled");

    // Async tasks get the same input hygiene as interactive requests: an unknown role is a 400.
    let mut bad = ask_center("hi", false);
    bad["messages"][0]["role"] = json!("wizard");
    let r = client
        .post(api("/v1/tasks"))
        .json(&json!({"request": bad}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown role"));

    // Unknown ids are 404 with an OpenAI error body.
    let r = client.get(api("/v1/tasks/task_nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "not_found_error");

    // A batch: every line checked first (one bad line refuses all of it, naming the line) …
    let bad = format!(
        "{}\n{}\n",
        json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": ask_center("one", false)}),
        json!({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "nope", "messages": []}})
    );
    let r = client.post(api("/v1/batches")).body(bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("line 2"));
    // … then each line runs as a task; the output is keyed by custom_id.
    let lines: String = ["alpha", "beta", "gamma"]
        .iter()
        .map(|c| {
            json!({"custom_id": c, "method": "POST", "url": "/v1/chat/completions", "body": ask_center(c, false)})
                .to_string()
                + "\n"
        })
        .collect();
    let r = client.post(api("/v1/batches")).body(lines).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let batch: Value = r.json().await.unwrap();
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["request_counts"]["total"], 3);
    let batch_url = api(&format!("/v1/batches/{}", batch["id"].as_str().unwrap()));
    let finished = poll(client, &batch_url, |v| v["status"] == "completed").await;
    assert_eq!(
        finished["request_counts"],
        json!({"total": 3, "completed": 3, "failed": 0})
    );
    let output = client
        .get(format!("{batch_url}/output"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut ids: Vec<String> = output
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["response"]["status_code"], 200);
            assert_eq!(
                v["response"]["body"]["choices"][0]["message"]["content"],
                "async ".repeat(5)
            );
            v["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["alpha", "beta", "gamma"]);
    gw.stop();
    upstream.shutdown().await.unwrap();
}

/// GETs `url` until `ready` holds (bounded).
async fn poll(client: &reqwest::Client, url: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        if ready(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "not ready in time: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tool_calls_and_backend_refusals_come_back_through_the_hand_off_as_the_server_sent_them() {
    let names = Names::new();
    // The stand-in for the big-model API: reasoning, then a streamed tool call when tools are offered;
    // a 400 for one poison prompt.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .reasoning(2, "think ")
        .content(3, "ok ")
        .when("refuse me", r1_mock_upstream::Reply::status(400));
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let center = Center::start(&names, "center-a", &format!("http://{}", upstream.addr()));
    let edge = Edge::start(support::EDGE_MODEL);
    let gw = kafka_gateway(&names, &[edge.addr], 0, "").await;
    center.wait_until_serving().await;
    gw.wait_until_center_seen().await;

    let tools = json!([{"type": "function", "function": {
        "name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let mut ask = ask_center("Find the weather in Paris.", false);
    ask["tools"] = tools.clone();

    // Not streamed: one message with the call, content null, finish_reason tool_calls.
    let r = gw.chat(ask.clone()).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(choice["message"]["content"], Value::Null, "{body}");
    assert_eq!(choice["message"]["reasoning_content"], "think think ");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "search");
    assert_eq!(call["function"]["arguments"], "{\"query\": \"mock\"}");
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()), "{call}");

    // Streamed: the fragments with their index, id first, then argument pieces that concatenate.
    ask["stream"] = json!(true);
    ask["stream_options"] = json!({"include_usage": true});
    let r = gw.chat(ask).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let (_, usage, done, error) = read_sse(&text);
    assert_eq!(error, None, "{text}");
    assert!(done && usage.is_some());
    let mut arguments = String::new();
    let mut names_seen = Vec::new();
    let mut finish = None;
    for event in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        let Ok(v) = serde_json::from_str::<Value>(event) else {
            continue;
        };
        let Some(choice) = v["choices"].get(0) else { continue };
        for fragment in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(fragment["index"], 0);
            if let Some(name) = fragment["function"]["name"].as_str() {
                names_seen.push(name.to_owned());
                assert!(
                    fragment["id"].is_string(),
                    "the first fragment carries the id: {fragment}"
                );
            }
            arguments.push_str(fragment["function"]["arguments"].as_str().unwrap_or(""));
        }
        if choice["finish_reason"].is_string() {
            finish = choice["finish_reason"].as_str().map(str::to_owned);
        }
    }
    assert_eq!(names_seen, vec!["search".to_owned()], "{text}");
    assert_eq!(arguments, "{\"query\": \"mock\"}");
    assert_eq!(finish.as_deref(), Some("tool_calls"));

    // The server's refusal is the client's: its status and error type, not a 502.
    let r = gw.chat(ask_center("refuse me", false)).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(
        body["error"]["message"], "scripted failure",
        "the server's own sentence: {body}"
    );
    gw.stop();
    upstream.shutdown().await.unwrap();
}

/// A generation that takes longer than the node's `max.poll.interval.ms`: the node keeps polling while
/// it generates, so it is not thrown out of its group and the task is not handed to anyone again — one
/// run, one complete answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_longer_than_the_poll_interval_is_answered_once_without_a_rebalance() {
    let names = Names::new();
    // 90 tokens 100 ms apart: 9 s, past the node's 6 s poll interval.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .content(90, "tok ")
        .delays(Duration::from_millis(50), Duration::from_millis(100));
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let center = Center::start_polling(&names, "center-a", &format!("http://{}", upstream.addr()), "6s");
    let edge = Edge::start(support::EDGE_MODEL);
    let timeouts = "[timeouts]\nfirst_token = \"60s\"\nidle = \"30s\"\ntotal = \"2m\"\n";
    let gw = kafka_gateway(&names, &[edge.addr], 0, timeouts).await;
    center.wait_until_serving().await;
    gw.wait_until_center_seen().await;

    let mut body = ask_center("a long answer", true);
    body["max_tokens"] = json!(100);
    let started = std::time::Instant::now();
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let (answer, _, done, error) = read_sse(&text);
    assert!(done && error.is_none(), "{text}");
    assert_eq!(answer, "tok ".repeat(90));
    assert!(
        started.elapsed() > Duration::from_secs(6),
        "longer than the poll interval"
    );
    assert_eq!(
        upstream.stats().snapshot().received,
        1,
        "run once: never handed to the group again"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while center.metric("r1_center_tasks_total{outcome=\"ok\"}").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the node did not count its task");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(center.metric("r1_center_duplicates_suppressed_total").await, 0.0);
    let log = std::fs::read_to_string(&center.log).unwrap();
    assert!(!log.contains("maximum poll interval"), "{log}");
    gw.stop();
    upstream.shutdown().await.unwrap();
}

/// r1-center scaled from one node to three while two gateways send a steady stream of distinct
/// questions: the group rebalances twice under load, and every task gets exactly one run and its answer
/// at the client that asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn centers_scaled_from_one_to_three_under_load_answer_every_task_once_at_its_client() {
    let names = Names::new();
    let backend = Edge::start(CENTER_MODEL);
    let url = format!("http://{}", backend.addr);
    let mut centers = vec![Center::start(&names, "center-a", &url)];
    let edge = Edge::start(support::EDGE_MODEL);
    let gw_a = kafka_gateway(&names, &[edge.addr], 0, "").await;
    let gw_b = kafka_gateway(&names, &[edge.addr], 1, "").await;
    centers[0].wait_until_serving().await;
    gw_a.wait_until_center_seen().await;
    gw_b.wait_until_center_seen().await;
    let questions: Vec<String> = (0..30).map(|i| format!("What is {i} times {}?", i + 2)).collect();
    let mut expected = Vec::new();
    for q in &questions {
        let direct = direct_answer(&url, q).await;
        expected.push(direct["choices"][0]["message"]["content"].as_str().unwrap().to_owned());
    }
    // 60 requests, one every 150 ms, alternating gateways; two more nodes join meanwhile.
    let mut calls = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        for gw in [&gw_a, &gw_b] {
            calls.push(ask_for_content(gw, q, i % 2 == 0));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        match i {
            3 => centers.push(Center::start(&names, "center-b", &url)),
            9 => centers.push(Center::start(&names, "center-c", &url)),
            _ => {}
        }
    }
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap(),
            expected[i / 2],
            "answer {i} reached the client that asked"
        );
    }
    for gw in [&gw_a, &gw_b] {
        let pools = gw.pools().await;
        assert_eq!(pools["handoff"]["results_orphaned"], 0, "{pools}");
    }
    // Exactly one run per task over the three nodes (counted once its last chunk is acknowledged).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let ok = loop {
        let mut ok = 0.0;
        for c in &centers {
            ok += c.metric("r1_center_tasks_total{outcome=\"ok\"}").await;
        }
        if ok >= 60.0 || std::time::Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ok, 60.0);
    // The nodes that joined took tasks: the partitions moved while the requests were flowing.
    let mut joined = 0.0;
    for c in &centers[1..] {
        joined += c.metric("r1_center_tasks_total{outcome=\"ok\"}").await;
    }
    assert!(
        joined >= 1.0,
        "the nodes that joined ran no task: the rebalance missed the load"
    );
    gw_a.stop();
    gw_b.stop();
}
