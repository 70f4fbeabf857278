//! `r1-gateway`: serve, check a config, explain routing decisions, or run the embedded demo stack.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use r1_gateway::config::GatewayConfig;

/// r1-gateway — the OpenAI-compatible front door of r1-hybrid.
///
/// Serves the public OpenAI-compatible API and the admin listener from one TOML file
/// (deploy/config/gateway.toml), which reloads live on change or SIGHUP. SIGTERM drains.
/// `--check-config` validates a file; `explain` prints routing decisions for JSON lines of chat
/// requests with no network.
///
/// `demo` runs the embedded stack on loopback (gateway + r1-edge + a local center).
///
/// STATUS: the center is reached over plain HTTP (the Kafka hand-off arrives with its issue);
/// authentication, limits and the cache arrive with the guard issue.
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
    /// Run the embedded stack on loopback: gateway + r1-edge + a local "center", sample prompts, until Ctrl-C.
    Demo {
        /// Public listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
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
                tracing::info!("configuration is valid");
                return Ok(ExitCode::SUCCESS);
            }
            tracing::info!(public = %config.listen.public, admin = %config.listen.admin, "r1-gateway starting");
            let built = r1_gateway::server::build(
                config,
                cli.config.clone(),
                r1_gateway::server::DEFAULT_GRACE,
                r1_gateway::server::DEFAULT_DRAIN,
            )?;
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
