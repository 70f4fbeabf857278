//! Authentication and limits on the real gateway: every refusal is a 401 with a generic OpenAI body, a
//! `WWW-Authenticate` header and a reason-labelled counter — and never reaches a model (the upstream
//! counts its requests). Valid tokens pass; their `tier` claim drives a routing rule; their subject
//! owns the async tasks it creates. (`tests/jwt_attacks.rs` holds the verifier's full attack table.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::Gateway;

const SECRET: &str = "gateway-auth-test-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn start(upstream: std::net::SocketAddr) -> Gateway {
    let dir = std::env::temp_dir().join(format!("r1-gw-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let routing = format!(
        "[auth]\nsecret_file = \"{}\"\n\
         [[routing.rules]]\nname = \"premium\"\nroute = \"center\"\nmatch = {{ claim = {{ name = \"tier\", value = \"premium\" }} }}\n",
        secret.display()
    );
    // Both pools on the counting upstream; the center through the in-process hand-off (async tasks).
    Gateway::start_full(
        &[upstream],
        &[upstream],
        "",
        &routing,
        "transport = \"embedded\"",
        reqwest::Client::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_tokens_never_reach_a_model_and_valid_ones_carry_their_claims() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(2, "ok "))
        .await
        .unwrap();
    let gw = start(upstream.addr()).await;
    let url = format!("{}/v1/chat/completions", gw.public);
    let body = json!({"model": "deepseek-r1", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4});
    let claims = |extra: Value| {
        let mut c = json!({"user_id": "alice", "exp": now() + 600});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    let good = token(claims(json!({})), SECRET);

    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}").as_bytes()),
            b64(claims(json!({})).to_string().as_bytes())
        )
    };
    let attacks: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        ("no header", gw.client.post(&url), "missing"),
        (
            "alg none",
            gw.client.post(&url).bearer_auth(unsigned("none")),
            "alg_not_allowed",
        ),
        (
            "alg NONE",
            gw.client.post(&url).bearer_auth(unsigned("NONE")),
            "alg_not_allowed",
        ),
        (
            "wrong secret",
            gw.client
                .post(&url)
                .bearer_auth(token(claims(json!({})), "another-secret-0123456789abcdef!!")),
            "bad_signature",
        ),
        (
            "expired",
            gw.client
                .post(&url)
                .bearer_auth(token(json!({"user_id": "alice", "exp": now() - 3600}), SECRET)),
            "expired",
        ),
        (
            "no exp",
            gw.client
                .post(&url)
                .bearer_auth(token(json!({"user_id": "alice"}), SECRET)),
            "missing_exp",
        ),
        (
            "future nbf",
            gw.client
                .post(&url)
                .bearer_auth(token(claims(json!({"nbf": now() + 3600})), SECRET)),
            "not_yet_valid",
        ),
        (
            "16 KiB token",
            gw.client.post(&url).bearer_auth("a".repeat(16 * 1024)),
            "too_large",
        ),
        (
            "two headers",
            gw.client
                .post(&url)
                .header("authorization", format!("Bearer {good}"))
                .header("authorization", format!("Bearer {good}")),
            "multiple_headers",
        ),
        (
            "token in the query",
            gw.client.post(format!("{url}?access_token={good}")).bearer_auth(&good),
            "query_token",
        ),
    ];
    let mut expected = std::collections::HashMap::<&str, f64>::new();
    for (name, request, reason) in attacks {
        *expected.entry(reason).or_default() += 1.0;
        let r = request.json(&body).send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}");
        assert!(
            r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"),
            "{name}"
        );
        let text = r.text().await.unwrap();
        assert!(!text.contains(&good), "{name}: the token is never echoed");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], "authentication_error", "{name}");
        assert_eq!(
            gw.metric(&format!("r1_auth_failures_total{{reason=\"{reason}\"}}"))
                .await,
            expected[reason],
            "{name}"
        );
    }
    assert_eq!(
        upstream.stats().snapshot().received,
        0,
        "no refused request reached a model"
    );

    // The DeepSeek-guide client's token passes; a `tier` claim routes by rule.
    let r = gw
        .client
        .post(&url)
        .bearer_auth(&good)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-r1-route"], "edge");
    let premium = token(claims(json!({"tier": "premium"})), SECRET);
    let r = gw
        .client
        .post(&url)
        .bearer_auth(&premium)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-r1-route"], "center");
    assert_eq!(r.headers()["x-r1-route-reason"], "rule");

    // Async tasks belong to the subject that created them: another subject gets 404, not 403.
    let r = gw
        .client
        .post(format!("{}/v1/tasks", gw.public))
        .bearer_auth(&good)
        .json(&json!({"request": body}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = format!("{}{}", gw.public, r.headers()["location"].to_str().unwrap());
    let bob = token(json!({"user_id": "bob", "exp": now() + 600}), SECRET);
    let r = gw.client.get(&location).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = gw
            .client
            .get(&location)
            .bearer_auth(&good)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop();
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_limits_is_a_429_with_retry_after_and_an_oversize_body_a_413_without_an_upstream_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(2, "ok "))
        .await
        .unwrap();
    let limits = "[limits]\nrequests_per_second = 1\nburst = 2\nmax_body_bytes = 4096\n";
    let gw = Gateway::start(&[upstream.addr()], &[], limits).await;
    let url = format!("{}/v1/chat/completions", gw.public);
    let body = json!({"model": "r1-edge-mini", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4});

    // A body over limits.max_body_bytes: 413 from the declared length, nothing read, nothing sent.
    let mut big = body.clone();
    big["messages"][0]["content"] = json!("x".repeat(8192));
    let r = gw.client.post(&url).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(upstream.stats().snapshot().received, 0);

    // The burst passes; the next one in the same second is a 429 with Retry-After.
    for _ in 0..2 {
        assert_eq!(gw.client.post(&url).json(&body).send().await.unwrap().status(), 200);
    }
    let r = gw.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(
        upstream.stats().snapshot().received,
        2,
        "refused requests never reach a model"
    );

    // max_tokens over the cap: a 400 naming the parameter (checked before the rate).
    let mut greedy = body.clone();
    greedy["max_tokens"] = json!(1_000_000);
    let r = gw.client.post(&url).json(&greedy).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "max_tokens");
    gw.stop();
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tier_claim_picks_that_tiers_limits() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(1, "ok"))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("r1-gw-tier-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let config = format!(
        "[auth]\nsecret_file = \"{}\"\n[limits]\nrequests_per_second = 0.2\nburst = 1\n\
         [limits.tiers.premium]\nrequests_per_second = 100\nburst = 100\n",
        dir.join("secret").display()
    );
    let gw = Gateway::start(&[upstream.addr()], &[], &config).await;
    let url = format!("{}/v1/chat/completions", gw.public);
    let body = json!({"model": "r1-edge-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let basic = token(json!({"user_id": "carol", "exp": now() + 600}), SECRET);
    let premium = token(
        json!({"user_id": "dave", "exp": now() + 600, "tier": "premium"}),
        SECRET,
    );
    let statuses = |t: String| {
        let (client, url, body) = (gw.client.clone(), url.clone(), body.clone());
        async move {
            let mut out = Vec::new();
            for _ in 0..5 {
                out.push(
                    client
                        .post(&url)
                        .bearer_auth(&t)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16(),
                );
            }
            out
        }
    };
    assert_eq!(
        statuses(basic).await,
        [200, 429, 429, 429, 429],
        "the default: a burst of 1"
    );
    assert_eq!(statuses(premium).await, [200; 5], "the premium tier's limits");
    gw.stop();
    upstream.shutdown().await.unwrap();
}
