//! The gateway's configuration file: a typed TOML tree, validated with every problem reported at once.
//!
//! `deploy/config/gateway.toml` is the reference. Unknown keys are refused, so a typo never silently
//! falls back to a default. Weights, thresholds, rules and pool members may change in a live reload;
//! listeners may not (they need a restart, and a reload that changes them is refused).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use r1_config::{ConfigError, Validate};
use r1_proto::Route;
use serde::Deserialize;

pub use crate::card::CapabilitiesSection;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway listens.
    #[serde(default)]
    pub listen: ListenSection,
    /// Model names clients may send.
    #[serde(default)]
    pub models: ModelsSection,
    /// How requests are split between edge and center.
    #[serde(default)]
    pub routing: RoutingSection,
    /// The edge pool (r1-edge members over HTTP).
    #[serde(default)]
    pub edge: EdgeSection,
    /// The center (OpenAI-compatible servers in front of the full model).
    #[serde(default)]
    pub center: CenterSection,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// Shared state: the result cache, the limits' counters, asynchronous tasks and batches — one server
    /// or a Redis Cluster, TLS, an ACL user (`r1_queue::redis_conn`, the same table as r1-center's).
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// Who may call: JWT bearer authentication (on unless `enabled = false`).
    #[serde(default)]
    pub auth: crate::auth::AuthSection,
    /// How much: body size, `max_tokens`, per-subject rate/concurrency/tokens, global in-flight.
    #[serde(default)]
    pub limits: crate::limits::LimitsSection,
    /// What may reach a model: roles, control characters, Unicode normalization, size caps.
    #[serde(default)]
    pub hygiene: crate::hygiene::HygieneSection,
    /// The exact-match result cache (Redis when `[redis]` is configured, else in memory).
    #[serde(default)]
    pub cache: crate::cache::CacheSection,
    /// CORS for browser apps (off by default).
    #[serde(default)]
    pub cors: crate::cors::CorsSection,
    /// Asynchronous tasks (`/v1/tasks`).
    #[serde(default)]
    pub tasks: TasksSection,
    /// Traces: OpenTelemetry spans over OTLP/HTTP (off unless `otlp_endpoint` is set; restart to change).
    #[serde(default)]
    pub telemetry: r1_telemetry::TelemetrySection,
}

/// `[tasks]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksSection {
    /// Accept webhooks on private, loopback and link-local addresses (receivers inside the
    /// deployment's network). Off: a webhook whose host is such an IP literal, or `localhost`, is a 400
    /// when the task is submitted; r1-center checks the addresses a name resolves to when it calls, with
    /// its own `node.webhook_private_networks`.
    #[serde(default)]
    pub webhook_private_networks: bool,
}

pub use r1_queue::redis_conn::RedisSection;

/// The gateway's Redis calls' limit (task state) when `redis.timeout` is not set.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// `[listen]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Public listener: the OpenAI-compatible client API.
    #[serde(default = "default_public")]
    pub public: SocketAddr,
    /// Admin listener: `/metrics`, `/admin/route/explain`, `/admin/pools`. Never the same as `public`.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// HTTPS on the public listener; absent, it speaks plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Worker threads of the proxy (Pingora's work-stealing runtime); default: one per CPU.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Idle upstream connections kept for reuse, over all members.
    #[serde(default = "default_upstream_pool")]
    pub upstream_pool: usize,
    /// After SIGTERM: how long the listeners stay open while readiness is false, so load balancers
    /// take the replica out before it stops accepting (whole seconds).
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Then: how long requests in flight (streams) get to finish before they are cut (whole seconds).
    #[serde(default = "default_shutdown_drain", with = "humantime_serde")]
    pub shutdown_drain: Duration,
}

fn default_upstream_pool() -> usize {
    1024
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_shutdown_drain() -> Duration {
    Duration::from_secs(30)
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            public: default_public(),
            admin: default_admin(),
            tls: None,
            threads: None,
            upstream_pool: default_upstream_pool(),
            shutdown_grace: default_shutdown_grace(),
            shutdown_drain: default_shutdown_drain(),
        }
    }
}

/// `tls` of a pool: talk to its members over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Server name sent in the handshake (SNI) and checked against the member's certificate.
    pub sni: String,
    /// Check the member's certificate against the system's trust roots (turn off only for tests).
    #[serde(default = "default_verify")]
    pub verify: bool,
}

