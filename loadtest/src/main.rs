//! `r1-loadtest`: parses the CLI, runs the open-loop load test, prints the report.

// Printing the report to stdout is this binary's job.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use r1_loadtest::config::{parse_duration, parse_header};
use r1_loadtest::{Config, prompts};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// r1-loadtest — open-loop load generator for an OpenAI-compatible chat endpoint.
///
/// Requests leave on a fixed schedule at --rate whatever the server does, and latency is measured
/// from each request's scheduled send time (no coordinated omission). The report splits results by
/// the `x-r1-route` response header (edge / center / cache; `none` when absent).
///
/// Example, against `r1-gateway demo` (public listener on 127.0.0.1:8080):
///
///   r1-loadtest --url http://127.0.0.1:8080 --rate 20 --duration 30s --max-tokens 16
///   r1-loadtest --rate 50 --requests 1000 --stream --json > report.json
///   r1-loadtest --prompts prompts.jsonl --header 'authorization: Bearer demo' --fail-on-error
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Gateway base URL; requests go to {url}/v1/chat/completions.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Target rate, requests per second (open loop; fractions allowed).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to send after the warm-up: 10s, 2m, 500ms or plain seconds.
    /// Default 30s unless --requests is given; with both, whichever comes first.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many requests (after the warm-up).
    #[arg(long)]
    requests: Option<u64>,
    /// Most requests out at once; a scheduled request beyond this is dropped and counted, never queued.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// JSONL file, one chat request per line: a full OpenAI request or just {"messages": [...]}.
    /// Sent round-robin. Default: built-in prompts, simple and complex.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Model for prompts that name none.
    #[arg(long, default_value = "deepseek-r1")]
    model: String,
    /// Override max_tokens in every request.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Send stream: true, measure time to first token (first SSE data event with content) and count
    /// how streams end ([DONE], in-band error event, both, neither).
    #[arg(long)]
    stream: bool,
    /// Extra request header as 'name: value'; repeatable (e.g. 'authorization: Bearer KEY').
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Per-request timeout, from the send to the end of the response.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// Send at the same rate for this long before measuring.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 if any measured request failed or was dropped.
    #[arg(long)]
    fail_on_error: bool,
    /// Write one JSON line per measured request to this file (schedule order): its scheduled send
    /// time (ms from the start and Unix ms), route, reason, status, how a stream ended, error, times.
    #[arg(long, value_name = "FILE")]
    request_log: Option<PathBuf>,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<Config> {
        let prompts = match &self.prompts {
            Some(path) => prompts::load(path)?,
            None => prompts::builtin(),
        };
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(30)),
            (duration, _) => duration,
        };
        Ok(Config {
            url: self.url,
            rate: self.rate,
            duration,
            requests: self.requests,
            warmup: self.warmup,
            max_in_flight: self.max_in_flight,
            prompts,
            model: self.model,
            max_tokens: self.max_tokens,
            stream: self.stream,
            headers: self.headers.into_iter().collect::<HeaderMap>(),
            timeout: self.timeout,
            request_log: self.request_log,
        })
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let (json, fail_on_error) = (cli.json, cli.fail_on_error);
    let config = cli.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(r1_loadtest::run(&config))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(if fail_on_error && report.has_failures() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
