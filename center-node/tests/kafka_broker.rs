//! Against the real Apache Kafka broker started by `scripts/services.sh up` (the test command does it):
//! the at-least-once contract of [`r1_center::kafka::KafkaSettings`], proven with a consumer process
//! that really dies, and key affinity across partitions — on the PLAINTEXT listener, and on the SASL_SSL
//! one with SCRAM-SHA-256, with settings made from an r1-center config file's `[kafka.security]`.
//!
//! Broker address: `R1_TEST_KAFKA_BROKERS` (default `127.0.0.1:19092`, the services script's port); the
//! secure listener's `R1_TEST_KAFKA_SECURE_BROKERS`, `R1_TEST_KAFKA_CA_FILE` and user variables (its tests
//! skip, saying why, when they are not set).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use r1_center::kafka::KafkaSettings;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const CHILD_TOPIC: &str = "R1_TEST_CHILD_TOPIC";
const CHILD_GROUP: &str = "R1_TEST_CHILD_GROUP";
const DYING_MARKER: &str = "child: received task-2, dying before storing its offset";

fn settings() -> KafkaSettings {
    let brokers = std::env::var("R1_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".to_owned());
    let mut settings = KafkaSettings::new(brokers, "r1-center-test");
    // The broker's minimum, so a dead member is noticed within seconds.
    settings.session_timeout = Duration::from_secs(6);
    settings
}

/// Settings for the SASL_SSL listener, SCRAM-SHA-256, from an r1-center config (the password from the
/// environment variable the services script exports).
fn secure_settings() -> Option<KafkaSettings> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(brokers), Some(ca_file), Some(user)) = (
        var("R1_TEST_KAFKA_SECURE_BROKERS"),
        var("R1_TEST_KAFKA_CA_FILE"),
        var("R1_TEST_KAFKA_SCRAM_USERNAME"),
    ) else {
        println!(
            "skipped: R1_TEST_KAFKA_SECURE_BROKERS, R1_TEST_KAFKA_CA_FILE and R1_TEST_KAFKA_SCRAM_USERNAME are not set (eval \"$(scripts/services.sh env)\")"
        );
        return None;
    };
    let text = format!(
        "[backend]\nkind = \"openai\"\nbase_url = \"http://b/v1\"\nmodel = \"m\"\n\
         [kafka]\nbrokers = \"{brokers}\"\nclient_id = \"r1-center-test\"\nsession_timeout = \"6s\"\n\
         [kafka.security]\nprotocol = \"sasl_ssl\"\nca_file = \"{ca_file}\"\n\
         [kafka.security.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"{user}\"\npassword_env = \"R1_TEST_KAFKA_SCRAM_PASSWORD\"\n\
         [redis]\nurl = \"redis://r\"\n"
    );
    let config = r1_center::config::CenterConfig::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let settings = config.kafka_settings().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.consumer("g").get("sasl.mechanism"), Some("SCRAM-SHA-256"));
    Some(settings)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::new_v4().simple())
}

async fn create_topic(settings: &KafkaSettings, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = settings.producer().create().unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("is Kafka up (scripts/services.sh up)? create_topics: {e}"));
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("create {topic}: {code}"));
    }
}

async fn produce(settings: &KafkaSettings, topic: &str, key: &str, payload: &str) -> (i32, i64) {
    let producer: FutureProducer = settings.producer().create().unwrap();
    let delivery = producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    (delivery.partition, delivery.offset)
}

async fn next(consumer: &StreamConsumer, within: Duration) -> rdkafka::message::BorrowedMessage<'_> {
    tokio::time::timeout(within, consumer.recv())
        .await
        .unwrap_or_else(|_| panic!("no message within {within:?}"))
        .unwrap()
}

fn payload(message: &rdkafka::message::BorrowedMessage<'_>) -> String {
    String::from_utf8(message.payload().unwrap().to_vec()).unwrap()
}

