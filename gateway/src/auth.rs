//! JWT bearer authentication: the `[auth]` table and a [`Verifier`] that turns a request's headers into a
//! [`Principal`] or a reason-labelled [`AuthError`]. Pure: no I/O per request, no logging, no metrics.
//!
//! # Wiring
//!
//! ```text
//! config:    GatewayConfig { #[serde(default)] auth: auth::AuthSection, .. }
//!            problems.extend(self.auth.problems());          // r1_config::Validate; pure, keys start `auth.`
//! startup:   let verifier = config.auth.verifier()?;         // Option<Verifier>: None when `enabled = false`;
//!                                                            // reads the secrets and the JWKS file once
//! reload:    build a new one with `verifier()` when `[auth]` changed; on Err refuse the reload (old stays)
//! periodic:  verifier.reload_if_changed()                    // every few seconds: the JWKS file; Err keeps
//!                                                            // the old keys (log it, count it)
//! request:   match verifier.verify(&req.headers, &req.uri) {
//!                Ok(principal) => ctx.principal = Some(principal),   // subject + claims (`tier`, …)
//!                Err(e) => {
//!                    counter.with_label_values(&[e.reason()]).inc(); // bounded: AuthError::ALL
//!                    return Err(e.to_gateway_error());               // 401, generic body, no upstream call
//!                }                                                   // (+ `WWW-Authenticate: e.www_authenticate()`)
//!            }
//! ```
//!
//! What is accepted: exactly one `Authorization: Bearer <JWT>` header (scheme case-insensitive) or, with no
//! `Authorization`, exactly one `x-api-key: <JWT>` (Anthropic's SDKs send their key there), no token-like
//! value in the query string, at most `max_token_bytes`; `alg` pinned per key — `HS256` with the shared
//! secret(s) (current, then previous during a rotation), `RS256`/`ES256` only with JWKS keys (matched by
//! `kid` when the token names one); `exp` required, `nbf` checked, both with `leeway`; `aud`/`iss` required
//! and checked when configured; a subject from the first of `subject_claims` present.
//!
//! Cost per request: one small header decode, then jsonwebtoken's decode (HMAC, or one RSA/ECDSA verify per
//! candidate key) and the claims map. Keys are decoded once, when the [`Verifier`] is built or reloaded.
//! A token verified lately is not verified again: the last [`VERIFIED_TOKENS`] good tokens are kept with
//! their principal until `exp` + `leeway` passes, for at most [`VERIFIED_FOR`] (so a key dropped from the
//! JWKS file stops its tokens within that, and at once when the file's new keys are loaded). A refused
//! token is never kept: each try is verified again. A new `[auth]` builds a new verifier, empty.

mod jwks;
mod refusal;
mod section;

pub use refusal::{AuthError, AuthSetupError};
pub use section::AuthSection;
use section::SecretSource;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Uri};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use r1_config::Validate;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// The environment variable the HS256 secret comes from when neither `secret_env` nor `secret_file` is set.
pub const DEFAULT_SECRET_ENV: &str = "R1_JWT_SECRET";
/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// The largest `leeway` accepted.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);
/// The range `max_token_bytes` must be within.
pub const TOKEN_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=65_536;
/// The longest subject accepted, in bytes (it keys tasks, limits and cache entries).
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Query parameter names that carry a token by convention (compared case-insensitively).
const QUERY_TOKEN_KEYS: [&str; 7] = [
    "token",
    "access_token",
    "id_token",
    "auth_token",
    "jwt",
    "authorization",
    "bearer",
];
/// A secret file larger than this is certainly not a secret.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// How many verified tokens a verifier remembers (the least used are forgotten first).
pub const VERIFIED_TOKENS: u64 = 10_000;
/// The longest a verified token is remembered, whatever its `exp`.
pub const VERIFIED_FOR: Duration = Duration::from_secs(60);

/// A token that verified: who it names, and until when (Unix seconds: its `exp` plus the leeway).
#[derive(Debug, Clone)]
struct Verified {
    principal: Arc<Principal>,
    until: u64,
}

