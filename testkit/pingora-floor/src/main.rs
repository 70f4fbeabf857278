//! The floor of `scripts/bench-gateway.sh --saturate`: what Pingora itself costs on the proxy path.
//!
//! Pingora's `ProxyHttp` example with one upstream and nothing else: no body read, no JSON, no
//! header rewrite, no metrics. The same `ServerConf` knobs as r1-gateway (`threads`, the upstream
//! keep-alive pool), so the difference between this and `r1-gateway` is what the gateway adds.

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// A bare Pingora reverse proxy to one HTTP/1.1 upstream (benchmarks only).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// The upstream's `host:port` (plain HTTP).
    #[arg(long)]
    upstream: String,
    /// Pingora worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Idle upstream connections kept (Pingora's `upstream_keepalive_pool_size`).
    #[arg(long, default_value_t = 128)]
    upstream_pool: usize,
}

/// Every request to the one upstream.
struct Floor {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let cli = Cli::parse();
    let conf = ServerConf {
        threads: cli.threads,
        upstream_keepalive_pool_size: cli.upstream_pool,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Floor { upstream: cli.upstream });
    proxy.add_tcp(&cli.listen);
    server.add_service(proxy);
    server.run_forever();
}
