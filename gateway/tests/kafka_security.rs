//! A gateway whose Kafka security settings the broker refuses does not start: the error names the
//! `center.kafka.security` key to fix and carries the broker's answer, within seconds (the real broker's
//! SASL_SSL listener, `scripts/services.sh up`). And `--check-config` names every security problem of a
//! file. Skips, saying why, when the secure listener's variables are not set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::kafka::{Listener, Names};

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("r1-gw-kafka-security-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway config handing off through Kafka at `brokers` with the `security` table `security`.
fn config(brokers: &str, security: &str) -> String {
    let names = Names::new();
    format!(
        "[listen]\npublic = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n[auth]\nenabled = false\n\
         [center]\ntransport = \"kafka\"\n[center.kafka]\nbrokers = \"{brokers}\"\nresults_partition = 0\n\
         result_partitions = 4\n{}\n{security}\n",
        support::free_port(),
        support::free_port(),
        names.gateway_topics()
    )
}

fn sasl_ssl(ca_file: &Path, username: &str, password_file: &Path) -> String {
    format!(
        "[center.kafka.security]\nprotocol = \"sasl_ssl\"\nca_file = \"{}\"\n[center.kafka.security.sasl]\n\
         mechanism = \"SCRAM-SHA-512\"\nusername = \"{username}\"\npassword_file = \"{}\"\n",
        ca_file.display(),
        password_file.display()
    )
}

/// Builds the gateway for `text` and returns its start-up error, timed.
fn start_up_error(text: &str) -> (String, Duration) {
    let config = r1_gateway::config::GatewayConfig::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let started = Instant::now();
    let result = r1_gateway::server::build(config, None, Duration::ZERO, Duration::from_secs(1));
    let elapsed = started.elapsed();
    match result {
        Ok(_) => panic!("the gateway started although Kafka refuses it:\n{text}"),
        Err(e) => (format!("{e:#}"), elapsed),
    }
}

fn another_ca(dir: &Path) -> PathBuf {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "a CA the broker never heard of");
    let ca = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

#[test]
fn a_gateway_that_kafka_refuses_does_not_start_and_says_which_key_and_why() {
    let Some(Listener::SaslSsl {
        brokers,
        ca_file,
        username,
        password,
        ..
    }) = Listener::sasl_ssl("SCRAM-SHA-512")
    else {
        return;
    };
    let dir = dir();
    let (right, wrong) = (dir.join("password"), dir.join("wrong-password"));
    std::fs::write(&right, format!("{password}\n")).unwrap();
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let ca = PathBuf::from(&ca_file);
    let cases = [
        (
            "wrong password",
            config(&brokers, &sasl_ssl(&ca, &username, &wrong)),
            "center.kafka.security.sasl: ",
            "Authentication failed",
        ),
        (
            "untrusted CA",
            config(&brokers, &sasl_ssl(&another_ca(&dir), &username, &right)),
            "center.kafka.security.ca_file: ",
            "certificate verify failed",
        ),
        (
            "plaintext on the SASL_SSL port",
            config(&brokers, ""),
            "center.kafka.security.protocol: ",
            "in state APIVERSION_QUERY",
        ),
    ];
    for (case, text, key, answer) in cases {
        let (error, elapsed) = start_up_error(&text);
        println!("{case}: {error} ({elapsed:?})");
        assert!(error.contains(key), "{case}: the error names {key}: {error}");
        assert!(
            error.contains(answer),
            "{case}: the error carries the broker's answer: {error}"
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "{case}: refused in {elapsed:?}, not after a long wait"
        );
    }
    // The same settings with the right password and CA start (and the check took one round trip).
    let config =
        r1_gateway::config::GatewayConfig::parse(&config(&brokers, &sasl_ssl(&ca, &username, &right))).unwrap();
    r1_gateway::server::build(config, None, Duration::ZERO, Duration::from_secs(1)).unwrap();
}

#[test]
fn check_config_names_every_security_problem() {
    let dir = dir();
    let run = |text: &str| {
        let path = dir.join(format!("{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_r1-gateway"))
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    // Invalid on load: a literal password, SASL without a sasl_* protocol, a security property in the map.
    let literal = config(
        "127.0.0.1:9093",
        "librdkafka = { \"ssl.key.password\" = \"x\" }\n[center.kafka.security]\nprotocol = \"ssl\"\n\
         [center.kafka.security.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword = \"hunter2\"\n",
    );
    let (ok, out) = run(&literal);
    assert!(!ok, "{out}");
    for key in [
        "center.kafka.security.sasl.password: ",
        "center.kafka.security.sasl: ",
        "center.kafka.librdkafka.ssl.key.password: ",
    ] {
        assert!(out.contains(key), "{key} in:\n{out}");
    }
    assert!(!out.contains("hunter2"), "the password is not echoed:\n{out}");
    // Valid, but its files are not there: the check reads them.
    let missing = config(
        "127.0.0.1:9093",
        &sasl_ssl(&dir.join("no-ca.pem"), "u", &dir.join("no-password")),
    );
    let (ok, out) = run(&missing);
    assert!(!ok, "{out}");
    assert!(out.contains("center.kafka.security.ca_file: "), "{out}");
    assert!(out.contains("center.kafka.security.sasl.password_file: "), "{out}");
}
