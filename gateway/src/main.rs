//! `r1-gateway`: serve, check a config, explain routing decisions, or run the embedded demo stack.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use r1_gateway::config::GatewayConfig;

/// The allocator, chosen by measurement (docs/BENCHMARKS.md, "The proxy path at saturation"): under
/// glibc's malloc the result cache's long-lived entries, freed and allocated among each request's
/// short-lived buffers, fragmented the heap to ~13 KiB of RSS per cached answer (10,000 entries: 157 MiB
/// against 44 MiB here), and every request cost more CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// r1-gateway — the OpenAI-compatible front door of r1-hybrid.
///
/// Serves the public OpenAI-compatible API (chat completions, stream and not, the simple
/// /v1/r1/inference API, /v1/models, asynchronous /v1/tasks and /v1/batches; on top of chat the
/// legacy /v1/completions, OpenAI's /v1/responses and Anthropic's /v1/messages; /v1/embeddings to
/// a pool that declares them) and the admin
/// listener (/metrics, /admin/pools, /admin/route/explain) from one TOML file
/// (deploy/config/gateway.toml), which reloads live on change or SIGHUP. SIGTERM drains.
///
/// Per request: JWT authentication, OpenAI's parameter checks, limits (shared through Redis,
/// local fallback), input hygiene, the result cache, then the route decision (rules, complexity
/// score, weights, sticky sessions, fail-over), only to a pool that serves what the request asks
/// (learned from members' model cards, [edge|center.capabilities] override): the edge pool over
/// HTTP, the center through the Kafka hand-off (or HTTP). `--check-config` validates a file; `explain` prints routing decisions
/// for JSON lines of chat requests with no network.
///
/// `demo` (builds with the `embedded` feature, the default) runs the whole stack on loopback:
/// gateway + r1-edge + the center in process (its backend a scripted stand-in for the R1 API, or
/// R1_CENTER_URL).
///
/// Kafka security ([center.kafka.security]): TLS (protocol = "ssl" | "sasl_ssl", ca_file, cert_file/key_file
/// for mutual TLS) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER through OIDC client
/// credentials); secrets from the environment variable or file the table names, never from the file.
/// --check-config reads the files it names; at start the brokers are asked for metadata (10 s at most)
/// and a refused login, TLS handshake or protocol stops the start with an error naming the key.
///
/// Redis ([redis]): one server or a Redis Cluster (cluster = true, cluster_nodes), TLS (rediss://,
/// tls.ca_file, tls.cert_file/key_file), an ACL user (username, password_env / password_file). At start
/// it is asked for a PING (5 s at most): a refused login or TLS handshake stops the start naming the key.
///
/// Traces ([telemetry]): off unless otlp_endpoint names an OTLP/HTTP collector; a client's W3C
/// traceparent is continued, the gateway's own goes to edge members and, in Kafka record headers, to
/// r1-center. Collector credentials: OTEL_EXPORTER_OTLP_HEADERS / OTEL_EXPORTER_OTLP_TRACES_HEADERS.
///
/// Environment: R1_JWT_SECRET (the HS256 secret, unless [auth] names another source),
/// R1_RESULTS_PARTITION (overrides center.kafka.results_partition; the StatefulSet ordinal), and the
/// variables [center.kafka.security] and [redis] name.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Configuration file (TOML); see deploy/config/gateway.toml.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration file, print every problem, and exit (non-zero if any).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read chat requests as JSON lines on stdin; print one decision {"route","score","tier","reason"}
    /// per line on stdout. No network, no running services.
    Explain,
    /// Run the embedded stack on loopback: gateway + r1-edge + the center in process, sample prompts, until Ctrl-C.
    /// The center's backend is a scripted stand-in for the external R1 API, or the API at R1_CENTER_URL
    /// (key in R1_CENTER_API_KEY, model R1_CENTER_MODEL, default deepseek-reasoner). The model servers
    /// take free ports, so demos on different --listen/--admin ports run side by side.
    #[cfg(feature = "embedded")]
    Demo {
        /// Public listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: std::net::SocketAddr,
        /// Directory holding the shipped models.
        #[arg(long, default_value = "models")]
        models: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Explain) => {
            let config = load(cli.config.as_deref())?;
            let summary = r1_gateway::explain::run(&config, std::io::stdin().lock(), std::io::stdout().lock())?;
            tracing::info!(decided = summary.decided, errors = summary.errors, "explain done");
            Ok(if summary.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        #[cfg(feature = "embedded")]
        Some(Command::Demo { listen, admin, models }) => {
            let path = cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from("deploy/config/gateway-demo.toml"));
            let mut config = GatewayConfig::load(&path)?;
            config.listen.public = listen;
            config.listen.admin = admin;
            r1_gateway::demo::run(config, path, &models)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let config = load(cli.config.as_deref())?;
            if cli.check_config {
                let problems = r1_gateway::server::preflight(&config);
                if !problems.is_empty() {
                    anyhow::bail!("{} problem(s):\n  {}", problems.len(), problems.join("\n  "));
                }
                tracing::info!("configuration is valid");
                return Ok(ExitCode::SUCCESS);
            }
            tracing::info!(public = %config.listen.public, admin = %config.listen.admin, "r1-gateway starting");
            r1_gateway::server::check_redis(&config)?;
            let (grace, drain) = (config.listen.shutdown_grace, config.listen.shutdown_drain);
            let built = r1_gateway::server::build(config, cli.config.clone(), grace, drain)?;
            r1_gateway::server::run_until_signal(built);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<GatewayConfig> {
    let Some(path) = path else {
        anyhow::bail!("--config FILE is required (deploy/config/gateway.toml is the reference)");
    };
    Ok(GatewayConfig::load(path)?)
}
