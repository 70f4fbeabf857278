//! The one place Redis connections are made, for every user in both binaries (the gateway's cache,
//! limits and task state; r1-center's claims and task state): the `[redis]` table they share, its
//! validation, and connections that are either one server's or a Redis Cluster's behind one type.
//!
//! ```toml
//! [redis]
//! url = "rediss://redis.internal:6380"   # redis:// plain TCP, rediss:// TLS
//! username = "r1"                         # an ACL user; without it, the `default` user
//! password_env = "R1_REDIS_PASSWORD"      # or password_file = "/run/secrets/redis-password"
//! cluster = true                          # Redis Cluster: url (and cluster_nodes) are seeds
//! cluster_nodes = ["rediss://redis-1.internal:6380", "rediss://redis-2.internal:6380"]
//! [redis.tls]
//! ca_file = "/etc/r1/redis-ca.pem"        # default: the public web PKI roots built in
//! # cert_file = "/etc/r1/client.pem"      # a client certificate, with key_file
//! # key_file = "/etc/r1/client.key"
//! ```
//!
//! The password never lives in the file: it comes from an environment variable or a file, and a
//! literal (`password = …`, or one inside the URL) is refused naming its key. Validation is pure
//! ([`RedisSection::problems`]); [`RedisSection::file_problems`] reads the files (`--check-config`);
//! [`RedisSection::client`] reads the secret and the PEM files at start-up.
//!
//! A [`RedisConnection`] is an [`aio::ConnectionLike`](redis::aio::ConnectionLike), so callers send the
//! same commands and scripts either way. In a cluster the client follows `MOVED` and `ASK`, learns the
//! new slot owners after a failover, and splits `MGET` by slot; a Lua script or a `MULTI` must keep all
//! its keys in one slot, which every user here does with a hash tag (`{…}`) around the id its keys
//! share. Sentinel is not offered: point `url` at the primary's Service (or use a cluster).

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use serde::Deserialize;

use crate::kafka::SecurityError;
use crate::kafka::security::{Refused, Secret, check_source, has_pem_block, read_bounded, read_secret, source};

/// `[redis]`: where Redis is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port/db` (plain TCP) or `rediss://host:port/db` (TLS). With `cluster`, one node of
    /// the cluster (database 0): the client learns the others from it. No credentials in it: they are
    /// `username` and `password_env` / `password_file`.
    pub url: String,
    /// Every call's limit: a slow Redis is an unavailable one. Default 250ms in r1-gateway, 500ms in
    /// r1-center.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// The ACL user to log in as (`AUTH username password`). Absent: the `default` user (with a
    /// password when one is named, as for `requirepass`).
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding the password. Set this or `password_file`, or neither when the
    /// server asks for none.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (trailing newlines dropped), e.g. a mounted Kubernetes Secret.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Refused: a password never goes in the file (use `password_env` or `password_file`).
    #[serde(default)]
    pub password: Option<Refused>,
    /// TLS settings for a `rediss://` URL; absent, the server's certificate is checked against the
    /// public web PKI roots built into the binary.
    #[serde(default)]
    pub tls: Option<RedisTlsSection>,
    /// Redis Cluster: `url` and `cluster_nodes` are seed nodes, slots are learnt from them, `MOVED` and
    /// `ASK` are followed. Also on when `cluster_nodes` is set.
    #[serde(default)]
    pub cluster: bool,
    /// More seed nodes of the cluster besides `url` (`redis://host:port`, `rediss://host:port`, or
    /// `host:port` in `url`'s scheme), so a start finds the cluster with `url`'s node down.
    #[serde(default)]
    pub cluster_nodes: Vec<String>,
}

/// `[redis.tls]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsSection {
    /// PEM file of the CA certificate(s) the server's certificate is checked against (instead of the
    /// public web PKI roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), for servers that ask for one (`tls-auth-clients yes`);
    /// with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM, unencrypted) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Timeouts and retries of one user's connection (each user keeps its own, as before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection attempt's limit.
    pub connect: Duration,
    /// A response's limit.
    pub response: Duration,
    /// Reconnection attempts of a single server's connection manager before a call fails.
    pub retries: usize,
}

