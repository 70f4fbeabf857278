//! A real r1-edge server on a loopback port, for the server tests: one of the committed models under
//! `models/`, served under a name, with one intra-op thread.

use std::path::PathBuf;

use r1_edge::config::EdgeConfig;
use r1_edge::runtime::LibrarySearch;
use serde_json::Value;
use tokio::sync::oneshot;

pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Serves `models/<dir>` as `name`, with `tweak` applied to the default config.
    pub(crate) async fn start(dir: &str, name: &str, tweak: impl FnOnce(&mut EdgeConfig)) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(dir);
        let mut config = EdgeConfig::default();
        config.onnxruntime.intra_threads = 1;
        tweak(&mut config);
        let loaded = r1_edge::model::load(&LibrarySearch::from_env(), &path, &config.onnxruntime).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, rx) = oneshot::channel();
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            r1_edge::server::run(listener, loaded, name, &config, async {
                let _ = rx.await;
            })
            .await
        });
        Self {
            base,
            client: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    pub(crate) async fn post(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A chat answered with 200, as JSON.
    pub(crate) async fn chat(&self, body: Value) -> Value {
        let response = self.post(body).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The value of the unlabelled metric `name` (0 when absent).
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// Tells the server to shut down (as SIGTERM does) and returns its task, which ends once drained.
    pub(crate) fn begin_stop(self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let _ = self.shutdown.send(());
        self.task
    }

    /// Stops the server and waits until it has drained.
    pub(crate) async fn stop(self) {
        self.begin_stop().await.unwrap().unwrap();
    }
}
