//! Kafka client settings: how r1-center's producers and consumers are configured, in one place.
//!
//! Delivery contract (DESIGN.md, "Kafka contracts"):
//! - producers are idempotent with `acks=all`, so a retried send never duplicates or reorders;
//! - consumers never store an offset themselves (`enable.auto.offset.store=false`): the pipeline
//!   calls `store_offset` only after a task's result is fully produced, and the background
//!   auto-commit commits only what was stored. A consumer that dies mid-task therefore leaves the
//!   task's offset uncommitted and the task is redelivered to the group (at-least-once);
//! - partitions are assigned `cooperative-sticky`, so a rebalance revokes only what moves.
//!
//! Security (TLS, SASL) is the named [`security`] table both binaries share; the properties it sets
//! are protected like the delivery contract's, so the `librdkafka` escape hatch cannot set a password
//! in the clear or quietly turn TLS off ([`extra_problems`]).

pub mod security;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

pub use security::{ClientSecurity, SecurityError, SecuritySection};

/// librdkafka properties that carry the delivery contract; `librdkafka` overrides may not touch them.
pub const PROTECTED_PROPERTIES: [&str; 6] = [
    "enable.idempotence",
    "acks",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "partition.assignment.strategy",
    "group.id",
];

/// librdkafka properties that only the `security` table sets (TLS and SASL, secrets included). Every
/// other `ssl.*`/`sasl.*` property is refused too, except [`TLS_TUNING`].
pub const SECURITY_PROPERTIES: [&str; 3] = [
    "security.protocol",
    "enable.ssl.certificate.verification",
    "enable.sasl.oauthbearer.unsecure.jwt",
];

/// `ssl.*` properties the `librdkafka` map may still set: cipher and curve tuning, revocation lists.
pub const TLS_TUNING: [&str; 4] = [
    "ssl.cipher.suites",
    "ssl.curves.list",
    "ssl.sigalgs.list",
    "ssl.crl.location",
];

/// What is wrong with a `librdkafka` map of extra properties whose key is `key` (`kafka.librdkafka`):
/// a property of the delivery contract, the connection (`bootstrap.servers`, `client.id`) or security.
pub fn extra_problems(key: &str, extra: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for name in extra.keys() {
        let n = name.as_str();
        if PROTECTED_PROPERTIES.contains(&n) || n == "bootstrap.servers" || n == "client.id" {
            problems.push(format!(
                "{key}.{name}: set by r1-hybrid to keep the delivery contract; remove it (or use the matching named key)"
            ));
        } else if SECURITY_PROPERTIES.contains(&n)
            || ((n.starts_with("ssl.") || n.starts_with("ssl_") || n.starts_with("sasl.")) && !TLS_TUNING.contains(&n))
        {
            problems.push(format!(
                "{key}.{name}: a security property; use the named `security` table beside it (protocol, ca_file, cert_file, key_file, sasl.*)"
            ));
        }
    }
    problems
}

/// Connection and timing settings shared by every Kafka client of a process.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// `client.id`, visible in broker logs and metrics.
    pub client_id: String,
    /// Consumer session timeout: how long the group waits for a silent member before reassigning.
    pub session_timeout: Duration,
    /// Longest gap allowed between two polls before the member is considered stuck.
    pub max_poll_interval: Duration,
    /// Extra librdkafka properties (tuning), applied before the protected ones.
    pub extra: BTreeMap<String, String>,
    /// TLS and SASL, from the `security` table ([`SecuritySection::resolve`]); plaintext by default.
    pub security: ClientSecurity,
}

