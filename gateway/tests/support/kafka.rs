//! Kafka hand-off helpers: real `r1-center` processes, per-test topics, a gateway with
//! `transport = "kafka"`, and readers for answers and topics.
//!
//! `R1_TEST_KAFKA_TARGET` picks the brokers the hand-off runs on: `single` (the default: the one broker's
//! PLAINTEXT listener) or `cluster` (the three-broker cluster's SASL_SSL listeners, SCRAM-SHA-512, the
//! test CA; the harness's own readers use its PLAINTEXT ones). r1-center's claims go to the Redis that
//! `R1_TEST_REDIS_TARGET` picks (`support/redis.rs`). `scripts/test.sh` runs the hand-off's tests again
//! on the cluster and Redis Cluster.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{CENTER_MODEL, Gateway, free_port};

/// `single` or `cluster`.
pub fn target() -> String {
    std::env::var("R1_TEST_KAFKA_TARGET").unwrap_or_else(|_| "single".to_owned())
}

/// The PLAINTEXT brokers of the target (the harness's own clients).
pub fn brokers() -> String {
    let (var, default) = match target().as_str() {
        "single" => ("R1_TEST_KAFKA_BROKERS", "127.0.0.1:19092"),
        "cluster" => ("R1_TEST_KAFKA_CLUSTER_BROKERS", "127.0.0.1:19192"),
        other => panic!("R1_TEST_KAFKA_TARGET={other}: expected single or cluster"),
    };
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Which listener of the test brokers a client uses: the single broker's PLAINTEXT one every test uses,
/// or a SASL_SSL one, of the single broker or of the three-broker cluster (`scripts/services.sh env`
/// exports their addresses, the test CAs and the users).
#[derive(Debug, Clone)]
pub enum Listener {
    Plaintext,
    SaslSsl {
        brokers: String,
        ca_file: String,
        mechanism: &'static str,
        username: String,
        password: String,
    },
}

impl Listener {
    /// What the gateways and nodes of a test use unless it says otherwise: the single broker's PLAINTEXT
    /// listener, or with `R1_TEST_KAFKA_TARGET=cluster` the cluster's SASL_SSL ones.
    pub fn target() -> Self {
        match target().as_str() {
            "cluster" => Self::cluster_sasl_ssl("SCRAM-SHA-512")
                .expect("R1_TEST_KAFKA_TARGET=cluster needs the cluster's variables (scripts/services.sh env)"),
            _ => Self::Plaintext,
        }
    }

    /// The single broker's SASL_SSL listener with a SCRAM `mechanism`; `None` (the reason printed) when
    /// the services' variables are not set.
    pub fn sasl_ssl(mechanism: &'static str) -> Option<Self> {
        Self::sasl_ssl_from(mechanism, "R1_TEST_KAFKA_SECURE_BROKERS", "R1_TEST_KAFKA_CA_FILE")
    }

    /// The three-broker cluster's SASL_SSL listeners (`scripts/services.sh up kafka-cluster`), the same users.
    pub fn cluster_sasl_ssl(mechanism: &'static str) -> Option<Self> {
        Self::sasl_ssl_from(
            mechanism,
            "R1_TEST_KAFKA_CLUSTER_SECURE_BROKERS",
            "R1_TEST_KAFKA_CLUSTER_CA_FILE",
        )
    }

    fn sasl_ssl_from(mechanism: &'static str, brokers_var: &str, ca_var: &str) -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let listener = (|| {
            Some(Self::SaslSsl {
                brokers: var(brokers_var)?,
                ca_file: var(ca_var)?,
                mechanism,
                username: var("R1_TEST_KAFKA_SCRAM_USERNAME")?,
                password: var("R1_TEST_KAFKA_SCRAM_PASSWORD")?,
            })
        })();
        if listener.is_none() {
            println!(
                "skipped: {brokers_var}, {ca_var}, R1_TEST_KAFKA_SCRAM_USERNAME and R1_TEST_KAFKA_SCRAM_PASSWORD \
                 are not set (eval \"$(scripts/services.sh env)\")"
            );
        }
        listener
    }

    pub fn brokers(&self) -> String {
        match self {
            Self::Plaintext => brokers(),
            Self::SaslSsl { brokers, .. } => brokers.clone(),
        }
    }

    /// The `security` table under `table` (`center.kafka.security`), the password read from `password`:
    /// `password_env = "..."` or `password_file = "..."` (the caller writes the file).
    pub fn security(&self, table: &str, password_source: &str) -> String {
        match self {
            Self::Plaintext => String::new(),
            Self::SaslSsl {
                ca_file,
                mechanism,
                username,
                ..
            } => format!(
                "[{table}]\nprotocol = \"sasl_ssl\"\nca_file = \"{ca_file}\"\n[{table}.sasl]\n\
                 mechanism = \"{mechanism}\"\nusername = \"{username}\"\n{password_source}\n"
            ),
        }
    }
}

