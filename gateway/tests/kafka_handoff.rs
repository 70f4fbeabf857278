//! The Kafka hand-off end to end, on the real broker and Redis the test command starts
//! (`scripts/services.sh up`): the gateway in process, real `r1-center` processes, and behind them a
//! real OpenAI-compatible server (r1-edge) — or, where a slow scripted stream is needed to kill a
//! node mid-answer, the mock of the external model API.
//!
//! Every test uses its own topics and consumer group, so tests do not see each other's tasks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{CENTER_MODEL, Edge, Gateway, free_port, header};

fn brokers() -> String {
    std::env::var("R1_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

fn redis_url() -> String {
    std::env::var("R1_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".to_owned())
}

/// The `r1-center` binary of this workspace (built by `cargo test --workspace`, or `cargo build -p r1-center`).
fn center_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>/deps/.. = target/<profile>
    let bin = dir.join("r1-center");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p r1-center` first",
        bin.display()
    );
    bin
}

/// Topic names and a group unique to one test.
struct Names {
    suffix: String,
}

impl Names {
    fn new() -> Self {
        Self {
            suffix: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        }
    }
    fn topic(&self, name: &str) -> String {
        format!("test.{}.{name}", self.suffix)
    }
    fn gateway_topics(&self) -> String {
        format!(
            "topics = {{ interactive = \"{}\", batch = \"{}\", results = \"{}\", cancel = \"{}\", dlq = \"{}\" }}",
            self.topic("interactive"),
            self.topic("batch"),
            self.topic("results"),
            self.topic("cancel"),
            self.topic("dlq")
        )
    }
}

/// A real r1-center process.
struct Center {
    child: Child,
    metrics: String,
    log: PathBuf,
}

impl Center {
    fn start(names: &Names, id: &str, backend: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("r1-center-test-{}", names.suffix));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join(format!("{id}.toml"));
        let text = format!(
            r#"
[node]
id = "{id}"
max_in_flight = 8
max_attempts = 3
claim_ttl = "3s"
retry_backoff = "100ms"
shutdown_grace = "5s"
metrics = "127.0.0.1:{port}"

[backend]
kind = "openai"
base_url = "{backend}/v1"
model = "{CENTER_MODEL}"
first_token_timeout = "30s"
idle_timeout = "30s"

[kafka]
brokers = "{brokers}"
client_id = "{id}"
group = "test.{suffix}"
session_timeout = "6s"
max_poll_interval = "60s"

[topics]
interactive = "{interactive}"
batch = "{batch}"
results = "{results}"
cancel = "{cancel}"
dlq = "{dlq}"

[redis]
url = "{redis}"
"#,
            brokers = brokers(),
            suffix = names.suffix,
            interactive = names.topic("interactive"),
            batch = names.topic("batch"),
            results = names.topic("results"),
            cancel = names.topic("cancel"),
            dlq = names.topic("dlq"),
            redis = redis_url(),
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("{id}.log"));
        let child = Command::new(center_binary())
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    /// Waits until the node's log says it joined the group with partitions assigned.
    async fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("r1-center ready") {
                return;
            }
            assert!(Instant::now() < deadline, "r1-center did not start:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let Ok(r) = reqwest::get(&self.metrics).await else {
            return 0.0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Center {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn kafka_gateway(names: &Names, edge: &[std::net::SocketAddr], partition: i32, routing: &str) -> Gateway {
    let center = format!(
        "transport = \"kafka\"\n[center.kafka]\nbrokers = \"{}\"\nresults_partition = {partition}\nresult_partitions = 4\nsend_timeout = \"3s\"\n{}\n",
        brokers(),
        names.gateway_topics()
    );
    let gw = Gateway::start_full(edge, &[], "", routing, &center, reqwest::Client::new()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pools = gw.pools().await;
        if pools["handoff"]["ready"] == true {
            return gw;
        }
        assert!(
            Instant::now() < deadline,
            "the Kafka hand-off did not become ready: {pools}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backend's own answer to `text`, asked directly (what the hand-off must reproduce).
async fn direct_answer(backend: &str, text: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{backend}/v1/chat/completions"))
        .json(&ask_center(text, false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn ask_center(text: &str, stream: bool) -> Value {
    json!({
        "model": CENTER_MODEL,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

/// The content of an SSE answer, and whether it ended with `[DONE]` (or an error event).
fn read_sse(body: &str) -> (String, Option<Value>, bool, Option<Value>) {
    let mut text = String::new();
    let mut usage = None;
    let mut done = false;
    let mut error = None;
    for event in body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if event == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(event).unwrap();
        if v.get("error").is_some() {
            error = Some(v);
            continue;
        }
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"].clone());
        }
    }
    (text, usage, done, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn center_requests_go_through_kafka_to_r1_center_and_stream_back() {
    let names = Names::new();
    // The center's backend: a real OpenAI-compatible server (r1-edge serving under the center's name).
    let backend = Edge::start(CENTER_MODEL);
    let direct = direct_answer(
        &format!("http://{}", backend.addr),
        "Prove that there are infinitely many primes.",
    )
    .await;
    let expected = direct["choices"][0]["message"]["content"].as_str().unwrap().to_owned();

    let center = Center::start(&names, "center-a", &format!("http://{}", backend.addr));
    let edge = Edge::start(support::EDGE_MODEL);
    let gw = kafka_gateway(&names, &[edge.addr], 0, "").await;
    center.wait_until_serving().await;

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
    assert_eq!(center.metric("r1_center_tasks_total{outcome=\"ok\"}").await, 2.0);
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
            let (client, url, body) = (
                gw.client.clone(),
                format!("{}/v1/chat/completions", gw.public),
                ask_center(q, i % 2 == 0),
            );
            calls.push(tokio::spawn(async move {
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
            }));
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
    let ok: f64 = centers[0].metric("r1_center_tasks_total{outcome=\"ok\"}").await
        + centers[1].metric("r1_center_tasks_total{outcome=\"ok\"}").await;
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
