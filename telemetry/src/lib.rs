//! r1-hybrid's traces: OpenTelemetry spans, exported over OTLP/HTTP (protobuf) to a collector, off by
//! default. One trace follows a request from the client through the gateway, the task queue and a center
//! node back to the client: the W3C `traceparent` a client sends is honoured (its sampling decision too),
//! and the gateway passes its own on — to an edge member in the HTTP request, to r1-center in the Kafka
//! record's headers, and r1-center sends its own back on the result chunks.
//!
//! Off ([`Telemetry::off`], no `[telemetry] otlp_endpoint`), nothing is built and nothing is recorded:
//! a request's trace is an `Option` that stays `None`. On, spans are recorded with the times the caller
//! gives (so a phase can be written down when it is over) and exported in batches from one background
//! thread; a collector that is down costs dropped spans, never a request.
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://otel-collector:4318"   # spans are POSTed to <endpoint>/v1/traces
//! service_name = "r1-gateway"                    # default: the binary's name
//! sample_ratio = 0.1                             # of requests that arrive without a sampled parent
//! ```
//!
//! Collector credentials (Honeycomb, Grafana Cloud, …) come from the standard environment variables
//! `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`), never the
//! config file.

pub mod traceparent;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue as Kv};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use serde::Deserialize;

pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::SpanKind;
pub use traceparent::TraceParent;

/// `[telemetry]`: where spans go, if anywhere (the same table in r1-gateway's and r1-center's configs).
/// Needs a restart to change.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// The collector's OTLP/HTTP endpoint (`http://otel-collector:4318`); spans are POSTed, as protobuf,
    /// to `<endpoint>/v1/traces` (or to the endpoint itself when it already ends so). Absent: no tracing.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of this process's spans (default: the binary's name).
    #[serde(default)]
    pub service_name: Option<String>,
    /// The share of traces started here that are recorded (0.0–1.0, default 1.0): for requests that
    /// arrive without a `traceparent`. A caller's own decision (its `sampled` flag) is always followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// How often finished spans are sent (default 1 s).
    #[serde(default = "default_export_interval", with = "humantime_serde")]
    pub export_interval: Duration,
    /// How long one export may take (default 10 s).
    #[serde(default = "default_export_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Finished spans held for export at most (default 8192); beyond that — the collector down or slow —
    /// new spans are dropped (and the drop logged), requests are never held up.
    #[serde(default = "default_max_queued_spans")]
    pub max_queued_spans: usize,
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_export_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_queued_spans() -> usize {
    8192
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: default_sample_ratio(),
            export_interval: default_export_interval(),
            export_timeout: default_export_timeout(),
            max_queued_spans: default_max_queued_spans(),
        }
    }
}

impl TelemetrySection {
    /// One `<prefix>.key: what is wrong` line per problem (`prefix` is the table's path, `telemetry`).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint {
            let host = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            match host {
                None => problems.push(format!(
                    "{prefix}.otlp_endpoint: `{endpoint}` must be an http:// or https:// URL (OTLP over HTTP)"
                )),
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    problems.push(format!("{prefix}.otlp_endpoint: `{endpoint}` names no host"));
                }
                Some(rest) if rest.contains(['?', '#', ' ']) => problems.push(format!(
                    "{prefix}.otlp_endpoint: `{endpoint}` must be a plain URL (no query, fragment or spaces)"
                )),
                Some(_) => {}
            }
        }
        if self.service_name.as_deref().is_some_and(|s| s.trim().is_empty()) {
            problems.push(format!("{prefix}.service_name: must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push(format!("{prefix}.sample_ratio: must be between 0.0 and 1.0"));
        }
        if self.export_interval.is_zero() {
            problems.push(format!("{prefix}.export_interval: must be above zero"));
        }
        if self.export_timeout.is_zero() {
            problems.push(format!("{prefix}.export_timeout: must be above zero"));
        }
        if self.max_queued_spans == 0 {
            problems.push(format!("{prefix}.max_queued_spans: must be at least 1"));
        }
        problems
    }

    /// Where spans are POSTed.
    fn traces_url(endpoint: &str) -> String {
        let endpoint = endpoint.trim_end_matches('/');
        if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        }
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.otlp_endpoint: {0}")]
pub struct TelemetryError(String);

/// The process's tracer: [`Telemetry::off`], or spans exported to a collector. Cheap to clone.
#[derive(Clone, Default)]
pub struct Telemetry(Option<Arc<Exporting>>);

struct Exporting {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    endpoint: String,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(exporting) => f.debug_tuple("Telemetry").field(&exporting.endpoint).finish(),
            None => f.write_str("Telemetry(off)"),
        }
    }
}

