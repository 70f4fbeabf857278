//! `r1-edge --model DIR`: serve one ONNX model directory over the OpenAI chat API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use r1_edge::config::EdgeConfig;
use r1_edge::runtime::LibrarySearch;

/// r1-edge — ONNX Runtime text-generation server for r1-hybrid's edge tier.
///
/// Serves one causal LM exported by Hugging Face Optimum or onnxruntime-genai's model builder
/// (model.onnx with past key/values, tokenizer.json, config.json, tokenizer_config.json or
/// chat_template.jinja) over the OpenAI chat completions API, with
/// iteration-level dynamic batching. ONNX Runtime is loaded from ORT_DYLIB_PATH, then the cache
/// filled by scripts/fetch-onnxruntime.sh, then the system.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Model directory (overrides [model].dir of the config file).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Settings file (TOML): [model], [server], [batching], [onnxruntime].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides [server].listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Name clients send as `model` (default: the directory's name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Iteration-level dynamic batching (the Kubernetes manifests pass `--batch_size_dynamic true`).
    #[arg(long = "batch_size_dynamic", action = clap::ArgAction::Set)]
    batch_size_dynamic: Option<bool>,
    /// Largest running batch.
    #[arg(long = "max_batch_size", value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_batch_size: Option<u16>,
    /// Validate the settings and the model directory, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config: EdgeConfig = match &cli.config {
        Some(path) => r1_config::load(path)?,
        None => EdgeConfig::default(),
    };
    if let Some(dir) = cli.model {
        config.model.dir = Some(dir);
    }
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    if let Some(dynamic) = cli.batch_size_dynamic {
        config.batching.dynamic = dynamic;
    }
    if let Some(max) = cli.max_batch_size {
        config.batching.max_batch_size = max.into();
    }
    if let Some(name) = cli.served_model_name {
        config.model.served_name = Some(name);
    }
    let problems = r1_config::Validate::problems(&config);
    anyhow::ensure!(problems.is_empty(), "invalid settings:\n  {}", problems.join("\n  "));
    let dir = config
        .model
        .dir
        .clone()
        .context("no model: pass --model DIR (or [model].dir in --config)")?;
    let served_name = config.model.served_name.clone().unwrap_or_else(|| {
        dir.file_name()
            .map_or_else(|| "r1-edge".to_owned(), |n| n.to_string_lossy().into_owned())
    });

    let model = r1_edge::model::load(&LibrarySearch::from_env(), &dir, &config.onnxruntime)?;
    if cli.check {
        tracing::info!(model = %dir.display(), "settings and model are valid");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("bind {}", config.server.listen))?;
        r1_edge::server::run(listener, model, served_name, &config, shutdown_signal()).await
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