/// Who is calling: the subject (tasks, limits and cache entries are keyed on it) and every claim of the token.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// From the first of `subject_claims` present in the token.
    pub subject: String,
    /// All claims, as the token carries them (`exp`, `tier`, …).
    pub claims: Map<String, Value>,
}

impl Principal {
    /// A string claim (for routing rules and limits, e.g. `tier`); `None` when absent or not a string.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name)?.as_str()
    }
}

/// Checks bearer tokens against the keys of an [`AuthSection`]; built once, shared (`Arc`) by every request.
#[derive(Debug)]
pub struct Verifier {
    /// HS256 secrets: the current one first, then the previous one during a rotation. Empty: HS256 refused.
    secrets: Vec<DecodingKey>,
    /// RS256/ES256 public keys, swapped in whole on reload.
    jwks: Option<jwks::Jwks>,
    /// The claim checks, one per algorithm (jsonwebtoken pins the algorithm in its `Validation`).
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
    subject_claims: Vec<String>,
    max_token_bytes: usize,
    leeway: u64,
    /// Tokens that verified lately (see the module docs).
    verified: moka::sync::Cache<Box<str>, Verified>,
}

impl Verifier {
    /// Builds a verifier from `section`, reading secrets from the process environment and files now.
    /// It does not look at `enabled` (see [`AuthSection::verifier`]).
    pub fn from_section(section: &AuthSection) -> Result<Self, AuthSetupError> {
        Self::from_section_with_env(section, |name| {
            crate::env::Environment::var(&crate::env::ProcessEnv, name)
        })
    }

    /// As [`from_section`](Self::from_section), with environment variables looked up through `env`
    /// (a layered loader, or a test's map).
    pub fn from_section_with_env(
        section: &AuthSection,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthSetupError> {
        let problems = section.problems();
        if !problems.is_empty() {
            return Err(AuthSetupError::Invalid(problems));
        }
        let mut secrets = Vec::with_capacity(2);
        for source in [section.current_secret(), section.previous_secret()]
            .into_iter()
            .flatten()
        {
            let (key, secret) = read_secret(source, &env)?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(AuthSetupError::SecretTooShort { key, len: secret.len() });
            }
            // Non-empty, so `from_secret` cannot fail; the error arm keeps the type honest.
            let decoding =
                DecodingKey::from_secret(&secret).map_err(|_| AuthSetupError::SecretTooShort { key, len: 0 })?;
            secrets.push(decoding);
        }
        let jwks = match &section.jwks_file {
            Some(path) => Some(jwks::Jwks::load(path).map_err(|message| AuthSetupError::Jwks {
                path: path.clone(),
                message,
            })?),
            None => None,
        };
        Ok(Self {
            secrets,
            jwks,
            hs256: validation(Algorithm::HS256, section),
            rs256: validation(Algorithm::RS256, section),
            es256: validation(Algorithm::ES256, section),
            subject_claims: section.subject_claims.clone(),
            max_token_bytes: section.max_token_bytes,
            leeway: section.leeway.as_secs(),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(VERIFIED_FOR)
                .build(),
        })
    }

    /// Re-reads the JWKS file: `Ok(true)` when new keys are in use, `Ok(false)` when the content is what was
    /// last seen (or no file is configured), `Err` when new content is unreadable or holds no usable key —
    /// the old keys stay, and the same broken content is not reported again. Call it every few seconds.
    pub fn reload_if_changed(&self) -> Result<bool, AuthSetupError> {
        let changed = match &self.jwks {
            Some(jwks) => jwks.reload_if_changed().map_err(|message| AuthSetupError::Jwks {
                path: jwks.path().to_owned(),
                message,
            })?,
            None => false,
        };
        if changed {
            // A token of a key that is gone must not stay good.
            self.verified.invalidate_all();
        }
        Ok(changed)
    }

    /// The JWKS file, when one is configured (for a file watcher).
    pub fn jwks_file(&self) -> Option<&Path> {
        self.jwks.as_ref().map(jwks::Jwks::path)
    }

    /// How many JWKS keys are in use now.
    pub fn jwks_keys(&self) -> usize {
        self.jwks.as_ref().map_or(0, |j| j.keys().len())
    }