/// Runs only as the child process of `offset_is_redelivered_when_consumer_dies_before_storing_it`.
#[tokio::test]
#[ignore = "helper: run as a child process by offset_is_redelivered_when_consumer_dies_before_storing_it"]
async fn child_consumer_that_dies() {
    let topic = std::env::var(CHILD_TOPIC).expect("run by the parent test");
    let group = std::env::var(CHILD_GROUP).expect("run by the parent test");
    let consumer: StreamConsumer = settings().consumer(&group).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();

    let first = next(&consumer, Duration::from_secs(60)).await;
    assert_eq!(payload(&first), "task-1");
    // Processed: store, and commit now so the parent can rely on it being durable.
    consumer.store_offset_from_message(&first).unwrap();
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();

    let second = next(&consumer, Duration::from_secs(60)).await;
    assert_eq!(payload(&second), "task-2");
    println!("{DYING_MARKER}");
    // A crash: no offset stored, no commit, no LeaveGroup — the group only learns by session timeout.
    std::process::abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn offset_is_redelivered_when_consumer_dies_before_storing_it() {
    let topic = unique("r1.test.redelivery");
    let group = unique("r1-test-group");
    create_topic(&settings(), &topic, 1).await;
    for task in ["task-1", "task-2", "task-3"] {
        produce(&settings(), &topic, "conversation-a", task).await;
    }

    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_consumer_that_dies", "--ignored", "--nocapture"])
        .env(CHILD_TOPIC, &topic)
        .env(CHILD_GROUP, &group)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        stdout.contains(DYING_MARKER),
        "child did not reach task-2:\n{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(!child.status.success(), "child must have died, got {}", child.status);

    // A new member of the same group resumes from the last *stored* offset: task-2 again, never task-1.
    let consumer: StreamConsumer = settings().consumer(&group).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let redelivered = next(&consumer, Duration::from_secs(60)).await;
    assert_eq!(payload(&redelivered), "task-2", "first message after the crash");
    assert_eq!(redelivered.offset(), 1);
    consumer.store_offset_from_message(&redelivered).unwrap();
    let last = next(&consumer, Duration::from_secs(10)).await;
    assert_eq!(payload(&last), "task-3");
    consumer.store_offset_from_message(&last).unwrap();
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();

    let committed = consumer.committed(Duration::from_secs(10)).unwrap();
    let offset = committed.find_partition(&topic, 0).unwrap().offset();
    assert_eq!(offset, rdkafka::Offset::Offset(3), "everything processed is committed");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_key_stays_on_one_partition_in_order() {
    key_affinity(&settings()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_key_stays_on_one_partition_in_order_over_sasl_ssl_with_scram_sha_256() {
    let Some(settings) = secure_settings() else {
        return;
    };
    key_affinity(&settings).await;
}

async fn key_affinity(settings: &KafkaSettings) {
    let topic = unique("r1.test.affinity");
    create_topic(settings, &topic, 3).await;
    let keys = ["session-a", "session-b", "session-c", "session-d"];
    let mut produced: HashMap<&str, Vec<i32>> = HashMap::new();
    for i in 0..10 {
        for key in keys {
            let (partition, _) = produce(settings, &topic, key, &format!("{key}:{i}")).await;
            produced.entry(key).or_default().push(partition);
        }
    }
    for (key, partitions) in &produced {
        assert!(
            partitions.windows(2).all(|w| w[0] == w[1]),
            "{key} moved between partitions: {partitions:?}"
        );
    }

    let consumer: StreamConsumer = settings.consumer(&unique("r1-test-group")).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    for _ in 0..keys.len() * 10 {
        let message = next(&consumer, Duration::from_secs(30)).await;
        let text = payload(&message);
        let (key, i) = text.split_once(':').unwrap();
        assert_eq!(message.partition(), produced[key][0], "{text} on the key's partition");
        seen.entry(key.to_owned()).or_default().push(i.parse().unwrap());
    }
    for key in keys {
        assert_eq!(seen[key], (0..10).collect::<Vec<_>>(), "{key} in order");
    }
}
