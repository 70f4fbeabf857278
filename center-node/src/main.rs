//! `r1-center --config FILE`: consume tasks and serve them (skeleton until the Kafka hand-off issue lands).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use r1_center::config::CenterConfig;

/// r1-center — Kafka-fed worker in front of the full DeepSeek-R1 model.
///
/// STATUS: skeleton. Today it parses and validates its configuration file (every problem is
/// printed with its key path) and exits. Consuming tasks, the `openai`/`onnx` backends, dedupe and
/// result streaming arrive with the Kafka hand-off issue.
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
    tracing::warn!(
        brokers = %config.kafka.brokers,
        group = %config.kafka.group,
        "r1-center is a skeleton: configuration is valid, but consuming tasks is not implemented yet; exiting"
    );
    ExitCode::SUCCESS
}
