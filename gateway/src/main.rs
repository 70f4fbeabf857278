//! `r1-gateway`: serve, check a config, explain routing decisions, or run the embedded demo stack.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use r1_gateway::config::GatewayConfig;

/// r1-gateway — the OpenAI-compatible front door of r1-hybrid.
///
/// STATUS: skeleton. Today it parses its flags and validates its configuration file
/// (`--check-config` prints every problem with its key path). Serving, `explain` and the full
/// embedded `demo` stack arrive with the gateway issue; until then `demo` reports what exists
/// (ONNX Runtime, the shipped models) and exits, and `explain` refuses with a clear message.
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
    /// Read chat requests as JSON lines on stdin and print one routing decision per line (not yet implemented).
    Explain,
    /// Run the embedded stack on loopback: gateway + edge + center, in-process queue and cache.
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
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Demo { listen, admin, models }) => demo(listen, admin, &models),
        Some(Command::Explain) => {
            load(cli.config.as_deref())?;
            anyhow::bail!("`explain` is not implemented yet: the complexity scorer arrives with the gateway issue")
        }
        None => {
            let config = load(cli.config.as_deref())?;
            if cli.check_config {
                tracing::info!("configuration is valid");
                return Ok(ExitCode::SUCCESS);
            }
            tracing::warn!(
                public = %config.listen.public,
                admin = %config.listen.admin,
                "r1-gateway is a skeleton: configuration is valid, but serving is not implemented yet; exiting"
            );
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

/// The embedded stack, as far as it exists: checks the pieces the full demo is built from.
fn demo(listen: SocketAddr, admin: SocketAddr, models: &Path) -> anyhow::Result<ExitCode> {
    let runtime = r1_edge::runtime::load(&r1_edge::runtime::LibrarySearch::from_env())?;
    tracing::info!(path = %runtime.location.path.display(), source = %runtime.location.source, "ONNX Runtime ready");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(models)? {
        let dir = entry?.path();
        if dir.join("model.onnx").is_file() {
            ort::session::Session::builder(&runtime.environment)?.commit_from_file(dir.join("model.onnx"))?;
            found.push(dir.display().to_string());
        }
    }
    tracing::info!(models = ?found, "shipped models load");
    tracing::warn!(
        %listen,
        %admin,
        "the embedded stack (gateway + r1-edge + center) is not implemented yet: it arrives with the r1-edge \
         and gateway issues; nothing is served"
    );
    Ok(ExitCode::SUCCESS)
}
