//! The center in this process (`center.transport = "embedded"`, and `r1-gateway demo`): the in-process
//! queue, task state in memory, and r1-center's worker in front of the first center member (an
//! OpenAI-compatible server). Built only with the `embedded` feature: a production gateway reaches its
//! center through Kafka or HTTP and links none of this.
//!
//! The worker's settings come from the same conversions as r1-center's (`[node]` defaults, a `[backend]`
//! whose timeouts are the gateway's `[timeouts]`), and its metric families are in the gateway's registry.

use std::sync::Arc;
use std::time::Duration;

use pingora::server::ShutdownWatch;
use r1_center::backend::openai::{OpenAiBackend, OpenAiSettings};
use r1_center::claims::MemoryClaims;
use r1_center::config::{BackendSection, NodeSection};
use r1_center::metrics::CenterMetrics;
use r1_center::worker::{Worker, WorkerSettings};
use r1_queue::memory::MemoryQueue;
use r1_queue::reply::ResultRouter;
use r1_queue::state::{MemoryStateStore, StateStore};
use r1_queue::topics::ReplyTo;
use r1_queue::transport::TaskSink;

use crate::config::GatewayConfig;
use crate::metrics::Metrics;

/// Tasks the in-process queue holds.
const QUEUE_CAPACITY: usize = 1024;

/// The in-process center.
#[derive(Debug)]
pub struct EmbeddedCenter {
    queue: Arc<MemoryQueue>,
    states: Arc<MemoryStateStore>,
    worker: Arc<Worker>,
    backend: String,
}

impl EmbeddedCenter {
    /// The queue, its worker and the task store for `config`; results go to `router` as `reply_to`.
    pub fn new(
        config: &GatewayConfig,
        metrics: &Metrics,
        reply_to: &ReplyTo,
        router: Arc<ResultRouter>,
        telemetry: &r1_telemetry::Telemetry,
    ) -> anyhow::Result<Self> {
        // Every line of the largest batch, and a few such batches, wait for the worker.
        let queue = MemoryQueue::with_capacities(QUEUE_CAPACITY, 4 * r1_queue::state::MAX_BATCH_LINES);
        queue.attach(&reply_to.to_string(), router);
        let (backend, model, api_key) = match &config.center.backend {
            Some(api) => (
                api.base_url.clone(),
                api.model.clone().unwrap_or_else(|| config.center.model.clone()),
                api.api_key_env
                    .as_deref()
                    .and_then(|name| crate::env::Environment::var(&crate::env::ProcessEnv, name)),
            ),
            None => {
                let member = config.center.members.first().cloned().unwrap_or_default();
                (format!("http://{member}/v1"), config.center.model.clone(), None)
            }
        };
        let mut section = BackendSection::openai(backend.clone(), model);
        section.connect_timeout = config.timeouts.connect;
        section.first_token_timeout = config.timeouts.first_token;
        section.idle_timeout = config.timeouts.idle;
        let node = NodeSection {
            id: Some("embedded".to_owned()),
            max_in_flight: config.center.max_in_flight,
            // A demo stops on Ctrl-C: running tasks get a short grace.
            shutdown_grace: Duration::from_secs(5),
            ..NodeSection::default()
        };
        let center_metrics = CenterMetrics::new()?;
        center_metrics.register_in(metrics.registry())?;
        let states = Arc::new(MemoryStateStore::default());
        let worker = Worker::new(
            queue.clone(),
            queue.clone(),
            Arc::new(MemoryClaims::default()),
            Arc::new(OpenAiBackend::new(OpenAiSettings::from_section(&section, api_key))?),
            WorkerSettings::from(&node),
            center_metrics,
        )
        .with_states(states.clone())
        .with_telemetry(telemetry.clone()); // its spans are this process's
        Ok(Self {
            queue,
            states,
            worker: Arc::new(worker),
            backend,
        })
    }

    /// Where the gateway hands tasks to.
    pub fn queue(&self) -> Arc<dyn TaskSink> {
        self.queue.clone()
    }

    /// The asynchronous tasks' store.
    pub fn states(&self) -> Box<dyn StateStore> {
        Box::new(self.states.clone())
    }

    /// Runs the worker until shutdown.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        tracing::info!(backend = %self.backend, "in-process hand-off ready");
        self.worker
            .clone()
            .run(async move {
                let _ = shutdown.changed().await;
            })
            .await;
    }
}
