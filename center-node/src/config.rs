//! r1-center's configuration file: a typed TOML tree, validated with every problem reported at once.
//!
//! ```toml
//! [kafka]
//! brokers = "127.0.0.1:19092"
//! group = "r1-center"
//! max_poll_interval = "10m"
//!
//! [redis]
//! url = "redis://127.0.0.1:16379"
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use r1_config::{ConfigError, Validate};
use serde::Deserialize;

use crate::kafka::{KafkaSettings, PROTECTED_PROPERTIES};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterConfig {
    /// Where tasks come from and results go.
    pub kafka: KafkaSection,
    /// Task dedupe and state.
    pub redis: RedisSection,
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
    /// Extra librdkafka properties (security, tuning). The delivery-contract properties are refused.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port/db` (or `rediss://` for TLS).
    pub url: String,
}

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

    /// The Kafka client settings this file describes.
    pub fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.kafka.brokers.clone(),
            client_id: self.kafka.client_id.clone(),
            session_timeout: self.kafka.session_timeout,
            max_poll_interval: self.kafka.max_poll_interval,
            extra: self.kafka.librdkafka.clone(),
        }
    }
}

impl Validate for CenterConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
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
        for key in k.librdkafka.keys() {
            if PROTECTED_PROPERTIES.contains(&key.as_str()) || key == "bootstrap.servers" || key == "client.id" {
                problems.push(format!(
                    "kafka.librdkafka.{key}: set by r1-center to keep the delivery contract; remove it (or use the matching [kafka] key)"
                ));
            }
        }
        if !(self.redis.url.starts_with("redis://") || self.redis.url.starts_with("rediss://")) {
            problems.push(format!(
                "redis.url: `{}` must start with redis:// or rediss://",
                self.redis.url
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let c = CenterConfig::parse("[kafka]\nbrokers = \"k:9092\"\n[redis]\nurl = \"redis://r:6379\"\n").unwrap();
        assert_eq!(c.kafka.group, "r1-center");
        assert_eq!(c.kafka.max_poll_interval, Duration::from_secs(600));
        assert_eq!(
            c.kafka_settings().consumer(&c.kafka.group).get("max.poll.interval.ms"),
            Some("600000")
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = CenterConfig::parse("[kafka]\nbrokers = \"k:9092\"\nbrokerz = 1\n[redis]\nurl = \"redis://r\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            [kafka]
            brokers = "nohost"
            group = " "
            session_timeout = "1s"
            max_poll_interval = "500ms"
            librdkafka = { "enable.auto.offset.store" = "true", "socket.keepalive.enable" = "true" }
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
                "kafka.librdkafka.enable.auto.offset.store",
                "redis.url"
            ]
        );
    }
}