fn default_verify() -> bool {
    true
}

/// `[listen.tls]`: certificate files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mTLS).
    #[serde(default)]
    pub client_ca: Option<std::path::PathBuf>,
}

fn default_public() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// `[models]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    /// Names that mean "route it for me" (scored and split). The edge and center model names
    /// themselves pin a request to that pool; any other name is a 404.
    #[serde(default = "default_public_models")]
    pub routed: Vec<String>,
}

impl Default for ModelsSection {
    fn default() -> Self {
        Self {
            routed: default_public_models(),
        }
    }
}

fn default_public_models() -> Vec<String> {
    vec![
        "deepseek-r1".to_owned(),
        "deepseek-reasoner".to_owned(),
        "r1-hybrid".to_owned(),
    ]
}

/// How the route decision is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoutingMode {
    /// Decide and send where the decision says.
    #[default]
    Enforce,
    /// Decide and record, but send by weights alone.
    Shadow,
    /// No scoring: weights alone.
    Off,
}

/// `[routing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// `enforce`, `shadow` or `off`.
    #[serde(default)]
    pub mode: RoutingMode,
    /// Complexity scores at or below this go to the edge.
    #[serde(default = "default_edge_max")]
    pub edge_max: f32,
    /// Complexity scores at or above this go to the center.
    #[serde(default = "default_center_min")]
    pub center_min: f32,
    /// Split of the middle band (and of everything when `mode = "off"`).
    #[serde(default)]
    pub weights: Weights,
    /// Request header naming the conversation (sticky routing); without it, a hash of the
    /// conversation's first messages is the key.
    #[serde(default = "default_session_header")]
    pub session_header: String,
    /// How long a conversation's tier is remembered.
    #[serde(default = "default_sticky_ttl", with = "humantime_serde")]
    pub sticky_ttl: Duration,
    /// Most conversations remembered (least recently used ones are forgotten first).
    #[serde(default = "default_sticky_capacity")]
    pub sticky_capacity: u64,
    /// Explicit rules, checked in order before scoring; the first match decides.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl Default for RoutingSection {
    fn default() -> Self {
        Self {
            mode: RoutingMode::default(),
            edge_max: default_edge_max(),
            center_min: default_center_min(),
            weights: Weights::default(),
            session_header: default_session_header(),
            sticky_ttl: default_sticky_ttl(),
            sticky_capacity: default_sticky_capacity(),
            rules: Vec::new(),
        }
    }
}

/// The reference threshold, chosen on `gateway/data/complexity-stress.jsonl` (with the default weights,
/// 95 % of its complex prompts reach the center and 62 % of its simple ones stay on the edge) and checked
/// on `complexity-heldout.jsonl` (93 % and 59 %) by `gateway/tests/score_eval.rs`; see
/// docs/ROUTING-SCORER.md. Equal to `default_center_min`: no middle band until an operator widens it.
fn default_edge_max() -> f32 {
    0.30
}
/// See `default_edge_max`.
fn default_center_min() -> f32 {
    0.30
}
fn default_session_header() -> String {
    "x-session-id".to_owned()
}
fn default_sticky_ttl() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_sticky_capacity() -> u64 {
    100_000
}

/// `[routing.weights]`: relative shares, each 0..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Share sent to the edge pool.
    pub edge: u32,
    /// Share sent to the center.
    pub center: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self { edge: 70, center: 30 }
    }
}

/// `[[routing.rules]]`: when every condition in `match` holds, send to `route`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in `x-r1-route-reason` details, logs and `explain`.
    pub name: String,
    /// `edge` or `center`.
    pub route: Route,
    /// The conditions (all must hold; at least one must be given).
    #[serde(rename = "match")]
    pub when: RuleMatch,
}

/// The conditions of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    /// The request's `model` is one of these.
    #[serde(default)]
    pub model: Vec<String>,
    /// A request header has this exact value.
    pub header: Option<NameValue>,
    /// A JWT claim has this exact value (once authentication is configured).
    pub claim: Option<NameValue>,
}

/// A name and the value it must have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameValue {
    /// Header or claim name (headers match case-insensitively).
    pub name: String,
    /// Exact value.
    pub value: String,
}

