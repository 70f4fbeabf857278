//! The JWT attack table: every way a bearer token can be wrong, run through the public `auth` API. Each
//! refused case asserts its reason label (and that nothing about the token reaches the client); each accepted
//! case asserts the subject. Keys are made here: ES256 with rcgen, RS256 from a fixed test-only key (RSA key
//! generation is far too slow in a debug build).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Uri, header::AUTHORIZATION};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use r1_gateway::auth::{AuthError, AuthSection, AuthSetupError, Verifier};
use serde_json::{Value, json};

/// The shared secret (the DeepSeek-R1 guide's clients sign with it; `PYJWT_TOKEN` was made with it).
const SECRET: &str = "deepseek-guide-shared-secret-0123456789abcdef";
/// The previous secret, still accepted during a rotation window.
const PREVIOUS: &str = "rotated-out-previous-secret-0123456789abcdef";
/// Made by PyJWT 2.15.1, as the guide's client does:
/// `jwt.encode({"user_id": "guide-user-42", "exp": 4102444800}, SECRET, algorithm="HS256")`.
const PYJWT_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiZ3VpZGUtdXNlci00MiIsImV4cCI6NDEwMjQ0NDgwMH0.eRxuKynbelVcgS_W-7ostNhk8eZJHh6XLTKUDIGfbZY";
const AUDIENCE: &str = "r1-hybrid";
const ISSUER: &str = "https://auth.example.test";

/// A test-only RSA key (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`); it guards nothing.
const RSA_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDB5IcinWRsYRLc
CRmd0DzkhEXn4fvcuXVC+HXwOLJx4V4gmNYPoModX1cMVlTWib5yJeFL0IH7v9gA
DZUx/oZoa9ckQvD0psub8co7F+f6V0ZO/mMnwcwPserrq9hHbsCk7QDGLWsOo8Zc
rKjRyS2v1d+EkeeCmWuy1sskYU5/PgwBlTdm4azY0BEYy/+s+RiFvUX7NT4X2gim
YkudzAEtDu2ch+cGACGK7RKYug2vFgMd4eAX31FWqfUCq7qxLNkKmnrkTvpmvq0R
QUpLUfaPx7lgASi/A77+cv4pmRzXmFZlxC/s2Pm8SLYXjkeuX7fKo4bQ9i1ZIYFL
ptz2oJQ9AgMBAAECggEAETM6aK/xL2saHvJgtx74s+XnBKfHrcA2/oqnfbit3cva
C4a7YJYJL/tb78B91K1R+3LQTmcwDLrrSK/rxwxW9I7yfilBElb0k4Aqyjy3672P
w2SuO6HlvhOwrRjovgd9Z/QNYEc5qsoNB/4aGMghuSo+IpbF5JBDHVGQIklOixt4
n8GLovkqd/xofMZCvV1m1MTMzPSRLEqVy5zSMnXwimsSDLUK6fwYF+hiV4hbANnu
8LK8SJHVCGCly1kDv38t8YvRl8M4WpVOfJke7K7Q5/PMCxAehXWHhtGEE7SHgsPq
FoD1ud7RgO3cIb7BR4OyeOCKJakg6o2dCodDq7luuQKBgQDswnH8tPrC21a7aw9r
z2EaQHR6dpJrndz/uDowG5V6ePKGl+66Vklg07fb07+M0ZFvc4S01S2KaKx9zlLB
aQsR1OPOKw/YuXnaczFEZOwXUUHRa+2OlJfujeo3srGolWmNZd0e8YKGkqa2byeK
kmLi/XmPTTppI+M1TH2gbTbGdQKBgQDRpkdaPn+w4gkVVm3gxpGnoIySEKsjjGqF
PUH/HdrCnhE4JJ4ffHKNap+e+n4bZyXCgBhSxzgkEsh/KeuGMEer8XBkG9W+Pyq6
0k28LKo1S8SqQfFXJKlaCkO2l3ZVXfXP7XB+87fKoqdsUSSQ9C6thS35DAQh1lmJ
2Lp2GaEtqQKBgQDmqVX2NrfrqVephldi2Iqo0czpFqX2FLmfpXODNQx/YmAeAt2B
Stl4bSw+DeEbp3zCkU/kAaC5rNsIQj/b0KQJPlimnst0gNcXnYyNLqnY2cB+8GBj
vZ77ueVLWFu/e7l3GZvBLtfUlgG30Tk7xvxyWzLYCwxyLJWKcrgd2Ok5lQKBgGie
UXz3M0FRirbbKnnAnW7I71z0dHKI358dspFclI4J0w3xN/b+YyuuyXjMB6IlFvK4
eWrVf26A8QyEHsQX06w6D5vlSARoASq5R5FfuJBf/wP3ZDfYU6pa9O9pJePzv3bD
RiAT/uNfx6yF0XmEYMa2bvqYxHceQBBJ1sKYh5YBAoGAGRIVf3WXOTm0ryxbQ/DQ
vauhDgZooo63UBmbF6w4XqCdwSBaFF1CSEXs71zXNTCBugScZG4Z5qFnt/tq1nKM
cgWKu/DQfi3bwEC6K5riCiu4QVwPaE71Niozdwwgb7x1/aiLAgfn1lAPfrnIzany
dOpRs8yHox7k46uB7Hb9ADg=
-----END PRIVATE KEY-----
";

