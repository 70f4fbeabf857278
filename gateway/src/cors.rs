//! CORS for browser apps: off unless `[cors] allowed_origins` lists origins (or `"*"`).
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is
//! answered `204` before authentication (browsers send it without credentials); one from any other
//! origin gets a `403` without CORS headers, so the browser blocks the call. Every answer to an allowed
//! origin — proxied, hand-off, cache hit or error — carries `Access-Control-Allow-Origin` (the origin,
//! with `Vary: Origin`) and exposes the gateway's own headers to scripts.

use std::time::Duration;

use pingora::http::{RequestHeader, ResponseHeader};
use serde::Deserialize;

/// Response headers a browser script may read.
const EXPOSED: &str = "x-request-id, x-r1-route, x-r1-route-reason, x-r1-model, x-r1-model-version, x-r1-task-id, x-r1-cache, retry-after, location";
/// Methods the API takes.
const METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers allowed when a preflight names none.
const HEADERS: &str = "authorization, content-type, x-request-id, x-session-id";

/// `[cors]`. Live-reloadable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Origins allowed to call the API from a browser (`https://app.example.com`), or `"*"` for any;
    /// empty (the default): CORS off.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsSection {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age: default_max_age(),
        }
    }
}

fn default_max_age() -> Duration {
    Duration::from_secs(600)
}

impl CorsSection {
    /// The request's `Origin` if it is allowed.
    pub fn allowed(&self, request: &RequestHeader) -> Option<String> {
        if self.allowed_origins.is_empty() {
            return None;
        }
        let origin = request.headers.get("origin")?.to_str().ok()?;
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
            .then(|| origin.to_owned())
    }

    /// What is wrong with the section.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            let scheme = origin.starts_with("https://") || origin.starts_with("http://");
            let bare = origin
                .split("://")
                .nth(1)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if origin != "*" && !(scheme && bare) {
                problems.push(format!(
                    "cors.allowed_origins[{i}]: `{origin}` must be \"*\" or scheme://host[:port] with no path"
                ));
            }
        }
        problems
    }
}

/// Whether `request` is a CORS preflight.
pub fn is_preflight(request: &RequestHeader) -> bool {
    request.method == http::Method::OPTIONS
        && request.headers.contains_key("origin")
        && request.headers.contains_key("access-control-request-method")
}

/// The answer to a preflight from `origin` (allowed), as `request` asks.
pub fn preflight(request: &RequestHeader, origin: &str, section: &CorsSection) -> pingora::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(204, Some(8))?;
    allow(&mut header, origin)?;
    header.insert_header("access-control-allow-methods", METHODS)?;
    let asked = request
        .headers
        .get("access-control-request-headers")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or(HEADERS)
        .to_owned();
    header.insert_header("access-control-allow-headers", asked)?;
    header.insert_header("access-control-max-age", section.max_age.as_secs().to_string())?;
    header.insert_header("content-length", "0")?;
    Ok(header)
}

/// Marks an answer as readable by `origin` (allowed).
pub fn allow(header: &mut ResponseHeader, origin: &str) -> pingora::Result<()> {
    header.insert_header("access-control-allow-origin", origin.to_owned())?;
    header.insert_header("access-control-expose-headers", EXPOSED)?;
    header.append_header("vary", "Origin")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, origin: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/v1/chat/completions", None).unwrap();
        if let Some(o) = origin {
            r.insert_header("origin", o).unwrap();
        }
        r
    }

    #[test]
    fn only_listed_origins_are_allowed_and_off_by_default() {
        let off = CorsSection::default();
        assert_eq!(off.allowed(&request("POST", Some("https://app.example"))), None);
        let on = CorsSection {
            allowed_origins: vec!["https://app.example".into()],
            max_age: default_max_age(),
        };
        assert_eq!(
            on.allowed(&request("POST", Some("https://app.example"))).as_deref(),
            Some("https://app.example")
        );
        assert_eq!(on.allowed(&request("POST", Some("https://evil.example"))), None);
        assert_eq!(on.allowed(&request("POST", None)), None);
        let any = CorsSection {
            allowed_origins: vec!["*".into()],
            max_age: default_max_age(),
        };
        assert!(any.allowed(&request("POST", Some("http://localhost:3000"))).is_some());
        let bad = CorsSection {
            allowed_origins: vec!["app.example".into(), "https://app.example/path".into()],
            max_age: default_max_age(),
        };
        assert_eq!(bad.problems().len(), 2);
    }

    #[test]
    fn a_preflight_is_told_what_it_may_send() {
        let mut r = request("OPTIONS", Some("https://app.example"));
        assert!(!is_preflight(&r));
        r.insert_header("access-control-request-method", "POST").unwrap();
        r.insert_header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        )
        .unwrap();
        assert!(is_preflight(&r));
        let answer = preflight(&r, "https://app.example", &CorsSection::default()).unwrap();
        assert_eq!(answer.status, 204);
        assert_eq!(answer.headers["access-control-allow-origin"], "https://app.example");
        assert_eq!(
            answer.headers["access-control-allow-headers"],
            "authorization, content-type, x-stainless-os"
        );
        assert_eq!(answer.headers["access-control-max-age"], "600");
    }
}
