//! The JWKS file: RS256 and ES256 public keys, decoded once and swapped in whole when the file changes.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

/// A JWKS file larger than this is refused (a real one holds a handful of keys).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// At most this many keys in the file.
const MAX_KEYS: usize = 100;
/// RSA modulus sizes accepted, in bits (the verifier's own limit is 4096).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// base64url; JWK members carry no padding (RFC 7515 §2), but some producers add it.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One usable key.
#[derive(Debug)]
pub(super) struct JwksKey {
    /// The key's `kid`, matched against the token's.
    pub(super) kid: Option<String>,
    /// The one algorithm this key verifies (`RS256` or `ES256`).
    pub(super) alg: Algorithm,
    /// The decoded public key.
    pub(super) key: DecodingKey,
}

/// The file and the keys it held when last read successfully.
#[derive(Debug)]
pub(super) struct Jwks {
    path: PathBuf,
    keys: ArcSwap<Vec<JwksKey>>,
    /// The content last read, loaded or not: unchanged content is neither reloaded nor reported again.
    /// Held across a whole reload, so concurrent reloads run one at a time.
    seen: Mutex<Vec<u8>>,
}

impl Jwks {
    /// Reads and decodes `path`; the message says what is wrong.
    pub(super) fn load(path: &Path) -> Result<Self, String> {
        let bytes = read(path)?;
        let keys = parse(&bytes)?;
        Ok(Self {
            path: path.to_owned(),
            keys: ArcSwap::from_pointee(keys),
            seen: Mutex::new(bytes),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The keys in use now (a cheap pointer load).
    pub(super) fn keys(&self) -> Guard<Arc<Vec<JwksKey>>> {
        self.keys.load()
    }

    /// See [`super::Verifier::reload_if_changed`].
    pub(super) fn reload_if_changed(&self) -> Result<bool, String> {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = read(&self.path)?;
        if bytes == *seen {
            return Ok(false);
        }
        let parsed = parse(&bytes);
        *seen = bytes;
        self.keys.store(Arc::new(parsed?));
        Ok(true)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The members of a JWK we look at; others (`x5c`, `key_ops`, …) are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    /// Private key material: its presence refuses the file.
    #[serde(default)]
    d: Option<Value>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawJwk>,
}

/// Decodes a JWKS document. Keys for encryption (`use: enc`), for other algorithms or curves, and of other
/// types (`OKP`) are skipped; symmetric (`oct`) keys, private keys and broken keys refuse the whole file,
/// as does a file with no usable key left.
fn parse(bytes: &[u8]) -> Result<Vec<JwksKey>, String> {
    let set: RawSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    if set.keys.len() > MAX_KEYS {
        return Err(format!("{} keys, at most {MAX_KEYS} accepted", set.keys.len()));
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.into_iter().enumerate() {
        let name = match &jwk.kid {
            Some(kid) => format!("keys[{i}] (kid `{kid}`)"),
            None => format!("keys[{i}]"),
        };
        if jwk.d.is_some() {
            return Err(format!(
                "{name}: holds private key material (`d`); publish public keys only"
            ));
        }
        if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match jwk.kty.as_str() {
            "RSA" if jwk.alg.as_deref().is_none_or(|a| a == "RS256") => {
                rsa_key(&jwk).map_err(|e| format!("{name}: {e}"))?
            }
            "EC" if jwk.crv.as_deref() == Some("P-256") && jwk.alg.as_deref().is_none_or(|a| a == "ES256") => {
                ec_key(&jwk).map_err(|e| format!("{name}: {e}"))?
            }
            "oct" => {
                return Err(format!(
                    "{name}: a symmetric (`oct`) key; shared secrets come from auth.secret_env or auth.secret_file"
                ));
            }
            _ => continue,
        };
        keys.push(JwksKey {
            kid: jwk.kid,
            alg: if jwk.kty == "RSA" {
                Algorithm::RS256
            } else {
                Algorithm::ES256
            },
            key,
        });
    }
    if keys.is_empty() {
        return Err("no RS256 or ES256 signing key".to_owned());
    }
    Ok(keys)
}

fn member(value: Option<&String>, name: &str) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("`{name}` is missing"))?;
    B64URL
        .decode(value)
        .map_err(|e| format!("`{name}` is not base64url: {e}"))
}

fn rsa_key(jwk: &RawJwk) -> Result<DecodingKey, String> {
    let n = member(jwk.n.as_ref(), "n")?;
    let e = member(jwk.e.as_ref(), "e")?;
    let n_trimmed = trim_zeros(&n);
    let bits = n_trimmed
        .first()
        .map_or(0, |b| n_trimmed.len() * 8 - b.leading_zeros() as usize);
    if !RSA_BITS.contains(&bits) {
        return Err(format!(
            "RSA modulus of {bits} bits; {}..={} accepted",
            RSA_BITS.start(),
            RSA_BITS.end()
        ));
    }
    let e_trimmed = trim_zeros(&e);
    let exponent = if e_trimmed.len() <= 5 {
        e_trimmed.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    if exponent < 3 || exponent % 2 == 0 || exponent >= 1 << 33 {
        return Err("RSA exponent out of range".to_owned());
    }
    Ok(DecodingKey::from_rsa_raw_components(n_trimmed, e_trimmed))
}

fn ec_key(jwk: &RawJwk) -> Result<DecodingKey, String> {
    let x = member(jwk.x.as_ref(), "x")?;
    let y = member(jwk.y.as_ref(), "y")?;
    if x.len() != 32 || y.len() != 32 {
        return Err("P-256 coordinates must be 32 bytes each".to_owned());
    }
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let key = DecodingKey::from_ec_der(&point);
    // Building a verifier checks that the point is on the curve; an empty signature then simply fails.
    jsonwebtoken::crypto::verify("", b"", &key, Algorithm::ES256).map_err(|_| "not a point on P-256".to_owned())?;
    Ok(key)
}

fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa(bits: usize) -> Value {
        let mut n = vec![0xC5; bits / 8];
        n[bits / 8 - 1] = 0x01;
        serde_json::json!({"kty": "RSA", "kid": "r", "n": b64(&n), "e": "AQAB"})
    }

    fn parse_value(v: &Value) -> Result<Vec<JwksKey>, String> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn unusable_keys_are_skipped_and_dangerous_ones_refuse_the_file() {
        let keys = parse_value(&serde_json::json!({"keys": [
            rsa(2048),
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AA"},
        ]}))
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].kid.as_deref(), keys[0].alg), (Some("r"), Algorithm::RS256));

        for (doc, needle) in [
            (
                serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
                "symmetric",
            ),
            (serde_json::json!({"keys": [rsa(1024)]}), "1024 bits"),
            (
                serde_json::json!({"keys": [{"kty": "RSA", "n": "AQAB"}]}),
                "`e` is missing",
            ),
            (
                serde_json::json!({"keys": [{"kty": "RSA", "n": b64(&[0xC5; 256]), "e": "AQAB", "d": "AA"}]}),
                "private",
            ),
            (
                serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])}]}),
                "not a point",
            ),
            (
                serde_json::json!({"keys": [{"kty": "OKP", "x": "AA"}]}),
                "no RS256 or ES256",
            ),
            (serde_json::json!({"keys": []}), "no RS256 or ES256"),
            (serde_json::json!({"nokeys": []}), "not a JWKS document"),
        ] {
            let err = parse_value(&doc).unwrap_err();
            assert!(err.contains(needle), "{doc}: {err}");
        }
    }
}
