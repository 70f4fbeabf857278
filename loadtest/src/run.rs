//! The open-loop schedule, and one request measured from its scheduled send time.
//!
//! Request `i` is due at `start + i / rate`. The scheduler sleeps until then, takes an in-flight
//! permit without waiting (none free: the request is dropped), and spawns the request. If the
//! scheduler itself falls behind, the late requests go out at once and their lateness counts in
//! their latency; the report's `max_send_lag_ms` says how late the generator ever was.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use crate::prompts;
use crate::report::{Report, Timing};
use crate::stats::{Failure, Outcome, Recorder, Success};

/// Longest SSE line accepted while looking for the first token; a longer one fails the request.
const MAX_SSE_LINE: usize = 1 << 20;

/// Runs the load test described by `config` and returns its report.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    config.validate()?;
    let bodies = prompts::prepare(&config.prompts, &config.model, config.max_tokens, config.stream)?;
    let client = reqwest::Client::builder()
        .default_headers(config.headers.clone())
        .timeout(config.timeout)
        .pool_max_idle_per_host(config.max_in_flight)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let endpoint: Arc<str> = config.endpoint().into();
    let permits = Arc::new(Semaphore::new(config.max_in_flight));

    let mut recorder = Recorder::default();
    let mut in_flight = JoinSet::new();
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let measure_end = config.duration.map(|d| measure_start + d);
    let mut scheduled_measured = 0u64;
    let mut max_lag = Duration::ZERO;
    let mut last_send = measure_start;

    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / config.rate);
        let measured = due >= measure_start;
        if measured {
            if config.requests.is_some_and(|n| scheduled_measured >= n) || measure_end.is_some_and(|end| due >= end) {
                break;
            }
            scheduled_measured += 1;
        }
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        max_lag = max_lag.max(now - due);
        last_send = now;

        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let request = Request {
                    client: client.clone(),
                    endpoint: Arc::clone(&endpoint),
                    body: bodies[(i % bodies.len() as u64) as usize].clone(),
                    stream: config.stream,
                    due,
                    measured,
                };
                in_flight.spawn(request.send(permit));
            }
            Err(_) => recorder.drop_one(measured),
        }
        while let Some(done) = in_flight.try_join_next() {
            recorder.record(&done.context("a request task failed")?);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        recorder.record(&done.context("a request task failed")?);
    }

    let interval = Duration::from_secs_f64(1.0 / config.rate);
    let timing = Timing {
        target_rate: config.rate,
        scheduled: scheduled_measured,
        // N sends span N - 1 intervals; adding one makes an on-time run read exactly `rate`.
        send_window: last_send.saturating_duration_since(measure_start) + interval,
        total_window: Instant::now().saturating_duration_since(measure_start),
        max_send_lag: max_lag,
        streaming: config.stream,
    };
    Ok(Report::new(&recorder, &timing))
}

/// One request, ready to go.
struct Request {
    client: reqwest::Client,
    endpoint: Arc<str>,
    body: Bytes,
    stream: bool,
    /// When the schedule wanted it sent: the zero of its latency.
    due: Instant,
    measured: bool,
}

impl Request {
    /// Sends the request and reads the whole response, holding `permit` until done.
    async fn send(self, permit: OwnedSemaphorePermit) -> Outcome {
        let _permit = permit;
        let response = self
            .client
            .post(&*self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return Outcome {
                    measured: self.measured,
                    route: None,
                    reason: None,
                    result: Err(classify(&e)),
                };
            }
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (route, reason) = (header("x-r1-route"), header("x-r1-route-reason"));
        let status = response.status();
        let result = if !status.is_success() {
            Err(Failure::Status(status.as_u16()))
        } else if self.stream {
            read_stream(response, self.due).await
        } else {
            read_body(response, self.due).await
        };
        Outcome {
            measured: self.measured,
            route,
            reason,
            result,
        }
    }
}

/// Reads and discards a JSON body; latency runs to its last byte.
async fn read_body(mut response: reqwest::Response, due: Instant) -> Result<Success, Failure> {
    while response.chunk().await.map_err(|e| classify(&e))?.is_some() {}
    Ok(Success {
        latency: due.elapsed(),
        ttft: None,
    })
}

/// Reads an SSE body, noting when the first `data:` event with content arrives.
async fn read_stream(mut response: reqwest::Response, due: Instant) -> Result<Success, Failure> {
    let mut ttft = None;
    let mut line = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
        if ttft.is_some() {
            continue;
        }
        for &byte in chunk.iter() {
            if byte != b'\n' {
                line.push(byte);
                if line.len() > MAX_SSE_LINE {
                    return Err(Failure::Other);
                }
                continue;
            }
            if has_content(&line) {
                ttft = Some(due.elapsed());
                break;
            }
            line.clear();
        }
    }
    Ok(Success {
        latency: due.elapsed(),
        ttft,
    })
}

/// Whether an SSE line is a `data:` event whose delta carries text (`content` or `reasoning_content`).
/// A role-only first chunk, `[DONE]` and comments do not count.
fn has_content(line: &[u8]) -> bool {
    let Some(data) = line.strip_prefix(b"data:") else {
        return false;
    };
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) else {
        return false;
    };
    let Some(choices) = event["choices"].as_array() else {
        return false;
    };
    choices.iter().any(|choice| {
        ["content", "reasoning_content"]
            .iter()
            .any(|key| choice["delta"][key].as_str().is_some_and(|text| !text.is_empty()))
    })
}

fn classify(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect
    } else {
        Failure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::has_content;

    #[test]
    fn content_means_text_in_a_delta() {
        assert!(has_content(br#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#));
        assert!(has_content(
            br#"data:{"choices":[{"delta":{"reasoning_content":"so"}}]}"#
        ));
        assert!(!has_content(
            br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(!has_content(b"data: [DONE]"));
        assert!(!has_content(b": keep-alive"));
        assert!(!has_content(br#"event: x {"choices":[{"delta":{"content":"Hi"}}]}"#));
    }
}
