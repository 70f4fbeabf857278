//! r1-center's configuration file: a typed TOML tree, validated with every problem reported at once.
//!
//! ```toml
//! [node]
//! max_in_flight = 16
//!
//! [backend]
//! kind = "openai"
//! base_url = "http://vllm:8000/v1"
//! model = "deepseek-ai/DeepSeek-R1"
//!
//! [kafka]
//! brokers = "127.0.0.1:19092"
//! group = "r1-center"
//! max_poll_interval = "10m"
//!
//! [kafka.security]                     # managed Kafka: TLS + SASL (r1_queue::kafka::security)
//! protocol = "sasl_ssl"
//! sasl = { mechanism = "SCRAM-SHA-512", username = "r1-center", password_env = "R1_KAFKA_PASSWORD" }
//!
//! [redis]                              # one server or a cluster, TLS, ACL (r1_queue::redis_conn)
//! url = "redis://127.0.0.1:16379"
//! ```
//!
//! `deploy/config/center.toml` is the reference.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use r1_config::{ConfigError, Validate};
use serde::Deserialize;

use r1_queue::redis_conn::{RedisClient, RedisSection, RedisSetupError};

use crate::kafka::{KafkaSettings, SecurityError, SecuritySection, extra_problems};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterConfig {
    /// This node: concurrency, retries, metrics listener.
    #[serde(default)]
    pub node: NodeSection,
    /// Where tokens come from.
    pub backend: BackendSection,
    /// Where tasks come from and results go.
    pub kafka: KafkaSection,
    /// Topic names.
    #[serde(default)]
    pub topics: TopicsSection,
    /// Task dedupe and state: one server or a Redis Cluster, TLS, an ACL user
    /// (`r1_queue::redis_conn`, the same table as the gateway's).
    pub redis: RedisSection,
    /// Traces: OpenTelemetry spans over OTLP/HTTP (off unless `otlp_endpoint` is set).
    #[serde(default)]
    pub telemetry: r1_telemetry::TelemetrySection,
}

/// `[node]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Name in claims and logs; default `<hostname>-<pid>`.
    #[serde(default)]
    pub id: Option<String>,
    /// Tasks run at once (the backend's useful concurrency).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Runs of one task before it goes to the dead-letter topic.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// A dead node's tasks are free again after this (its claims are refreshed every third of it).
    #[serde(default = "default_claim_ttl", with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// Pause before running a failed task again.
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// On SIGTERM, how long running tasks may take; the rest are redelivered to other nodes.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Metrics listener (`/metrics`, `/healthz`).
    #[serde(default = "default_metrics")]
    pub metrics: std::net::SocketAddr,
    /// How long result chunks may wait for the brokers (a Kafka outage shorter than this is ridden
    /// through: chunks are buffered and delivered in order once the brokers are back).
    #[serde(default = "default_result_timeout", with = "humantime_serde")]
    pub result_timeout: Duration,
    /// Call webhooks on private, loopback and link-local addresses too. Off by default: a client picks
    /// the URL, so only public addresses are called (see `webhook`); turn it on only where every
    /// receiver is internal and the network behind the node holds nothing a client may reach.
    #[serde(default)]
    pub webhook_private_networks: bool,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: None,
            max_in_flight: default_max_in_flight(),
            max_attempts: default_max_attempts(),
            claim_ttl: default_claim_ttl(),
            retry_backoff: default_retry_backoff(),
            shutdown_grace: default_shutdown_grace(),
            metrics: default_metrics(),
            result_timeout: default_result_timeout(),
            webhook_private_networks: false,
        }
    }
}

/// A node name when `node.id` is not set: the host name and the process id.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map_or_else(|_| "center".to_owned(), |h| h.trim().to_owned());
    format!("{host}-{}", std::process::id())
}

fn default_max_in_flight() -> usize {
    16
}
fn default_max_attempts() -> u32 {
    3
}
fn default_claim_ttl() -> Duration {
    Duration::from_secs(15)
}
fn default_retry_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(60)
}
fn default_result_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_metrics() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9091))
}

