//! `r1-gateway demo`: the embedded stack on loopback — the gateway, one r1-edge serving the shipped
//! model, and the center in process (the in-process queue and r1-center's worker) — then a few sample
//! prompts, each printed with the route it took and, for the center, its reasoning.
//!
//! The center's backend is the external R1 API. By default it is the scripted stand-in for it (the
//! mock upstream: `reasoning_content`, then content, labelled as scripted in every answer); with
//! `R1_CENTER_URL` (and `R1_CENTER_API_KEY`, `R1_CENTER_MODEL`, default `deepseek-reasoner`) the same
//! demo asks that API. Model servers the demo starts listen on free ports (members given as port 0),
//! so two demos run side by side on different `--listen`/`--admin` ports.

// The demo talks to a person on a terminal: printing is its job.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use r1_edge::config::EdgeConfig;
use r1_edge::runtime::LibrarySearch;

use crate::config::{EmbeddedBackend, GatewayConfig};
use crate::env::Environment as _;

/// Sample prompts: simple and complex, English and Chinese.
const SAMPLES: [&str; 6] = [
    "Hello!",
    "What is the capital of France?",
    "你好",
    "Prove that the square root of 2 is irrational, step by step.",
    "设计一个支持高并发的分布式限流系统，并分析它的一致性和可用性取舍。",
    "Debug this: my Rust service deadlocks when two tasks lock the same two mutexes in different orders.",
];

/// What the stand-in for the external R1 API thinks, before it answers.
const STAND_IN_REASONING: &str = "[scripted stand-in for the external R1 API, not a model] This prompt \
     scored as complex, so the router sent it to the center pool, through the task hand-off; DeepSeek-R1 \
     would reason here, streamed as reasoning_content before its answer.";
/// And its answer.
const STAND_IN_ANSWER: &str = "This center answer is scripted. Set R1_CENTER_URL (for example \
     https://api.deepseek.com/v1) and R1_CENTER_API_KEY to have the real model answer center requests.";

/// The environment variables that point the demo's center at a real API.
const CENTER_URL_ENV: &str = "R1_CENTER_URL";
const CENTER_KEY_ENV: &str = "R1_CENTER_API_KEY";
const CENTER_MODEL_ENV: &str = "R1_CENTER_MODEL";

/// Runs the demo until Ctrl-C. `config` must list one edge and one center member on loopback (port
/// 0: a free one).
pub fn run(mut config: GatewayConfig, config_path: PathBuf, models: &Path) -> anyhow::Result<()> {
    let token = demo_auth(&mut config)?;
    let edge_addr = single_member(&config.edge.members, "edge")?;
    let model_dir = models.join("r1-edge-mini");

    // The model servers run on their own runtime thread; the gateway (Pingora) owns the main thread.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut edge_config = EdgeConfig::default();
    edge_config.onnxruntime.intra_threads = 1;
    let model = r1_edge::model::load(&LibrarySearch::from_env(), &model_dir, &edge_config.onnxruntime)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let listener = std::net::TcpListener::bind(edge_addr).with_context(|| format!("bind {edge_addr}"))?;
    listener.set_nonblocking(true)?;
    config.edge.members = vec![listener.local_addr()?.to_string()];
    let edge_name = config.edge.model.clone();
    servers.spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                if let Err(e) =
                    r1_edge::server::run(listener, model, edge_name, &edge_config, std::future::pending()).await
                {
                    tracing::error!(error = %e, "demo edge server stopped");
                }
            }
            Err(e) => tracing::error!(error = %e, "demo edge server could not start"),
        }
    });

    let env = crate::env::ProcessEnv;
    let center = match env.var(CENTER_URL_ENV).filter(|u| !u.is_empty()) {
        Some(url) => {
            let model = env
                .var(CENTER_MODEL_ENV)
                .unwrap_or_else(|| "deepseek-reasoner".to_owned());
            let described = format!("{url} (model {model}, key from {CENTER_KEY_ENV})");
            config.center.members.clear();
            config.center.backend = Some(EmbeddedBackend {
                base_url: url,
                model: Some(model),
                api_key_env: Some(CENTER_KEY_ENV.to_owned()),
            });
            described
        }
        None => {
            let center_addr = single_member(&config.center.members, "center")?;
            let listener = std::net::TcpListener::bind(center_addr).with_context(|| format!("bind {center_addr}"))?;
            listener.set_nonblocking(true)?;
            let bound = listener.local_addr()?;
            config.center.members = vec![bound.to_string()];
            let script = r1_mock_upstream::Script::default()
                .model(config.center.model.clone())
                .reasoning(1, STAND_IN_REASONING)
                .content(1, STAND_IN_ANSWER)
                .delays(Duration::from_millis(300), Duration::from_millis(50));
            servers.spawn(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => match r1_mock_upstream::serve(listener, script).await {
                        Ok(handle) => {
                            // Serves until the runtime stops (dropping the handle would stop it).
                            let _serving = handle;
                            std::future::pending::<()>().await;
                        }
                        Err(e) => tracing::error!(error = %e, "demo center stand-in could not start"),
                    },
                    Err(e) => tracing::error!(error = %e, "demo center stand-in could not start"),
                }
            });
            format!(
                "a scripted stand-in for the external R1 API on {bound} (not a model; set {CENTER_URL_ENV} for a real one)"
            )
        }
    };

    let public = config.listen.public;
    let admin = config.listen.admin;
    let built = crate::server::build(config, Some(config_path), Duration::ZERO, Duration::from_secs(5))?;
    let samples = std::thread::spawn(move || {
        if let Err(e) = send_samples(public, admin, token.as_deref(), &center) {
            println!("demo: sample prompts failed: {e:#}");
        }
    });
    crate::server::run_until_signal(built);
    // Stopped before the samples finished (Ctrl-C while the stack was still starting): they would only
    // poll a listener that is gone, so they are left to end with the process.
    if samples.is_finished() {
        let _ = samples.join();
    }
    servers.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