impl Telemetry {
    /// No tracing: every span asked for is `None`.
    pub fn off() -> Self {
        Self(None)
    }

    /// Tracing as `section` says (off without an endpoint); `service` is the default `service.name`.
    /// Builds the exporter and its thread; nothing is sent until the first spans end, and a collector
    /// that is unreachable is only logged.
    pub fn start(section: &TelemetrySection, service: &str) -> Result<Self, TelemetryError> {
        let Some(endpoint) = &section.otlp_endpoint else {
            return Ok(Self::off());
        };
        let url = TelemetrySection::traces_url(endpoint);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(section.export_timeout)
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(section.max_queued_spans)
            .with_scheduled_delay(section.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        let name = section.service_name.clone().unwrap_or_else(|| service.to_owned());
        let resource = Resource::builder()
            .with_service_name(name)
            .with_attribute(Kv::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                section.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("r1-hybrid");
        tracing::info!(endpoint = %url, ratio = section.sample_ratio, "exporting traces over OTLP/HTTP");
        Ok(Self(Some(Arc::new(Exporting {
            provider,
            tracer,
            endpoint: url,
        }))))
    }

    /// Whether spans are recorded at all.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Starts the first span of this process's part of a trace — a child of `parent` (the caller's
    /// `traceparent`) or the root of a new trace — at `start`. `None` when tracing is off or this trace
    /// is not sampled: nothing more is recorded for it.
    pub fn start_span(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: Option<TraceParent>,
        start: SystemTime,
    ) -> Option<Span> {
        let exporting = self.0.as_ref()?;
        let parent = match parent {
            Some(p) => Context::new().with_remote_span_context(p.span_context()),
            None => Context::new(),
        };
        let span = exporting
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .start_with_context(&exporting.tracer, &parent);
        if !opentelemetry::trace::Span::is_recording(&span) {
            return None;
        }
        Some(Span {
            cx: parent.with_span(span),
            tracer: exporting.tracer.clone(),
        })
    }

    /// Sends what is queued and stops the exporter (at shutdown; later spans are dropped).
    pub fn shutdown(&self) {
        if let Some(exporting) = &self.0
            && let Err(e) = exporting.provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing the last spans");
        }
    }
}

/// An open span of a sampled trace. Ended by [`Span::end`] (or when dropped, at that moment).
pub struct Span {
    cx: Context,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Span").field(&self.traceparent().to_string()).finish()
    }
}

impl Span {
    /// This span as the parent named in an outgoing `traceparent`.
    pub fn traceparent(&self) -> TraceParent {
        TraceParent::of(self.cx.span().span_context())
    }

