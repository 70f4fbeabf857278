//! r1-center's metric families (prefix `r1_center_`), served on the node's metrics listener.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric of a center node.
#[derive(Debug, Clone)]
pub struct CenterMetrics {
    registry: Registry,
    /// Tasks running now.
    pub in_flight: IntGauge,
    /// Tasks finished, by outcome (`ok`, `error`, `cancelled`, `expired`, `dead_lettered`).
    pub tasks: IntCounterVec,
    /// Runs of a task after the first (redeliveries and retries).
    pub redeliveries: IntCounter,
    /// Deliveries of a task already answered (dropped, not run).
    pub duplicates: IntCounter,
    /// Tasks moved to the dead-letter topic.
    pub dead_lettered: IntCounter,
    /// From taking a task to its first token.
    pub time_to_first_token: Histogram,
    /// Completion tokens generated (reasoning included), from the backend's usage.
    pub generated_tokens: IntCounter,
    /// Task claim store failures.
    pub claim_errors: IntCounter,
    /// Webhooks not called: not http(s), or not a public address (`node.webhook_private_networks`).
    pub webhooks_refused: IntCounter,
    /// Tasks waiting on the brokers for this node's partitions (high watermark - committed).
    pub queue_lag: IntGauge,
    /// Task partitions the consumer group has given this node (-1 until it first joined), as of the scrape.
    pub partitions_held: IntGauge,
}

impl CenterMetrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let m = Self {
            registry: Registry::new(),
            in_flight: IntGauge::new("r1_center_in_flight", "Tasks running now.")?,
            tasks: IntCounterVec::new(
                Opts::new("r1_center_tasks_total", "Tasks finished by outcome."),
                &["outcome"],
            )?,
            redeliveries: IntCounter::new("r1_center_redeliveries_total", "Runs of a task after its first.")?,
            duplicates: IntCounter::new(
                "r1_center_duplicates_suppressed_total",
                "Deliveries of tasks already answered, not run again.",
            )?,
            dead_lettered: IntCounter::new("r1_center_dead_lettered_total", "Tasks moved to the dead-letter topic.")?,
            time_to_first_token: Histogram::with_opts(
                HistogramOpts::new("r1_center_time_to_first_token_seconds", "Task taken to first token.")
                    .buckets(prometheus::exponential_buckets(0.005, 2.0, 16)?),
            )?,
            generated_tokens: IntCounter::new("r1_center_generated_tokens_total", "Completion tokens generated.")?,
            claim_errors: IntCounter::new("r1_center_claim_errors_total", "Task claim store failures.")?,
            webhooks_refused: IntCounter::new(
                "r1_center_webhooks_refused_total",
                "Webhooks not called: not http(s), or not a public address.",
            )?,
            queue_lag: IntGauge::new(
                "r1_center_queue_lag",
                "Tasks waiting on the brokers for this node's partitions.",
            )?,
            partitions_held: IntGauge::new(
                "r1_center_partitions_held",
                "Task partitions the consumer group has given this node (-1 until it joined).",
            )?,
        };
        m.register_in(&m.registry)?;
        Ok(m)
    }

    /// Registers every family in `registry` too (an embedding process's own registry), so one scrape
    /// shows them.
    pub fn register_in(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.in_flight.clone()))?;
        registry.register(Box::new(self.tasks.clone()))?;
        registry.register(Box::new(self.redeliveries.clone()))?;
        registry.register(Box::new(self.duplicates.clone()))?;
        registry.register(Box::new(self.dead_lettered.clone()))?;
        registry.register(Box::new(self.time_to_first_token.clone()))?;
        registry.register(Box::new(self.generated_tokens.clone()))?;
        registry.register(Box::new(self.claim_errors.clone()))?;
        registry.register(Box::new(self.webhooks_refused.clone()))?;
        registry.register(Box::new(self.queue_lag.clone()))?;
        registry.register(Box::new(self.partitions_held.clone()))?;
        Ok(())
    }

    /// The registry (to add more families, e.g. GPU utilisation).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
