//! `r1-mock-upstream`: the scripted OpenAI-compatible upstream as a process, for scripts and benchmarks.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use r1_mock_upstream::Script;

/// r1-mock-upstream — a scripted stand-in for an OpenAI-compatible big-model API.
///
/// Serves POST /v1/chat/completions (JSON, or SSE with stream: true; honours
/// stream_options.include_usage), GET /v1/models, GET /healthz|/readyz|/health and GET /stats
/// (request counters as JSON). Every answer is `--reasoning` reasoning_content chunks, then
/// `--chunks` content chunks of `--text`, one token each; a request's max_tokens cuts it short.
/// SIGTERM or Ctrl-C stops accepting and lets answers in progress finish.
///
///   r1-mock-upstream --listen 127.0.0.1:9000 --chunks 1 --text ok
///   r1-mock-upstream --listen 127.0.0.1:9000 --reasoning 20 --chunks 50 --first-delay 500ms --chunk-delay 20ms
///   r1-mock-upstream --listen 127.0.0.1:9000 --fail-first 10 --fail-status 429
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Address to listen on (port 0: any free port, logged at start).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Content chunks (tokens) per answer.
    #[arg(long, default_value_t = 3)]
    chunks: u32,
    /// Text of each content chunk.
    #[arg(long, default_value = "ok ")]
    text: String,
    /// reasoning_content chunks before the content (DeepSeek R1 style).
    #[arg(long, default_value_t = 0)]
    reasoning: u32,
    /// Text of each reasoning chunk.
    #[arg(long, default_value = "hmm ")]
    reasoning_text: String,
    /// Delay before the first token: 0ms, 250ms, 2s.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    first_delay: Duration,
    /// Delay between tokens.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    chunk_delay: Duration,
    /// The model GET /v1/models lists (answers name the model the request asked for).
    #[arg(long, default_value = "deepseek-reasoner")]
    model: String,
    /// Answer the first N chat requests with --fail-status.
    #[arg(long, default_value_t = 0)]
    fail_first: u64,
    /// Status of those failures (500, 429, 503, …).
    #[arg(long, default_value_t = 500)]
    fail_status: u16,
    /// Abort every answer's connection after K tokens.
    #[arg(long)]
    drop_after: Option<u32>,
    /// Answer at most N requests at once; the others wait.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

impl Cli {
    fn script(&self) -> Script {
        let mut script = Script::default()
            .content(self.chunks, self.text.as_str())
            .reasoning(self.reasoning, self.reasoning_text.as_str())
            .delays(self.first_delay, self.chunk_delay)
            .model(self.model.as_str());
        if self.fail_first > 0 {
            script = script.fail_first(self.fail_first, self.fail_status);
        }
        if let Some(tokens) = self.drop_after {
            script = script.drop_after(tokens);
        }
        if let Some(limit) = self.concurrency {
            script = script.concurrency(limit);
        }
        script
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `100us`, or plain milliseconds.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 0ms, 250ms or 2s"))?;
    let seconds = match unit {
        "" | "ms" => value / 1e3,
        "us" => value / 1e6,
        "s" => value,
        other => bail!("`{text}`: unknown unit `{other}` (use us, ms or s)"),
    };
    Duration::try_from_secs_f64(seconds).with_context(|| format!("`{text}` is out of range"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.enable_all().build()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("binding {}", cli.listen))?;
        let script = cli.script();
        tracing::info!(addr = %listener.local_addr()?, ?script, "r1-mock-upstream listening");
        r1_mock_upstream::run(listener, script, signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0ms").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("40").unwrap(), Duration::from_millis(40));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        for bad in ["", "ms", "1h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
