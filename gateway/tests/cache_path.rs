//! The result cache in the request path (in memory here: no `[redis]`), on the real gateway in front
//! of the stand-in for the model API, which counts what reaches it: 1,000 identical concurrent cold
//! requests cause one generation; the same prompt from two tenants never shares an entry; a hit
//! replays as SSE when the client streams; a non-deterministic request is not cached.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{EDGE_MODEL, Gateway};

const SECRET: &str = "gateway-cache-test-secret-0123456789abcdef";

fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"user_id": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn ask(text: &str, temperature: Option<f64>) -> Value {
    let mut body = json!({"model": EDGE_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 8});
    if let Some(t) = temperature {
        body["temperature"] = json!(t);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_cold_requests_cause_one_generation_and_tenants_never_share_entries() {
    // Slow enough that all the identical requests arrive while the first is being answered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .content(3, "cached ")
        .delays(Duration::from_millis(800), Duration::from_millis(10));
    let upstream = r1_mock_upstream::serve(listener, script).await.unwrap();
    let dir = std::env::temp_dir().join(format!("r1-gw-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let routing = format!(
        "[auth]\nsecret_file = \"{}\"\n[cache]\nenabled = true\n",
        dir.join("secret").display()
    );
    let client = reqwest::Client::builder().pool_max_idle_per_host(2000).build().unwrap();
    let gw = Gateway::start_full(&[upstream.addr()], &[], "", &routing, "", client).await;
    let url = format!("{}/v1/chat/completions", gw.public);
    let alice = token("alice");

    // 1,000 identical cold requests at once (temperature 0: deterministic, so cacheable).
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let (client, url, alice) = (gw.client.clone(), url.clone(), alice.clone());
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(alice)
                    .json(&ask("What is 2 + 2?", Some(0.0)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let cache = r.headers()["x-r1-cache"].to_str().unwrap().to_owned();
                let v: Value = r.json().await.unwrap();
                (
                    cache,
                    v["choices"][0]["message"]["content"].as_str().unwrap().to_owned(),
                    v["usage"].clone(),
                )
            })
        })
        .collect();
    let mut misses = 0;
    for call in calls {
        let (cache, text, usage) = call.await.unwrap();
        assert_eq!(text, "cached ".repeat(3));
        if cache == "miss" {
            misses += 1;
        } else {
            assert_eq!(cache, "hit");
            assert_eq!(
                usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"],
                "usage marked cached"
            );
        }
    }
    assert_eq!(misses, 1, "one request went upstream");
    assert_eq!(
        upstream.stats().snapshot().received,
        1,
        "exactly one generation for 1,000 identical requests"
    );

    // The same prompt from another tenant is its own entry: a second generation.
    let bob = token("bob");
    let r = gw
        .client
        .post(&url)
        .bearer_auth(&bob)
        .json(&ask("What is 2 + 2?", Some(0.0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-r1-cache"], "miss");
    assert_eq!(upstream.stats().snapshot().received, 2);

    // A streaming client gets the entry replayed as SSE.
    let mut body = ask("What is 2 + 2?", Some(0.0));
    body["stream"] = json!(true);
    let r = gw
        .client
        .post(&url)
        .bearer_auth(&alice)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-r1-route"], "cache");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let streamed: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, "cached ".repeat(3));

    // No temperature (sampling): never cached.
    for _ in 0..2 {
        let r = gw
            .client
            .post(&url)
            .bearer_auth(&alice)
            .json(&ask("Tell me a story", None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-r1-cache").is_none());
    }
    assert_eq!(upstream.stats().snapshot().received, 4);
    assert_eq!(gw.metric("r1_cache_hits_total").await, 1000.0);
    gw.stop();
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_written_by_a_stream_without_usage_still_answers_with_usage() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(3, "kept "))
        .await
        .unwrap();
    let routing = "[auth]\nenabled = false\n[cache]\nenabled = true\n";
    let gw = Gateway::start_full(&[upstream.addr()], &[], "", routing, "", reqwest::Client::new()).await;
    let url = format!("{}/v1/chat/completions", gw.public);
    let send = async |body: Value| {
        let r = gw.client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cache = r.headers().get("x-r1-cache").map(|v| v.to_str().unwrap().to_owned());
        (cache, r.text().await.unwrap())
    };
    let usage_chunks = |text: &str| -> Vec<Value> {
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v["usage"].is_object())
            .collect()
    };

    // The miss: a stream that did not ask for usage, and gets none (the gateway asked upstream for it).
    let mut plain = ask("Count to three.", Some(0.0));
    plain["stream"] = json!(true);
    let (cache, text) = send(plain.clone()).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert!(usage_chunks(&text).is_empty(), "not asked for: {text}");

    // A JSON hit has the usage the miss cost, marked cached.
    let (cache, text) = send(ask("Count to three.", Some(0.0))).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    let json: Value = serde_json::from_str(&text).unwrap();
    assert!(
        json["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0),
        "{json}"
    );
    assert_eq!(
        json["usage"]["prompt_tokens_details"]["cached_tokens"],
        json["usage"]["prompt_tokens"]
    );

    // A streamed hit that asks for usage gets its usage chunk, one that does not gets none.
    let mut with_usage = plain.clone();
    with_usage["stream_options"] = json!({"include_usage": true});
    let (cache, text) = send(with_usage).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    let chunks = usage_chunks(&text);
    assert_eq!(chunks.len(), 1, "{text}");
    assert_eq!(chunks[0]["choices"], json!([]));
    let (_, text) = send(plain).await;
    assert!(usage_chunks(&text).is_empty(), "{text}");
    assert_eq!(upstream.stats().snapshot().received, 1, "one generation");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hit_answers_in_the_api_it_was_asked_through() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(3, "kept "))
        .await
        .unwrap();
    let routing = "[auth]\nenabled = false\n[cache]\nenabled = true\n";
    let gw = Gateway::start_full(&[upstream.addr()], &[], "", routing, "", reqwest::Client::new()).await;
    let send = async |path: &str, body: Value| {
        let r = gw
            .client
            .post(format!("{}{path}", gw.public))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cache = r.headers().get("x-r1-cache").map(|v| v.to_str().unwrap().to_owned());
        (cache, r.text().await.unwrap())
    };
    let chat = json!({"model": EDGE_MODEL, "messages": [{"role": "user", "content": "Name a colour."}],
                      "max_tokens": 8, "temperature": 0});
    let (cache, _) = send("/v1/chat/completions", chat).await;
    assert_eq!(cache.as_deref(), Some("miss"));

    // The same chat request through the Messages API: a hit, answered as a `message`.
    let message = json!({"model": EDGE_MODEL, "messages": [{"role": "user", "content": "Name a colour."}],
                         "max_tokens": 8, "temperature": 0});
    let (cache, text) = send("/v1/messages", message).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["model"], EDGE_MODEL);
    assert_eq!(answer["content"][0]["text"], "kept kept kept ");
    assert!(
        answer["usage"]["output_tokens"].as_u64().is_some_and(|n| n > 0),
        "{answer}"
    );

    // And through the Responses API, streamed: its events, from the stored answer.
    let response = json!({"model": EDGE_MODEL, "input": "Name a colour.", "max_output_tokens": 8,
                          "temperature": 0, "stream": true});
    let (cache, text) = send("/v1/responses", response).await;
    assert_eq!(cache.as_deref(), Some("hit"), "{text}");
    let completed = text
        .split("\n\n")
        .find_map(|e| e.strip_prefix("event: response.completed\ndata: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .unwrap_or_else(|| panic!("no response.completed: {text}"));
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        "kept kept kept "
    );
    assert!(
        completed["response"]["usage"]["output_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert_eq!(upstream.stats().snapshot().received, 1, "one generation");
    gw.stop();
}