/// `[edge]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSection {
    /// The model name the edge members serve; requests routed there are rewritten to it.
    #[serde(default = "default_edge_model")]
    pub model: String,
    /// r1-edge members, `host:port`.
    #[serde(default)]
    pub members: Vec<String>,
    /// In-flight requests beyond which the pool counts as saturated (and fails over).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthSection,
    /// HTTPS to the members (health checks too); absent, plain HTTP.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// What the pool serves: learned from the members' model cards, these keys override.
    #[serde(default)]
    pub capabilities: CapabilitiesSection,
}

impl Default for EdgeSection {
    fn default() -> Self {
        Self {
            model: default_edge_model(),
            members: Vec::new(),
            max_in_flight: default_max_in_flight(),
            health: HealthSection::default(),
            tls: None,
            capabilities: CapabilitiesSection::default(),
        }
    }
}

fn default_edge_model() -> String {
    "r1-edge-mini".to_owned()
}
fn default_max_in_flight() -> usize {
    256
}

/// How the center is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CenterTransport {
    /// Plain HTTP to OpenAI-compatible members (proxied like the edge).
    #[default]
    Http,
    /// Tasks on Kafka to r1-center nodes; results streamed back on this instance's partition.
    Kafka,
    /// The same hand-off on an in-process queue, with an in-process worker that calls the first
    /// center member as an OpenAI-compatible backend (the embedded stack; nothing is durable).
    Embedded,
}

/// `[center.kafka]`: the durable hand-off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterKafkaSection {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// `client.id` reported to the brokers.
    #[serde(default = "default_gateway_client_id")]
    pub client_id: String,
    /// This instance's name (logs, `reply_to`); default `<hostname>-<pid>`.
    #[serde(default)]
    pub instance: Option<String>,
    /// This instance's partition of the results topic. Every gateway instance needs its own
    /// (e.g. the StatefulSet ordinal); the results topic needs at least as many partitions as
    /// there are instances.
    pub results_partition: i32,
    /// A task not acknowledged by the brokers within this is answered with a 503.
    #[serde(default = "default_send_timeout", with = "humantime_serde")]
    pub send_timeout: std::time::Duration,
    /// Partitions of the topics when the gateway creates them (existing topics are left alone).
    #[serde(default = "default_result_partitions")]
    pub result_partitions: i32,
    /// Topic names (defaults: `r1.tasks.interactive`, `r1.tasks.batch`, `r1.results`, `r1.cancel`,
    /// `r1.tasks.dlq`).
    #[serde(default)]
    pub topics: std::collections::BTreeMap<String, String>,
    /// The consumer group of the r1-center nodes (their `kafka.group`). The center counts as up only
    /// while this group has members holding the task partitions: before the first node joins, and
    /// after the last one left, interactive requests go to the edge or get a quick 503.
    #[serde(default = "default_center_group")]
    pub center_group: String,
    /// TLS and SASL towards the brokers (absent: plaintext, no authentication): `protocol`, `ca_file`,
    /// `cert_file`/`key_file`, `[center.kafka.security.sasl]`. Secrets come from the environment or files.
    #[serde(default)]
    pub security: r1_queue::kafka::SecuritySection,
    /// Extra librdkafka properties (tuning). The delivery-contract and security properties are refused
    /// (use `security`).
    #[serde(default)]
    pub librdkafka: std::collections::BTreeMap<String, String>,
}

/// The key path of the Kafka security table, as errors name it.
pub const SECURITY_KEY: &str = "center.kafka.security";

/// The key path of the Redis table, as errors name it.
pub const REDIS_KEY: &str = "redis";

fn default_gateway_client_id() -> String {
    "r1-gateway".to_owned()
}
fn default_center_group() -> String {
    "r1-center".to_owned()
}
fn default_send_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(3)
}
fn default_result_partitions() -> i32 {
    16
}

impl CenterKafkaSection {
    /// The topic names in effect.
    pub fn topics(&self) -> r1_queue::topics::Topics {
        let mut t = r1_queue::topics::Topics::default();
        for (key, value) in &self.topics {
            match key.as_str() {
                "interactive" => t.interactive.clone_from(value),
                "batch" => t.batch.clone_from(value),
                "results" => t.results.clone_from(value),
                "cancel" => t.cancel.clone_from(value),
                "dlq" => t.dlq.clone_from(value),
                _ => {}
            }
        }
        t
    }