/// `[backend]`: an OpenAI-compatible server (vLLM, SGLang, TensorRT-LLM, the DeepSeek API), or
/// an ONNX model run in process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// `openai` or `onnx`.
    pub kind: BackendKind,
    /// `openai`: base URL up to and including `/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// `openai`: the model name the server knows.
    #[serde(default)]
    pub model: Option<String>,
    /// `openai`: environment variable holding the API key (never the key itself in this file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `openai`: TCP/TLS connect limit.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `openai`: from the request to the first token (R1 may think for minutes).
    #[serde(default = "default_first_token_timeout", with = "humantime_serde")]
    pub first_token_timeout: Duration,
    /// `openai`: longest silence between chunks once tokens flow.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `openai`: tries before the first token (connect errors, 429, 5xx).
    #[serde(default = "default_backend_attempts")]
    pub attempts: u32,
    /// `openai`: first backoff between those tries, doubled each time.
    #[serde(default = "default_backend_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// `openai`: what happens to `reasoning_content` on assistant messages of the conversation sent
    /// back: `strip` (DeepSeek's API answers 400 to it) or `keep`. Default: strip when the base URL
    /// names DeepSeek, keep otherwise.
    #[serde(default)]
    pub reasoning_history: Option<ReasoningHistory>,
    /// `onnx`: the model directory (Optimum layout: `model.onnx`, `config.json`, tokenizer).
    #[serde(default)]
    pub model_dir: Option<std::path::PathBuf>,
    /// `onnx`: most sequences decoded together.
    #[serde(default = "default_onnx_batch")]
    pub max_batch_size: usize,
    /// `onnx`: ONNX Runtime intra-op threads (0: ONNX Runtime's default).
    #[serde(default)]
    pub intra_threads: usize,
}

/// `reasoning_history`: earlier turns' chain of thought in the history sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningHistory {
    /// Removed from every message (DeepSeek's API refuses it; R1's own chat template drops it).
    Strip,
    /// Sent as the client gave it.
    Keep,
}

impl BackendSection {
    /// What is done with `reasoning_content` in the history: as configured, else strip for DeepSeek's API.
    pub fn reasoning_history(&self) -> ReasoningHistory {
        self.reasoning_history.unwrap_or_else(|| {
            let deepseek = self
                .base_url
                .as_deref()
                .is_some_and(|url| url.to_ascii_lowercase().contains("deepseek"));
            if deepseek {
                ReasoningHistory::Strip
            } else {
                ReasoningHistory::Keep
            }
        })
    }

    /// An `openai` backend at `base_url` serving `model`, every other key at its default.
    pub fn openai(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            kind: BackendKind::Openai,
            base_url: Some(base_url.into()),
            model: Some(model.into()),
            api_key_env: None,
            connect_timeout: default_connect_timeout(),
            first_token_timeout: default_first_token_timeout(),
            idle_timeout: default_idle_timeout(),
            attempts: default_backend_attempts(),
            backoff: default_backend_backoff(),
            reasoning_history: None,
            model_dir: None,
            max_batch_size: default_onnx_batch(),
            intra_threads: 0,
        }
    }
}

/// Backend kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Any OpenAI-compatible chat completions server.
    Openai,
    /// An ONNX causal LM run in process by r1-edge's engine.
    Onnx,
}

fn default_onnx_batch() -> usize {
    32
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_first_token_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_backend_attempts() -> u32 {
    3
}
fn default_backend_backoff() -> Duration {
    Duration::from_millis(200)
}

/// `[topics]`: names, and the model version whose tasks this node takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsSection {
    /// Interactive tasks (default `r1.tasks.interactive`).
    #[serde(default)]
    pub interactive: Option<String>,
    /// Batch tasks (default `r1.tasks.batch`).
    #[serde(default)]
    pub batch: Option<String>,
    /// Result chunks (default `r1.results`).
    #[serde(default)]
    pub results: Option<String>,
    /// Cancel records (default `r1.cancel`).
    #[serde(default)]
    pub cancel: Option<String>,
    /// Dead letters (default `r1.tasks.dlq`).
    #[serde(default)]
    pub dlq: Option<String>,
    /// The model version this node serves: its task topics get `.<version>` appended.
    #[serde(default)]
    pub version: Option<String>,
}