/// What a refused connection or call is about, to name the key an operator must fix.
const LOGIN_HINT: &str = "Redis refused the login";
const TLS_HINT: &str = "the TLS handshake with Redis failed";

/// A configured Redis: one server or a cluster, with credentials and TLS settings read at start-up.
/// Cheap to clone; makes no connection until asked.
#[derive(Clone)]
pub struct RedisClient {
    target: Target,
    /// `key` of the table (`redis`), for error messages.
    key: String,
    /// The key that named the password, if any.
    password_key: Option<String>,
    username: Option<String>,
    /// Whether the CA came from `tls.ca_file` (else the built-in roots).
    ca_file: bool,
    timeout: Option<Duration>,
}

#[derive(Clone)]
enum Target {
    /// Boxed, as the cluster's: both are hundreds of bytes, and a client is cloned for every connection.
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("cluster", &self.is_cluster())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a Redis client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The table is invalid, or a file it names is unreadable; one `key.path: problem` line each.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The password could not be read from its variable or file.
    #[error(transparent)]
    Secret(#[from] SecurityError),
    /// The client refused the settings (a URL it cannot use).
    #[error("{key}: {source}")]
    Client {
        /// The key whose value was refused.
        key: String,
        /// The client's reason.
        source: redis::RedisError,
    },
}

impl RedisSetupError {
    /// One `key.path: problem` line per problem.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Invalid(problems) => problems.clone(),
            Self::Secret(e) => e.problems(),
            other => vec![other.to_string()],
        }
    }
}

