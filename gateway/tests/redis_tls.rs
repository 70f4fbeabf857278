//! r1-gateway against the test command's Redis over TLS (`scripts/services.sh up redis-tls`): a
//! `[redis]` table whose password the server refuses stops the start within seconds, with an error
//! naming the key to fix; `--check-config` names a password written into the file, without echoing it.
//!
//! Reads `R1_TEST_REDIS_TLS_URL`, `R1_TEST_REDIS_CA_FILE` and `R1_TEST_REDIS_USERNAME`; skips (saying
//! so) without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("r1-gw-redis-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway config with `redis` as its `[redis]` keys.
fn config(redis: &str) -> String {
    format!(
        "[listen]\npublic = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n[auth]\nenabled = false\n[redis]\n{redis}",
        free_port(),
        free_port()
    )
}

#[test]
fn a_redis_that_refuses_the_password_stops_the_start_naming_the_key() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(url), Some(ca), Some(user)) = (
        var("R1_TEST_REDIS_TLS_URL"),
        var("R1_TEST_REDIS_CA_FILE"),
        var("R1_TEST_REDIS_USERNAME"),
    ) else {
        println!(
            "skipped: R1_TEST_REDIS_TLS_URL, R1_TEST_REDIS_CA_FILE, R1_TEST_REDIS_USERNAME not set (eval \"$(scripts/services.sh env)\")"
        );
        return;
    };
    let dir = dir();
    let password = dir.join("password");
    std::fs::write(&password, "not-the-password\n").unwrap();
    let path = dir.join("gateway.toml");
    let text = config(&format!(
        "url = \"{url}\"\nusername = \"{user}\"\npassword_file = \"{}\"\ntls = {{ ca_file = \"{ca}\" }}\n",
        password.display()
    ));
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_r1-gateway"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("the gateway started with a refused password");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("redis.password_file: Redis refused the login (user {user})")),
        "the error names the key: {stderr}"
    );
    assert!(
        !stderr.contains("not-the-password"),
        "the password is not shown: {stderr}"
    );
    println!("refused in {:?}", started.elapsed());
}

#[test]
fn check_config_names_a_password_in_the_file_or_the_url_without_echoing_it() {
    let dir = dir();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        config("url = \"rediss://u:hunter2@r:6380\"\npassword = \"hunter3\"\ntls = { cert_file = \"c.pem\" }\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_r1-gateway"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    for key in [
        "redis.url: holds a password",
        "redis.password: ",
        "redis.tls.key_file: ",
    ] {
        assert!(text.contains(key), "{key} in:\n{text}");
    }
    assert!(
        !text.contains("hunter2") && !text.contains("hunter3"),
        "not echoed:\n{text}"
    );
}
