//! An r1-center node whose Kafka security settings the broker refuses exits at start, within seconds,
//! with an error naming the `kafka.security` key to fix and the broker's answer — the real binary against
//! the real broker's SASL_SSL listener (`scripts/services.sh up`). And `--check-config` names every
//! security problem of a file. Skips, saying why, when the secure listener's variables are not set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Secure {
    brokers: String,
    ca_file: PathBuf,
    username: String,
    password: String,
}

fn secure() -> Option<Secure> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Secure {
            brokers: var("R1_TEST_KAFKA_SECURE_BROKERS")?,
            ca_file: PathBuf::from(var("R1_TEST_KAFKA_CA_FILE")?),
            username: var("R1_TEST_KAFKA_SCRAM_USERNAME")?,
            password: var("R1_TEST_KAFKA_SCRAM_PASSWORD")?,
        })
    })();
    if found.is_none() {
        println!(
            "skipped: R1_TEST_KAFKA_SECURE_BROKERS, R1_TEST_KAFKA_CA_FILE and the SCRAM user's variables are not set (eval \"$(scripts/services.sh env)\")"
        );
    }
    found
}

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("r1-center-kafka-security-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(brokers: &str, security: &str) -> String {
    let redis = std::env::var("R1_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".to_owned());
    let topic = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "[node]\nmetrics = \"127.0.0.1:0\"\n[backend]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n\
         [kafka]\nbrokers = \"{brokers}\"\ngroup = \"test.{topic}\"\n{security}\n\
         [topics]\ninteractive = \"test.{topic}.interactive\"\nbatch = \"test.{topic}.batch\"\n\
         results = \"test.{topic}.results\"\ncancel = \"test.{topic}.cancel\"\ndlq = \"test.{topic}.dlq\"\n\
         [redis]\nurl = \"{redis}\"\n"
    )
}

fn sasl_ssl(ca_file: &Path, mechanism: &str, username: &str, password_file: &Path) -> String {
    format!(
        "[kafka.security]\nprotocol = \"sasl_ssl\"\nca_file = \"{}\"\n[kafka.security.sasl]\nmechanism = \"{mechanism}\"\n\
         username = \"{username}\"\npassword_file = \"{}\"\n",
        ca_file.display(),
        password_file.display()
    )
}

/// Runs `r1-center` on `text` with `args`; its exit status and everything it printed.
fn run(dir: &Path, text: &str, args: &[&str], within: Duration) -> (Option<std::process::ExitStatus>, String) {
    let path = dir.join(format!("{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    let log = dir.join(format!("{}.log", uuid::Uuid::new_v4().simple()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_r1-center"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
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
fn a_node_that_kafka_refuses_exits_at_start_naming_the_key_and_the_brokers_answer() {
    let Some(s) = secure() else { return };
    let dir = dir();
    let (right, wrong) = (dir.join("password"), dir.join("wrong-password"));
    std::fs::write(&right, format!("{}\n", s.password)).unwrap();
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let cases = [
        (
            "wrong password",
            config(&s.brokers, &sasl_ssl(&s.ca_file, "SCRAM-SHA-256", &s.username, &wrong)),
            "kafka.security.sasl: ",
            "Authentication failed",
        ),
        (
            "untrusted CA",
            config(
                &s.brokers,
                &sasl_ssl(&another_ca(&dir), "SCRAM-SHA-256", &s.username, &right),
            ),
            "kafka.security.ca_file: ",
            "certificate verify failed",
        ),
        (
            "plaintext on the SASL_SSL port",
            config(&s.brokers, ""),
            "kafka.security.protocol: ",
            "in state APIVERSION_QUERY",
        ),
    ];
    for (case, text, key, answer) in cases {
        let started = Instant::now();
        let (status, log) = run(&dir, &text, &[], Duration::from_secs(20));
        println!("{case} ({:?}):\n{log}", started.elapsed());
        let status = status.unwrap_or_else(|| panic!("{case}: r1-center still running after 20 s:\n{log}"));
        assert!(!status.success(), "{case}: {status}");
        assert!(log.contains(key), "{case}: names {key}:\n{log}");
        assert!(log.contains(answer), "{case}: carries the broker's answer:\n{log}");
        assert!(!log.contains("r1-center ready"), "{case}:\n{log}");
    }
}

#[test]
fn check_config_names_every_security_problem() {
    let dir = dir();
    let literal = config(
        "127.0.0.1:9093",
        "librdkafka = { \"sasl.username\" = \"x\" }\n[kafka.security]\nprotocol = \"sasl_plaintext\"\n\
         [kafka.security.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"hunter2\"\n",
    );
    let (status, log) = run(&dir, &literal, &["--check-config"], Duration::from_secs(20));
    assert!(!status.unwrap().success(), "{log}");
    for key in [
        "kafka.security.sasl.password: ",
        "kafka.security.sasl.mechanism: ",
        "kafka.librdkafka.sasl.username: ",
    ] {
        assert!(log.contains(key), "{key} in:\n{log}");
    }
    assert!(!log.contains("hunter2"), "the password is not echoed:\n{log}");
    let missing = config(
        "127.0.0.1:9093",
        &sasl_ssl(&dir.join("no-ca.pem"), "SCRAM-SHA-512", "u", &dir.join("no-password")),
    );
    let (status, log) = run(&dir, &missing, &["--check-config"], Duration::from_secs(20));
    assert!(!status.unwrap().success(), "{log}");
    assert!(log.contains("kafka.security.ca_file: "), "{log}");
    assert!(log.contains("kafka.security.sasl.password_file: "), "{log}");
}