impl RedisSection {
    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster || !self.cluster_nodes.is_empty()
    }

    /// Every problem of the table, each prefixed with `key` (`redis`), in file order. No I/O.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let tls = url_problems(&mut problems, &format!("{key}.url"), &self.url);
        if self
            .timeout
            .is_some_and(|t| t < Duration::from_millis(10) || t > Duration::from_secs(5))
        {
            problems.push(format!("{key}.timeout: must be between 10ms and 5s"));
        }
        if self.username.as_ref().is_some_and(|u| u.trim().is_empty()) {
            problems.push(format!("{key}.username: must not be empty when set"));
        }
        if self.password.is_some() {
            problems.push(format!(
                "{key}.password: a password never goes in the configuration file; name its environment variable (password_env) or file (password_file)"
            ));
        }
        let password = check_source(
            &mut problems,
            key,
            ("password_env", &self.password_env),
            ("password_file", &self.password_file),
        );
        if self.username.is_some() && !password && self.password.is_none() {
            problems.push(format!(
                "{key}.password_env: required with {key}.username (or password_file)"
            ));
        }
        if let Some(t) = &self.tls {
            if tls == Some(false) {
                problems.push(format!(
                    "{key}.tls: set, but {key}.url is redis:// (plain TCP); use rediss:// for TLS"
                ));
            }
            match (&t.cert_file, &t.key_file) {
                (Some(_), None) => problems.push(format!("{key}.tls.key_file: required with {key}.tls.cert_file")),
                (None, Some(_)) => problems.push(format!("{key}.tls.cert_file: required with {key}.tls.key_file")),
                _ => {}
            }
            for (name, path) in [
                ("ca_file", &t.ca_file),
                ("cert_file", &t.cert_file),
                ("key_file", &t.key_file),
            ] {
                if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    problems.push(format!("{key}.tls.{name}: must not be empty"));
                }
            }
        }
        for (i, node) in self.cluster_nodes.iter().enumerate() {
            let node_key = format!("{key}.cluster_nodes[{i}]");
            let node = node_url(&self.url, node);
            let node_tls = url_problems(&mut problems, &node_key, &node);
            if tls.is_some() && node_tls.is_some() && node_tls != tls {
                problems.push(format!("{node_key}: must use the same scheme as {key}.url"));
            }
        }
        problems
    }

    /// What the files the table names hold, checked now (`--check-config` and start-up): each must be
    /// readable, certificates and keys in PEM, the password file not empty.
    pub fn file_problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(t) = &self.tls {
            for (name, path, label) in [
                ("ca_file", &t.ca_file, "CERTIFICATE"),
                ("cert_file", &t.cert_file, "CERTIFICATE"),
                ("key_file", &t.key_file, "PRIVATE KEY"),
            ] {
                let Some(path) = path else { continue };
                match read_bounded(path) {
                    Ok(text) if has_pem_block(&text, label) => {}
                    Ok(_) => problems.push(format!(
                        "{key}.tls.{name}: {} holds no PEM {label} block",
                        path.display()
                    )),
                    Err(e) => problems.push(format!("{key}.tls.{name}: {}: {e}", path.display())),
                }
            }
        }
        if let Some(Secret::File(name, path)) = self.password_source(key)
            && let Err(e) = read_secret(Secret::File(name.clone(), path), &|_| None)
        {
            problems.extend(e.problems());
        }
        problems
    }

    /// The client this table describes: the password read now from `env` or its file, the TLS files
    /// read now. `key` prefixes error messages (`redis`). Connects nowhere.
    pub fn client(&self, key: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RedisClient, RedisSetupError> {
        let mut problems = self.problems(key);
        if problems.is_empty() {
            problems.extend(self.file_problems(key));
        }
        if !problems.is_empty() {
            return Err(RedisSetupError::Invalid(problems));
        }
        let password_key = self.password_source(key).map(|s| match s {
            Secret::Env(name, _) | Secret::File(name, _) => name,
        });
        let password = self.password_source(key).map(|s| read_secret(s, env)).transpose()?;
        let certificates = self.tls.as_ref().map(|t| tls_certificates(key, t)).transpose()?;
        let client_error = |name: &str| {
            let key = format!("{key}.{name}");
            move |source| RedisSetupError::Client { key, source }
        };
        let target = if self.is_cluster() {
            let mut nodes = vec![self.url.clone()];
            nodes.extend(self.cluster_nodes.iter().map(|n| node_url(&self.url, n)));
            let mut builder = ClusterClient::builder(nodes)
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
                .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS);
            if let Some(user) = &self.username {
                builder = builder.username(user);
            }
            if let Some(password) = &password {
                builder = builder.password(password);
            }
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            Target::Cluster(Box::new(builder.build().map_err(client_error("cluster_nodes"))?))
        } else {
            let info =
                redis::IntoConnectionInfo::into_connection_info(self.url.as_str()).map_err(client_error("url"))?;
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &self.username {
                settings = settings.set_username(user);
            }
            if let Some(password) = &password {
                settings = settings.set_password(password);
            }
            let info = info.set_redis_settings(settings);
            let client = match certificates {
                Some(certificates) => redis::Client::build_with_tls(info, certificates),
                None => redis::Client::open(info),
            };
            Target::Single(Box::new(client.map_err(client_error("url"))?))
        };
        Ok(RedisClient {
            target,
            key: key.to_owned(),
            password_key,
            username: self.username.clone(),
            ca_file: self.tls.as_ref().is_some_and(|t| t.ca_file.is_some()),
            timeout: self.timeout,
        })
    }

    fn password_source(&self, key: &str) -> Option<Secret<'_>> {
        source(
            key,
            ("password_env", &self.password_env),
            ("password_file", &self.password_file),
        )
    }
}

/// A cluster call's redirects and reconnections (`MOVED`, `ASK`, a failed-over master) before it fails;
/// each user bounds its calls by its own timeout on top.
const CLUSTER_RETRIES: u32 = 4;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 200;