    /// The Kafka client settings, the secrets of `security` read now from `env` and their files.
    pub fn settings(
        &self,
        env: &dyn crate::env::Environment,
    ) -> Result<r1_queue::kafka::KafkaSettings, r1_queue::kafka::SecurityError> {
        let mut s = r1_queue::kafka::KafkaSettings::new(self.brokers.clone(), self.client_id.clone());
        s.extra = self.librdkafka.clone();
        s.security = self.security.resolve(SECURITY_KEY, &|name| env.var(name))?;
        Ok(s)
    }
}

/// `[center]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterSection {
    /// How tasks reach the center.
    #[serde(default)]
    pub transport: CenterTransport,
    /// The model name the center serves; requests routed there are rewritten to it.
    #[serde(default = "default_center_model")]
    pub model: String,
    /// OpenAI-compatible members, `host:port`.
    #[serde(default)]
    pub members: Vec<String>,
    /// In-flight requests beyond which the center counts as saturated.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthSection,
    /// HTTPS to the members (health checks too); absent, plain HTTP.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// What the center serves: learned from the members' model cards where there are members
    /// (`http`, `embedded`), these keys override (with `kafka`, they are all there is).
    #[serde(default)]
    pub capabilities: CapabilitiesSection,
    /// The Kafka hand-off (`transport = "kafka"`).
    #[serde(default)]
    pub kafka: Option<CenterKafkaSection>,
    /// The in-process center's backend when it is not a member (`transport = "embedded"`): an
    /// OpenAI-compatible API by URL, such as DeepSeek's.
    #[serde(default)]
    pub backend: Option<EmbeddedBackend>,
    /// Model versions with weights (canary and rollback; `transport = "kafka"` only). Each
    /// version's tasks go to its own task topics (`<topic>.<name>`), which only that version's
    /// r1-center nodes consume (`[topics] version = "<name>"` in their config). A conversation
    /// stays on one version; weight 0 stops new tasks for a version (rollback) while the ones it
    /// has finish. Live-reloadable.
    #[serde(default)]
    pub versions: Vec<CenterVersion>,
}

/// `[center.backend]`: the embedded center's OpenAI-compatible API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBackend {
    /// Its base URL, up to `/v1` (`https://api.deepseek.com/v1`).
    pub base_url: String,
    /// The model name it takes (default: `center.model`).
    #[serde(default)]
    pub model: Option<String>,
    /// The environment variable holding its API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
}

/// `[[center.versions]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterVersion {
    /// The version's name (letters, digits, `-`, `_`): its topics' suffix and its metrics label.
    pub name: String,
    /// Share of new conversations.
    pub weight: u32,
}

impl Default for CenterSection {
    fn default() -> Self {
        Self {
            kafka: None,
            backend: None,
            versions: Vec::new(),
            transport: CenterTransport::default(),
            model: default_center_model(),
            members: Vec::new(),
            max_in_flight: default_max_in_flight(),
            health: HealthSection::default(),
            tls: None,
            capabilities: CapabilitiesSection::default(),
        }
    }
}

fn default_center_model() -> String {
    "deepseek-ai/DeepSeek-R1".to_owned()
}

/// Active health checks of a pool's members.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Path probed with GET; 200 is healthy.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between probes.
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Consecutive successes before a down member is back (more than 1, so state does not flap).
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures before a member is down (probes or live requests).
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval: default_health_interval(),
            healthy_threshold: default_healthy_threshold(),
            unhealthy_threshold: default_unhealthy_threshold(),
        }
    }
}

fn default_health_path() -> String {
    "/readyz".to_owned()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// `[timeouts]`: each phase of an upstream exchange has its own limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    /// TCP (and TLS) connect.
    #[serde(default = "default_connect", with = "humantime_serde")]
    pub connect: Duration,
    /// From sending the request to the first byte of the answer.
    #[serde(default = "default_first_token", with = "humantime_serde")]
    pub first_token: Duration,
    /// Longest silence between two chunks of a streamed answer.
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle: Duration,
    /// The whole exchange.
    #[serde(default = "default_total", with = "humantime_serde")]
    pub total: Duration,
    /// Interval of SSE keep-alive comments while the model is silent (R1 thinks for minutes).
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub sse_keepalive: Duration,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        Self {
            connect: default_connect(),
            first_token: default_first_token(),
            idle: default_idle(),
            total: default_total(),
            sse_keepalive: default_keepalive(),
        }
    }
}

