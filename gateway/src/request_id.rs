//! `x-request-id`: the client's, or one the gateway makes: 32 hex digits, like a UUID's simple form, without a
//! `getrandom` syscall per request — a random 64-bit prefix drawn once per process, then a counter.
//! Unique across processes (the prefix) and within one (the counter); not secret, never used as a
//! credential.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static PREFIX: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The request's id: the client's `x-request-id` (1..=128 bytes), or the next one of ours.
pub fn of(header: &pingora::http::RequestHeader) -> String {
    header
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(next, str::to_owned)
}

/// The next request id.
pub fn next() -> String {
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    format!("{prefix:016x}{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_32_hex_digits() {
        let (a, b) = (super::next(), super::next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a[..16], b[..16], "one prefix per process");
    }
}
