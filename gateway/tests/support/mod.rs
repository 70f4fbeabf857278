//! The gateway test harness: real r1-edge servers in process (the shipped model) and a real gateway
//! on its own Pingora server thread, configured through a real file (so live reload is exercised).

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)] // each test file uses part of it; skips say why on stdout

pub mod kafka;
#[path = "redis.rs"]
pub mod redis_target;

use std::process::Command;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use r1_edge::config::EdgeConfig;
use r1_edge::runtime::LibrarySearch;
use serde_json::{Value, json};

pub const EDGE_MODEL: &str = "r1-edge-mini";
pub const CENTER_MODEL: &str = "deepseek-ai/DeepSeek-R1";

/// Runs `scripts/services.sh` (the real Redis and Kafka of the test command) with `args`.
pub fn services(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
    let status = Command::new("bash").arg(script).args(args).status().unwrap();
    assert!(status.success(), "services.sh {args:?} failed");
}

/// Starts a service again when dropped, so a failing outage test does not leave it stopped.
pub struct Restart(pub &'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        services(&["up", self.0]);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An r1-edge server on its own runtime, so a test can kill it abruptly (dropping the runtime closes
/// its sockets mid-response, like a crashed process).
pub struct Edge {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Edge {
    pub fn start(served_name: &str) -> Self {
        Self::start_with(served_name, |_| {})
    }

    /// With edge settings changed by `tweak`.
    pub fn start_with(served_name: &str, tweak: impl FnOnce(&mut EdgeConfig)) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/r1-edge-mini");
        let mut config = EdgeConfig::default();
        config.onnxruntime.intra_threads = 1;
        tweak(&mut config);
        let model = r1_edge::model::load(&LibrarySearch::from_env(), &dir, &config.onnxruntime).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let name = served_name.to_owned();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = r1_edge::server::run(listener, model, name, &config, std::future::pending()).await;
        });
        Self {
            addr,
            runtime: Some(runtime),
        }
    }

    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Shutdown(tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for Shutdown {
    async fn recv(&self) -> ShutdownSignal {
        if let Some(rx) = self.0.lock().await.take() {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

pub struct Gateway {
    pub public: String,
    pub admin: String,
    pub config_path: PathBuf,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Starts a gateway over `edge` and `center` members with extra config appended to the defaults.
    pub async fn start(edge: &[SocketAddr], center: &[SocketAddr], routing: &str) -> Self {
        Self::start_with(edge, center, "", routing, reqwest::Client::new()).await
    }

    /// With extra `[listen]` keys (`listen`), and `client` for the public listener.
    pub async fn start_with(
        edge: &[SocketAddr],
        center: &[SocketAddr],
        listen: &str,
        routing: &str,
        client: reqwest::Client,
    ) -> Self {
        Self::start_full(edge, center, listen, routing, "", client).await
    }

    /// With extra `[center]` keys and sub-tables too (`center_extra`, written at the end).
    pub async fn start_full(
        edge: &[SocketAddr],
        center: &[SocketAddr],
        listen: &str,
        routing: &str,
        center_extra: &str,
        client: reqwest::Client,
    ) -> Self {
        let (public, admin) = (free_port(), free_port());
        let members = |m: &[SocketAddr]| m.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
        let text = format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\nadmin = \"127.0.0.1:{admin}\"\n{listen}\n{routing}\n\
             [edge]\nmodel = \"{EDGE_MODEL}\"\nmembers = [{}]\nhealth = {{ interval = \"200ms\" }}\n\
             [center]\nmodel = \"{CENTER_MODEL}\"\nmembers = [{}]\nhealth = {{ interval = \"200ms\" }}\n{center_extra}\n",
            members(edge),
            members(center)
        );
        // Authentication and the result cache are their own tests' business (tests/auth.rs,
        // tests/cache_path.rs); elsewhere they are off unless asked for (a cached answer would not
        // exercise the path a test is about).
        let given = |table: &str| [listen, routing, center_extra].iter().any(|t| t.contains(table));
        let mut text = text;
        if !given("[auth]") {
            text.push_str("\n[auth]\nenabled = false\n");
        }
        if !given("[cache]") {
            text.push_str("\n[cache]\nenabled = false\n");
        }
        let dir = std::env::temp_dir().join(format!("r1-gw-test-{}-{public}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = r1_gateway::config::GatewayConfig::load(&config_path).unwrap();
        let built = r1_gateway::server::build(
            config,
            Some(config_path.clone()),
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            built.server.run(RunArgs {
                shutdown_signal: Box::new(Shutdown(tokio::sync::Mutex::new(Some(rx)))),
            });
        });
        let scheme = if listen.contains("tls") { "https" } else { "http" };
        let gateway = Self {
            public: format!("{scheme}://127.0.0.1:{public}"),
            admin: format!("http://127.0.0.1:{admin}"),
            config_path,
            client,
            stop: Some(stop),
            thread: Some(thread),
        };
        gateway.wait_until_members_ready(edge.len() + center.len()).await;
        gateway.wait_until_public_answers().await;
        gateway
    }

    /// Waits (10 s at most) until the public listener answers `/healthz`: the admin listener, which
    /// the other waits ask, can be up a moment before it.
    async fn wait_until_public_answers(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.client.get(format!("{}/healthz", self.public)).send().await {
                Ok(r) if r.status() == 200 => return,
                outcome => assert!(
                    Instant::now() < deadline,
                    "the public listener {} never answered /healthz: {outcome:?}",
                    self.public
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn pools(&self) -> Value {
        match self.client.get(format!("{}/admin/pools", self.admin)).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// `POST /admin/route/explain` of `body`.
    pub async fn explain(&self, body: &str) -> Value {
        let url = format!("{}/admin/route/explain", self.admin);
        let r = self.client.post(url).body(body.to_owned()).send().await.unwrap();
        r.json().await.unwrap()
    }

    /// Waits until the hand-off counts the center as up (`/admin/pools`: `handoff.consumers`): what an
    /// operator waits for before center traffic, after r1-center's `/readyz` (the gateway looks at the
    /// nodes' group every 250 ms while it has seen none).
    pub async fn wait_until_center_seen(&self) {
        self.wait_for_handoff("consumers", "the gateway never saw the center nodes")
            .await;
    }

    /// Waits (60 s at most) until `/admin/pools`' `handoff.<flag>` is true; `never` says what failed.
    pub async fn wait_for_handoff(&self, flag: &str, never: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pools = self.pools().await;
            if pools["handoff"][flag] == true {
                return;
            }
            assert!(Instant::now() < deadline, "{never}: {pools}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_until_members_ready(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pools = self.pools().await;
            let ready = pools["pools"].as_array().map_or(0, |p| {
                p.iter()
                    .flat_map(|p| p["members"].as_array().unwrap().iter())
                    .filter(|m| m["ready"] == true)
                    .count()
            });
            if ready == n {
                return;
            }
            assert!(Instant::now() < deadline, "members not ready: {pools}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.public))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix(line_prefix))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    }

    /// A metric family's total over all its labels (`name{...} value` lines).
    pub async fn metric_family(&self, name: &str) -> f64 {
        let url = format!("{}/metrics", self.admin);
        let text = self.client.get(url).send().await.unwrap().text().await.unwrap();
        let labelled = format!("{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&labelled))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

pub fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 16})
}

pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).map_or("", |v| v.to_str().unwrap())
}