/// A cluster node as a URL: `host:port` takes the scheme of `url`.
fn node_url(url: &str, node: &str) -> String {
    if node.contains("://") {
        node.to_owned()
    } else {
        let scheme = if url.starts_with("rediss://") {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{node}")
    }
}

/// The problems of one URL under `key`; whether it is TLS (`None` when unusable).
fn url_problems(problems: &mut Vec<String>, key: &str, url: &str) -> Option<bool> {
    let tls = if url.starts_with("rediss://") {
        true
    } else if url.starts_with("redis://") {
        false
    } else {
        problems.push(format!("{key}: `{url}` must start with redis:// or rediss://"));
        return None;
    };
    let Some(parsed) = redis::parse_redis_url(url) else {
        problems.push(format!("{key}: `{url}` is not a URL"));
        return None;
    };
    if parsed.password().is_some() {
        problems.push(format!(
            "{key}: holds a password; a password never goes in the configuration file (name its environment variable in password_env, or its file in password_file)"
        ));
    } else if !parsed.username().is_empty() {
        problems.push(format!("{key}: holds a user name; set it in username instead"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        problems.push(format!("{key}: `{url}` names no host"));
    }
    Some(tls)
}

fn tls_certificates(key: &str, t: &RedisTlsSection) -> Result<redis::TlsCertificates, RedisSetupError> {
    let read = |name: &str, path: &Path| {
        read_bounded(path)
            .map_err(|e| RedisSetupError::Invalid(vec![format!("{key}.tls.{name}: {}: {e}", path.display())]))
    };
    let root_cert = t.ca_file.as_deref().map(|p| read("ca_file", p)).transpose()?;
    let client_tls = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(private)) => Some(redis::ClientTlsConfig {
            client_cert: read("cert_file", cert)?,
            client_key: read("key_file", private)?,
        }),
        _ => None,
    };
    Ok(redis::TlsCertificates { client_tls, root_cert })
}

impl RedisClient {
    /// A client for a plain `url` with no further settings (tests, tools).
    pub fn open(url: &str) -> Result<Self, RedisSetupError> {
        RedisSection {
            url: url.to_owned(),
            timeout: None,
            username: None,
            password_env: None,
            password_file: None,
            password: None,
            tls: None,
            cluster: false,
            cluster_nodes: Vec::new(),
        }
        .client("redis", &|_| None)
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// `[redis] timeout`, when set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// A connection that connects on first use (and again after failures, in the background), so a
    /// Redis down at start-up costs errors, not a failed start. Must be called within a Tokio runtime.
    pub fn lazy(&self, timeouts: Timeouts) -> redis::RedisResult<RedisConnection> {
        Ok(match &self.target {
            Target::Single(client) => RedisConnection::Single(ConnectionManager::new_lazy_with_config(
                (**client).clone(),
                manager_config(timeouts),
            )?),
            Target::Cluster(client) => {
                RedisConnection::Cluster(client.get_pending_async_connection_with_config(cluster_config(timeouts)))
            }
        })
    }

    /// A connection, connected now (the cluster's slots learnt) within `timeouts.connect` per attempt.
    pub async fn connect(&self, timeouts: Timeouts) -> redis::RedisResult<RedisConnection> {
        Ok(match &self.target {
            Target::Single(client) => RedisConnection::Single(
                ConnectionManager::new_with_config((**client).clone(), manager_config(timeouts)).await?,
            ),
            Target::Cluster(client) => RedisConnection::Cluster(
                client
                    .get_async_connection_with_config(cluster_config(timeouts))
                    .await?,
            ),
        })
    }

    /// Connects and sends `PING` within `within`. A refusal of the login or of the TLS handshake is a
    /// [`RedisCheckError::Refused`] naming the key to fix; anything else (unreachable, slow) is
    /// [`RedisCheckError::Unreachable`].
    pub async fn check(&self, within: Duration) -> Result<(), RedisCheckError> {
        let timeouts = Timeouts {
            connect: within,
            response: within,
            retries: 0,
        };
        let attempt = async {
            let mut connection = self.connect(timeouts).await?;
            redis::cmd("PING").query_async::<String>(&mut connection).await
        };
        match tokio::time::timeout(within, attempt).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if self.refusal(&e).is_some() => Err(RedisCheckError::Refused(self.explain(&e))),
            Ok(Err(e)) => Err(RedisCheckError::Unreachable(self.explain(&e))),
            Err(_) => Err(RedisCheckError::Unreachable(format!("no answer within {within:?}"))),
        }
    }

    /// The key an error is about when Redis refused this client (its login or its TLS handshake).
    fn refusal(&self, error: &redis::RedisError) -> Option<(String, &'static str)> {
        let text = error.to_string();
        let login = error.kind() == redis::ErrorKind::AuthenticationFailed
            || ["WRONGPASS", "NOAUTH", "NOPERM", "invalid username-password"]
                .iter()
                .any(|m| text.contains(m));
        if login {
            let key = self
                .password_key
                .clone()
                .unwrap_or_else(|| format!("{}.password_env", self.key));
            return Some((key, LOGIN_HINT));
        }
        let lower = text.to_ascii_lowercase();
        if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("handshake") {
            let key = if self.ca_file {
                format!("{}.tls.ca_file", self.key)
            } else {
                format!("{}.tls", self.key)
            };
            return Some((key, TLS_HINT));
        }
        None
    }

    /// An error as an operator reads it: a refused login or TLS handshake names the key to fix
    /// (`redis.password_env: Redis refused the login (user r1): WRONGPASS …`), anything else is the
    /// client's own message.
    pub fn explain(&self, error: &redis::RedisError) -> String {
        match self.refusal(error) {
            Some((key, LOGIN_HINT)) => {
                let user = self.username.as_deref().unwrap_or("default");
                format!("{key}: {LOGIN_HINT} (user {user}): {error}")
            }
            Some((key, hint)) => format!("{key}: {hint}: {error}"),
            None => error.to_string(),
        }
    }
}

/// Why [`RedisClient::check`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisCheckError {
    /// Redis answered and refused this client: a setting is wrong (the message names its key).
    #[error("{0}")]
    Refused(String),
    /// Redis did not answer (yet).
    #[error("{0}")]
    Unreachable(String),
}

