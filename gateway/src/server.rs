//! Assembles the Pingora server: the public proxy, the admin listener, the pools' balancers, the
//! configuration reloader and the drain watcher.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use async_trait::async_trait;
use pingora::lb::LoadBalancer;
use pingora::lb::selection::RoundRobin;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{BackgroundService, GenBackgroundService, background_service};
use pingora::services::listening::Service;
use r1_proto::Route;

use crate::admin::AdminApp;
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::pools::Pool;
use crate::proxy::GatewayProxy;
use crate::state::Gateway;
use crate::tls::CertStore;

/// A built gateway, ready to run.
pub struct Built {
    /// The Pingora server with every service added.
    pub server: Server,
    /// The shared state (for tests and embedding).
    pub gateway: Arc<Gateway>,
    /// After SIGTERM: listeners open with readiness false, then requests in flight get `drain`.
    pub grace: Duration,
    /// See `grace`.
    pub drain: Duration,
}

/// What `config` would refuse at start that validation does not look at (it reads no files): the
/// public listener's certificate files, and the files the Kafka security table names (CA, client
/// certificate and key, secrets). One `key.path: problem` line each.
pub fn preflight(config: &GatewayConfig) -> Vec<String> {
    let mut problems = config
        .listen
        .tls
        .as_ref()
        .map(crate::tls::file_problems)
        .unwrap_or_default();
    if config.center.transport == crate::config::CenterTransport::Kafka
        && let Some(k) = &config.center.kafka
    {
        problems.extend(k.security.file_problems(crate::config::SECURITY_KEY));
    }
    if let Some(r) = &config.redis {
        problems.extend(r.file_problems(crate::config::REDIS_KEY));
    }
    problems
}

/// How long the start-up check waits for Redis to answer.
pub const REDIS_CHECK: Duration = Duration::from_secs(5);