impl KafkaSettings {
    /// Settings with librdkafka's usual timing defaults for the given brokers.
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            session_timeout: Duration::from_secs(45),
            max_poll_interval: Duration::from_secs(300),
            extra: BTreeMap::new(),
            security: ClientSecurity::default(),
        }
    }

    /// A client of no particular kind (metadata and admin requests), with the connection and security
    /// properties only.
    pub fn client(&self) -> ClientConfig {
        self.base()
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        for (key, value) in self.security.properties() {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        config
    }

    /// An idempotent producer: `acks=all`, retries without duplicates or reordering.
    pub fn producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "2");
        config
    }

    /// An at-least-once consumer in `group`: offsets are committed in the background, but only those
    /// the caller stored after finishing a message.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("max.poll.interval.ms", millis(self.max_poll_interval));
        // librdkafka keeps one fetch in flight per broker and adds a partition that becomes fetchable
        // (after an assignment or a rebalance) only to the next one, which waits for the in-flight
        // fetch's long poll: 500 ms by default. Right after a node joins, that held the tasks of all
        // but its first partition for up to half a second. 100 ms bounds it, for ~10 idle fetches a
        // second per broker. A `librdkafka` table that sets it wins.
        if !self.extra.contains_key(FETCH_WAIT) {
            config.set(FETCH_WAIT, "100");
        }
        config
    }
}

/// The consumer's long-poll limit ([`KafkaSettings::consumer`]).
const FETCH_WAIT: &str = "fetch.wait.max.ms";

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_long_poll_100_ms_unless_the_extras_say_otherwise() {
        let mut settings = KafkaSettings::new("127.0.0.1:1", "t");
        assert_eq!(settings.consumer("g").get(FETCH_WAIT), Some("100"));
        settings.extra.insert(FETCH_WAIT.into(), "250".into());
        assert_eq!(settings.consumer("g").get(FETCH_WAIT), Some("250"));
        assert_eq!(settings.producer().get(FETCH_WAIT), Some("250"));
    }

    #[test]
    fn protected_properties_win_over_extras() {
        let mut settings = KafkaSettings::new("127.0.0.1:1", "t");
        settings.extra.insert("enable.auto.offset.store".into(), "true".into());
        settings.extra.insert("acks".into(), "1".into());
        settings.extra.insert("security.protocol".into(), "ssl".into());
        settings.extra.insert("socket.keepalive.enable".into(), "true".into());
        let consumer = settings.consumer("g");
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(
            consumer.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        // The security table wins over the map too (the map's validation refuses such keys anyway).
        assert_eq!(consumer.get("security.protocol"), Some("plaintext"));
        assert_eq!(consumer.get("socket.keepalive.enable"), Some("true"));
        let producer = settings.producer();
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn the_librdkafka_map_may_tune_but_not_set_security_or_the_contract() {
        let extra: BTreeMap<String, String> = [
            "acks",
            "client.id",
            "sasl.password",
            "sasl.mechanisms",
            "ssl.key.password",
            "ssl.ca.location",
            "security.protocol",
            "enable.ssl.certificate.verification",
            "ssl.cipher.suites",
            "socket.keepalive.enable",
            "linger.ms",
        ]
        .into_iter()
        .map(|k| (k.to_owned(), "x".to_owned()))
        .collect();
        let problems = extra_problems("kafka.librdkafka", &extra);
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").next().unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            [
                "kafka.librdkafka.acks",
                "kafka.librdkafka.client.id",
                "kafka.librdkafka.enable.ssl.certificate.verification",
                "kafka.librdkafka.sasl.mechanisms",
                "kafka.librdkafka.sasl.password",
                "kafka.librdkafka.security.protocol",
                "kafka.librdkafka.ssl.ca.location",
                "kafka.librdkafka.ssl.key.password",
            ]
        );
    }

    #[test]
    fn a_secured_client_can_be_created() {
        // The build links librdkafka with OpenSSL: an ssl/sasl_ssl client is created (it connects lazily).
        let section: SecuritySection = toml::from_str(
            "protocol = \"sasl_ssl\"\n[sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword_env = \"P\"\n",
        )
        .unwrap();
        let mut settings = KafkaSettings::new("127.0.0.1:1", "t");
        settings.security = section.resolve("k", &|_| Some("p".to_owned())).unwrap();
        let producer: Result<rdkafka::producer::BaseProducer, _> = settings.producer().create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }
}
