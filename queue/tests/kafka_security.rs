//! The start-up check of a Kafka client's security settings ([`check_brokers`]) against the real broker's
//! SASL_SSL listener (`scripts/services.sh up`): the settings a `security` table makes log in with every
//! mechanism the listener takes, and each misconfiguration is a refusal naming what to fix, within
//! seconds, never a hang or a silent retry.
//!
//! Reads `R1_TEST_KAFKA_SECURE_BROKERS`, `R1_TEST_KAFKA_CA_FILE` and the user variables that
//! `scripts/services.sh env` prints; skips (with the reason printed) when they are not set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::path::PathBuf;
use std::time::{Duration, Instant};

use r1_queue::kafka::{KafkaSettings, SecuritySection};
use r1_queue::kafka_transport::{BrokerCheckError, Refusal, check_brokers};

struct Secure {
    brokers: String,
    ca_file: String,
    scram_user: String,
    scram_password: String,
    plain_user: String,
    plain_password: String,
}

fn secure() -> Option<Secure> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Secure {
            brokers: var("R1_TEST_KAFKA_SECURE_BROKERS")?,
            ca_file: var("R1_TEST_KAFKA_CA_FILE")?,
            scram_user: var("R1_TEST_KAFKA_SCRAM_USERNAME")?,
            scram_password: var("R1_TEST_KAFKA_SCRAM_PASSWORD")?,
            plain_user: var("R1_TEST_KAFKA_PLAIN_USERNAME")?,
            plain_password: var("R1_TEST_KAFKA_PLAIN_PASSWORD")?,
        })
    })();
    if found.is_none() {
        println!(
            "skipped: R1_TEST_KAFKA_SECURE_BROKERS, R1_TEST_KAFKA_CA_FILE and the user variables are not set (eval \"$(scripts/services.sh env)\")"
        );
    }
    found
}

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("r1-queue-security-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Settings for `brokers` from a `security` table, the password given through a file.
fn settings(brokers: &str, table: &str, password: &str) -> (KafkaSettings, SecuritySection) {
    let password_file = dir().join("password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let table = table.replace("PASSWORD_FILE", &password_file.display().to_string());
    let section: SecuritySection = toml::from_str(&table).unwrap_or_else(|e| panic!("{e}\n{table}"));
    let mut settings = KafkaSettings::new(brokers, "r1-queue-security-test");
    settings.security = section
        .resolve("kafka.security", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    (settings, section)
}

fn sasl_ssl(ca_file: &str, mechanism: &str, user: &str) -> String {
    format!(
        "protocol = \"sasl_ssl\"\nca_file = \"{ca_file}\"\n[sasl]\nmechanism = \"{mechanism}\"\nusername = \"{user}\"\npassword_file = \"PASSWORD_FILE\"\n"
    )
}

fn refused(result: Result<(), BrokerCheckError>) -> (Refusal, String) {
    match result {
        Err(BrokerCheckError::Refused { refusal, answer }) => (refusal, answer),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_mechanism_of_the_listener_logs_in() {
    let Some(s) = secure() else { return };
    for (mechanism, user, password) in [
        ("SCRAM-SHA-512", &s.scram_user, &s.scram_password),
        ("SCRAM-SHA-256", &s.scram_user, &s.scram_password),
        ("PLAIN", &s.plain_user, &s.plain_password),
    ] {
        let (settings, _) = settings(&s.brokers, &sasl_ssl(&s.ca_file, mechanism, user), password);
        check_brokers(&settings, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{mechanism}: {e}"));
    }
}

#[test]
fn a_wrong_password_is_refused_quickly_with_the_brokers_answer() {
    let Some(s) = secure() else { return };
    let (settings, section) = settings(
        &s.brokers,
        &sasl_ssl(&s.ca_file, "SCRAM-SHA-512", &s.scram_user),
        "not-the-password",
    );
    let started = Instant::now();
    let err = check_brokers(&settings, Duration::from_secs(20)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let line = err.describe("kafka.security", &section, &s.brokers);
    let (refusal, answer) = refused(Err(err));
    assert_eq!(refusal, Refusal::Authentication);
    assert!(answer.contains("Authentication failed"), "{answer}");
    assert!(
        line.starts_with("kafka.security.sasl: ") && line.contains("SCRAM-SHA-512") && line.contains(&s.scram_user),
        "{line}"
    );
}

#[test]
fn a_broker_certificate_from_another_ca_is_refused() {
    let Some(s) = secure() else { return };
    // A CA of our own: the broker's certificate is not signed by it.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "a CA the broker never heard of");
    let other_ca = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
    let ca_file = dir().join("other-ca.pem");
    std::fs::write(&ca_file, other_ca.pem()).unwrap();
    let (settings, section) = settings(
        &s.brokers,
        &sasl_ssl(&ca_file.display().to_string(), "SCRAM-SHA-512", &s.scram_user),
        &s.scram_password,
    );
    let err = check_brokers(&settings, Duration::from_secs(20)).unwrap_err();
    let line = err.describe("kafka.security", &section, &s.brokers);
    let (refusal, answer) = refused(Err(err));
    assert_eq!(refusal, Refusal::Certificate);
    assert!(answer.contains("certificate verify failed"), "{answer}");
    assert!(line.starts_with("kafka.security.ca_file: "), "{line}");
}

#[test]
fn a_plaintext_client_on_the_sasl_ssl_port_is_told_so() {
    let Some(s) = secure() else { return };
    let (settings, section) = settings(&s.brokers, "protocol = \"plaintext\"\n", "unused");
    let started = Instant::now();
    let err = check_brokers(&settings, Duration::from_secs(20)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let line = err.describe("kafka.security", &section, &s.brokers);
    assert_eq!(refused(Err(err)).0, Refusal::Protocol);
    assert!(
        line.starts_with("kafka.security.protocol: ")
            && line.contains("expect TLS")
            && line.contains("APIVERSION_QUERY"),
        "{line}"
    );
}

#[test]
fn nobody_listening_is_unreachable_not_a_refusal() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = KafkaSettings::new(format!("127.0.0.1:{port}"), "r1-queue-security-test");
    let started = Instant::now();
    let err = check_brokers(&settings, Duration::from_secs(20)).unwrap_err();
    assert!(!err.is_refusal(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "all brokers down is known at once"
    );
}
