//! r1-edge's Prometheus metrics: names and label values in one place, one registry per server.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Outcome label of `r1_edge_requests_total` (a bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Finished at EOS or a stop sequence.
    Stop,
    /// Finished at `max_tokens` or the context length.
    Length,
    /// The client went away; its slot was freed.
    Cancelled,
    /// The model failed or the server shut down mid-generation.
    Error,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }
}

/// Every metric r1-edge exports.
#[derive(Debug, Clone)]
pub struct EdgeMetrics {
    registry: Registry,
    /// Rows in each decode step.
    pub batch_size: Histogram,
    /// Requests waiting for a batch slot.
    pub queue_depth: IntGauge,
    /// Rows in the running batch.
    pub running: IntGauge,
    /// Tokens generated, all requests.
    pub generated_tokens: IntCounter,
    /// Decode throughput of the latest steps (tokens/s, smoothed).
    pub tokens_per_second: Gauge,
    /// From admission to the first generated token.
    pub time_to_first_token: Histogram,
    /// Per request: mean probability of the chosen tokens.
    pub confidence: Histogram,
    /// Finished generations by outcome.
    pub requests: IntCounterVec,
    /// Requests refused before generation, by error kind (`invalid_request`, `rate_limit`, ...).
    pub rejected: IntCounterVec,
    /// Wall time of model runs by phase (`prefill`, `decode`).
    pub step_seconds: HistogramVec,
}

impl EdgeMetrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let batch_buckets = vec![1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0];
        let latency_buckets = prometheus::exponential_buckets(0.001, 2.0, 16)?;
        let m = Self {
            batch_size: Histogram::with_opts(
                HistogramOpts::new("r1_edge_batch_size", "Rows in each decode step.").buckets(batch_buckets),
            )?,
            queue_depth: IntGauge::new("r1_edge_queue_depth", "Requests waiting for a batch slot.")?,
            running: IntGauge::new("r1_edge_running_sequences", "Rows in the running batch.")?,
            generated_tokens: IntCounter::new("r1_edge_generated_tokens_total", "Tokens generated.")?,
            tokens_per_second: Gauge::new(
                "r1_edge_tokens_per_second",
                "Decode throughput, smoothed over recent steps.",
            )?,
            time_to_first_token: Histogram::with_opts(
                HistogramOpts::new("r1_edge_time_to_first_token_seconds", "Admission to first token.")
                    .buckets(latency_buckets.clone()),
            )?,
            confidence: Histogram::with_opts(
                HistogramOpts::new(
                    "r1_edge_confidence",
                    "Per request, mean probability of the chosen tokens.",
                )
                .buckets(prometheus::linear_buckets(0.05, 0.05, 20)?),
            )?,
            requests: IntCounterVec::new(
                Opts::new("r1_edge_requests_total", "Finished generations by outcome."),
                &["outcome"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "r1_edge_rejected_requests_total",
                    "Requests refused before generation, by error kind.",
                ),
                &["kind"],
            )?,
            step_seconds: HistogramVec::new(
                HistogramOpts::new("r1_edge_step_seconds", "Wall time of model runs by phase.")
                    .buckets(latency_buckets),
                &["phase"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.batch_size.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry.register(Box::new(m.running.clone()))?;
        m.registry.register(Box::new(m.generated_tokens.clone()))?;
        m.registry.register(Box::new(m.tokens_per_second.clone()))?;
        m.registry.register(Box::new(m.time_to_first_token.clone()))?;
        m.registry.register(Box::new(m.confidence.clone()))?;
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.rejected.clone()))?;
        m.registry.register(Box::new(m.step_seconds.clone()))?;
        Ok(m)
    }

    /// Counts a finished generation.
    pub fn finished(&self, outcome: Outcome) {
        self.requests.with_label_values(&[outcome.as_str()]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own well-formed families cannot fail; an empty scrape would show it if it did.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