/// Its public key, as a JWKS consumer or an attacker can read it (the classic confusion attack uses this text
/// as an HMAC key).
const RSA_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAweSHIp1kbGES3AkZndA8
5IRF5+H73Ll1Qvh18DiyceFeIJjWD6DKHV9XDFZU1om+ciXhS9CB+7/YAA2VMf6G
aGvXJELw9KbLm/HKOxfn+ldGTv5jJ8HMD7Hq66vYR27ApO0Axi1rDqPGXKyo0ckt
r9XfhJHngplrstbLJGFOfz4MAZU3ZuGs2NARGMv/rPkYhb1F+zU+F9oIpmJLncwB
LQ7tnIfnBgAhiu0SmLoNrxYDHeHgF99RVqn1Aqu6sSzZCpp65E76Zr6tEUFKS1H2
j8e5YAEovwO+/nL+KZkc15hWZcQv7Nj5vEi2F45Hrl+3yqOG0PYtWSGBS6bc9qCU
PQIDAQAB
-----END PUBLIC KEY-----
";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("r1-jwt-attacks-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path` atomically, as a deploy tool (or a Kubernetes secret volume) does.
fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn env(name: &str) -> Option<String> {
    match name {
        "R1_JWT_SECRET" => Some(SECRET.to_owned()),
        "R1_JWT_SECRET_PREVIOUS" => Some(PREVIOUS.to_owned()),
        _ => None,
    }
}

fn verifier(toml_text: &str) -> Verifier {
    let section: AuthSection = toml::from_str(toml_text).unwrap();
    Verifier::from_section_with_env(&section, env).unwrap()
}

fn secret(s: &str) -> EncodingKey {
    EncodingKey::from_secret(s.as_bytes()).unwrap()
}

/// A token signed by jsonwebtoken with `alg`, an optional `kid`, and `key`.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// An HS256 token signed with the current secret, as the guide's client makes them.
fn hs(claims: Value) -> String {
    sign(Algorithm::HS256, None, &claims, &secret(SECRET))
}

/// A hand-made token: any header JSON, any signature text.
fn raw(header: &str, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A hand-made token whose header says whatever `header` says, HMAC-SHA256-signed with `hmac_key`
/// (the algorithm-confusion forgery: an RS256 header "verified" with a key the attacker knows).
fn hmac_forged(header: &str, claims: &Value, hmac_key: &[u8]) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(hmac_key).unwrap(),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

/// A fresh P-256 key (PKCS#8 from rcgen, ring backend).
fn ec_key() -> EncodingKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap()
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

fn jwks(keys: Vec<Jwk>) -> String {
    serde_json::to_string_pretty(&JwkSet { keys }).unwrap()
}

fn request(auth: &[&str], uri: &str) -> (HeaderMap, Uri) {
    let mut headers = HeaderMap::new();
    for value in auth {
        headers.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    }
    (headers, uri.parse().unwrap())
}

#[derive(Clone, Copy, Debug)]
enum Use {
    /// HS256, current + previous secret, no JWKS.
    Plain,
    /// Plain + a JWKS file with `rsa-1` (RS256) and `ec-1` (ES256).
    Jwks,
    /// Plain + `audience` and `issuer` configured.
    Strict,
}

#[derive(Debug)]
enum Want {
    Subject(&'static str),
    Refused(&'static str),
}

struct Case {
    name: &'static str,
    verifier: Use,
    auth: Vec<String>,
    uri: String,
    want: Want,
}

fn case(name: &'static str, verifier: Use, token: &str, want: Want) -> Case {
    Case {
        name,
        verifier,
        auth: vec![format!("Bearer {token}")],
        uri: "/v1/chat/completions".to_owned(),
        want,
    }
}

#[test]
fn attack_table() {
    use Use::{Jwks, Plain, Strict};
    use Want::{Refused, Subject};

    let dir = temp_dir("table");
    let rsa = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
    let ec = ec_key();
    let ec_other = ec_key();
    let jwks_path = dir.join("jwks.json");
    write_atomic(
        &jwks_path,
        &jwks(vec![
            jwk(&rsa, Algorithm::RS256, "rsa-1"),
            jwk(&ec, Algorithm::ES256, "ec-1"),
        ]),
    );

    let previous = "previous_secret_env = \"R1_JWT_SECRET_PREVIOUS\"\n";
    let plain = verifier(previous);
    let with_jwks = verifier(&format!(
        "{previous}jwks_file = {:?}\n",
        jwks_path.display().to_string()
    ));
    let strict = verifier(&format!("{previous}audience = \"{AUDIENCE}\"\nissuer = \"{ISSUER}\"\n"));

    let t = now();
    let user = json!({"user_id": "alice", "exp": t + 600});
    let valid = hs(user.clone());
    let big = hs(json!({"user_id": "alice", "exp": t + 600, "pad": "x".repeat(16 * 1024)}));
    assert!(big.len() > 16 * 1024);

    let forged_rs256 = |key: &[u8]| hmac_forged(r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1"}"#, &user, key);
    let swapped = {
        // The signature of `valid` over another payload.
        let (head, rest) = valid.split_once('.').unwrap();
        let signature = &rest[rest.find('.').unwrap() + 1..];
        let payload = b64(json!({"user_id": "root", "exp": t + 600}).to_string().as_bytes());
        format!("{head}.{payload}.{signature}")
    };
    let signature_of_valid = &valid[valid.rfind('.').unwrap() + 1..];
    let aud_iss = |aud: Value, iss: Value| {
        let mut claims = json!({"user_id": "alice", "exp": t + 600});
        for (name, value) in [("aud", aud), ("iss", iss)] {
            if !value.is_null() {
                claims[name] = value;
            }
        }
        hs(claims)
    };

    #[rustfmt::skip]
    let mut cases = vec![
        // Accepted.
        case("HS256 with user_id (the guide's client)", Plain, &valid, Subject("alice")),
        case("PyJWT-made token", Plain, PYJWT_TOKEN, Subject("guide-user-42")),
        case("subject in sub", Plain, &hs(json!({"sub": "bob", "exp": t + 600})), Subject("bob")),
        case("previous (rotation) secret", Plain, &sign(Algorithm::HS256, None, &user, &secret(PREVIOUS)), Subject("alice")),
        case("expired within leeway", Plain, &hs(json!({"user_id": "alice", "exp": t - 10})), Subject("alice")),
        case("nbf within leeway", Plain, &hs(json!({"user_id": "alice", "exp": t + 600, "nbf": t + 10})), Subject("alice")),
        case("HS256 still accepted beside a JWKS", Jwks, &valid, Subject("alice")),
        case("RS256 through the JWKS (kid)", Jwks, &sign(Algorithm::RS256, Some("rsa-1"), &user, &rsa), Subject("alice")),
        case("ES256 through the JWKS (kid)", Jwks, &sign(Algorithm::ES256, Some("ec-1"), &user, &ec), Subject("alice")),
        case("ES256 through the JWKS (no kid)", Jwks, &sign(Algorithm::ES256, None, &user, &ec), Subject("alice")),
        case("audience and issuer as configured", Strict, &aud_iss(json!(AUDIENCE), json!(ISSUER)), Subject("alice")),
        case("audience in a list", Strict, &aud_iss(json!(["other", AUDIENCE]), json!(ISSUER)), Subject("alice")),
        // alg none, in any casing, with or without a signature; algorithms no key is pinned to.
        case("alg none", Plain, &raw(r#"{"alg":"none","typ":"JWT"}"#, &user, ""), Refused("alg_not_allowed")),
        case("alg None", Plain, &raw(r#"{"alg":"None","typ":"JWT"}"#, &user, ""), Refused("alg_not_allowed")),
        case("alg NONE", Plain, &raw(r#"{"alg":"NONE","typ":"JWT"}"#, &user, ""), Refused("alg_not_allowed")),
        case("alg nOnE, JWKS configured", Jwks, &raw(r#"{"alg":"nOnE"}"#, &user, ""), Refused("alg_not_allowed")),
        case("alg none with a signature", Plain, &raw(r#"{"alg":"none"}"#, &user, signature_of_valid), Refused("alg_not_allowed")),
        case("no alg at all", Plain, &raw(r#"{"typ":"JWT"}"#, &user, ""), Refused("alg_not_allowed")),
        case("HS512 with the right secret", Plain, &sign(Algorithm::HS512, None, &user, &secret(SECRET)), Refused("alg_not_allowed")),
        case("HS384 with the right secret", Plain, &sign(Algorithm::HS384, None, &user, &secret(SECRET)), Refused("alg_not_allowed")),
        case("valid RS256 but no JWKS", Plain, &sign(Algorithm::RS256, Some("rsa-1"), &user, &rsa), Refused("alg_not_allowed")),
        // Algorithm confusion: a public-key header "verified" as an HMAC.
        case("RS256 header, HMAC with the HS secret, no JWKS", Plain, &forged_rs256(SECRET.as_bytes()), Refused("alg_not_allowed")),
        case("RS256 header, HMAC with the HS secret, JWKS", Jwks, &forged_rs256(SECRET.as_bytes()), Refused("bad_signature")),
        case("RS256 header, HMAC with the public key PEM", Jwks, &forged_rs256(RSA_PUBLIC_PEM.as_bytes()), Refused("bad_signature")),
        case("ES256 header, HMAC with the HS secret", Jwks, &hmac_forged(r#"{"alg":"ES256","kid":"ec-1"}"#, &user, SECRET.as_bytes()), Refused("bad_signature")),
        case("HS256 header, HMAC with the public key PEM", Jwks, &hmac_forged(r#"{"alg":"HS256"}"#, &user, RSA_PUBLIC_PEM.as_bytes()), Refused("bad_signature")),
        // Signatures.
        case("wrong secret", Plain, &sign(Algorithm::HS256, None, &user, &secret("some-other-secret-0123456789abcdef-xyz")), Refused("bad_signature")),
        case("payload swapped", Plain, &swapped, Refused("bad_signature")),
        case("signature stripped", Plain, &valid[..=valid.rfind('.').unwrap()], Refused("bad_signature")),
        case("ES256 by another key, same kid", Jwks, &sign(Algorithm::ES256, Some("ec-1"), &user, &ec_other), Refused("bad_signature")),
        case("ES256 by another key, no kid", Jwks, &sign(Algorithm::ES256, None, &user, &ec_other), Refused("bad_signature")),
        case("RS256 with an unknown kid", Jwks, &sign(Algorithm::RS256, Some("rsa-9"), &user, &rsa), Refused("unknown_key")),
        // Claims (checked only once the signature holds).
        case("missing exp", Plain, &hs(json!({"user_id": "alice"})), Refused("missing_exp")),
        case("expired beyond leeway", Plain, &hs(json!({"user_id": "alice", "exp": t - 120})), Refused("expired")),
        case("expired RS256", Jwks, &sign(Algorithm::RS256, Some("rsa-1"), &json!({"user_id": "alice", "exp": t - 3600}), &rsa), Refused("expired")),
        case("nbf in the future", Plain, &hs(json!({"user_id": "alice", "exp": t + 1200, "nbf": t + 600})), Refused("not_yet_valid")),
        case("no subject", Plain, &hs(json!({"exp": t + 600, "tier": "pro"})), Refused("no_subject")),
        case("wrong audience", Strict, &aud_iss(json!("elsewhere"), json!(ISSUER)), Refused("bad_audience")),
        case("missing audience", Strict, &aud_iss(Value::Null, json!(ISSUER)), Refused("bad_audience")),
        case("wrong issuer", Strict, &aud_iss(json!(AUDIENCE), json!("https://evil.example")), Refused("bad_issuer")),
        case("missing issuer", Strict, &aud_iss(json!(AUDIENCE), Value::Null), Refused("bad_issuer")),
        // Shape and transport.
        case("16 KiB token", Plain, &big, Refused("too_large")),
        case("garbage", Plain, "not-a-jwt", Refused("malformed")),
        case("three parts of garbage", Plain, "eyJ.eyJ.x", Refused("malformed")),
        case("header not an object", Plain, &raw(r#"["HS256"]"#, &user, "x"), Refused("malformed")),
        case("two tokens in one header", Plain, &format!("{valid},{valid}"), Refused("malformed")),
    ];
    #[rustfmt::skip]
    cases.extend([
        Case { name: "missing header", verifier: Plain, auth: vec![], uri: "/v1/models".into(), want: Refused("missing") },
        Case { name: "Basic scheme", verifier: Plain, auth: vec!["Basic YWxpY2U6cHc=".to_owned()], uri: "/v1/models".into(), want: Refused("wrong_scheme") },
        Case { name: "token as Basic", verifier: Plain, auth: vec![format!("Basic {valid}")], uri: "/v1/models".into(), want: Refused("wrong_scheme") },
        Case { name: "bare token, no scheme", verifier: Plain, auth: vec![valid.clone()], uri: "/v1/models".into(), want: Refused("wrong_scheme") },
        Case { name: "two Authorization headers", verifier: Plain, auth: vec![format!("Bearer {valid}"), format!("Bearer {valid}")], uri: "/v1/models".into(), want: Refused("multiple_headers") },
        Case { name: "lower-case scheme", verifier: Plain, auth: vec![format!("bearer {valid}")], uri: "/v1/models".into(), want: Subject("alice") },
    ]);
    for (name, uri) in [
        ("?token=", format!("/v1/chat/completions?token={valid}")),
        (
            "?access_token=",
            format!("/v1/chat/completions?stream=true&access_token={valid}"),
        ),
        ("?jwt=", format!("/v1/tasks?jwt={valid}")),
        ("any eyJ value", format!("/v1/models?x={valid}")),
    ] {
        cases.push(Case {
            name,
            verifier: Plain,
            auth: vec![format!("Bearer {valid}")],
            uri: uri.clone(),
            want: Refused("query_token"),
        });
        cases.push(Case {
            name,
            verifier: Plain,
            auth: vec![],
            uri,
            want: Refused("query_token"),
        });
    }

    let mut failures = Vec::new();
    for c in &cases {
        let v = match c.verifier {
            Plain => &plain,
            Jwks => &with_jwks,
            Strict => &strict,
        };
        let auth: Vec<&str> = c.auth.iter().map(String::as_str).collect();
        let (headers, uri) = request(&auth, &c.uri);
        let got = v.verify(&headers, &uri);
        match (&c.want, &got) {
            (Subject(want), Ok(p)) if p.subject == *want => {}
            (Refused(want), Err(e)) if e.reason() == *want => {
                // Nothing the client or a log line sees carries the token.
                let seen = [
                    e.to_string(),
                    format!("{e:?}"),
                    e.client_message().to_owned(),
                    e.to_gateway_error().message,
                ];
                for (value, text) in auth.iter().flat_map(|a| seen.iter().map(move |s| (a, s))) {
                    let token = value.rsplit(' ').next().unwrap_or(value);
                    assert!(!text.contains(token), "{}: `{text}` echoes the token", c.name);
                }
                if !matches!(e, AuthError::Missing | AuthError::QueryToken) {
                    assert_eq!(e.client_message(), "invalid or expired token", "{}", c.name);
                }
            }
            _ => failures.push(format!(
                "{} ({:?}): want {:?}, got {:?}",
                c.name,
                c.verifier,
                c.want,
                got.map(|p| p.subject.clone())
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let refused = cases.iter().filter(|c| matches!(c.want, Refused(_))).count();
    println!(
        "{} cases: {refused} refused with their reason, {} accepted",
        cases.len(),
        cases.len() - refused
    );
}

#[test]
fn claims_reach_the_principal() {
    let v = verifier("");
    let token = sign(
        Algorithm::HS256,
        None,
        &json!({"user_id": "alice", "tier": "pro", "exp": now() + 60}),
        &secret(SECRET),
    );
    let (headers, uri) = request(&[&format!("Bearer {token}")], "/v1/chat/completions");
    let p = v.verify(&headers, &uri).unwrap();
    assert_eq!((p.subject.as_str(), p.claim("tier")), ("alice", Some("pro")));
    assert!(p.claims.contains_key("exp"));
}

#[test]
fn secrets_from_files_with_a_rotation() {
    let dir = temp_dir("files");
    let (current, previous) = (dir.join("current"), dir.join("previous"));
    std::fs::write(&current, format!("{SECRET}\n")).unwrap();
    std::fs::write(&previous, format!("{PREVIOUS}\r\n")).unwrap();
    let section: AuthSection = toml::from_str(&format!(
        "secret_file = {:?}\nprevious_secret_file = {:?}\n",
        current.display().to_string(),
        previous.display().to_string()
    ))
    .unwrap();
    // No environment at all: the files are the only source.
    let v = Verifier::from_section_with_env(&section, |_| None).unwrap();
    let claims = json!({"user_id": "alice", "exp": now() + 60});
    for key in [SECRET, PREVIOUS] {
        let (headers, uri) = request(
            &[&format!(
                "Bearer {}",
                sign(Algorithm::HS256, None, &claims, &secret(key))
            )],
            "/",
        );
        assert_eq!(v.verify(&headers, &uri).unwrap().subject, "alice");
    }
    let (headers, uri) = request(&[&format!("Bearer {PYJWT_TOKEN}")], "/");
    assert_eq!(v.verify(&headers, &uri).unwrap().subject, "guide-user-42");

    std::fs::write(&current, "short\n").unwrap();
    let err = Verifier::from_section_with_env(&section, |_| None).unwrap_err();
    assert!(
        matches!(
            err,
            AuthSetupError::SecretTooShort {
                key: "auth.secret_file",
                len: 5
            }
        ),
        "{err}"
    );
}

#[test]
fn jwks_file_replaced_live() {
    let dir = temp_dir("reload");
    let path = dir.join("jwks.json");
    let one = ec_key();
    let two = ec_key();
    write_atomic(&path, &jwks(vec![jwk(&one, Algorithm::ES256, "ec-1")]));
    let section: AuthSection = toml::from_str(&format!(
        "hs256 = false\njwks_file = {:?}\n",
        path.display().to_string()
    ))
    .unwrap();
    let v = Verifier::from_section_with_env(&section, |_| None).unwrap();
    assert_eq!((v.jwks_file(), v.jwks_keys()), (Some(path.as_path()), 1));

    let claims = json!({"sub": "svc", "exp": now() + 600});
    let by_one = sign(Algorithm::ES256, Some("ec-1"), &claims, &one);
    let by_two = sign(Algorithm::ES256, Some("ec-2"), &claims, &two);
    let check = |token: &str| {
        let (headers, uri) = request(&[&format!("Bearer {token}")], "/v1/chat/completions");
        v.verify(&headers, &uri)
            .map(|p| p.subject.clone())
            .map_err(AuthError::reason)
    };
    assert_eq!(check(&by_one), Ok("svc".to_owned()));
    assert_eq!(check(&by_two), Err("unknown_key"));
    // HS256 is off in a JWKS-only setup, even with a correct secret.
    assert_eq!(
        check(&sign(Algorithm::HS256, None, &claims, &secret(SECRET))),
        Err("alg_not_allowed")
    );
    assert!(!v.reload_if_changed().unwrap(), "unchanged file");

    // A new key is published beside the old one.
    write_atomic(
        &path,
        &jwks(vec![
            jwk(&one, Algorithm::ES256, "ec-1"),
            jwk(&two, Algorithm::ES256, "ec-2"),
        ]),
    );
    assert!(v.reload_if_changed().unwrap());
    assert_eq!(v.jwks_keys(), 2);
    assert_eq!(check(&by_two), Ok("svc".to_owned()));

    // A broken file is refused once, and the keys in use stay.
    write_atomic(&path, "{\"keys\": [");
    let err = v.reload_if_changed().unwrap_err();
    assert!(err.to_string().starts_with("auth.jwks_file: "), "{err}");
    assert!(
        !v.reload_if_changed().unwrap(),
        "the same broken content is reported once"
    );
    assert_eq!(
        (check(&by_one), check(&by_two)),
        (Ok("svc".to_owned()), Ok("svc".to_owned()))
    );

    // So is a file that smuggles in a shared secret, and a missing file.
    write_atomic(
        &path,
        r#"{"keys":[{"kty":"oct","kid":"ec-1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#,
    );
    assert!(v.reload_if_changed().unwrap_err().to_string().contains("symmetric"));
    std::fs::remove_file(&path).unwrap();
    assert!(v.reload_if_changed().is_err());
    assert_eq!(check(&by_two), Ok("svc".to_owned()));

    // The old key is retired.
    write_atomic(&path, &jwks(vec![jwk(&two, Algorithm::ES256, "ec-2")]));
    assert!(v.reload_if_changed().unwrap());
    assert_eq!(
        (check(&by_one), check(&by_two)),
        (Err("unknown_key"), Ok("svc".to_owned()))
    );

    // A broken file at startup is a setup error naming the key.
    write_atomic(&path, "not json");
    let err = Verifier::from_section_with_env(&section, |_| None).unwrap_err();
    assert!(
        matches!(err, AuthSetupError::Jwks { .. }) && err.to_string().starts_with("auth.jwks_file: "),
        "{err}"
    );
}
