//! `r1-edge`: serve one ONNX model directory (skeleton until the r1-edge issue lands).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use r1_edge::runtime::{self, LibrarySearch};

/// r1-edge — ONNX Runtime text-generation server for r1-hybrid's edge tier.
///
/// STATUS: skeleton. Today it parses its flags, loads ONNX Runtime (search order: ORT_DYLIB_PATH,
/// then the cache filled by scripts/fetch-onnxruntime.sh, then the system), checks the model
/// directory and exits. It does not serve requests yet: the generation engine, dynamic batching and
/// the OpenAI-compatible HTTP server arrive with the r1-edge issue.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Model directory in Hugging Face Optimum's layout (model.onnx, tokenizer.json, config.json, ...).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Iteration-level dynamic batching (the Kubernetes manifests pass `--batch_size_dynamic true`).
    #[arg(long = "batch_size_dynamic", default_value_t = true, action = clap::ArgAction::Set)]
    batch_size_dynamic: bool,
    /// Largest running batch.
    #[arg(long = "max_batch_size", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_batch_size: u16,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(env_filter()).init();
    let cli = Cli::parse();

    let runtime = match runtime::load(&LibrarySearch::from_env()) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let model = cli.model.join("model.onnx");
    if !model.is_file() {
        tracing::error!(path = %model.display(), "model directory has no model.onnx");
        return ExitCode::FAILURE;
    }
    tracing::warn!(
        onnxruntime = %runtime.location.path.display(),
        model = %cli.model.display(),
        listen = %cli.listen,
        batch_size_dynamic = cli.batch_size_dynamic,
        max_batch_size = cli.max_batch_size,
        "r1-edge is a skeleton: configuration is valid, but serving is not implemented yet; exiting"
    );
    ExitCode::SUCCESS
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())
}