impl TopicsSection {
    /// The topic names in effect.
    pub fn topics(&self) -> r1_queue::topics::Topics {
        let d = r1_queue::topics::Topics::default();
        let pick = |o: &Option<String>, d: String| o.clone().unwrap_or(d);
        let topics = r1_queue::topics::Topics {
            interactive: pick(&self.interactive, d.interactive),
            batch: pick(&self.batch, d.batch),
            results: pick(&self.results, d.results),
            cancel: pick(&self.cancel, d.cancel),
            dlq: pick(&self.dlq, d.dlq),
        };
        match &self.version {
            Some(v) => topics.for_version(v),
            None => topics,
        }
    }
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// `client.id` reported to the brokers.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Consumer group shared by the center nodes serving one model version.
    #[serde(default = "default_group")]
    pub group: String,
    /// How long the group waits for a silent member before reassigning its partitions.
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Longest gap between two polls before the member is considered stuck.
    #[serde(default = "default_max_poll_interval", with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// TLS and SASL towards the brokers (absent: plaintext, no authentication). Secrets come from the
    /// environment or files; the CA, certificate and key files are checked when the file is loaded.
    #[serde(default)]
    pub security: SecuritySection,
    /// Extra librdkafka properties (tuning). The delivery-contract and security properties are refused
    /// (use `[kafka.security]`).
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

/// r1-center's Redis calls' limit when `redis.timeout` is not set.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);

fn default_client_id() -> String {
    "r1-center".to_owned()
}
fn default_group() -> String {
    "r1-center".to_owned()
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(45)
}
fn default_max_poll_interval() -> Duration {
    Duration::from_secs(600)
}

impl CenterConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        r1_config::load(path)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        r1_config::parse(text, "<config>")
    }

    /// The consumer group: `kafka.group`, with `.<version>` when the node serves a model version.
    pub fn group(&self) -> String {
        match &self.topics.version {
            Some(v) => format!("{}.{v}", self.kafka.group),
            None => self.kafka.group.clone(),
        }
    }

    /// The Kafka client settings this file describes, the secrets of `[kafka.security]` read now from the
    /// process environment and their files.
    pub fn kafka_settings(&self) -> Result<KafkaSettings, SecurityError> {
        self.kafka_settings_with(&|name| std::env::var(name).ok())
    }

    /// As [`kafka_settings`](Self::kafka_settings), with environment variables looked up through `env`.
    pub fn kafka_settings_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<KafkaSettings, SecurityError> {
        Ok(KafkaSettings {
            brokers: self.kafka.brokers.clone(),
            client_id: self.kafka.client_id.clone(),
            session_timeout: self.kafka.session_timeout,
            max_poll_interval: self.kafka.max_poll_interval,
            extra: self.kafka.librdkafka.clone(),
            security: self.kafka.security.resolve("kafka.security", env)?,
        })
    }
}

impl CenterConfig {
    /// The Redis client `[redis]` describes, its password read now from the process environment or its file.
    pub fn redis_client(&self) -> Result<RedisClient, RedisSetupError> {
        self.redis.client("redis", &|name| std::env::var(name).ok())
    }

    /// `redis.timeout`, or r1-center's default.
    pub fn redis_timeout(&self) -> Duration {
        self.redis.timeout.unwrap_or(DEFAULT_REDIS_TIMEOUT)
    }
}