    /// Checks the request's bearer token; on success, who is calling. CPU only (microseconds for HS256, one
    /// public-key verification per candidate key for RS256/ES256; a lookup for a token that verified lately).
    pub fn verify(&self, headers: &HeaderMap, uri: &Uri) -> Result<Arc<Principal>, AuthError> {
        if uri.query().is_some_and(query_carries_token) {
            return Err(AuthError::QueryToken);
        }
        let token = self.bearer_token(headers)?;
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(known) = self.verified.get(token)
            && now < known.until
        {
            return Ok(known.principal);
        }
        let principal = Arc::new(self.verify_token(token)?);
        let exp = principal.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let until = exp.saturating_add(self.leeway);
        if now < until {
            let known = Verified {
                principal: Arc::clone(&principal),
                until,
            };
            self.verified.insert(token.into(), known);
        }
        Ok(principal)
    }

    /// Verifies `token` (signature, then claims) into its principal.
    fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        let (alg, kid) = read_header(token)?;
        let claims = match alg {
            Algorithm::HS256 => self.verify_hs256(token)?,
            Algorithm::RS256 => self.verify_jwks(token, Algorithm::RS256, &self.rs256, kid.as_deref())?,
            Algorithm::ES256 => self.verify_jwks(token, Algorithm::ES256, &self.es256, kid.as_deref())?,
            _ => return Err(AuthError::AlgNotAllowed),
        };
        let subject = self.subject(&claims)?;
        Ok(Principal { subject, claims })
    }

    /// The token of the one `Authorization: Bearer` header — or, without one, of the one `x-api-key`
    /// header (where Anthropic's SDKs send their key) — checked for size and shape (three base64url parts).
    fn bearer_token<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return self.api_key_token(headers);
        };
        if values.next().is_some() {
            return Err(AuthError::MultipleHeaders);
        }
        let raw = value.as_bytes().trim_ascii();
        if raw.len() > self.max_token_bytes + "Bearer ".len() + 16 {
            return Err(AuthError::TooLarge);
        }
        if raw.is_empty() {
            return Err(AuthError::Malformed);
        }
        let (scheme, rest) = match raw.iter().position(|b| *b == b' ' || *b == b'\t') {
            Some(i) => (&raw[..i], &raw[i + 1..]),
            None => (raw, &[][..]),
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(AuthError::WrongScheme);
        }
        self.checked_token(rest.trim_ascii())
    }

    /// The token of the one `x-api-key` header: the JWT itself, no scheme.
    fn api_key_token<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
        let mut values = headers.get_all("x-api-key").iter();
        let value = values.next().ok_or(AuthError::Missing)?;
        if values.next().is_some() {
            return Err(AuthError::MultipleHeaders);
        }
        let token = value.as_bytes().trim_ascii();
        if token.is_empty() {
            return Err(AuthError::Malformed);
        }
        self.checked_token(token)
    }

    /// `token` checked for size and shape (three base64url parts).
    fn checked_token<'h>(&self, token: &'h [u8]) -> Result<&'h str, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let base64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
        let mut parts = token.split(|b| *b == b'.');
        let shape_ok = matches!(
            (parts.next(), parts.next(), parts.next(), parts.next()),
            (Some(h), Some(p), Some(s), None)
                if !h.is_empty() && !p.is_empty() && h.iter().chain(p).chain(s).all(base64url)
        );
        if !shape_ok {
            return Err(AuthError::Malformed);
        }
        // All ASCII by now, so this cannot fail.
        std::str::from_utf8(token).map_err(|_| AuthError::Malformed)
    }

    fn verify_hs256(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        if self.secrets.is_empty() {
            return Err(AuthError::AlgNotAllowed);
        }
        for key in &self.secrets {
            if let Some(claims) = decode(token, key, &self.hs256)? {
                return Ok(claims);
            }
        }
        Err(AuthError::BadSignature)
    }

    fn verify_jwks(
        &self,
        token: &str,
        alg: Algorithm,
        validation: &Validation,
        kid: Option<&str>,
    ) -> Result<Map<String, Value>, AuthError> {
        let Some(jwks) = &self.jwks else {
            return Err(AuthError::AlgNotAllowed);
        };
        let keys = jwks.keys();
        let mut any_for_alg = false;
        let mut tried = false;
        for key in keys.iter().filter(|k| k.alg == alg) {
            any_for_alg = true;
            if kid.is_some() && key.kid.as_deref() != kid {
                continue;
            }
            tried = true;
            if let Some(claims) = decode(token, &key.key, validation)? {
                return Ok(claims);
            }
        }
        Err(match (any_for_alg, tried) {
            (false, _) => AuthError::AlgNotAllowed,
            (true, false) => AuthError::UnknownKey,
            (true, true) => AuthError::BadSignature,
        })
    }

    fn subject(&self, claims: &Map<String, Value>) -> Result<String, AuthError> {
        let value = self
            .subject_claims
            .iter()
            .find_map(|name| claims.get(name).filter(|v| !v.is_null()))
            .ok_or(AuthError::NoSubject)?;
        let subject = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => return Err(AuthError::NoSubject),
        };
        if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES || subject.chars().any(char::is_control) {
            return Err(AuthError::NoSubject);
        }
        Ok(subject)
    }
}

