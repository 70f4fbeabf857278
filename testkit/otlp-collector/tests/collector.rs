//! The stand-in collector decodes what the real exporter sends: r1-telemetry's spans, exported over
//! OTLP/HTTP, arrive with their ids, parents, kinds, attributes, events and links.

use std::time::{Duration, SystemTime};

use r1_otlp_collector::Collector;
use r1_telemetry::{KeyValue, SpanKind, Telemetry, TelemetrySection, TraceParent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_spans_arrive_whole() {
    let collector = Collector::start().await.unwrap();
    let section = TelemetrySection {
        otlp_endpoint: Some(collector.endpoint()),
        service_name: Some("collector-test".into()),
        export_interval: Duration::from_millis(50),
        ..TelemetrySection::default()
    };
    let telemetry = Telemetry::start(&section, "unused").unwrap();
    let client = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let other = TraceParent::parse("00-11111111111111111111111111111111-2222222222222222-01").unwrap();
    let start = SystemTime::now();
    let root = telemetry
        .start_span("POST /v1/chat/completions", SpanKind::Server, Some(client), start)
        .unwrap();
    root.record(
        "auth",
        SpanKind::Internal,
        (start, start + Duration::from_millis(2)),
        vec![KeyValue::new("r1.tenant", "alice")],
    );
    root.event("first_byte", start + Duration::from_millis(3), Vec::new());
    root.link(other);
    root.fail("the upstream model failed");
    let root_id = root.traceparent().span_id.to_string();
    root.end(start + Duration::from_millis(5));

    let spans = collector
        .wait_for(Duration::from_secs(10), |spans| spans.len() == 2)
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == "server").unwrap();
    let auth = spans.iter().find(|s| s.name == "auth").unwrap();
    assert_eq!(server.service, "collector-test");
    assert_eq!(server.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(server.span_id, root_id);
    assert_eq!(server.duration(), Duration::from_millis(5));
    assert_eq!(server.events, ["first_byte"]);
    assert_eq!(
        server.links,
        [(
            "11111111111111111111111111111111".to_owned(),
            "2222222222222222".to_owned()
        )]
    );
    assert_eq!(server.error.as_deref(), Some("the upstream model failed"));
    assert_eq!(auth.parent_span_id.as_deref(), Some(root_id.as_str()));
    assert_eq!(auth.kind, "internal");
    assert_eq!(auth.attribute("r1.tenant"), Some("alice"));
    telemetry.shutdown();
}