fn single_member(members: &[String], pool: &str) -> anyhow::Result<SocketAddr> {
    let [member] = members else {
        anyhow::bail!("the demo config needs exactly one {pool} member on loopback");
    };
    member
        .parse()
        .with_context(|| format!("{pool} member `{member}` must be an IP:port on loopback"))
}

/// Authentication stays on in the demo: the secret comes from `R1_JWT_SECRET` (the config's default
/// source), or, when that is not set, a random one is generated for this run (written to a private
/// temp file the config then names). Returns a ready-made token (`user_id = "demo"`, valid 24 h).
fn demo_auth(config: &mut GatewayConfig) -> anyhow::Result<Option<String>> {
    if !config.auth.enabled {
        return Ok(None);
    }
    let secret = match crate::env::Environment::var(&crate::env::ProcessEnv, crate::auth::DEFAULT_SECRET_ENV) {
        Some(secret) if config.auth.secret_env.is_none() && config.auth.secret_file.is_none() => secret,
        _ if config.auth.secret_env.is_some() || config.auth.secret_file.is_some() => return Ok(None),
        _ => {
            let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            let path = std::env::temp_dir().join(format!("r1-demo-jwt-secret-{}", std::process::id()));
            write_private(&path, &secret)?;
            config.auth.secret_file = Some(path);
            secret
        }
    };
    let exp = r1_queue::unix_ms() / 1000 + 86_400;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"user_id": "demo", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?,
    )?;
    Ok(Some(token))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn send_samples(public: SocketAddr, admin: SocketAddr, token: Option<&str>, center: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        // Ready when every member of both pools is, the edge has one, and the public listener answers
        // (Pingora starts the admin and public services apart: one can be up before the other).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pools: serde_json::Value = match client.get(format!("http://{admin}/admin/pools")).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            let ready = pools["pools"].as_array().is_some_and(|p| {
                p.len() == 2
                    && p[0]["members"].as_array().is_some_and(|m| !m.is_empty())
                    && p.iter().all(|p| {
                        p["members"]
                            .as_array()
                            .is_some_and(|m| m.iter().all(|m| m["ready"] == true))
                    })
            });
            let serving = ready
                && client
                    .get(format!("http://{public}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            if serving {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the stack did not become ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "\nr1-hybrid demo is up.\n  API:     http://{public}/v1  (OpenAI-compatible; model \"deepseek-r1\" is routed for you)\n  \
             admin:   http://{admin}/metrics  http://{admin}/admin/pools  POST http://{admin}/admin/route/explain\n  \
             center:  {center}\n\nSample prompts:"
        );
        for prompt in SAMPLES {
            let body = serde_json::json!({
                "model": "deepseek-r1",
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": 256,
            });
            let mut request = client.post(format!("http://{public}/v1/chat/completions")).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            let header = |name: &str| {
                response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned()
            };
            let (route, reason) = (header("x-r1-route"), header("x-r1-route-reason"));
            let answer: serde_json::Value = response.json().await?;
            let message = &answer["choices"][0]["message"];
            let text = message["content"]
                .as_str()
                .or_else(|| answer["error"]["message"].as_str())
                .unwrap_or("(no answer)");
            println!("  Q: {prompt}\n     route: {route} ({reason})");
            if let Some(thinking) = message["reasoning_content"].as_str().filter(|t| !t.is_empty()) {
                println!("     thinking: {thinking}");
            }
            println!("  A: {text}\n");
        }
        let key = token.unwrap_or("(auth is off)");
        println!(
            "Try it yourself (the token: user_id \"demo\", valid 24 h; R1_JWT_SECRET=<32+ bytes> makes it yours):\n  \
             export R1_TOKEN={key}\n  \
             curl http://{public}/v1/chat/completions -H \"authorization: Bearer $R1_TOKEN\" -H 'content-type: application/json' \\\n    \
             -d '{{\"model\":\"deepseek-r1\",\"messages\":[{{\"role\":\"user\",\"content\":\"What day comes after Monday?\"}}],\"stream\":true}}' -i\n\n  \
             python3 -c 'import os; from openai import OpenAI; c = OpenAI(base_url=\"http://{public}/v1\", api_key=os.environ[\"R1_TOKEN\"]); \
             print(c.chat.completions.create(model=\"deepseek-r1\", messages=[{{\"role\":\"user\",\"content\":\"Hi\"}}]).choices[0].message.content)'\n\n\
             Center requests go through the task hand-off (an in-process queue here, Kafka in production) to an in-process r1-center worker \
             whose backend is {center} (production: the full R1 behind vLLM/SGLang or the DeepSeek API). Ctrl-C stops everything."
        );
        Ok(())
    })
}
