//! Kafka client settings: how r1-center's producers and consumers are configured, in one place.
//!
//! Delivery contract (DESIGN.md, "Kafka contracts"):
//! - producers are idempotent with `acks=all`, so a retried send never duplicates or reorders;
//! - consumers never store an offset themselves (`enable.auto.offset.store=false`): the pipeline
//!   calls `store_offset` only after a task's result is fully produced, and the background
//!   auto-commit commits only what was stored. A consumer that dies mid-task therefore leaves the
//!   task's offset uncommitted and the task is redelivered to the group (at-least-once);
//! - partitions are assigned `cooperative-sticky`, so a rebalance revokes only what moves.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// librdkafka properties that carry the delivery contract; `librdkafka` overrides may not touch them.
pub const PROTECTED_PROPERTIES: [&str; 6] = [
    "enable.idempotence",
    "acks",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "partition.assignment.strategy",
    "group.id",
];

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
    /// Extra librdkafka properties (security, tuning), applied before the protected ones.
    pub extra: BTreeMap<String, String>,
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
        }
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.extra {
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
        config
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_properties_win_over_extras() {
        let mut settings = KafkaSettings::new("127.0.0.1:1", "t");
        settings.extra.insert("enable.auto.offset.store".into(), "true".into());
        settings.extra.insert("acks".into(), "1".into());
        settings.extra.insert("security.protocol".into(), "ssl".into());
        let consumer = settings.consumer("g");
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(
            consumer.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(consumer.get("security.protocol"), Some("ssl"));
        let producer = settings.producer();
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
    }
}
