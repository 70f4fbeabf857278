//! `r1-loadtest`: open-loop load generator for r1-hybrid (skeleton until its issue lands).

use clap::Parser;

/// r1-loadtest — open-loop load generator and report (latency percentiles, TTFT, per route).
///
/// STATUS: skeleton. It parses its flags and exits with an error: load generation arrives with the
/// gateway issue's benchmarks. Nothing is sent.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Gateway base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Target request rate (requests per second, open loop).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "r1-loadtest is a skeleton: it would send {} req/s for {} s to {}, but load generation is not implemented yet",
        cli.rate,
        cli.duration,
        cli.url
    )
}