/// The single Redis server's URL (tests that need that one; `redis_target` picks the target's).
pub fn redis_url() -> String {
    std::env::var("R1_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".to_owned())
}

/// The `r1-center` binary of this workspace (built by `cargo test --workspace`, or `cargo build -p r1-center`).
pub fn center_binary() -> PathBuf {
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
pub struct Names {
    suffix: String,
}

impl Names {
    pub fn new() -> Self {
        Self {
            suffix: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        }
    }
    pub fn topic(&self, name: &str) -> String {
        format!("test.{}.{name}", self.suffix)
    }
    pub fn gateway_topics(&self) -> String {
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
pub struct Center {
    child: Child,
    pub metrics: String,
    pub log: PathBuf,
}

impl Center {
    pub fn start(names: &Names, id: &str, backend: &str) -> Self {
        Self::start_full(names, id, backend, None, &Listener::target(), "60s", "")
    }

    /// A node whose consumer gives up on itself after `max_poll_interval` without a poll (its session
    /// timeout is 6 s, the shortest this may be).
    pub fn start_polling(names: &Names, id: &str, backend: &str, max_poll_interval: &str) -> Self {
        Self::start_full(names, id, backend, None, &Listener::target(), max_poll_interval, "")
    }

    /// A node serving model `version` (its own task topics and group).
    pub fn start_version(names: &Names, id: &str, backend: &str, version: Option<&str>) -> Self {
        Self::start_full(names, id, backend, version, &Listener::target(), "60s", "")
    }

    /// A node on `listener` (its password, if any, in a file).
    pub fn start_on(names: &Names, id: &str, backend: &str, listener: &Listener) -> Self {
        Self::start_full(names, id, backend, None, listener, "60s", "")
    }

    /// A node with more tables in its config (`extra`, e.g. `[telemetry]`).
    pub fn start_with(names: &Names, id: &str, backend: &str, extra: &str) -> Self {
        Self::start_full(names, id, backend, None, &Listener::target(), "60s", extra)
    }

    fn start_full(
        names: &Names,
        id: &str,
        backend: &str,
        version: Option<&str>,
        listener: &Listener,
        max_poll_interval: &str,
        extra: &str,
    ) -> Self {
        let port = free_port();
        let version = version.map_or_else(String::new, |v| format!("version = \"{v}\""));
        let dir = std::env::temp_dir().join(format!("r1-center-test-{}", names.suffix));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join(format!("{id}.toml"));
        let security = match listener {
            Listener::Plaintext => String::new(),
            Listener::SaslSsl { password, .. } => {
                let file = dir.join(format!("{id}.kafka-password"));
                std::fs::write(&file, format!("{password}\n")).unwrap();
                listener.security("kafka.security", &format!("password_file = \"{}\"", file.display()))
            }
        };
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
# The tests' webhook receivers listen on loopback.
webhook_private_networks = true

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
max_poll_interval = "{max_poll_interval}"
{security}
[topics]
interactive = "{interactive}"
batch = "{batch}"
results = "{results}"
cancel = "{cancel}"
dlq = "{dlq}"
{version}

[redis]
{redis}
{extra}
"#,
            brokers = listener.brokers(),
            suffix = names.suffix,
            interactive = names.topic("interactive"),
            batch = names.topic("batch"),
            results = names.topic("results"),
            cancel = names.topic("cancel"),
            dlq = names.topic("dlq"),
            redis = super::redis_target::keys(),
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
    pub async fn wait_until_serving(&self) {
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

    /// `GET /readyz` on the node's metrics listener: (status, text); (0, "") while it does not listen.
    pub async fn readiness(&self) -> (u16, String) {
        let url = self.metrics.replace("/metrics", "/readyz");
        match reqwest::get(&url).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// SIGTERM (through the shell's `kill`): the node stops taking tasks and leaves its group.
    pub fn terminate(&self) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (after [`Self::terminate`]), at most `within`.
    pub async fn wait_for_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "r1-center did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let Ok(r) = reqwest::get(&self.metrics).await else {
            return 0.0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    }

    /// The metric once it reads `expected` (within 10 s), else what it reads then. A node counts a task
    /// after its answer went out and its state was written, so a client can see the answer first.
    pub async fn metric_once(&self, name: &str, expected: f64) -> f64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.metric(name).await;
            if value == expected || std::time::Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Center {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn kafka_gateway(names: &Names, edge: &[std::net::SocketAddr], partition: i32, routing: &str) -> Gateway {
    kafka_gateway_with(names, edge, partition, routing, "").await
}

/// The `[center]` keys of a gateway handing off through Kafka on `listener` (the password from the
/// environment variable `scripts/services.sh env` exports).
pub fn kafka_center(names: &Names, partition: i32, listener: &Listener) -> String {
    format!(
        "transport = \"kafka\"\n[center.kafka]\nbrokers = \"{}\"\nresults_partition = {partition}\nresult_partitions = 4\nsend_timeout = \"3s\"\ncenter_group = \"test.{}\"\n{}\n{}\n",
        listener.brokers(),
        names.suffix,
        names.gateway_topics(),
        listener.security(
            "center.kafka.security",
            "password_env = \"R1_TEST_KAFKA_SCRAM_PASSWORD\""
        )
    )
}

/// A gateway handing off on `listener`, once its hand-off is ready.
pub async fn kafka_gateway_on(
    names: &Names,
    edge: &[std::net::SocketAddr],
    partition: i32,
    listener: &Listener,
) -> Gateway {
    let gw = Gateway::start_full(
        edge,
        &[],
        "",
        "",
        &kafka_center(names, partition, listener),
        reqwest::Client::new(),
    )
    .await;
    wait_until_handoff_ready(&gw).await;
    gw
}

/// With more `[center]` sub-tables (e.g. `[[center.versions]]`).
pub async fn kafka_gateway_with(
    names: &Names,
    edge: &[std::net::SocketAddr],
    partition: i32,
    routing: &str,
    center_extra: &str,
) -> Gateway {
    let center = format!(
        "{}{center_extra}\n",
        kafka_center(names, partition, &Listener::target())
    );
    let gw = Gateway::start_full(edge, &[], "", routing, &center, reqwest::Client::new()).await;
    wait_until_handoff_ready(&gw).await;
    gw
}

/// Waits for the hand-off, and for its task store where `[redis]` is set (it connects once the
/// hand-off is ready; `/v1/tasks` answers 503 until then).
async fn wait_until_handoff_ready(gw: &Gateway) {
    gw.wait_for_handoff("ready", "the Kafka hand-off did not become ready")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pools = gw.pools().await;
        if pools["handoff"]["task_store"] != "connecting" {
            return;
        }
        assert!(Instant::now() < deadline, "the task store never connected: {pools}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The backend's own answer to `text`, asked directly (what the hand-off must reproduce).
pub async fn direct_answer(backend: &str, text: &str) -> Value {
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

pub fn ask_center(text: &str, stream: bool) -> Value {
    let mut body = json!({
        "model": CENTER_MODEL,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The content of an SSE answer, and whether it ended with `[DONE]` (or an error event).
pub fn read_sse(body: &str) -> (String, Option<Value>, bool, Option<Value>) {
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

/// Every message on `topic` from the start (the test's own dead-letter topic).
pub async fn read_topic(topic: &str, expect: usize) -> Vec<(Vec<u8>, std::collections::HashMap<String, String>)> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader.{}", uuid::Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while out.len() < expect {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a dead letter within 30 s")
            .unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((m.payload().unwrap_or_default().to_vec(), headers));
    }
    out
}

/// What the Redis fault tests drive: a gateway whose `[redis]` has the keys `redis` (with a 250 ms
/// timeout), shared limits and the cache on, handing off through Kafka to one r1-center in front of the
/// stand-in model API (three chunks of "fine "), beside one r1-edge; the node serving. Keep every
/// field bound for the test's length: a dropped `center` or `edge` stops it.
pub struct RedisStack {
    pub upstream: r1_mock_upstream::Handle,
    pub center: Center,
    pub edge: super::Edge,
    pub gw: Gateway,
}

impl RedisStack {
    pub async fn start(names: &Names, redis: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let script = r1_mock_upstream::Script::default().content(3, "fine ");
        let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
        let center = Center::start(names, "center-a", &format!("http://{}", upstream.addr()));
        let edge = super::Edge::start(super::EDGE_MODEL);
        let table = format!(
            "[redis]\n{redis}timeout = \"250ms\"\n[limits]\nrequests_per_second = 1000\n[cache]\nenabled = true\n"
        );
        let gw = kafka_gateway(names, &[edge.addr], 0, &table).await;
        center.wait_until_serving().await;
        gw.wait_until_center_seen().await;
        Self {
            upstream,
            center,
            edge,
            gw,
        }
    }
}