fn default_connect() -> Duration {
    Duration::from_secs(2)
}
fn default_first_token() -> Duration {
    Duration::from_secs(120)
}
fn default_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_total() -> Duration {
    Duration::from_secs(1800)
}
fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}

impl GatewayConfig {
    /// The Redis client `[redis]` describes (none without it), its password read now from `env` or its
    /// file, its TLS files read now.
    pub fn redis_client(
        &self,
        env: &dyn crate::env::Environment,
    ) -> Result<Option<r1_queue::redis_conn::RedisClient>, r1_queue::redis_conn::RedisSetupError> {
        self.redis
            .as_ref()
            .map(|r| r.client(REDIS_KEY, &|name| env.var(name)))
            .transpose()
    }

    /// `redis.timeout`, or the gateway's default.
    pub fn redis_timeout(&self) -> Duration {
        self.redis
            .as_ref()
            .and_then(|r| r.timeout)
            .unwrap_or(DEFAULT_REDIS_TIMEOUT)
    }

    /// Reads, parses and validates `path`, then applies the process environment's overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &crate::env::ProcessEnv)
    }

    /// Reads, parses and validates `path`, then applies the overrides `env` holds (see [`crate::env`]).
    pub fn load_with(path: &Path, env: &dyn crate::env::Environment) -> Result<Self, ConfigError> {
        let config: Self = r1_config::load(path)?;
        config.overridden(env).map_err(|problems| ConfigError::Invalid {
            path: path.display().to_string(),
            problems,
        })
    }

    /// The configuration with the environment's overrides applied, each checked like the key it sets.
    pub fn overridden(mut self, env: &dyn crate::env::Environment) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if let Some(value) = env.var(crate::env::RESULTS_PARTITION) {
            match self.center.kafka.as_mut() {
                Some(k) => match value.trim().parse::<i32>() {
                    Ok(p) if (0..k.result_partitions).contains(&p) => k.results_partition = p,
                    _ => problems.push(format!(
                        "{}: `{value}` must be 0..{} (center.kafka.result_partitions)",
                        crate::env::RESULTS_PARTITION,
                        k.result_partitions
                    )),
                },
                None => tracing::debug!(
                    "{} is set but the center is not reached through Kafka",
                    crate::env::RESULTS_PARTITION
                ),
            }
        }
        if problems.is_empty() { Ok(self) } else { Err(problems) }
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        r1_config::parse(text, "<config>")
    }

    /// One pool's settings, from `[edge]` or `[center]`.
    pub fn pool(&self, route: Route) -> PoolSettings<'_> {
        match route {
            Route::Edge => PoolSettings {
                model: &self.edge.model,
                members: &self.edge.members,
                max_in_flight: self.edge.max_in_flight,
                health: &self.edge.health,
                tls: self.edge.tls.as_ref(),
                capabilities: &self.edge.capabilities,
            },
            _ => PoolSettings {
                model: &self.center.model,
                members: &self.center.members,
                max_in_flight: self.center.max_in_flight,
                health: &self.center.health,
                tls: self.center.tls.as_ref(),
                capabilities: &self.center.capabilities,
            },
        }
    }

    /// Whether a request for `model` is known: routed, or pinned to a pool.
    pub fn knows_model(&self, model: &str) -> bool {
        model == self.edge.model || model == self.center.model || self.models.routed.iter().any(|m| m == model)
    }
}

/// One pool's settings, whichever section they come from.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings<'a> {
    /// The model its members serve.
    pub model: &'a str,
    /// `host:port` of each member.
    pub members: &'a [String],
    /// Saturation point.
    pub max_in_flight: usize,
    /// Active health checks.
    pub health: &'a HealthSection,
    /// HTTPS to the members.
    pub tls: Option<&'a UpstreamTls>,
    /// What it serves, by config.
    pub capabilities: &'a CapabilitiesSection,
}

fn check_members(problems: &mut Vec<String>, key: &str, members: &[String]) {
    for (i, member) in members.iter().enumerate() {
        let ok = member
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            problems.push(format!("{key}.members[{i}]: `{member}` must be host:port"));
        }
    }
}

