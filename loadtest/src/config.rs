//! What a run sends and when it stops, plus the parsers for the CLI's durations and headers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// One load test, validated. Build it from the CLI or, in tests, from [`Config::default`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the gateway; requests go to `{url}/v1/chat/completions`.
    pub url: String,
    /// Target rate in requests per second, held open loop.
    pub rate: f64,
    /// Stop after this long (measured phase, after the warm-up). With `requests` too, whichever comes first.
    pub duration: Option<Duration>,
    /// Stop after this many measured requests have been scheduled.
    pub requests: Option<u64>,
    /// Sent at the same rate before measuring; not in the report.
    pub warmup: Duration,
    /// Requests out at once; a scheduled request beyond this is dropped.
    pub max_in_flight: usize,
    /// Chat request objects, sent round-robin; see [`crate::prompts`].
    pub prompts: Vec<Value>,
    /// `model` for prompts that name none.
    pub model: String,
    /// Overrides `max_tokens` in every prompt.
    pub max_tokens: Option<u32>,
    /// Send `stream: true` and measure time to first token.
    pub stream: bool,
    /// Extra request headers, such as `authorization`.
    pub headers: HeaderMap,
    /// Per-request limit, from the actual send to the end of the body.
    pub timeout: Duration,
    /// Where to write one JSON line per measured request (see [`crate::request_log`]); `None`: no log.
    pub request_log: Option<PathBuf>,
}

impl Default for Config {
    /// The CLI's defaults: 100 req/s for 30 s against the demo gateway with the built-in prompts.
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".to_owned(),
            rate: 100.0,
            duration: Some(Duration::from_secs(30)),
            requests: None,
            warmup: Duration::ZERO,
            max_in_flight: 1024,
            prompts: crate::prompts::builtin(),
            model: "deepseek-r1".to_owned(),
            max_tokens: None,
            stream: false,
            headers: HeaderMap::new(),
            timeout: Duration::from_secs(60),
            request_log: None,
        }
    }
}

impl Config {
    /// Checks the settings that the types allow but a run cannot use, reporting all of them at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if !(self.rate.is_finite() && self.rate > 0.0) {
            problems.push(format!("rate: must be a positive number, got {}", self.rate));
        }
        if self.duration.is_none() && self.requests.is_none() {
            problems.push("duration/requests: give at least one stop condition".to_owned());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            problems.push("duration: must be more than 0".to_owned());
        }
        if self.requests == Some(0) {
            problems.push("requests: must be at least 1".to_owned());
        }
        if self.max_in_flight == 0 {
            problems.push("max_in_flight: must be at least 1".to_owned());
        }
        if self.prompts.is_empty() {
            problems.push("prompts: none to send".to_owned());
        }
        if self.timeout.is_zero() {
            problems.push("timeout: must be more than 0".to_owned());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!("url: must start with http:// or https://, got `{}`", self.url));
        }
        ensure!(problems.is_empty(), "invalid settings:\n  {}", problems.join("\n  "));
        Ok(())
    }

    /// The chat completions endpoint under [`Config::url`].
    pub fn endpoint(&self) -> String {
        format!("{}/v1/chat/completions", self.url.trim_end_matches('/'))
    }
}

/// Parses a duration as `500ms`, `10s`, `1.5s`, `2m`, `1h`, or plain seconds (`30`).
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 10s, 2m, 500ms or 30"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("`{text}`: unknown unit `{other}` (use ms, s, m or h)"),
    };
    Duration::try_from_secs_f64(seconds).with_context(|| format!("`{text}` is out of range"))
}

/// Parses a request header given as `name: value`.
pub fn parse_header(text: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let Some((name, value)) = text.split_once(':') else {
        bail!("header `{text}` must look like `name: value`");
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes()).with_context(|| format!("header name in `{text}`"))?;
    let value = HeaderValue::from_str(value.trim()).with_context(|| format!("header value in `{text}`"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "10x", "-1s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn headers_split_at_the_first_colon() {
        let (name, value) = parse_header("Authorization: Bearer a:b").unwrap();
        assert_eq!(name, "authorization");
        assert_eq!(value, "Bearer a:b");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn validation_reports_every_problem() {
        let config = Config {
            rate: 0.0,
            duration: None,
            requests: None,
            max_in_flight: 0,
            ..Config::default()
        };
        let message = config.validate().unwrap_err().to_string();
        for key in ["rate:", "duration/requests:", "max_in_flight:"] {
            assert!(message.contains(key), "{message}");
        }
        assert!(Config::default().validate().is_ok());
        assert_eq!(
            Config {
                url: "http://h:1/".to_owned(),
                ..Config::default()
            }
            .endpoint(),
            "http://h:1/v1/chat/completions"
        );
    }
}
