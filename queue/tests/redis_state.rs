//! Task and batch state, and the start-up check of a `[redis]` table, against the real Redis the test
//! command starts (`scripts/services.sh up`): the store on one server, over TLS as the ACL user, or on the
//! Redis Cluster (`R1_TEST_REDIS_TARGET`, see `gateway/tests/support/redis.rs`); and the TLS server
//! refusing a wrong password or a client that trusts another CA, with an error naming the key to fix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::time::{Duration, Instant};

use r1_queue::redis_conn::{RedisCheckError, RedisSection};
use r1_queue::state::{BatchState, RedisStateStore, StateStore, TaskState, TaskStatus, update_task};

#[path = "../../gateway/tests/support/redis.rs"]
mod redis_target;

fn task(id: &str) -> TaskState {
    TaskState {
        id: id.to_owned(),
        tenant: "t".to_owned(),
        status: TaskStatus::Queued,
        created_at: 1,
        updated_at: 1,
        batch: None,
        webhook: None,
        result: None,
        error: None,
    }
}

#[tokio::test]
async fn task_and_batch_state_round_trips_and_a_batch_reads_tasks_on_every_slot() {
    let store = RedisStateStore::connect(&redis_target::client(), Duration::from_millis(500))
        .await
        .unwrap();
    let ttl = Duration::from_secs(60);
    // Enough ids that a cluster spreads them over every master: one MGET reads them all, in order.
    let ids: Vec<String> = (0..32).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    for id in &ids {
        store.put_task(&task(id), ttl).await.unwrap();
    }
    let mut asked = ids.clone();
    asked.insert(5, "missing".to_owned());
    let found = store.tasks(&asked).await.unwrap();
    assert_eq!(found.len(), asked.len());
    assert_eq!(found[5], None);
    for (id, state) in asked.iter().zip(&found).filter(|(id, _)| *id != "missing") {
        assert_eq!(&state.as_ref().unwrap().id, id);
    }
    let done = update_task(&store, &ids[0], ttl, |s| s.status = TaskStatus::Succeeded)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(
        store.task(&ids[0]).await.unwrap().unwrap().status,
        TaskStatus::Succeeded
    );
    let batch = BatchState {
        id: uuid::Uuid::new_v4().simple().to_string(),
        tenant: "t".to_owned(),
        created_at: 1,
        lines: ids.iter().map(|id| (format!("line-{id}"), id.clone())).collect(),
    };
    store.put_batch(&batch, ttl).await.unwrap();
    assert_eq!(store.batch(&batch.id).await.unwrap(), Some(batch));
}

/// The TLS server's table from `scripts/services.sh env`, with `extra` keys; `None` (and why, printed)
/// when the variables are not set.
fn tls_table(extra: &str) -> Option<RedisSection> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(url), Some(user)) = (var("R1_TEST_REDIS_TLS_URL"), var("R1_TEST_REDIS_USERNAME")) else {
        println!(
            "skipped: R1_TEST_REDIS_TLS_URL and R1_TEST_REDIS_USERNAME are not set (eval \"$(scripts/services.sh env)\")"
        );
        return None;
    };
    Some(toml::from_str(&format!("url = \"{url}\"\nusername = \"{user}\"\n{extra}")).unwrap())
}

fn ca_file() -> String {
    std::env::var("R1_TEST_REDIS_CA_FILE").unwrap()
}

async fn checked(section: &RedisSection, env: &dyn Fn(&str) -> Option<String>) -> Result<(), RedisCheckError> {
    let client = section.client("redis", env).unwrap();
    let started = Instant::now();
    let result = client.check(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered in {:?}",
        started.elapsed()
    );
    result
}

#[tokio::test]
async fn the_acl_user_logs_in_over_tls_and_a_wrong_password_is_refused_naming_its_key() {
    let extra = format!(
        "password_env = \"R1_REDIS_PASSWORD\"\ntls = {{ ca_file = \"{}\" }}\n",
        ca_file()
    );
    let Some(section) = tls_table(&extra) else { return };
    let right = std::env::var("R1_TEST_REDIS_PASSWORD").unwrap();
    let env = |name: &str| (name == "R1_REDIS_PASSWORD").then(|| right.clone());
    checked(&section, &env).await.unwrap();

    let wrong = |name: &str| (name == "R1_REDIS_PASSWORD").then(|| "not-the-password".to_owned());
    let Err(RedisCheckError::Refused(message)) = checked(&section, &wrong).await else {
        panic!("a wrong password must be a refusal")
    };
    assert!(
        message.starts_with("redis.password_env: Redis refused the login (user r1-test)"),
        "{message}"
    );
    assert!(
        !message.contains("not-the-password"),
        "the password is never shown: {message}"
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_naming_the_ca_file() {
    // A CA of this test's own: the server's certificate was not signed by it.
    let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("r1-redis-ca-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let extra = format!(
        "password_env = \"R1_TEST_REDIS_PASSWORD\"\ntls = {{ ca_file = \"{}\" }}\n",
        other_ca.display()
    );
    let Some(section) = tls_table(&extra) else { return };
    let env = |name: &str| std::env::var(name).ok();
    let Err(RedisCheckError::Refused(message)) = checked(&section, &env).await else {
        panic!("an untrusted certificate must be a refusal")
    };
    assert!(
        message.starts_with("redis.tls.ca_file: the TLS handshake with Redis failed"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn nothing_listening_is_unreachable_not_a_refusal() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    drop(listener);
    let section: RedisSection = toml::from_str(&format!("url = \"{url}\"\n")).unwrap();
    assert!(matches!(
        checked(&section, &|_| None).await,
        Err(RedisCheckError::Unreachable(_))
    ));
}
