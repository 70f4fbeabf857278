//! Cost of `auth::Verifier::verify` per request: p50/p90/p99/max for an HS256 token (the DeepSeek-R1 guide's
//! client), an ES256 token through a JWKS file, and a refused forgery (bad signature).
//!
//! `cargo bench -p r1-gateway --bench auth` (release build).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Uri, header::AUTHORIZATION};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use r1_gateway::auth::{AuthSection, Verifier};

const SECRET: &str = "bench-shared-secret-0123456789abcdef0123456789";
const ROUNDS: usize = 20_000;
const WARMUP: usize = 2_000;

fn headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn measure(name: &str, verifier: &Verifier, headers: &HeaderMap, uri: &Uri, ok: bool) {
    for _ in 0..WARMUP {
        black_box(verifier.verify(black_box(headers), uri).is_ok());
    }
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let result = verifier.verify(black_box(headers), uri);
        times.push(start.elapsed());
        assert_eq!(result.is_ok(), ok, "{name}");
    }
    times.sort_unstable();
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<26} n={ROUNDS}  p50 {:>7.2} µs  p90 {:>7.2} µs  p99 {:>7.2} µs  max {:>8.2} µs",
        us(at(0.5)),
        us(at(0.9)),
        us(at(0.99)),
        us(*times.last().unwrap())
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("ec-1".to_owned());
    let path = std::env::temp_dir().join(format!("r1-auth-bench-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap()).unwrap();

    let section: AuthSection = toml::from_str(&format!("jwks_file = {:?}", path.display().to_string())).unwrap();
    let verifier = Verifier::from_section_with_env(&section, |_| Some(SECRET.to_owned())).unwrap();
    let uri: Uri = "/v1/chat/completions".parse().unwrap();
    let claims = serde_json::json!({"user_id": "bench-user", "tier": "pro", "exp": jsonwebtoken::get_current_timestamp() + 3600});

    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut es_header = Header::new(Algorithm::ES256);
    es_header.kid = Some("ec-1".to_owned());
    let es256 = jsonwebtoken::encode(&es_header, &claims, &ec).unwrap();
    let forged = format!("{}x", &hs256[..hs256.len() - 1]);

    measure("HS256 accepted", &verifier, &headers(&hs256), &uri, true);
    measure("ES256 (JWKS) accepted", &verifier, &headers(&es256), &uri, true);
    measure("HS256 bad signature", &verifier, &headers(&forged), &uri, false);
    measure("no header", &verifier, &HeaderMap::new(), &uri, false);
    let _ = std::fs::remove_file(&path);
}