    /// Starts a child span at `start`.
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind, start: SystemTime) -> Span {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .start_with_context(&self.tracer, &self.cx);
        Span {
            cx: self.cx.with_span(span),
            tracer: self.tracer.clone(),
        }
    }

    /// Records a finished child span: `name` from `start` to `end`, with `attributes`.
    pub fn record(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
    ) {
        let child = self.child(name, kind, start);
        child.set_all(attributes);
        child.end(end);
    }

    /// Sets one attribute.
    pub fn set(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Sets attributes.
    pub fn set_all(&self, attributes: Vec<KeyValue>) {
        self.cx.span().set_attributes(attributes);
    }

    /// Marks what happened at `at` (the first token, a restart).
    pub fn event(&self, name: impl Into<Cow<'static, str>>, at: SystemTime, attributes: Vec<KeyValue>) {
        self.cx.span().add_event_with_timestamp(name, at, attributes);
    }

    /// Links this span to another trace's span (or another part of this one) it relates to.
    pub fn link(&self, to: TraceParent) {
        self.cx.span().add_link(to.span_context(), Vec::new());
    }

    /// Marks the span failed, with what went wrong.
    pub fn fail(&self, description: impl Into<Cow<'static, str>>) {
        self.cx.span().set_status(Status::error(description));
    }

    /// Ends the span at `end`.
    pub fn end(self, end: SystemTime) {
        self.cx.span().end_with_timestamp(end);
    }
}

/// The wall-clock time of `at` (an instant in the past), for a span's start or end.
pub fn wall_clock(at: Instant) -> SystemTime {
    let now = SystemTime::now();
    now.checked_sub(at.elapsed()).unwrap_or(now)
}

/// The wall-clock time of `ms` unix milliseconds (a task's `created_at`).
pub fn unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_validated_with_every_key_named() {
        let section: TelemetrySection = toml::from_str(
            "otlp_endpoint = \"grpc://collector:4317\"\nservice_name = \" \"\nsample_ratio = 1.5\nexport_interval = \"0s\"\nmax_queued_spans = 0\n",
        )
        .unwrap();
        assert_eq!(
            section.problems("telemetry"),
            [
                "telemetry.otlp_endpoint: `grpc://collector:4317` must be an http:// or https:// URL (OTLP over HTTP)",
                "telemetry.service_name: must not be empty",
                "telemetry.sample_ratio: must be between 0.0 and 1.0",
                "telemetry.export_interval: must be above zero",
                "telemetry.max_queued_spans: must be at least 1",
            ]
        );
        assert!(TelemetrySection::default().problems("telemetry").is_empty());
        let err = toml::from_str::<TelemetrySection>("endpoint = \"http://c:4318\"\n").unwrap_err();
        assert!(err.to_string().contains("endpoint"), "{err}");
    }

    #[test]
    fn spans_go_to_the_traces_path() {
        assert_eq!(TelemetrySection::traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(
            TelemetrySection::traces_url("http://c:4318/"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            TelemetrySection::traces_url("https://otlp.example/v1/traces"),
            "https://otlp.example/v1/traces"
        );
    }

    #[test]
    fn off_records_nothing() {
        let telemetry = Telemetry::start(&TelemetrySection::default(), "test").unwrap();
        assert!(!telemetry.is_on());
        assert!(
            telemetry
                .start_span("x", SpanKind::Server, None, SystemTime::now())
                .is_none()
        );
    }

    #[test]
    fn a_callers_decision_not_to_sample_is_followed_and_ours_is_passed_on() {
        let section = TelemetrySection {
            otlp_endpoint: Some("http://127.0.0.1:9/".into()),
            ..TelemetrySection::default()
        };
        let telemetry = Telemetry::start(&section, "test").unwrap();
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(
            telemetry
                .start_span("x", SpanKind::Server, Some(parent), SystemTime::now())
                .is_none()
        );
        let sampled = TraceParent {
            sampled: true,
            ..parent
        };
        let span = telemetry
            .start_span("x", SpanKind::Server, Some(sampled), SystemTime::now())
            .unwrap();
        let ours = span.traceparent();
        assert_eq!(ours.trace_id, parent.trace_id, "the caller's trace continues");
        assert_ne!(ours.span_id, parent.span_id);
        assert!(ours.sampled);
        let child = span.child("y", SpanKind::Internal, SystemTime::now());
        assert_eq!(child.traceparent().trace_id, parent.trace_id);
        child.end(SystemTime::now());
        span.end(SystemTime::now());
        telemetry.shutdown(); // nothing listens on port 9: the export fails, quietly
    }
}
