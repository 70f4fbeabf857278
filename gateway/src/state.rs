//! What every request and the admin API share: the live configuration, the router, the pools and the
//! metrics — and the one place a configuration reload is applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use r1_proto::Route;
use tokio::sync::watch;

use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::pools::Pool;
use crate::route::{Pools, Router};

/// Shared gateway state.
#[derive(Debug)]
pub struct Gateway {
    config: ArcSwap<GatewayConfig>,
    /// Every applied configuration, for background services that follow reloads.
    config_watch: watch::Sender<Arc<GatewayConfig>>,
    config_path: Option<PathBuf>,
    /// Route decisions.
    pub router: Router,
    /// The edge pool.
    pub edge: Arc<Pool>,
    /// The center pool.
    pub center: Arc<Pool>,
    /// Metrics.
    pub metrics: Metrics,
    ready: AtomicBool,
    /// Past the shutdown grace: new API requests are refused while the ones in flight finish.
    closing: AtomicBool,
    handoff: Option<Arc<crate::handoff::Handoff>>,
    verifier: arc_swap::ArcSwapOption<crate::auth::Verifier>,
    /// Limits (shared through Redis when `[redis]` is configured).
    pub limiter: crate::limits::Limiter,
    /// The Redis of `[redis]` (credentials read at start), for the result cache.
    redis: Option<r1_queue::redis_conn::RedisClient>,
    /// The result cache, made on first use (its Redis connection belongs to a serving runtime).
    cache: std::sync::OnceLock<Option<crate::cache::Cache>>,
    hygiene: ArcSwap<crate::hygiene::Hygiene>,
    /// Where request spans go (`[telemetry]`; off: nothing is recorded).
    pub telemetry: r1_telemetry::Telemetry,
}

