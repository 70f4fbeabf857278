//! Traces across the hop, with real processes: the gateway in process, a real r1-center process, the real
//! Kafka broker and Redis of the test command, and the stand-in model API (which keeps each request's
//! headers) — both exporting over OTLP/HTTP to the stand-in collector (`r1-otlp-collector`, which decodes
//! the protocol's own protobuf types). One trace must hold the client's span as the gateway's parent, the
//! gateway's phases, the hand-off's producer span as the parent of r1-center's spans, the results span
//! linked back to the center's task span, and the model server called with the backend span's context.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use r1_otlp_collector::{CollectedSpan, Collector};
use serde_json::json;
use support::kafka::{Center, Names, ask_center, kafka_gateway, read_sse};
use support::{CENTER_MODEL, EDGE_MODEL, Edge, Gateway};

/// The client's trace: `00-<TRACE>-<CLIENT_SPAN>-01`.
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

fn telemetry(collector: &Collector) -> String {
    format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nexport_interval = \"100ms\"\n",
        collector.endpoint()
    )
}

fn named<'a>(spans: &'a [CollectedSpan], service: &str, name: &str) -> Vec<&'a CollectedSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

fn one<'a>(spans: &'a [CollectedSpan], service: &str, name: &str) -> &'a CollectedSpan {
    let found = named(spans, service, name);
    assert_eq!(found.len(), 1, "one {service} span `{name}` in {spans:#?}");
    found[0]
}

fn child_of(span: &CollectedSpan, parent: &CollectedSpan) {
    assert_eq!(
        span.parent_span_id.as_deref(),
        Some(parent.span_id.as_str()),
        "`{}` must be a child of `{}`",
        span.name,
        parent.name
    );
    assert_eq!(span.trace_id, parent.trace_id);
}

/// Sends `body` to the chat API through `gw` (with `traceparent`, if given): the answer's text, once it
/// is a 200.
async fn ask(gw: &Gateway, traceparent: Option<String>, body: &serde_json::Value) -> String {
    let mut request = gw.client.post(format!("{}/v1/chat/completions", gw.public)).json(body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The parent span id of a `traceparent` value.
fn parent_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).unwrap()
}

/// A traced stack: the collector, the stand-in model API answering `chunks` × `text` (and keeping the
/// requests' headers), one traced r1-center in front of it, an edge member, and a traced gateway handing
/// off through Kafka (with `extra` tables), the node serving and seen.
struct Traced {
    collector: Collector,
    names: Names,
    model: r1_mock_upstream::Handle,
    _center: Center,
    _edge: Edge,
    gw: Gateway,
}

