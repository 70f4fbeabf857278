//! The Redis that tests on the shared Redis talk to, from `scripts/services.sh env`:
//! `R1_TEST_REDIS_TARGET` picks `single` (the default, `R1_TEST_REDIS_URL`), `tls` (`R1_TEST_REDIS_TLS_URL`
//! with the test CA and the ACL user) or `cluster` (`R1_TEST_REDIS_CLUSTER_URLS`), so the same tests run
//! against each in turn (`scripts/test.sh` does). Included by path by the test files that use it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use r1_queue::redis_conn::{RedisClient, RedisSection};

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The plain single server's URL, whatever the target (tests that relay its bytes).
pub fn single_url() -> String {
    var("R1_TEST_REDIS_URL", "redis://127.0.0.1:16379")
}

/// `single`, `tls` or `cluster`.
pub fn target() -> String {
    var("R1_TEST_REDIS_TARGET", "single")
}

/// The `[redis]` keys (no table header, no sub-table: more keys may follow) of the chosen Redis; the
/// password by its variable, as an operator would name it.
pub fn keys() -> String {
    match target().as_str() {
        "single" => format!("url = \"{}\"\n", single_url()),
        "tls" => format!(
            "url = \"{}\"\nusername = \"{}\"\npassword_env = \"R1_TEST_REDIS_PASSWORD\"\ntls = {{ ca_file = \"{}\" }}\n",
            var("R1_TEST_REDIS_TLS_URL", "rediss://127.0.0.1:16380"),
            var("R1_TEST_REDIS_USERNAME", "r1-test"),
            var("R1_TEST_REDIS_CA_FILE", ""),
        ),
        "cluster" => cluster_keys(),
        other => panic!("R1_TEST_REDIS_TARGET={other}: expected single, tls or cluster"),
    }
}

/// The cluster's seed URLs.
pub fn cluster_urls() -> Vec<String> {
    let urls = var("R1_TEST_REDIS_CLUSTER_URLS", "redis://127.0.0.1:17000");
    urls.split(',').map(str::to_owned).collect()
}

/// The `[redis]` keys of the Redis Cluster, whatever the target.
pub fn cluster_keys() -> String {
    let urls: Vec<String> = cluster_urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "url = {}\ncluster = true\ncluster_nodes = [{}]\n",
        urls[0],
        urls[1..].join(", ")
    )
}

/// The `[redis]` table of `keys` (plus `more`), parsed.
pub fn section(more: &str) -> RedisSection {
    toml::from_str(&format!("{}{more}", keys())).unwrap()
}

/// A client of the chosen Redis.
pub fn client() -> RedisClient {
    section("").client("redis", &|name| std::env::var(name).ok()).unwrap()
}

/// A client of a plain `redis://` URL (a Redis of a test's own, a port where nothing answers).
pub fn plain(url: &str) -> RedisClient {
    RedisClient::open(url).unwrap()
}
