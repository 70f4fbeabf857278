//! The bodies of the fuzz targets: every parser of bytes that come from outside — request bodies in
//! each API's shape, SSE framing, Kafka envelopes, config files, JWT headers — each with the property it
//! must keep on any input: no panic, and where it is checkable, a result that does not depend on how
//! the bytes were cut or that survives a round trip.
//!
//! `fuzz/` runs them under libFuzzer (`scripts/fuzz.sh`, the nightly toolchain); `tests/corpus.rs` runs
//! them over the seed corpus (`fuzz/corpus/<target>/`) on stable in the regular tests.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a property that does not hold is a panic: what a fuzzer reports

use r1_proto::sse::{Decoder, Frame, decode_all};

/// A fuzz target: any bytes in, a panic when a property does not hold.
pub type Target = fn(&[u8]);

/// Every target, by the name of its fuzz binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("chat_request", chat_request),
    ("api_dialects", api_dialects),
    ("sse_decoder", sse_decoder),
    ("envelopes", envelopes),
    ("gateway_config", gateway_config),
    ("jwt_header", jwt_header),
];

/// A chat completion request body: parsed, validated, and what parses serializes back and parses again
/// to the same request.
pub fn chat_request(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<r1_proto::ChatCompletionRequest>(data) else {
        return;
    };
    let _ = r1_proto::validate(&request);
    let _ = request.is_stream();
    let again = serde_json::to_vec(&request).expect("a parsed request serializes");
    let reparsed: r1_proto::ChatCompletionRequest = serde_json::from_slice(&again).expect("and parses again");
    assert_eq!(
        serde_json::to_value(&reparsed).ok(),
        serde_json::to_value(&request).ok(),
        "the round trip changes nothing"
    );
}

/// The APIs on top of chat — legacy completions, Responses, Anthropic Messages — turn any body into a
/// chat request or a refusal, never a panic.
pub fn api_dialects(data: &[u8]) {
    let _ = r1_gateway::legacy::to_chat(data);
    let _ = r1_gateway::responses::to_chat(data);
    let _ = r1_gateway::messages::to_chat(data);
}

/// An event stream: the frames read do not depend on where the stream was cut (the first byte picks
/// the cut), and nothing panics or grows past its bound.
pub fn sse_decoder(data: &[u8]) {
    const BOUND: usize = 4096;
    let Some((&cut, body)) = data.split_first() else { return };
    let whole = decode_all(body, BOUND);
    let at = usize::from(cut).min(body.len());
    let mut decoder = Decoder::new(BOUND);
    let mut frames: Vec<Frame> = Vec::new();
    let cut_read = decoder
        .feed(&body[..at], &mut |f| frames.push(f))
        .and_then(|()| decoder.feed(&body[at..], &mut |f| frames.push(f)))
        .and_then(|()| decoder.finish(&mut |f| frames.push(f)));
    if let (Ok(whole), Ok(())) = (&whole, cut_read) {
        assert_eq!(whole, &frames, "cut at {at}");
    }
    let mut lines = r1_proto::sse::DataLines::default();
    let _ = (lines.any(&body[..at]), lines.any(&body[at..]));
}

/// The hand-off's Kafka records, as a consumer reads them off the topic.
pub fn envelopes(data: &[u8]) {
    if let Ok(task) = r1_proto::TaskEnvelope::decode(data) {
        let again = r1_proto::TaskEnvelope::decode(&task.encode()).expect("an encoded envelope decodes");
        assert_eq!(again.task_id, task.task_id);
    }
    let _ = r1_proto::ResultChunk::decode(data);
    let _ = r1_proto::CancelRecord::decode(data);
}

/// The gateway's config file: parsed and validated, or refused with its problems.
pub fn gateway_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = r1_gateway::config::GatewayConfig::parse(text);
    }
}

/// An `Authorization` header (or `x-api-key`) against an HS256 verifier: refused or verified, never a
/// panic, whatever the token's three parts hold.
pub fn jwt_header(data: &[u8]) {
    use std::sync::OnceLock;
    static VERIFIER: OnceLock<r1_gateway::auth::Verifier> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| {
        let section: r1_gateway::auth::AuthSection = toml::from_str("").expect("the default section");
        r1_gateway::auth::Verifier::from_section_with_env(&section, |_| {
            Some("fuzz-secret-0123456789abcdef0123456789".to_owned())
        })
        .expect("a verifier")
    });
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let uri: http::Uri = "/v1/chat/completions".parse().expect("a path");
    for name in [http::header::AUTHORIZATION, http::HeaderName::from_static("x-api-key")] {
        let mut headers = http::HeaderMap::new();
        headers.insert(name, value.clone());
        let _ = verifier.verify(&headers, &uri);
    }
}