/// jsonwebtoken's decode with its errors turned into ours; `Ok(None)` when the signature does not match
/// this key (the caller tries the next one). The signature is checked before any claim, so claims of a
/// forged token are never looked at.
fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Option<Map<String, Value>>, AuthError> {
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
        Ok(data) => Ok(Some(data.claims)),
        Err(e) => match e.kind() {
            JwtErrorKind::InvalidSignature => Ok(None),
            kind => Err(map_jwt_error(kind)),
        },
    }
}

fn map_jwt_error(kind: &JwtErrorKind) -> AuthError {
    match kind {
        JwtErrorKind::InvalidSignature
        | JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidRsaKey(_)
        | JwtErrorKind::InvalidKeyFormat
        | JwtErrorKind::Provider(_) => AuthError::BadSignature,
        JwtErrorKind::InvalidAlgorithm
        | JwtErrorKind::InvalidAlgorithmName
        | JwtErrorKind::MissingAlgorithm
        | JwtErrorKind::UnsupportedAlgorithm => AuthError::AlgNotAllowed,
        JwtErrorKind::ExpiredSignature => AuthError::Expired,
        JwtErrorKind::ImmatureSignature => AuthError::NotYetValid,
        JwtErrorKind::InvalidAudience => AuthError::BadAudience,
        JwtErrorKind::InvalidIssuer => AuthError::BadIssuer,
        JwtErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => AuthError::MissingExp,
            "aud" => AuthError::BadAudience,
            "iss" => AuthError::BadIssuer,
            _ => AuthError::Malformed,
        },
        _ => AuthError::Malformed,
    }
}

/// The JOSE header's `alg` and `kid`. `alg` is matched exactly (`none`, `None`, `HS512`, … are refused by
/// the caller); a header that is not base64url JSON is malformed.
fn read_header(token: &str) -> Result<(Algorithm, Option<String>), AuthError> {
    #[derive(Deserialize)]
    struct JoseHeader {
        #[serde(default)]
        alg: Option<String>,
        #[serde(default)]
        kid: Option<String>,
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| AuthError::Malformed)?;
    let header: JoseHeader = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    let alg = match header.alg.as_deref() {
        Some("HS256") => Algorithm::HS256,
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        _ => return Err(AuthError::AlgNotAllowed),
    };
    Ok((alg, header.kid))
}

/// Whether the query string carries something that looks like a token: a conventional parameter name
/// (`token`, `access_token`, `jwt`, …) or a value starting with `eyJ` (base64 of `{"`), optionally after `Bearer`.
fn query_carries_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if QUERY_TOKEN_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return true;
        }
        let value = value.as_bytes();
        let value = ["Bearer+", "Bearer%20", "Bearer "]
            .iter()
            .find(|p| value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
            .map_or(value, |p| &value[p.len()..]);
        value.starts_with(b"eyJ")
    })
}

