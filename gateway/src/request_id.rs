//! `x-request-id`: the client's, or one the gateway makes: 32 hex digits, like a UUID's simple form, without a
//! `getrandom` syscall per request — a random 64-bit prefix drawn once per process, then a counter.
//! Unique across processes (the prefix) and within one (the counter); not secret, never used as a
//! credential.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static PREFIX: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The request's id: the client's `x-request-id` when it is 1..=128 bytes of `[A-Za-z0-9._-]` (what
/// tracing systems and UUIDs use), else the next one of ours — an id with spaces, quotes or control
/// bytes would be written raw into logs and headers (log injection), so it is replaced, not escaped.
pub fn of(header: &pingora::http::RequestHeader) -> String {
    header
        .headers
        .get("x-request-id")
        .map(http::HeaderValue::as_bytes)
        .filter(|v| is_safe(v))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map_or_else(next, str::to_owned)
}

/// Whether a client's id is taken as it is.
fn is_safe(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The next request id.
pub fn next() -> String {
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    format!("{prefix:016x}{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_id_is_kept_only_when_it_cannot_inject_into_logs() {
        let with = |id: &[u8]| {
            let mut header = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
            header
                .insert_header("x-request-id", http::HeaderValue::from_bytes(id).unwrap())
                .unwrap();
            super::of(&header)
        };
        assert_eq!(with(b"req-01.abc_DEF"), "req-01.abc_DEF");
        assert_eq!(
            with(b"0f8fad5b-d9cb-469f-a165-70867728950e"),
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        );
        for hostile in [
            &b"a b"[..],
            b"x\" level=error msg=\"forged",
            b"id\tinjected",
            b"caf\xc3\xa9",
            &[b'a'; 129],
        ] {
            let id = with(hostile);
            assert_eq!(id.len(), 32, "{hostile:?} replaced by one of ours");
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn ids_are_distinct_32_hex_digits() {
        let (a, b) = (super::next(), super::next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a[..16], b[..16], "one prefix per process");
    }
}