impl Validate for CenterConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let n = &self.node;
        if n.max_in_flight == 0 {
            problems.push("node.max_in_flight: must be at least 1".to_owned());
        }
        if n.max_attempts == 0 {
            problems.push("node.max_attempts: must be at least 1".to_owned());
        }
        if n.claim_ttl < Duration::from_secs(1) {
            problems.push("node.claim_ttl: must be at least 1s".to_owned());
        }
        if n.id.as_ref().is_some_and(|id| id.trim().is_empty()) {
            problems.push("node.id: must not be empty".to_owned());
        }
        problems.extend(self.telemetry.problems("telemetry"));
        let b = &self.backend;
        match b.kind {
            BackendKind::Openai => {
                match &b.base_url {
                    None => problems.push("backend.base_url: required with kind = \"openai\"".to_owned()),
                    Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                        problems.push(format!("backend.base_url: `{url}` must start with http:// or https://"));
                    }
                    Some(_) => {}
                }
                if b.model.as_ref().is_none_or(|m| m.trim().is_empty()) {
                    problems.push("backend.model: required with kind = \"openai\"".to_owned());
                }
            }
            BackendKind::Onnx => match &b.model_dir {
                None => problems.push("backend.model_dir: required with kind = \"onnx\"".to_owned()),
                Some(dir) if !dir.join("config.json").is_file() => problems.push(format!(
                    "backend.model_dir: `{}` has no config.json (an Optimum-layout model directory)",
                    dir.display()
                )),
                Some(_) => {}
            },
        }
        if !(1..=1024).contains(&b.max_batch_size) {
            problems.push("backend.max_batch_size: must be 1..=1024".to_owned());
        }
        if b.attempts == 0 {
            problems.push("backend.attempts: must be at least 1".to_owned());
        }
        if let Some(v) = &self.topics.version
            && (v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            problems.push(format!("topics.version: `{v}` may hold only letters, digits, - and _"));
        }
        let k = &self.kafka;
        if k.brokers.split(',').any(|b| {
            b.trim()
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        }) {
            problems.push(format!(
                "kafka.brokers: `{}` must be a comma-separated list of host:port",
                k.brokers
            ));
        }
        if k.group.trim().is_empty() {
            problems.push("kafka.group: must not be empty".to_owned());
        }
        if !(Duration::from_secs(6)..=Duration::from_secs(300)).contains(&k.session_timeout) {
            problems.push("kafka.session_timeout: must be between 6s and 5m (the broker's group limits)".to_owned());
        }
        if k.max_poll_interval < k.session_timeout {
            problems.push("kafka.max_poll_interval: must not be shorter than kafka.session_timeout".to_owned());
        }
        let security = k.security.problems("kafka.security");
        if security.is_empty() {
            // The files only once the table is coherent (a file for an unused key is not worth reading).
            problems.extend(k.security.file_problems("kafka.security"));
        }
        problems.extend(security);
        problems.extend(extra_problems("kafka.librdkafka", &k.librdkafka));
        let redis = self.redis.problems("redis");
        if redis.is_empty() {
            problems.extend(self.redis.file_problems("redis"));
        }
        problems.extend(redis);
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKEND: &str = "[backend]\nkind = \"openai\"\nbase_url = \"http://b/v1\"\nmodel = \"m\"\n";

    #[test]
    fn minimal_file_gets_defaults() {
        let text = format!("{BACKEND}[kafka]\nbrokers = \"k:9092\"\n[redis]\nurl = \"redis://r:6379\"\n");
        let c = CenterConfig::parse(&text).unwrap();
        assert_eq!(c.node.max_attempts, 3);
        assert_eq!(c.topics.topics().interactive, "r1.tasks.interactive");
        assert_eq!(c.group(), "r1-center");
        assert_eq!(c.kafka.group, "r1-center");
        assert_eq!(c.kafka.max_poll_interval, Duration::from_secs(600));
        let settings = c.kafka_settings_with(&|_| None).unwrap();
        assert_eq!(
            settings.consumer(&c.kafka.group).get("max.poll.interval.ms"),
            Some("600000")
        );
        assert_eq!(
            settings.consumer(&c.kafka.group).get("security.protocol"),
            Some("plaintext")
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = CenterConfig::parse(&format!(
            "{BACKEND}[kafka]\nbrokers = \"k:9092\"\nbrokerz = 1\n[redis]\nurl = \"redis://r\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            [backend]
            kind = "openai"
            base_url = "http://b/v1"
            model = "m"
            [kafka]
            brokers = "nohost"
            group = " "
            session_timeout = "1s"
            max_poll_interval = "500ms"
            librdkafka = { "enable.auto.offset.store" = "true", "socket.keepalive.enable" = "true", "sasl.password" = "x" }
            [kafka.security]
            protocol = "ssl"
            ca_file = "/nonexistent/ca.pem"
            [kafka.security.sasl]
            mechanism = "SCRAM-SHA-512"
            username = "r1-center"
            password = "written-here"
            [redis]
            url = "http://r"
        "#;
        let ConfigError::Invalid { problems, .. } = CenterConfig::parse(text).unwrap_err() else {
            panic!("expected Invalid");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "kafka.brokers",
                "kafka.group",
                "kafka.session_timeout",
                "kafka.max_poll_interval",
                "kafka.security.sasl.password",
                "kafka.security.sasl",
                "kafka.librdkafka.enable.auto.offset.store",
                "kafka.librdkafka.sasl.password",
                "redis.url"
            ]
        );
    }

    #[test]
    fn a_secured_kafka_section_becomes_client_properties_with_the_secret_from_the_environment() {
        let dir = std::env::temp_dir().join(format!("r1-center-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let text = format!(
            "{BACKEND}[kafka]\nbrokers = \"b-1.msk:9096\"\n[kafka.security]\nprotocol = \"sasl_ssl\"\nca_file = \"{}\"\n\
             [kafka.security.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"r1-center\"\npassword_env = \"R1_KAFKA_PASSWORD\"\n\
             [redis]\nurl = \"redis://r\"\n",
            ca.display()
        );
        let c = CenterConfig::parse(&text).unwrap();
        let env = |name: &str| (name == "R1_KAFKA_PASSWORD").then(|| "s3cret".to_owned());
        let consumer = c.kafka_settings_with(&env).unwrap().consumer("g");
        assert_eq!(consumer.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(consumer.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(consumer.get("sasl.password"), Some("s3cret"));
        assert_eq!(consumer.get("ssl.ca.location"), ca.to_str());
        assert_eq!(
            c.kafka_settings_with(&|_| None).unwrap_err().to_string(),
            "kafka.security.sasl.password_env: environment variable R1_KAFKA_PASSWORD is not set or empty"
        );
        // A missing CA file is a problem of the file itself (what --check-config reports).
        let missing = text.replace(ca.to_str().unwrap(), "/nonexistent/ca.pem");
        let ConfigError::Invalid { problems, .. } = CenterConfig::parse(&missing).unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("kafka.security.ca_file: /nonexistent/ca.pem: "),
            "{problems:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
