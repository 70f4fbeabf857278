//! `r1-center --config FILE`: consume tasks and serve them through the configured backend.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use r1_center::backend::Backend;
use r1_center::backend::onnx::OnnxBackend;
use r1_center::backend::openai::{OpenAiBackend, OpenAiSettings};
use r1_center::claims::RedisClaims;
use r1_center::config::{BackendKind, CenterConfig};
use r1_center::metrics::CenterMetrics;
use r1_center::worker::{Worker, WorkerSettings};
use r1_queue::kafka_transport::{KafkaResultSink, KafkaTaskSource, check_brokers, ensure_topics};
use r1_queue::state::RedisStateStore;
use r1_queue::transport::{Assignment, TaskSource};

/// r1-center — a Kafka-fed worker in front of the full DeepSeek-R1 model.
///
/// Joins the consumer group on the task topics, runs each task through the backend (any
/// OpenAI-compatible server), streams result chunks back to the gateway that waits for them, and
/// commits a task's offset only once its answer is acknowledged. Redeliveries are recognised by
/// task id (Redis); a task that keeps failing goes to the dead-letter topic.
///
/// The metrics listener (node.metrics) serves /metrics, /healthz (the process is alive) and /readyz: 200
/// once the consumer group has assigned this node its task partitions ("r1-center ready" in the log), 503
/// while it is still joining and once it is stopping. Tasks produced before any node joined wait on the
/// brokers; gateways count the center as up only while the group has members.
///
/// Traces ([telemetry]): off unless otlp_endpoint names an OTLP/HTTP collector; a task's span continues
/// the gateway's (the record's traceparent header), the model server gets the backend span's, and the
/// result chunks carry the task's back. Collector credentials: OTEL_EXPORTER_OTLP_HEADERS.
///
/// SIGTERM/SIGINT: /readyz turns 503, stop taking tasks, let running ones finish within
/// node.shutdown_grace; the rest are redelivered to other nodes.
///
/// Kafka security ([kafka.security]): TLS (protocol = "ssl" | "sasl_ssl", ca_file, cert_file/key_file for
/// mutual TLS) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER through OIDC client credentials).
/// Secrets come from the environment variable or file the table names (password_env / password_file,
/// client_secret_env / client_secret_file), never from the file itself. --check-config reads the files it
/// names; at start the node asks the brokers for metadata (10 s at most) and exits with an error naming
/// the key when they refuse its login, its TLS handshake or its protocol; unreachable brokers are waited for.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Validate the configuration file and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let config = match CenterConfig::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        tracing::info!(path = %cli.config.display(), "configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: CenterConfig) -> anyhow::Result<()> {
    let worker_settings = WorkerSettings::from(&config);
    let node_id = worker_settings.node_id.clone();
    let metrics = CenterMetrics::new()?;
    r1_center::gpu::GpuMetrics::start(metrics.registry(), Duration::from_secs(5));
    let settings = config
        .kafka_settings()
        .map_err(|e| anyhow::anyhow!("{}", e.problems().join("\n  ")))?;
    let redis = config
        .redis_client()
        .map_err(|e| anyhow::anyhow!("{}", e.problems().join("\n  ")))?;
    let topics = config.topics.topics();
    let describe = |e: &r1_queue::kafka_transport::BrokerCheckError| {
        e.describe("kafka.security", &config.kafka.security, &config.kafka.brokers)
    };
    // Kafka may come up after us (or be restarting): wait for it rather than crash-looping. Brokers that
    // answer and refuse these settings are another matter: no retry fixes that, so it is a start-up error.
    let mut wait = Duration::from_millis(200);
    let source = loop {
        let check = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || check_brokers(&settings, BROKER_CHECK)).await?
        };
        match check {
            Err(e) if e.is_refusal() => anyhow::bail!("Kafka refused this node: {}", describe(&e)),
            Err(e) => {
                tracing::warn!(error = %describe(&e), retry_in = ?wait, "Kafka not ready");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                continue;
            }
            Ok(()) => {}
        }
        let attempt = async {
            ensure_topics(&settings, &topics, 12, 16)
                .await
                .context("creating the Kafka topics")?;
            let (settings, group, topics) = (settings.clone(), config.group(), topics.clone());
            tokio::task::spawn_blocking(move || KafkaTaskSource::new(&settings, &group, &topics))
                .await?
                .context("task consumer")
        };
        match attempt.await {
            Ok(source) => break source,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "Kafka not ready");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    let sink =
        KafkaResultSink::new(&settings, topics.clone(), config.node.result_timeout).context("result producer")?;
    let claims = RedisClaims::connect(&redis, config.redis_timeout())
        .await
        .context("task claims (Redis)")?;
    let states = RedisStateStore::connect(&redis, config.redis_timeout())
        .await
        .context("asynchronous task state (Redis)")?;
    let backend: Arc<dyn Backend> = match config.backend.kind {
        BackendKind::Openai => {
            let b = &config.backend;
            let api_key = match &b.api_key_env {
                Some(var) => {
                    Some(std::env::var(var).with_context(|| format!("backend.api_key_env: ${var} is not set"))?)
                }
                None => None,
            };
            Arc::new(OpenAiBackend::new(OpenAiSettings::from_section(b, api_key))?)
        }
        BackendKind::Onnx => {
            let dir = config.backend.model_dir.clone().unwrap_or_default();
            let ort = r1_edge::config::OrtSection {
                intra_threads: config.backend.intra_threads,
                ..r1_edge::config::OrtSection::default()
            };
            let batch = config.backend.max_batch_size;
            let queue = config.node.max_in_flight.max(batch);
            let backend = tokio::task::spawn_blocking(move || OnnxBackend::load(&dir, &ort, batch, queue))
                .await?
                .context("backend.model_dir")?;
            Arc::new(backend)
        }
    };
    let source = Arc::new(source);
    let telemetry = r1_telemetry::Telemetry::start(&config.telemetry, "r1-center")?;
    let stopping = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(config.node.metrics)
        .await
        .with_context(|| format!("node.metrics {}", config.node.metrics))?;
    let app = {
        let metrics = metrics.clone();
        let (ready_source, stopping) = (source.clone(), stopping.clone());
        let metrics_source = source.clone();
        axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let answer = readiness(ready_source.assignment(), stopping.load(Ordering::Relaxed));
                    async move { answer }
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let held = match metrics_source.assignment() {
                        Assignment::Holds(n) => i64::try_from(n).unwrap_or(i64::MAX),
                        Assignment::Joining | Assignment::Local => -1,
                    };
                    metrics.partitions_held.set(held);
                    let text = metrics.render();
                    async move { text }
                }),
            )
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    tokio::spawn(announce_when_assigned(source.clone(), node_id.clone()));
    let worker = Worker::new(
        source,
        Arc::new(sink),
        Arc::new(claims),
        backend,
        worker_settings,
        metrics,
    )
    .with_states(Arc::new(states))
    .with_telemetry(telemetry.clone());
    tracing::info!(
        node = %node_id,
        group = %config.group(),
        interactive = %topics.interactive,
        backend = ?config.backend.kind,
        base_url = ?config.backend.base_url,
        model_dir = ?config.backend.model_dir,
        "r1-center started; joining its consumer group"
    );
    let signal = async move {
        shutdown_signal().await;
        stopping.store(true, Ordering::Relaxed);
    };
    Arc::new(worker).run(signal).await;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?; // the last spans go out
    tracing::info!("r1-center stopped");
    Ok(())
}