/// The claim checks for one algorithm: `exp` required, `nbf` checked, `leeway`, and `aud`/`iss` required and
/// checked when configured (jsonwebtoken alone would accept a token without them).
fn validation(alg: Algorithm, section: &AuthSection) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = section.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    match &section.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        // jsonwebtoken refuses any `aud` when none is expected; without an audience configured, ignore it.
        None => v.validate_aud = false,
    }
    if let Some(iss) = &section.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

fn read_secret(
    source: SecretSource<'_>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(&'static str, Vec<u8>), AuthSetupError> {
    match source {
        SecretSource::Env(key, var) => match env(var) {
            Some(value) if !value.is_empty() => Ok((key, value.into_bytes())),
            _ => Err(AuthSetupError::SecretEnvUnset {
                key,
                var: var.to_owned(),
            }),
        },
        SecretSource::File(key, path) => {
            let file_error = |source| AuthSetupError::SecretFile {
                key,
                path: path.to_owned(),
                source,
            };
            let bytes = r1_config::secret::read_file(path, MAX_SECRET_FILE_BYTES).map_err(file_error)?;
            Ok((key, bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> AuthSection {
        toml::from_str(toml_text).unwrap()
    }

    const SECRET: &str = "unit-test-secret-0123456789abcdef0123";

    fn verifier(toml_text: &str) -> Verifier {
        Verifier::from_section_with_env(&section(toml_text), |name| {
            (name == DEFAULT_SECRET_ENV).then(|| SECRET.to_owned())
        })
        .unwrap()
    }

    fn hs256(claims: &Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn an_x_api_key_header_carries_the_token_when_there_is_no_authorization() {
        let v = verifier("");
        let token = hs256(&serde_json::json!({"user_id": "u1", "exp": now() + 60}));
        let uri: Uri = "/v1/messages".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", token.parse().unwrap());
        assert_eq!(v.verify(&headers, &uri).unwrap().subject, "u1");
        // Authorization wins: a bad one is not rescued by a good x-api-key.
        headers.insert(AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(matches!(v.verify(&headers, &uri), Err(AuthError::Malformed)));
        let mut two = HeaderMap::new();
        two.append("x-api-key", token.parse().unwrap());
        two.append("x-api-key", token.parse().unwrap());
        assert!(matches!(v.verify(&two, &uri), Err(AuthError::MultipleHeaders)));
        let mut bad = HeaderMap::new();
        bad.insert("x-api-key", "sk-not-a-jwt".parse().unwrap());
        assert!(matches!(v.verify(&bad, &uri), Err(AuthError::Malformed)));
    }

    #[test]
    fn a_verifier_is_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Verifier>();
        shared::<Principal>();
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = section("");
        assert_eq!(s, AuthSection::default());
        assert!(s.enabled && s.hs256);
        assert_eq!(s.leeway, Duration::from_secs(30));
        assert_eq!(s.subject_claims, ["user_id", "sub"]);
        assert_eq!(s.max_token_bytes, 8192);
        assert!(s.problems().is_empty());
        assert!(matches!(
            s.current_secret(),
            Some(SecretSource::Env("auth.secret_env", DEFAULT_SECRET_ENV))
        ));
        assert!(s.previous_secret().is_none());
    }

    #[test]
    fn unknown_keys_and_a_secret_in_the_config_are_refused() {
        let err = toml::from_str::<AuthSection>("secret = \"hunter2\"").unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let s = section(
            r#"
            hs256 = false
            secret_env = "1BAD"
            secret_file = "/run/s"
            previous_secret_env = "R1_OLD"
            leeway = "10m"
            max_token_bytes = 100
            subject_claims = ["sub", "", "sub"]
            audience = " "
            "#,
        );
        let problems = s.problems();
        let expected = [
            "auth.secret_file: set either auth.secret_env or auth.secret_file, not both",
            "auth.secret_env: `1BAD` is not an environment variable name",
            "auth.secret_env: set, but auth.hs256 is false",
            "auth.previous_secret_env: set, but auth.hs256 is false",
            "auth.hs256: false and no auth.jwks_file: no token could ever be accepted",
            "auth.leeway: 10m exceeds the maximum of 5m",
            "auth.max_token_bytes: 100 must be within 1024..=65536",
            "auth.subject_claims[1]: must not be empty",
            "auth.subject_claims[2]: `sub` is listed twice",
            "auth.audience: must not be empty when set",
        ];
        assert_eq!(problems, expected);
        assert!(matches!(
            Verifier::from_section_with_env(&s, |_| None),
            Err(AuthSetupError::Invalid(p)) if p == expected
        ));
    }

    #[test]
    fn the_same_source_twice_is_a_problem() {
        let s = section("secret_env = \"A\"\nprevious_secret_env = \"A\"");
        assert_eq!(
            s.problems(),
            ["auth.previous_secret_env: must name another source than the current secret"]
        );
        // A disabled table still has to be well-formed, but needs no way to verify.
        assert!(section("enabled = false\nhs256 = false").problems().is_empty());
    }

    #[test]
    fn setup_errors_name_the_key() {
        let err = Verifier::from_section_with_env(&section(""), |_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "auth.secret_env: environment variable R1_JWT_SECRET is not set or empty"
        );
        let err = Verifier::from_section_with_env(&section(""), |_| Some("short".to_owned())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "auth.secret_env: the secret is 5 bytes; HS256 needs at least 32"
        );
        let err = Verifier::from_section_with_env(&section("secret_file = \"/nonexistent/r1-secret\""), |_| None)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("auth.secret_file: /nonexistent/r1-secret: "),
            "{err}"
        );
        let err = Verifier::from_section_with_env(&section("previous_secret_env = \"R1_OLD\""), |name| {
            (name == DEFAULT_SECRET_ENV).then(|| SECRET.to_owned())
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "auth.previous_secret_env: environment variable R1_OLD is not set or empty"
        );
        assert!(section("enabled = false").verifier().unwrap().is_none());
    }

    #[test]
    fn a_token_that_verified_is_remembered_until_its_exp_and_a_refused_one_never() {
        let v = verifier("");
        let uri: Uri = "/v1/chat/completions".parse().unwrap();
        let exp = now() + 60;
        let token = hs256(&serde_json::json!({"user_id": "u1", "exp": exp}));
        let headers = bearer(&format!("Bearer {token}"));
        let first = v.verify(&headers, &uri).unwrap();
        // The same principal, not a second verification.
        assert!(Arc::ptr_eq(&first, &v.verify(&headers, &uri).unwrap()));
        assert_eq!(v.verified.get(token.as_str()).unwrap().until, exp + v.leeway);

        // A refused token is never kept.
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"user_id": "u1", "exp": now() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(b"another secret, not the verifier's, 32+ bytes").unwrap(),
        )
        .unwrap();
        assert_eq!(
            v.verify(&bearer(&format!("Bearer {forged}")), &uri)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        assert!(v.verified.get(forged.as_str()).is_none());

        // A remembered token past its `exp` is verified again (here: refused, as its signature is bad).
        let stale = Verified {
            principal: Arc::clone(&first),
            until: now() - 1,
        };
        v.verified.insert(forged.clone().into(), stale);
        assert_eq!(
            v.verify(&bearer(&format!("Bearer {forged}")), &uri)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
    }

    #[test]
    fn reasons_are_distinct_and_messages_generic() {
        let mut reasons: Vec<_> = AuthError::ALL.iter().map(|e| e.reason()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), AuthError::ALL.len());
        for e in AuthError::ALL {
            let gw = e.to_gateway_error();
            assert_eq!(gw.kind.status(), 401);
            assert_eq!(gw.code, Some("invalid_api_key"));
            if !matches!(e, AuthError::Missing | AuthError::QueryToken) {
                assert_eq!(gw.message, "invalid or expired token");
            }
        }
    }

    #[test]
    fn query_tokens_are_recognized() {
        for q in [
            "token=abc",
            "a=1&access_token=abc",
            "JWT=x",
            "id_token",
            "x=eyJhbGciOiJIUzI1NiJ9.e30.sig",
            "x=Bearer%20eyJhbGci",
            "x=bearer+eyJhbGci",
        ] {
            assert!(query_carries_token(q), "{q}");
        }
        for q in ["", "stream=true", "after=task_123&limit=10", "q=eye", "tokens_used=3"] {
            assert!(!query_carries_token(q), "{q}");
        }
    }

    #[test]
    fn scheme_is_case_insensitive_and_whitespace_tolerated() {
        let v = verifier("");
        let token = hs256(&serde_json::json!({"user_id": "u1", "exp": now() + 60}));
        let uri: Uri = "/v1/chat/completions".parse().unwrap();
        for value in [
            format!("Bearer {token}"),
            format!("bearer {token}"),
            format!("BEARER  {token} "),
        ] {
            assert_eq!(v.verify(&bearer(&value), &uri).unwrap().subject, "u1", "{value}");
        }
        for (value, reason) in [
            ("Bearer", "malformed"),
            ("Bearer ", "malformed"),
            ("Token abc", "wrong_scheme"),
            ("Bearer a.b", "malformed"),
            ("Bearer a.b.c.d", "malformed"),
            ("Bearer .b.c", "malformed"),
            ("Bearer a=.b.c", "malformed"),
            ("Bearer a.b.c", "malformed"),
        ] {
            assert_eq!(v.verify(&bearer(value), &uri).unwrap_err().reason(), reason, "{value}");
        }
        assert_eq!(v.verify(&HeaderMap::new(), &uri).unwrap_err().reason(), "missing");
    }

    #[test]
    fn subjects_come_from_the_first_claim_present() {
        let v = verifier("");
        let uri: Uri = "/".parse().unwrap();
        let exp = now() + 60;
        let check = |claims: Value| v.verify(&bearer(&format!("Bearer {}", hs256(&claims))), &uri);
        assert_eq!(
            check(serde_json::json!({"user_id": "a", "sub": "b", "exp": exp}))
                .unwrap()
                .subject,
            "a"
        );
        assert_eq!(check(serde_json::json!({"sub": "b", "exp": exp})).unwrap().subject, "b");
        assert_eq!(
            check(serde_json::json!({"user_id": 42, "exp": exp})).unwrap().subject,
            "42"
        );
        assert_eq!(
            check(serde_json::json!({"user_id": null, "sub": "b", "exp": exp}))
                .unwrap()
                .subject,
            "b"
        );
        let p = check(serde_json::json!({"sub": "b", "tier": "pro", "n": 1, "exp": exp})).unwrap();
        assert_eq!(
            (p.claim("tier"), p.claim("n"), p.claim("nope")),
            (Some("pro"), None, None)
        );
        for claims in [
            serde_json::json!({"exp": exp}),
            serde_json::json!({"user_id": "", "exp": exp}),
            serde_json::json!({"user_id": 1.5, "exp": exp}),
            serde_json::json!({"user_id": ["a"], "exp": exp}),
            serde_json::json!({"user_id": "a\nb", "exp": exp}),
            serde_json::json!({"user_id": "x".repeat(MAX_SUBJECT_BYTES + 1), "exp": exp}),
        ] {
            assert_eq!(check(claims.clone()).unwrap_err(), AuthError::NoSubject, "{claims}");
        }
    }

    #[test]
    fn claims_of_the_wrong_type_are_malformed() {
        let v = verifier("");
        let uri: Uri = "/".parse().unwrap();
        for (claims, expected) in [
            (
                serde_json::json!({"sub": "a", "exp": now() + 60, "nbf": "now"}),
                AuthError::Malformed,
            ),
            (serde_json::json!([1, 2]), AuthError::Malformed),
            // jsonwebtoken checks presence first: an `exp` that is not a number counts as missing.
            (
                serde_json::json!({"sub": "a", "exp": "tomorrow"}),
                AuthError::MissingExp,
            ),
        ] {
            let token = hs256(&claims);
            assert_eq!(
                v.verify(&bearer(&format!("Bearer {token}")), &uri).unwrap_err(),
                expected,
                "{claims}"
            );
        }
    }

    #[test]
    fn a_token_with_an_audience_is_accepted_when_none_is_configured() {
        let v = verifier("");
        let token = hs256(&serde_json::json!({"sub": "a", "aud": "someone", "iss": "x", "exp": now() + 60}));
        assert!(
            v.verify(&bearer(&format!("Bearer {token}")), &"/".parse().unwrap())
                .is_ok()
        );
    }
}