/// Asks `[redis]` for a `PING` (at most [`REDIS_CHECK`]) before serving: a Redis that refuses the login
/// or the TLS handshake is a start-up error naming the key to fix; one that is only unreachable is
/// logged (the cache misses, the limits count locally and tasks get 503 until it answers). Runs its own
/// runtime: call it before [`build`], outside any runtime.
pub fn check_redis(config: &GatewayConfig) -> anyhow::Result<()> {
    let Some(redis) = config
        .redis_client(&crate::env::ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{}", e.problems().join("\n  ")))?
    else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match runtime.block_on(redis.check(REDIS_CHECK)) {
        Ok(()) => Ok(()),
        Err(r1_queue::redis_conn::RedisCheckError::Refused(e)) => anyhow::bail!("Redis refused this gateway: {e}"),
        Err(e) => {
            tracing::warn!(error = %e, "Redis not reachable at start; cache, limits and tasks use it once it answers");
            Ok(())
        }
    }
}

/// Builds the gateway for `config` (re-read from `path` on reload, if given). After SIGTERM the listeners
/// stay open for `grace` while readiness is false, then requests in flight get `drain` to finish
/// (`listen.shutdown_grace` / `listen.shutdown_drain` for the production binary).
pub fn build(config: GatewayConfig, path: Option<PathBuf>, grace: Duration, drain: Duration) -> anyhow::Result<Built> {
    let conf = ServerConf {
        threads: config
            .listen
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)),
        upstream_keepalive_pool_size: config.listen.upstream_pool,
        // Pingora's grace sleeps whether or not anything is in flight, and its runtime shutdown cancels
        // every request still running: `run_until_signal` drains before handing over instead.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let (edge, edge_service) = pool(Route::Edge, config.pool(Route::Edge));
    let (center, center_service) = pool(Route::Center, config.pool(Route::Center));

    let (public, admin, tls) = (config.listen.public, config.listen.admin, config.listen.tls.clone());
    let metrics = Metrics::new()?;
    let verifier = config.auth.verifier().context("[auth]")?;
    let redis = config
        .redis_client(&crate::env::ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{}", e.problems().join("\n  ")))?;
    let telemetry = r1_telemetry::Telemetry::start(&config.telemetry, "r1-gateway")?;
    let handoff = crate::handoff::Handoff::new(&config, redis.as_ref(), &metrics, &telemetry)?;
    let limiter = crate::limits::Limiter::new(config.limits.clone(), redis.clone());
    let hygiene = crate::hygiene::Hygiene::new(&config.hygiene).context("[hygiene]")?;
    let gateway = Arc::new(
        Gateway::new(
            config,
            path,
            edge,
            center,
            metrics,
            handoff.clone(),
            crate::state::Policy {
                verifier,
                limiter,
                hygiene,
                redis,
            },
        )
        .with_telemetry(telemetry),
    );
    if let Some(handoff) = handoff {
        server.add_service(background_service(
            "task hand-off",
            crate::handoff::HandoffService {
                handoff,
                config: gateway.subscribe(),
            },
        ));
    }

    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, GatewayProxy::new(gateway.clone()));
    match &tls {
        Some(section) => {
            let store = CertStore::load(&section.cert, &section.key).context("listen.tls")?;
            proxy.add_tls_with_settings(&public.to_string(), None, crate::tls::settings(section, store.clone())?);
            server.add_service(background_service(
                "certificate reload",
                CertReloader(store, gateway.clone()),
            ));
        }
        None => proxy.add_tcp(&public.to_string()),
    }
    let mut admin_service = Service::new("admin".to_owned(), AdminApp::new(gateway.clone()));
    admin_service.add_tcp(&admin.to_string());

    server.add_service(proxy);
    server.add_service(admin_service);
    server.add_service(edge_service);
    server.add_service(center_service);
    server.add_service(background_service("config reload", Reloader(gateway.clone())));
    server.add_service(background_service("drain watch", DrainWatch(gateway.clone())));
    Ok(Built {
        server,
        gateway,
        grace,
        drain,
    })
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// A pool and the background service that runs its balancer (discovery and health checks).
fn pool(
    route: Route,
    settings: crate::config::PoolSettings<'_>,
) -> (Arc<Pool>, GenBackgroundService<LoadBalancer<RoundRobin>>) {
    let (membership, balancer) = Pool::balancer(route, settings);
    let service = background_service(&format!("{} pool", route.as_str()), balancer);
    let pool = Pool::new(
        route,
        membership,
        service.task(),
        settings.max_in_flight,
        settings.health.unhealthy_threshold,
    );
    (pool, service)
}

/// Runs until SIGTERM (graceful: readiness false, the listeners open for `grace`, then requests in flight
/// get up to `drain` to finish while new ones are refused) or SIGINT (fast: everything is cut).
pub fn run_until_signal(built: Built) {
    let signal = DrainSignal {
        gateway: built.gateway.clone(),
        grace: built.grace,
        drain: built.drain,
    };
    let telemetry = built.gateway.telemetry.clone();
    built.server.run(RunArgs {
        shutdown_signal: Box::new(signal),
    });
    telemetry.shutdown(); // the last spans go out before the process ends
}

/// The shutdown signal of the production binary. Pingora's own graceful terminate sleeps its grace
/// whatever is in flight and then drops every task still running (a stream is cut mid-answer), so the
/// drain happens here, before Pingora is told to stop: SIGTERM → readiness false at once; `grace` with
/// the listeners serving as before (load balancers take the replica out); then new API requests are
/// refused (503, connection closed) until the requests in flight have finished or `drain` is over.
struct DrainSignal {
    gateway: Arc<Gateway>,
    grace: Duration,
    drain: Duration,
}

async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainSignal {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &str| {
            signal(kind)
                .map_err(|e| tracing::error!(error = %e, signal = name, "cannot listen for the signal"))
                .ok()
        };
        let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
        let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
        tokio::select! {
            _ = next(&mut interrupt) => return ShutdownSignal::FastShutdown,
            _ = next(&mut terminate) => {}
        }
        self.gateway.drain();
        tracing::info!(grace = ?self.grace, "SIGTERM: readiness is false; serving on for the grace period");
        tokio::select! {
            _ = next(&mut interrupt) => return ShutdownSignal::FastShutdown,
            _ = tokio::time::sleep(self.grace) => {}
        }
        self.gateway.close();
        let deadline = tokio::time::Instant::now() + self.drain;
        loop {
            let open = self.gateway.limiter.stats().in_flight;
            if open == 0 {
                tracing::info!("drained: no request in flight; stopping");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(open, drain = ?self.drain, "drain time is over; cutting the requests still in flight");
                break;
            }
            tokio::select! {
                _ = next(&mut interrupt) => return ShutdownSignal::FastShutdown,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Sets readiness to false as soon as shutdown starts.
struct DrainWatch(Arc<Gateway>);

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        self.0.drain();
        tracing::info!("shutdown started: readiness is false, draining");
    }
}

/// Reloads the configuration on SIGHUP and when the file changes (checked every second).
struct Reloader(Arc<Gateway>);

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(path) = self.0.config_path().map(ToOwned::to_owned) else {
            return;
        };
        let mut last = modified(&path);
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reloads happen on file change only");
                None
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let sighup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = sighup => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = self.0.reload();
                    last = modified(&path);
                }
                _ = tick.tick() => {
                    if let Some(verifier) = self.0.verifier() {
                        match verifier.reload_if_changed() {
                            Ok(true) => tracing::info!("JWKS file reloaded"),
                            Ok(false) => {}
                            Err(e) => {
                                self.0.metrics.reload_failures.inc();
                                tracing::error!(error = %e, "JWKS reload refused; the old keys stay");
                            }
                        }
                    }
                    let now = modified(&path);
                    if now != last {
                        last = now;
                        let _ = self.0.reload();
                    }
                }
            }
        }
    }
}

/// Re-reads the public certificate when its files change (checked every 5 s).
struct CertReloader(Arc<CertStore>, Arc<Gateway>);

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => match self.0.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!("TLS certificate reloaded");
                        self.1.metrics.tls_reloads.with_label_values(&["applied"]).inc();
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "TLS certificate reload refused; the old one stays");
                        self.1.metrics.tls_reloads.with_label_values(&["refused"]).inc();
                    }
                },
            }
        }
    }
}