/// Who may call, how much, and what may reach a model: built from `[auth]`, `[limits]`, `[hygiene]`.
#[derive(Debug)]
pub struct Policy {
    /// The token verifier (`None`: authentication off).
    pub verifier: Option<crate::auth::Verifier>,
    /// The limits.
    pub limiter: crate::limits::Limiter,
    /// The input checks.
    pub hygiene: crate::hygiene::Hygiene,
    /// The Redis of `[redis]`, which the limits count in and the result cache and task state live in.
    pub redis: Option<r1_queue::redis_conn::RedisClient>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error(transparent)]
    Invalid(#[from] r1_config::ConfigError),
    /// The new file changes something that needs a restart.
    #[error("{0} cannot change without a restart")]
    NeedsRestart(&'static str),
    /// The gateway was started without a configuration file.
    #[error("no configuration file to reload")]
    NoFile,
    /// The new `[auth]` cannot be set up (a secret or the JWKS file is unreadable).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthSetupError),
    /// Another part of the new file cannot be set up.
    #[error("{0}")]
    Other(String),
}

impl Gateway {
    /// State for `config` (read from `config_path`, if any, for later reloads).
    pub fn new(
        config: GatewayConfig,
        config_path: Option<PathBuf>,
        edge: Arc<Pool>,
        center: Arc<Pool>,
        metrics: Metrics,
        handoff: Option<Arc<crate::handoff::Handoff>>,
        policy: Policy,
    ) -> Self {
        let Policy {
            verifier,
            limiter,
            hygiene,
            redis,
        } = policy;
        let config = Arc::new(config);
        match crate::metrics::LimiterCollector::new(limiter.clone()) {
            Ok(collector) => {
                if let Err(e) = metrics.registry().register(Box::new(collector)) {
                    tracing::warn!(error = %e, "limit metrics not registered");
                }
            }
            Err(e) => tracing::warn!(error = %e, "limit metrics not registered"),
        }
        Self {
            limiter,
            redis,
            cache: std::sync::OnceLock::new(),
            hygiene: ArcSwap::from_pointee(hygiene),
            verifier: arc_swap::ArcSwapOption::from(verifier.map(Arc::new)),
            handoff,
            router: Router::new(&config),
            config: ArcSwap::new(config.clone()),
            config_watch: watch::Sender::new(config),
            config_path,
            edge,
            center,
            metrics,
            ready: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            telemetry: r1_telemetry::Telemetry::off(),
        }
    }

    /// With requests traced (`[telemetry]`).
    #[must_use]
    pub fn with_telemetry(mut self, telemetry: r1_telemetry::Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The file the configuration is reloaded from, if any.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// The configuration as it is reloaded (for background services).
    pub fn subscribe(&self) -> watch::Receiver<Arc<GatewayConfig>> {
        self.config_watch.subscribe()
    }

    /// The configuration now (cheap: an `Arc`).
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.config.load_full()
    }

    /// The pool for `route`.
    pub fn pool(&self, route: Route) -> &Arc<Pool> {
        match route {
            Route::Edge => &self.edge,
            _ => &self.center,
        }
    }

    /// Both pools' health and capacity. With the hand-off, the center is healthy while tasks can be
    /// handed over and r1-center nodes hold the task partitions (embedded: while its backend member is),
    /// and saturated at `center.max_in_flight` waiting requests.
    pub fn pool_states(&self) -> Pools {
        let center = match &self.handoff {
            None => self.center.state(),
            Some(handoff) => {
                // In process, the backend is the center pool's member (unless it is an API by URL); its
                // card says what it serves, else `[center.capabilities]` alone.
                let pool = self.center.state();
                let members = handoff.is_embedded() && pool.configured;
                crate::route::PoolState {
                    healthy: handoff.is_ready() && handoff.has_consumers() && (!members || pool.healthy),
                    saturated: handoff.in_flight() >= self.config().center.max_in_flight,
                    serves: pool.serves,
                    configured: true,
                }
            }
        };
        Pools {
            edge: self.edge.state(),
            center,
        }
    }

    /// The result cache (`None` if it could not be set up: requests then simply are not cached).
    pub fn cache(&self) -> Option<&crate::cache::Cache> {
        self.cache
            .get_or_init(|| {
                let config = self.config();
                match crate::cache::Cache::from_config(&config.cache, self.redis.as_ref()) {
                    Ok(cache) => {
                        if let Err(e) = cache.metrics().register(self.metrics.registry()) {
                            tracing::warn!(error = %e, "cache metrics not registered");
                        }
                        Some(cache)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the result cache cannot start; answering without it");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The input checks in force.
    pub fn hygiene(&self) -> Arc<crate::hygiene::Hygiene> {
        self.hygiene.load_full()
    }

    /// The token verifier; `None` when authentication is off.
    pub fn verifier(&self) -> Option<Arc<crate::auth::Verifier>> {
        self.verifier.load_full()
    }

    /// The task hand-off, when the center is reached through one.
    pub fn handoff(&self) -> Option<&Arc<crate::handoff::Handoff>> {
        self.handoff.as_ref()
    }

    /// Whether the gateway takes traffic (false while draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Marks the gateway as draining: `/readyz` answers 503 from now on.
    pub fn drain(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// The shutdown grace is over: new API requests are refused (503, connection closed) while the
    /// ones in flight finish.
    pub fn close(&self) {
        self.drain();
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Whether new API requests are refused because the gateway is shutting down.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Re-reads the configuration file; applies it if valid, keeps the old one otherwise. Requests in
    /// flight keep the configuration they started with.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload();
        match &result {
            Ok(()) => {
                self.metrics.reloads.inc();
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                self.metrics.reload_failures.inc();
                tracing::error!(error = %e, "configuration reload refused; the previous configuration stays");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let new = GatewayConfig::load(path)?;
        self.apply(new)
    }

    /// Applies an already-validated configuration (what a reload does after reading the file).
    pub fn apply(&self, new: GatewayConfig) -> Result<(), ReloadError> {
        let old = self.config();
        if new.listen != old.listen {
            return Err(ReloadError::NeedsRestart("listen"));
        }
        if new.center.transport != old.center.transport || new.center.kafka != old.center.kafka {
            return Err(ReloadError::NeedsRestart("center.transport and center.kafka"));
        }
        if new.edge.tls != old.edge.tls || new.center.tls != old.center.tls {
            return Err(ReloadError::NeedsRestart("edge.tls and center.tls"));
        }
        if new.redis != old.redis {
            return Err(ReloadError::NeedsRestart("redis"));
        }
        if new.telemetry != old.telemetry {
            return Err(ReloadError::NeedsRestart("telemetry"));
        }
        let hygiene = crate::hygiene::Hygiene::new(&new.hygiene).map_err(|e| ReloadError::Other(e.to_string()))?;
        if new.auth != old.auth {
            // New secrets, keys or rules: built before anything changes, so a broken one is refused.
            let verifier = new.auth.verifier()?;
            self.verifier.store(verifier.map(Arc::new));
        }
        self.hygiene.store(Arc::new(hygiene));
        if let Some(Some(cache)) = self.cache.get() {
            cache.reconfigure(&new.cache);
        }
        self.limiter.reconfigure(new.limits.clone());
        self.edge.reconfigure(new.pool(Route::Edge));
        self.center.reconfigure(new.pool(Route::Center));
        let new = Arc::new(new);
        self.config.store(new.clone());
        self.config_watch.send_replace(new);
        Ok(())
    }
}