impl Traced {
    async fn start(chunks: u32, text: &str, extra: &str) -> Self {
        let collector = Collector::start().await.unwrap();
        let names = Names::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let script = r1_mock_upstream::Script::default()
            .model(CENTER_MODEL)
            .content(chunks, text)
            .record(8);
        let model = r1_mock_upstream::serve(listener, script).await.unwrap();
        let center = Center::start_with(&names, "center-a", &model.url(), &telemetry(&collector));
        let edge = Edge::start(EDGE_MODEL);
        let tables = format!("{}{extra}", telemetry(&collector));
        let gw = kafka_gateway(&names, &[edge.addr], 0, &tables).await;
        center.wait_until_serving().await;
        gw.wait_until_center_seen().await;
        Self {
            collector,
            names,
            model,
            _center: center,
            _edge: edge,
            gw,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_holds_the_gateway_and_the_center_spans_with_their_parents() {
    // Every field bound: what is left unbound would be dropped here (the node and the edge stopped).
    let Traced {
        collector,
        names,
        model,
        _center,
        _edge,
        gw,
    } = Traced::start(3, "traced ", "[cache]\nenabled = true\n").await;

    let r = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.public))
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .json(&ask_center("Trace this question.", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();
    let (text, _, done, error) = read_sse(&r.text().await.unwrap());
    assert!(done && error.is_none());
    assert_eq!(text, "traced traced traced ");

    let wanted = [
        ("r1-gateway", "POST /v1/chat/completions"),
        ("r1-gateway", "handoff"),
        ("r1-gateway", "results"),
        ("r1-center", "task"),
        ("r1-center", "queue_wait"),
        ("r1-center", "backend"),
        ("r1-center", "first_token"),
        ("r1-center", "generation"),
    ];
    let spans = collector
        .wait_for(Duration::from_secs(20), |spans| {
            wanted
                .iter()
                .all(|(service, name)| !named(spans, service, name).is_empty())
        })
        .await;
    assert!(
        spans.iter().all(|s| s.trace_id == TRACE),
        "every span continues the client's trace: {spans:#?}"
    );

    // The gateway: its server span under the client's, its phases under it.
    let server = one(&spans, "r1-gateway", "POST /v1/chat/completions");
    assert_eq!(server.kind, "server");
    assert_eq!(server.parent_span_id.as_deref(), Some(CLIENT_SPAN));
    assert_eq!(server.attribute("http.response.status_code"), Some("200"));
    assert_eq!(server.attribute("r1.route"), Some("center"));
    assert_eq!(server.attribute("r1.request_id"), Some(request_id.as_str()));
    assert!(server.error.is_none());
    for phase in ["read_body", "admission", "cache", "route"] {
        child_of(one(&spans, "r1-gateway", phase), server);
    }
    assert_eq!(one(&spans, "r1-gateway", "cache").attribute("r1.cache"), Some("miss"));
    assert_eq!(one(&spans, "r1-gateway", "route").attribute("r1.route"), Some("center"));
    let handoff = one(&spans, "r1-gateway", "handoff");
    assert_eq!(handoff.kind, "producer");
    child_of(handoff, server);
    assert_eq!(
        handoff.attribute("messaging.destination.name"),
        Some(names.topic("interactive").as_str())
    );
    let results = one(&spans, "r1-gateway", "results");
    assert_eq!(results.kind, "consumer");
    child_of(results, server);
    assert_eq!(results.events, ["first_byte"]);
    assert_eq!(handoff.events, ["send"]);

    // r1-center: its task span under the gateway's produce, everything else under it.
    let task = one(&spans, "r1-center", "task");
    assert_eq!(task.kind, "consumer");
    child_of(task, handoff);
    assert_eq!(
        task.attribute("messaging.message.id"),
        handoff.attribute("messaging.message.id"),
        "the same task"
    );
    assert_eq!(server.attribute("r1.task_id"), task.attribute("messaging.message.id"));
    assert_eq!(task.attribute("r1.outcome"), Some("ok"));
    assert_eq!(task.attribute("r1.node"), Some("center-a"));
    let wait = one(&spans, "r1-center", "queue_wait");
    child_of(wait, task);
    assert_eq!(
        wait.start_unix_nanos, task.start_unix_nanos,
        "the wait starts when the gateway created the task"
    );
    let backend = one(&spans, "r1-center", "backend");
    assert_eq!(backend.kind, "client");
    child_of(backend, task);
    assert_eq!(backend.attribute("r1.attempt"), Some("0"));
    assert!(backend.start_unix_nanos >= wait.end_unix_nanos);
    let (first, generation) = (
        one(&spans, "r1-center", "first_token"),
        one(&spans, "r1-center", "generation"),
    );
    child_of(first, backend);
    child_of(generation, backend);
    assert_eq!(first.end_unix_nanos, generation.start_unix_nanos);

    // Back on the result chunks: the gateway's results span links to the center's task span.
    assert_eq!(results.links, [(TRACE.to_owned(), task.span_id.clone())]);
    // And on to the model server: its request carried the backend span as its parent.
    let recorded = model.recorded();
    let sent = recorded
        .last()
        .and_then(|r| r.headers.get("traceparent"))
        .and_then(|v| v.to_str().ok())
        .expect("the model server got a traceparent");
    assert_eq!(parent_of(sent), backend.span_id);
    assert!(
        sent.starts_with(&format!("00-{TRACE}-")) && sent.ends_with("-01"),
        "{sent}"
    );

    // The same question again: answered by the cache, traced as such, nothing handed off.
    let exported = spans.len();
    ask(
        &gw,
        Some(format!("00-{TRACE}-{CLIENT_SPAN}-01")),
        &ask_center("Trace this question.", true),
    )
    .await;
    let spans = collector
        .wait_for(Duration::from_secs(20), |spans| {
            named(spans, "r1-gateway", "cache")
                .iter()
                .any(|s| s.attribute("r1.cache") == Some("hit"))
                && named(spans, "r1-gateway", "POST /v1/chat/completions").len() == 2
        })
        .await;
    let servers = named(&spans, "r1-gateway", "POST /v1/chat/completions");
    assert_eq!(servers.len(), 2, "{:#?}", &spans[exported..]);
    assert_eq!(servers[1].attribute("r1.route"), Some("cache"));
    assert_eq!(
        named(&spans, "r1-gateway", "handoff").len(),
        1,
        "a hit is not handed off"
    );
    assert_eq!(named(&spans, "r1-center", "task").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_does_not_sample_is_followed_and_its_context_passed_on() {
    let Traced {
        collector,
        model,
        _center,
        _edge,
        gw,
        ..
    } = Traced::start(2, "quiet ", "").await;

    let unsampled = "1111111111111111111111111111111a";
    ask(
        &gw,
        Some(format!("00-{unsampled}-{CLIENT_SPAN}-00")),
        &ask_center("Do not record this.", false),
    )
    .await;
    // The model server is told the same: not sampled, the client's own span as the parent.
    let recorded = model.recorded();
    let sent = recorded[0].headers.get("traceparent").unwrap().to_str().unwrap();
    assert_eq!(sent, format!("00-{unsampled}-{CLIENT_SPAN}-00"));

    // A request after it that is traced (a new trace: no traceparent): once its spans from both
    // processes are in, the earlier request's would be too, had any been recorded.
    ask(&gw, None, &ask_center("Record this one.", false)).await;
    let spans = collector
        .wait_for(Duration::from_secs(20), |spans| {
            !named(spans, "r1-gateway", "POST /v1/chat/completions").is_empty()
                && !named(spans, "r1-center", "task").is_empty()
        })
        .await;
    let server = one(&spans, "r1-gateway", "POST /v1/chat/completions");
    assert!(server.parent_span_id.is_none(), "a new trace starts at the gateway");
    assert_ne!(server.trace_id, unsampled);
    child_of(one(&spans, "r1-center", "task"), one(&spans, "r1-gateway", "handoff"));
    assert!(
        spans.iter().all(|s| s.trace_id != unsampled),
        "nothing of the unsampled request: {spans:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_request_is_traced_and_its_member_continues_the_upstream_span() {
    let collector = Collector::start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = r1_mock_upstream::Script::default()
        .model(EDGE_MODEL)
        .content(2, "edge ")
        .record(4);
    let member = r1_mock_upstream::serve(listener, script).await.unwrap();
    let gw = Gateway::start(&[member.addr()], &[], &telemetry(&collector)).await;
    ask(
        &gw,
        Some(format!("00-{TRACE}-{CLIENT_SPAN}-01")),
        &json!({"model": EDGE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    )
    .await;
    let spans = collector
        .wait_for(Duration::from_secs(20), |spans| {
            !named(spans, "r1-gateway", "POST /v1/chat/completions").is_empty()
        })
        .await;
    let server = one(&spans, "r1-gateway", "POST /v1/chat/completions");
    assert_eq!(server.parent_span_id.as_deref(), Some(CLIENT_SPAN));
    assert_eq!(server.attribute("r1.route"), Some("edge"));
    let upstream = one(&spans, "r1-gateway", "upstream");
    assert_eq!(upstream.kind, "client");
    child_of(upstream, server);
    assert_eq!(upstream.attribute("r1.pool"), Some("edge"));
    assert_eq!(
        upstream.attribute("server.address"),
        Some(member.addr().to_string().as_str())
    );
    assert_eq!(upstream.attribute("http.response.status_code"), Some("200"));
    assert_eq!(upstream.events, ["attempt"]);
    let recorded = member.recorded();
    let sent = recorded[0].headers.get("traceparent").unwrap().to_str().unwrap();
    assert_eq!(sent, format!("00-{TRACE}-{}-01", upstream.span_id));
    // A probe is not traced; a refusal is, with its kind.
    let r = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.public))
        .json(&json!({"model": EDGE_MODEL, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let spans = collector
        .wait_for(Duration::from_secs(20), |spans| {
            named(spans, "r1-gateway", "POST /v1/chat/completions").len() == 2
        })
        .await;
    let refused = named(&spans, "r1-gateway", "POST /v1/chat/completions")
        .into_iter()
        .find(|s| s.attribute("http.response.status_code") == Some("400"))
        .unwrap();
    assert_eq!(refused.attribute("error.type"), Some("invalid_request"));
    assert!(
        refused.error.is_none(),
        "a client's mistake is not the gateway's failure"
    );
    assert!(!spans.iter().any(|s| s.name.contains("healthz")));
}
