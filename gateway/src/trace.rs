//! A request's trace (`[telemetry]`): the gateway's spans of one request, and the `traceparent` it passes
//! on. Off, or for a request whose trace is not sampled, `Ctx::trace` stays `None`
//! and nothing here runs.
//!
//! | span | kind | from → to |
//! |---|---|---|
//! | `POST /v1/chat/completions` (method and route) | server | request head read → last byte written; a child of the client's `traceparent`, if it sent one |
//! | `auth` | internal | the token's verification |
//! | `read_body` | internal | the body's upload |
//! | `admission` | internal | the caller's limits (`r1.admission` = `admitted` or the refusal) |
//! | `cache` | internal | the result-cache lookup, alongside `admission` (`r1.cache` = `hit`, `miss`, `wait`) |
//! | `route` | internal | the route decision (`r1.route`, `r1.route_reason`, `r1.score`) |
//! | `upstream` | client | first connect attempt → the answer's end: an edge member (or an HTTP center); its `traceparent` goes upstream |
//! | `handoff` | producer | the task's produce → the brokers' acknowledgement; its `traceparent` goes in the Kafka record's header, so r1-center's spans are its children |
//! | `results` | consumer | acknowledgement → the answer's end, linked to r1-center's task span(s) named on the result chunks |

use std::time::{Instant, SystemTime};

use pingora::http::RequestHeader;
use r1_telemetry::{KeyValue, Span, SpanKind, TraceParent, wall_clock};

use crate::error::GatewayError;

/// The gateway's spans of one sampled request.
#[derive(Debug)]
pub struct RequestTrace {
    /// The server span: the whole request.
    pub root: Span,
    /// The upstream exchange's client span, once the first attempt began.
    pub upstream: Option<Span>,
}

impl RequestTrace {
    /// The trace of a request for `route` (the endpoint's route template, `None` for a path the gateway
    /// does not serve) that arrived at `started` (`None`: tracing off, or this trace not sampled).
    pub fn begin(
        telemetry: &r1_telemetry::Telemetry,
        header: &RequestHeader,
        route: Option<&'static str>,
        started: Instant,
        request_id: &str,
    ) -> Option<Self> {
        if !telemetry.is_on() {
            return None;
        }
        let parent = client_traceparent(header);
        let method = header.method.as_str().to_owned();
        let name = match route {
            Some(route) => format!("{method} {route}"),
            None => method.clone(),
        };
        let root = telemetry.start_span(name, SpanKind::Server, parent, wall_clock(started))?;
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", header.uri.path().to_owned()),
            KeyValue::new("r1.request_id", request_id.to_owned()),
        ];
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route));
        }
        root.set_all(attributes);
        Some(Self { root, upstream: None })
    }

    /// Records the phase `name`, from `since` to now.
    pub fn phase(&self, name: &'static str, since: Instant, attributes: Vec<KeyValue>) {
        self.root.record(
            name,
            SpanKind::Internal,
            (wall_clock(since), SystemTime::now()),
            attributes,
        );
    }

    /// Records the phase `name`, from `start` to `end` (both past).
    pub fn phase_between(&self, name: &'static str, (start, end): (Instant, Instant), attributes: Vec<KeyValue>) {
        self.root.record(
            name,
            SpanKind::Internal,
            (wall_clock(start), wall_clock(end)),
            attributes,
        );
    }

    /// The upstream exchange's next attempt, to `peer` of `pool`: the client span starts with the first.
    pub fn attempt(&mut self, pool: &'static str, peer: &str) {
        let span = self
            .upstream
            .get_or_insert_with(|| self.root.child("upstream", SpanKind::Client, SystemTime::now()));
        span.set_all(vec![
            KeyValue::new("r1.pool", pool),
            KeyValue::new("server.address", peer.to_owned()),
        ]);
        span.event(
            "attempt",
            SystemTime::now(),
            vec![KeyValue::new("server.address", peer.to_owned())],
        );
    }

    /// The `traceparent` the upstream gets: the upstream span's.
    pub fn upstream_traceparent(&self) -> Option<String> {
        self.upstream.as_ref().map(|s| s.traceparent().to_string())
    }

    /// A refusal or failure the gateway answered: what kind, on the request's span (failed for a 5xx).
    pub fn error(&self, error: &GatewayError) {
        self.root.set_all(vec![
            KeyValue::new("error.type", error.kind.as_str()),
            KeyValue::new("r1.error.source", error.source.as_str()),
        ]);
        if error.status() >= 500 {
            self.root.fail(error.message.clone());
        }
    }

    /// Ends the spans still open, with the status written (0: none) and what the request became.
    pub fn finish(self, status: u16, attributes: Vec<KeyValue>) {
        let now = SystemTime::now();
        if let Some(upstream) = self.upstream {
            if status >= 500 || status == 0 {
                upstream.fail("the upstream exchange failed");
            }
            upstream.set(KeyValue::new("http.response.status_code", i64::from(status)));
            upstream.end(now);
        }
        if status >= 500 {
            self.root.fail(format!("answered {status}"));
        }
        self.root
            .set(KeyValue::new("http.response.status_code", i64::from(status)));
        self.root.set_all(attributes);
        self.root.end(now);
    }
}

/// The client's `traceparent`, if it sent a valid one (one header; several are ignored, as the
/// specification asks).
pub fn client_traceparent(header: &RequestHeader) -> Option<TraceParent> {
    let mut values = header.headers.get_all(r1_telemetry::traceparent::HEADER).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(first.to_str().ok()?)
}
