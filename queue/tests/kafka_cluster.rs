//! The topics r1-hybrid creates, on the three-broker test cluster (`scripts/services.sh up kafka-cluster`):
//! each partition gets the cluster's replication factor, so one broker's death loses no task or answer.
//!
//! Reads `R1_TEST_KAFKA_CLUSTER_BROKERS`; skips (with the reason printed) when it is not set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::time::Duration;

use r1_queue::kafka::KafkaSettings;
use r1_queue::kafka_transport::ensure_topics;
use r1_queue::topics::Topics;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[tokio::test]
async fn the_topics_it_creates_take_the_clusters_replication_factor() {
    let Some(brokers) = std::env::var("R1_TEST_KAFKA_CLUSTER_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        println!("skipped: R1_TEST_KAFKA_CLUSTER_BROKERS is not set (eval \"$(scripts/services.sh env)\")");
        return;
    };
    let settings = KafkaSettings::new(brokers, "replication-test");
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let topics = Topics::default().for_version(&suffix);
    let topics = Topics {
        results: format!("{}.{suffix}", topics.results),
        cancel: format!("{}.{suffix}", topics.cancel),
        ..topics
    };
    ensure_topics(&settings, &topics, 6, 4).await.unwrap();

    let client: BaseConsumer = settings.client().create().unwrap();
    for topic in [
        &topics.interactive,
        &topics.batch,
        &topics.results,
        &topics.cancel,
        &topics.dlq,
    ] {
        let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let partitions = metadata.topics()[0].partitions();
        assert!(!partitions.is_empty(), "{topic} has partitions");
        for p in partitions {
            assert_eq!(
                p.replicas().len(),
                3,
                "{topic}/{} is on brokers {:?}: every partition on all three",
                p.id(),
                p.replicas()
            );
        }
    }
}
