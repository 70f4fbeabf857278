//! The mock on a real socket, driven with reqwest: answer shapes (JSON, SSE with reasoning and usage),
//! the token cap, scripted failures and drops, the concurrency limit, shutdown, and the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use r1_mock_upstream::{Handle, Reply, Script};
use r1_proto::{ChatCompletionChunk, ChatCompletionResponse, ErrorBody, ModelList};
use serde_json::{Value, json};

async fn start(script: Script) -> Handle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    r1_mock_upstream::serve(listener, script).await.unwrap()
}

fn chat(upstream: &Handle, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", upstream.url()))
        .json(body)
}

fn request(stream: bool) -> Value {
    json!({"model": "deepseek-ai/DeepSeek-R1", "messages": [{"role": "user", "content": "What is the capital of France?"}], "stream": stream})
}

/// The `data:` payloads of an SSE body, in order.
fn events(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").expect(event))
        .collect()
}

#[tokio::test]
async fn json_answers_models_health_and_stats_have_the_openai_shape() {
    let upstream = start(Script::default().reasoning(2, "so ").content(3, "Paris ").record(10)).await;
    let response = chat(&upstream, &request(false))
        .header("authorization", "Bearer k")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: ChatCompletionResponse = response.json().await.unwrap();
    assert_eq!(
        (answer.object.as_str(), answer.model.as_str()),
        ("chat.completion", "deepseek-ai/DeepSeek-R1")
    );
    let message = answer.first_message().unwrap();
    assert_eq!(message.text(), "Paris Paris Paris ");
    assert_eq!(message.reasoning(), Some("so so "));
    let usage = answer.usage.get().unwrap();
    assert_eq!((usage.completion_tokens, usage.reasoning_tokens()), (5, 2));
    assert_eq!(
        serde_json::to_value(&answer).unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    let client = reqwest::Client::new();
    let models: ModelList = client
        .get(format!("{}/v1/models", upstream.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models.data[0].id, "deepseek-reasoner");
    for path in ["/healthz", "/readyz", "/health"] {
        let status = client
            .get(format!("{}{path}", upstream.url()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
    let stats: Value = client
        .get(format!("{}/stats", upstream.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"received": 1, "completed": 1, "failed": 0, "dropped": 0, "in_flight": 0, "max_in_flight": 1})
    );
    let recorded = upstream.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body["messages"][0]["role"], "user");
    assert_eq!(recorded[0].headers["authorization"], "Bearer k");
}

#[tokio::test]
async fn streams_reasoning_then_content_then_usage_and_done_on_schedule() {
    let script = Script::default()
        .reasoning(2, "hm ")
        .content(3, "ok ")
        .delays(Duration::from_millis(150), Duration::from_millis(20));
    let upstream = start(script).await;
    let mut body = request(true);
    body["stream_options"] = json!({"include_usage": true});
    let started = Instant::now();
    let mut response = chat(&upstream, &body).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The role-only chunk comes at once, the first token after `first_delay`.
    let first = response.chunk().await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(120),
        "{:?}",
        started.elapsed()
    );
    let mut text = String::from_utf8(first.to_vec()).unwrap();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        started.elapsed() >= Duration::from_millis(150 + 4 * 20),
        "{:?}",
        started.elapsed()
    );

    let payloads = events(&text);
    assert_eq!(payloads.len(), 1 + 5 + 1 + 1 + 1, "{text}");
    assert_eq!(*payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<ChatCompletionChunk> = payloads[..payloads.len() - 1]
        .iter()
        .map(|event| serde_json::from_str(event).unwrap())
        .collect();
    let deltas: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::to_value(c).unwrap()["choices"][0]["delta"].clone())
        .collect();
    assert_eq!(deltas[0], json!({"role": "assistant", "content": ""}));
    assert_eq!(deltas[1], json!({"reasoning_content": "hm "}));
    assert_eq!(deltas[2], json!({"reasoning_content": "hm "}));
    assert_eq!(
        deltas[3..6],
        [
            json!({"content": "ok "}),
            json!({"content": "ok "}),
            json!({"content": "ok "})
        ]
    );
    assert_eq!(
        serde_json::to_value(&chunks[6]).unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let usage = &chunks[7];
    assert!(usage.choices.is_empty());
    assert_eq!(usage.usage.get().unwrap().completion_tokens, 5);
    assert!(
        chunks
            .iter()
            .all(|c| c.id == chunks[0].id && c.object == "chat.completion.chunk")
    );

    // Without include_usage there is no usage chunk.
    let text = chat(&upstream, &request(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(events(&text).len(), 1 + 5 + 1 + 1);
    assert_eq!(upstream.stats().snapshot().completed, 2);
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_with_finish_reason_length() {
    let upstream = start(Script::default().reasoning(3, "r ").content(3, "c ")).await;
    let mut body = request(false);
    body["max_tokens"] = json!(4);
    let answer: Value = chat(&upstream, &body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["reasoning_content"], "r r r ");
    assert_eq!(answer["choices"][0]["message"]["content"], "c ");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn the_first_requests_fail_with_an_openai_error_then_answers_come() {
    let upstream = start(Script::default().fail_first(2, 429)).await;
    for _ in 0..2 {
        let response = chat(&upstream, &request(false)).send().await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        let error: ErrorBody = response.json().await.unwrap();
        assert_eq!(error.error.error_type, "rate_limit_error");
    }
    assert_eq!(chat(&upstream, &request(false)).send().await.unwrap().status(), 200);
    let stats = upstream.stats().snapshot();
    assert_eq!((stats.received, stats.failed, stats.completed), (3, 2, 1));

    // Not a chat request: a 400 naming the problem.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", upstream.url()))
        .body("{\"messages\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_scripted_drop_cuts_the_connection_after_k_tokens() {
    let upstream = start(Script::default().content(5, "x ").drop_after(2)).await;
    let mut response = chat(&upstream, &request(true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => text.push_str(std::str::from_utf8(&chunk).unwrap()),
            Ok(None) => panic!("the stream ended cleanly: {text}"),
            Err(e) => break e,
        }
    };
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert_eq!(events(&text).len(), 1 + 2, "role chunk and two tokens, no end: {text}");
    assert!(!text.contains("[DONE]"));

    // A JSON answer is cut inside its body.
    let result = chat(&upstream, &request(false)).send().await.unwrap().bytes().await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(upstream.stats().snapshot().dropped, 2);
}

#[tokio::test]
async fn per_request_replies_and_a_concurrency_limit_of_one() {
    let script = Script::default().concurrency(1).per_request(|n| {
        if n == 1 {
            Reply::status(503).header("x-r1-route", "center")
        } else {
            Reply::ok()
                .header("x-r1-route", "edge")
                .delay(Duration::from_millis(100))
        }
    });
    let upstream = start(script).await;
    let started = Instant::now();
    let send = || {
        let request = chat(&upstream, &request(false));
        async move { request.send().await.unwrap() }
    };
    let (a, b, c) = tokio::join!(send(), send(), send());
    let mut statuses: Vec<(u16, String)> = [a, b, c]
        .iter()
        .map(|r| {
            (
                r.status().as_u16(),
                r.headers()["x-r1-route"].to_str().unwrap().to_owned(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            (200, "edge".to_owned()),
            (200, "edge".to_owned()),
            (503, "center".to_owned())
        ]
    );
    // Two 100 ms answers, one at a time.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        upstream.stats().snapshot().max_in_flight,
        3,
        "waiting for a slot counts as in flight"
    );
}

#[tokio::test]
async fn shutdown_lets_a_running_stream_finish_and_refuses_new_connections() {
    let script = Script::default().delays(Duration::from_millis(200), Duration::from_millis(10));
    let upstream = start(script).await;
    let url = upstream.url();
    let mut response = chat(&upstream, &request(true)).send().await.unwrap();
    let stats = upstream.stats();
    let shutdown = tokio::spawn(upstream.shutdown());
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    shutdown.await.unwrap().unwrap();
    assert_eq!(stats.snapshot().completed, 1);
    let refused = reqwest::get(format!("{url}/healthz")).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn the_binary_serves_its_flags_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_r1-mock-upstream"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--chunks",
            "2",
            "--text",
            "hi ",
        ])
        .args(["--reasoning", "1", "--first-delay", "0ms", "--threads", "1"])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "the binary never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&request(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "hi hi ");
    assert_eq!(answer["choices"][0]["message"]["reasoning_content"], "hmm ");

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The chunks of a streamed answer to `body`, as JSON, and whether it ended with `[DONE]`.
async fn stream_chunks(upstream: &Handle, body: &Value) -> (Vec<Value>, bool) {
    let text = chat(upstream, body).send().await.unwrap().text().await.unwrap();
    let payloads = events(&text);
    let done = payloads.last() == Some(&"[DONE]");
    let chunks = payloads
        .iter()
        .filter(|p| **p != "[DONE]")
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    (chunks, done)
}

#[tokio::test]
async fn tool_calls_stream_in_pieces_with_arguments_that_fit_the_parameters() {
    let upstream = start(Script::default().reasoning(1, "hm ")).await;
    let weather = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"$ref": "#/$defs/Unit"}},
        "required": ["city", "unit"],
        "$defs": {"Unit": {"enum": ["celsius", "fahrenheit"], "type": "string"}},
    }}}]);
    let mut body = request(true);
    body["tools"] = weather.clone();
    let (chunks, done) = stream_chunks(&upstream, &body).await;
    assert!(done);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 4, "the head, then three argument pieces: {chunks:?}");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert_eq!(calls[0][0]["id"], "call_chatcmpl-mock-0");
    let arguments: String = calls
        .iter()
        .map(|c| c[0]["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "mock", "unit": "celsius"})
    );
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");

    // A tool whose parameters allow `{"query": "mock"}` gets exactly that, as before.
    let mut body = request(false);
    body["tools"] = json!([{"type": "function", "function": {"name": "search", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let answer: Value = chat(&upstream, &body).send().await.unwrap().json().await.unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["arguments"], "{\"query\": \"mock\"}");
    assert_eq!(answer["choices"][0]["message"]["content"], Value::Null);
    // `tool_choice: "none"` answers in text.
    body["tool_choice"] = json!("none");
    let answer: Value = chat(&upstream, &body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "ok ok ok ");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn logprobs_come_with_each_content_token() {
    let upstream = start(Script::default().reasoning(1, "hm ").content(2, "ok ")).await;
    let mut body = request(false);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let answer: Value = chat(&upstream, &body).send().await.unwrap().json().await.unwrap();
    let content = answer["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 2, "{answer}");
    for entry in content {
        assert_eq!(entry["token"], "ok ");
        assert_eq!(entry["bytes"], json!([111, 107, 32]));
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 2);
    }

    body["stream"] = json!(true);
    let (chunks, _) = stream_chunks(&upstream, &body).await;
    for chunk in &chunks {
        let choice = &chunk["choices"][0];
        match choice["delta"].get("content").and_then(Value::as_str) {
            Some("ok ") => {
                let entries = choice["logprobs"]["content"].as_array().unwrap();
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0]["token"], "ok ");
                assert_eq!(entries[0]["top_logprobs"].as_array().unwrap().len(), 2);
            }
            _ => assert!(choice.get("logprobs").is_none(), "{chunk}"),
        }
    }

    // Without `logprobs` the answer says `null`, as OpenAI's does.
    let answer: Value = chat(&upstream, &request(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["choices"][0]["logprobs"], Value::Null);
}

#[tokio::test]
async fn n_choices_each_get_the_whole_answer_under_their_index() {
    let upstream = start(Script::default().reasoning(1, "hm ").content(2, "ok ")).await;
    let mut body = request(false);
    body["n"] = json!(3);
    let answer: Value = chat(&upstream, &body).send().await.unwrap().json().await.unwrap();
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["message"]["content"], "ok ok ");
        assert_eq!(choice["finish_reason"], "stop");
    }
    assert_eq!(answer["usage"]["completion_tokens"], 9);

    body["stream"] = json!(true);
    body["n"] = json!(2);
    body["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = stream_chunks(&upstream, &body).await;
    assert!(done);
    let mut text = [String::new(), String::new()];
    let mut finishes = [0, 0];
    for chunk in &chunks {
        for choice in chunk["choices"].as_array().unwrap() {
            let i = choice["index"].as_u64().unwrap() as usize;
            text[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if choice["finish_reason"].is_string() {
                finishes[i] += 1;
            }
        }
    }
    assert_eq!(text, ["ok ok ", "ok ok "]);
    assert_eq!(finishes, [1, 1]);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 6);

    // Each choice calls the tool with its own id.
    let mut body = request(false);
    body["n"] = json!(2);
    body["tools"] = json!([{"type": "function", "function": {"name": "search"}}]);
    let answer: Value = chat(&upstream, &body).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&Value> = answer["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["message"]["tool_calls"][0]["id"])
        .collect();
    assert_eq!(ids, [&json!("call_mock_2"), &json!("call_mock_2_1")]);
}

#[tokio::test]
async fn response_formats_get_a_json_document_valid_under_the_schema() {
    let upstream = start(Script::default().reasoning(1, "hm ")).await;
    let schema = json!({
        "$defs": {"Unit": {"enum": ["celsius", "fahrenheit"], "type": "string"}},
        "properties": {
            "city": {"type": "string"},
            "temperature": {"type": "number"},
            "unit": {"$ref": "#/$defs/Unit"},
            "sunny": {"type": "boolean"},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city", "temperature", "unit", "sunny", "notes"],
        "type": "object",
    });
    let mut body = request(true);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}});
    let (chunks, done) = stream_chunks(&upstream, &body).await;
    assert!(done);
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(pieces.len(), 3, "{chunks:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&pieces.concat()).unwrap(),
        json!({"city": "mock", "temperature": 0, "unit": "celsius", "sunny": true, "notes": []})
    );

    body["stream"] = json!(false);
    body["response_format"] = json!({"type": "json_object"});
    let answer: Value = chat(&upstream, &body).send().await.unwrap().json().await.unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(content).unwrap(),
        json!({"answer": "mock"})
    );
    assert_eq!(answer["choices"][0]["message"]["reasoning_content"], "hm ");

    // `text` is the plain scripted answer.
    body["response_format"] = json!({"type": "text"});
    let answer: Value = chat(&upstream, &body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "ok ok ok ");
}