/// `GET /readyz`: ready once the consumer group has given this node its share of the task partitions
/// (tasks produced before that wait on the brokers), and no longer once it is stopping.
fn readiness(assignment: Assignment, stopping: bool) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    match assignment {
        _ if stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned()),
        Assignment::Joining => (
            StatusCode::SERVICE_UNAVAILABLE,
            "joining the consumer group: no partitions assigned yet\n".to_owned(),
        ),
        Assignment::Holds(n) => (StatusCode::OK, format!("ready: {n} task partitions held\n")),
        Assignment::Local => (StatusCode::OK, "ready\n".to_owned()),
    }
}

/// Says "r1-center ready" once the group has assigned this node its partitions (and, while it has not,
/// that it is still waiting, every 10 s).
async fn announce_when_assigned(source: Arc<KafkaTaskSource>, node: String) {
    let started = std::time::Instant::now();
    let mut warned = Duration::ZERO;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        match source.assignment() {
            Assignment::Holds(n) => {
                tracing::info!(%node, partitions = n, joined_in = ?started.elapsed(), "r1-center ready");
                return;
            }
            Assignment::Joining => {
                let waited = started.elapsed();
                if waited >= warned + Duration::from_secs(10) {
                    warned = waited;
                    tracing::warn!(%node, ?waited, "still waiting for the consumer group to assign partitions");
                }
            }
            Assignment::Local => return,
        }
    }
}

/// How long the start-up check waits for the brokers' metadata.
const BROKER_CHECK: Duration = Duration::from_secs(10);

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