fn check_health(problems: &mut Vec<String>, key: &str, h: &HealthSection) {
    if h.healthy_threshold < 2 {
        problems.push(format!(
            "{key}.health.healthy_threshold: must be at least 2 so state does not flap"
        ));
    }
    if h.unhealthy_threshold < 2 {
        problems.push(format!(
            "{key}.health.unhealthy_threshold: must be at least 2 so state does not flap"
        ));
    }
    if !h.path.starts_with('/') {
        problems.push(format!("{key}.health.path: `{}` must start with /", h.path));
    }
    if h.interval < Duration::from_millis(100) {
        problems.push(format!("{key}.health.interval: must be at least 100ms"));
    }
}

impl Validate for GatewayConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.listen.public == self.listen.admin {
            problems.push("listen.admin: must differ from listen.public (metrics are never public)".to_owned());
        }
        problems.extend(self.auth.problems());
        problems.extend(self.limits.problems());
        problems.extend(self.hygiene.problems());
        problems.extend(self.cache.problems());
        problems.extend(self.cors.problems());
        problems.extend(self.telemetry.problems("telemetry"));
        if self.listen.threads.is_some_and(|t| !(1..=256).contains(&t)) {
            problems.push("listen.threads: must be 1..=256".to_owned());
        }
        if !(1..=1_000_000).contains(&self.listen.upstream_pool) {
            problems.push("listen.upstream_pool: must be 1..=1000000".to_owned());
        }
        for (key, value) in [
            ("listen.shutdown_grace", self.listen.shutdown_grace),
            ("listen.shutdown_drain", self.listen.shutdown_drain),
        ] {
            if value.subsec_nanos() != 0 || value > Duration::from_secs(3600) {
                problems.push(format!("{key}: must be whole seconds, at most 1h"));
            }
        }
        if self
            .models
            .routed
            .iter()
            .any(|m| m == &self.edge.model || m == &self.center.model)
        {
            problems.push("models.routed: must not contain edge.model or center.model (those pin a pool)".to_owned());
        }
        if self.edge.model == self.center.model {
            problems.push("center.model: must differ from edge.model".to_owned());
        }
        let r = &self.routing;
        for (key, value) in [("routing.edge_max", r.edge_max), ("routing.center_min", r.center_min)] {
            if !(0.0..=1.0).contains(&value) {
                problems.push(format!("{key}: {value} must be within 0.0..=1.0"));
            }
        }
        if r.edge_max > r.center_min {
            problems.push(format!(
                "routing.edge_max: {} must not exceed routing.center_min ({})",
                r.edge_max, r.center_min
            ));
        }
        for (key, value) in [
            ("routing.weights.edge", r.weights.edge),
            ("routing.weights.center", r.weights.center),
        ] {
            if value > 100 {
                problems.push(format!("{key}: {value} must be 0..=100"));
            }
        }
        if r.weights.edge == 0 && r.weights.center == 0 {
            problems.push("routing.weights: edge and center cannot both be 0".to_owned());
        }
        if r.session_header.is_empty() || !r.session_header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            problems.push(format!(
                "routing.session_header: `{}` is not a header name",
                r.session_header
            ));
        }
        for (i, rule) in r.rules.iter().enumerate() {
            let key = format!("routing.rules[{i}]");
            if rule.name.trim().is_empty() {
                problems.push(format!("{key}.name: must not be empty"));
            }
            if rule.route == Route::Cache {
                problems.push(format!("{key}.route: must be edge or center"));
            }
            let w = &rule.when;
            if w.model.is_empty() && w.header.is_none() && w.claim.is_none() {
                problems.push(format!("{key}.match: give at least one of model, header, claim"));
            }
        }
        check_members(&mut problems, "edge", &self.edge.members);
        check_members(&mut problems, "center", &self.center.members);
        if let Some(r) = &self.redis {
            problems.extend(r.problems(REDIS_KEY));
        }
        let versions = &self.center.versions;
        if !versions.is_empty() {
            if self.center.transport != CenterTransport::Kafka {
                problems.push("center.versions: model versions need center.transport = \"kafka\"".to_owned());
            }
            if versions.iter().all(|v| v.weight == 0) {
                problems.push("center.versions: at least one version needs a weight above 0".to_owned());
            }
            for (i, v) in versions.iter().enumerate() {
                if v.name.is_empty()
                    || !v
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    problems.push(format!(
                        "center.versions[{i}].name: `{}` may hold only letters, digits, - and _",
                        v.name
                    ));
                }
                if versions[..i].iter().any(|w| w.name == v.name) {
                    problems.push(format!("center.versions[{i}].name: `{}` is listed twice", v.name));
                }
            }
        }
        match (self.center.transport, &self.center.kafka) {
            (CenterTransport::Kafka, None) => {
                problems.push("center.kafka: required with center.transport = \"kafka\"".to_owned());
            }
            (CenterTransport::Kafka, Some(k)) => {
                if k.brokers
                    .split(',')
                    .any(|b| b.trim().rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()))
                {
                    problems.push(format!(
                        "center.kafka.brokers: `{}` must be a comma-separated list of host:port",
                        k.brokers
                    ));
                }
                if k.results_partition < 0 || k.results_partition >= k.result_partitions {
                    problems.push(format!(
                        "center.kafka.results_partition: must be 0..{} (center.kafka.result_partitions)",
                        k.result_partitions
                    ));
                }
                for key in k.topics.keys() {
                    if !["interactive", "batch", "results", "cancel", "dlq"].contains(&key.as_str()) {
                        problems.push(format!(
                            "center.kafka.topics.{key}: unknown (interactive, batch, results, cancel, dlq)"
                        ));
                    }
                }
                if k.send_timeout < Duration::from_millis(100) {
                    problems.push("center.kafka.send_timeout: must be at least 100ms".to_owned());
                }
                if k.center_group.trim().is_empty() {
                    problems
                        .push("center.kafka.center_group: must name the r1-center nodes' consumer group".to_owned());
                }
                problems.extend(k.security.problems(SECURITY_KEY));
                problems.extend(r1_queue::kafka::extra_problems(
                    "center.kafka.librdkafka",
                    &k.librdkafka,
                ));
            }
            (CenterTransport::Embedded, _) if self.center.members.is_empty() && self.center.backend.is_none() => {
                problems.push(
                    "center.members: the embedded transport calls the first member (or center.backend) as its backend; list one".to_owned(),
                );
            }
            _ => {}
        }
        if let Some(backend) = &self.center.backend {
            if self.center.transport != CenterTransport::Embedded {
                problems.push("center.backend: only for center.transport = \"embedded\" (r1-center nodes have their own [backend])".to_owned());
            }
            if !(backend.base_url.starts_with("http://") || backend.base_url.starts_with("https://")) {
                problems.push(format!(
                    "center.backend.base_url: `{}` must be an http(s) URL",
                    backend.base_url
                ));
            }
        }
        check_health(&mut problems, "edge", &self.edge.health);
        check_health(&mut problems, "center", &self.center.health);
        problems.extend(self.edge.capabilities.problems("edge.capabilities"));
        problems.extend(self.center.capabilities.problems("center.capabilities"));
        if self.center.capabilities.embeddings && self.center.transport != CenterTransport::Http {
            problems.push(
                "center.capabilities.embeddings: the task hand-off carries chat only; embeddings are served by a \
                 pool reached over HTTP (center.transport = \"http\", or the edge pool)"
                    .to_owned(),
            );
        }
        for (key, value) in [
            ("edge.max_in_flight", self.edge.max_in_flight),
            ("center.max_in_flight", self.center.max_in_flight),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        let t = &self.timeouts;
        for (key, value) in [
            ("timeouts.connect", t.connect),
            ("timeouts.first_token", t.first_token),
            ("timeouts.idle", t.idle),
            ("timeouts.total", t.total),
            ("timeouts.sse_keepalive", t.sse_keepalive),
        ] {
            if value.is_zero() {
                problems.push(format!("{key}: must be more than 0"));
            }
        }
        if t.total < t.first_token {
            problems.push("timeouts.total: must not be shorter than timeouts.first_token".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = GatewayConfig::parse("").unwrap();
        assert_eq!(c.routing.mode, RoutingMode::Enforce);
        assert_eq!(c.routing.weights, Weights { edge: 70, center: 30 });
        assert_eq!(c.listen.admin.port(), 9090);
        assert!(c.knows_model("deepseek-r1") && c.knows_model("r1-edge-mini") && !c.knows_model("gpt-4"));
    }

    #[test]
    fn the_reference_configs_are_valid() {
        for name in ["gateway.toml", "gateway-demo.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/config")
                .join(name);
            GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = GatewayConfig::parse("[routing]\nwieghts = { edge = 1, center = 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wieghts"), "{err}");
    }

    #[test]
    fn all_problems_at_once_with_paths() {
        let text = r#"
            [listen]
            public = "127.0.0.1:8080"
            admin = "127.0.0.1:8080"
            [routing]
            edge_max = 0.9
            center_min = 1.5
            weights = { edge = 101, center = 0 }
            [[routing.rules]]
            name = "empty"
            route = "center"
            match = {}
            [edge]
            members = ["nohost", "127.0.0.1:8081"]
            health = { healthy_threshold = 1 }
            [timeouts]
            idle = "0s"
        "#;
        let ConfigError::Invalid { problems, .. } = GatewayConfig::parse(text).unwrap_err() else {
            panic!("expected Invalid");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "listen.admin",
                "routing.center_min",
                "routing.weights.edge",
                "routing.rules[0].match",
                "edge.members[0]",
                "edge.health.healthy_threshold",
                "timeouts.idle"
            ]
        );
    }

    #[test]
    fn the_environment_overrides_the_results_partition_and_is_checked_like_the_key() {
        use crate::env::MapEnv;
        let text = "[center]\ntransport = \"kafka\"\n[center.kafka]\nbrokers = \"k:9092\"\nresults_partition = 0\nresult_partitions = 4\n";
        let config = GatewayConfig::parse(text).unwrap();
        let partition = |c: &GatewayConfig| c.center.kafka.as_ref().map(|k| k.results_partition);
        let same = config.clone().overridden(&MapEnv::default()).unwrap();
        assert_eq!(partition(&same), Some(0));
        let ordinal = config
            .clone()
            .overridden(&MapEnv::of([("R1_RESULTS_PARTITION", "3")]))
            .unwrap();
        assert_eq!(partition(&ordinal), Some(3));
        let problems = config
            .overridden(&MapEnv::of([("R1_RESULTS_PARTITION", "4")]))
            .unwrap_err();
        assert_eq!(
            problems,
            ["R1_RESULTS_PARTITION: `4` must be 0..4 (center.kafka.result_partitions)"]
        );
    }

    #[test]
    fn the_kafka_security_table_is_checked_and_its_secret_read_from_the_environment() {
        use crate::env::MapEnv;
        let kafka = "[center]\ntransport = \"kafka\"\n[center.kafka]\nbrokers = \"k:9093\"\nresults_partition = 0\n";
        let text = format!(
            "{kafka}[center.kafka.security]\nprotocol = \"sasl_ssl\"\n[center.kafka.security.sasl]\n\
             mechanism = \"SCRAM-SHA-256\"\nusername = \"r1-gateway\"\npassword_env = \"R1_KAFKA_PASSWORD\"\n"
        );
        let config = GatewayConfig::parse(&text).unwrap();
        let k = config.center.kafka.as_ref().unwrap();
        let settings = k.settings(&MapEnv::of([("R1_KAFKA_PASSWORD", "s3cret")])).unwrap();
        assert_eq!(settings.producer().get("sasl.password"), Some("s3cret"));
        assert_eq!(settings.producer().get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(
            k.settings(&MapEnv::default()).unwrap_err().to_string(),
            "center.kafka.security.sasl.password_env: environment variable R1_KAFKA_PASSWORD is not set or empty"
        );
        let bad = format!(
            "{kafka}librdkafka = {{ \"sasl.password\" = \"x\", \"acks\" = \"1\" }}\n[center.kafka.security]\n\
             protocol = \"ssl\"\n[center.kafka.security.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"x\"\n"
        );
        let ConfigError::Invalid { problems, .. } = GatewayConfig::parse(&bad).unwrap_err() else {
            panic!("expected Invalid");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.split(": ").next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "center.kafka.security.sasl.password",
                "center.kafka.security.sasl",
                "center.kafka.librdkafka.acks",
                "center.kafka.librdkafka.sasl.password"
            ]
        );
    }
}