fn manager_config(t: Timeouts) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(t.connect))
        .set_response_timeout(Some(t.response))
        .set_number_of_retries(t.retries)
}

fn cluster_config(t: Timeouts) -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(t.connect)
        .set_response_timeout(t.response)
}

/// A connection to one server (a [`ConnectionManager`]: multiplexed, re-established in the background
/// after Redis comes back) or to a cluster (a [`ClusterConnection`]: one multiplexed connection per
/// node, routed by slot). Clones share the connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConnection::Single",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> RedisSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn credentials_in_the_file_or_the_url_are_refused_by_key() {
        let s = section("url = \"redis://u:secret@r:6379\"\npassword = \"x\"\n");
        let problems = s.problems("redis");
        assert!(problems[0].starts_with("redis.url: holds a password"), "{problems:?}");
        assert!(
            !problems.iter().any(|p| p.contains("secret")),
            "the value is never echoed: {problems:?}"
        );
        assert!(
            problems[1].starts_with("redis.password: a password never goes"),
            "{problems:?}"
        );
        let s = section("url = \"redis://r\"\nusername = \"r1\"\n");
        assert_eq!(
            s.problems("redis"),
            ["redis.password_env: required with redis.username (or password_file)"]
        );
    }

    #[test]
    fn tls_settings_need_rediss_and_come_in_pairs() {
        let s = section("url = \"redis://r\"\n[tls]\ncert_file = \"c.pem\"\n");
        assert_eq!(
            s.problems("redis"),
            [
                "redis.tls: set, but redis.url is redis:// (plain TCP); use rediss:// for TLS",
                "redis.tls.key_file: required with redis.tls.cert_file",
            ]
        );
        let s = section("url = \"rediss://r:6380\"\ncluster_nodes = [\"redis://s:6380\", \"t:6380\"]\n");
        assert_eq!(
            s.problems("redis"),
            ["redis.cluster_nodes[0]: must use the same scheme as redis.url"]
        );
        assert!(s.is_cluster());
        assert_eq!(node_url(&s.url, "t:6380"), "rediss://t:6380");
    }

    #[test]
    fn files_are_read_and_the_password_comes_from_env_or_file() {
        let s = section(
            "url = \"rediss://r\"\npassword_env = \"R1_REDIS_PASSWORD\"\n[tls]\nca_file = \"/nonexistent/ca.pem\"\n",
        );
        let problems = s.file_problems("redis");
        assert!(
            problems[0].starts_with("redis.tls.ca_file: /nonexistent/ca.pem: "),
            "{problems:?}"
        );
        let s = section("url = \"redis://r\"\nusername = \"r1\"\npassword_env = \"R1_REDIS_PASSWORD\"\n");
        assert_eq!(
            s.client("redis", &|_| None).unwrap_err().to_string(),
            "redis.password_env: environment variable R1_REDIS_PASSWORD is not set or empty"
        );
        let client = s.client("redis", &|_| Some("p".to_owned())).unwrap();
        assert!(!client.is_cluster());
        let s = section("url = \"redis://r:7000\"\ncluster = true\n");
        assert!(s.client("redis", &|_| None).unwrap().is_cluster());
    }
}
