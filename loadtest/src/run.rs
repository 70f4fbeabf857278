//! The open-loop schedule, and one request measured from its scheduled send time.
//!
//! Request `i` is due at `start + i / rate`. The scheduler sleeps until then, takes an in-flight
//! permit without waiting (none free: the request is dropped), and spawns the request. If the
//! scheduler itself falls behind, the late requests go out at once and their lateness counts in
//! their latency; the report's `max_send_lag_ms` says how late the generator ever was.
//!
//! A streamed answer is read to its end: [`SseScan`] notes its first token and whether it ended with
//! `[DONE]`, an in-band error event, both or neither. With [`Config::request_log`] set, every measured
//! request's outcome also goes to a [`RequestLog`], written when the run ends.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use crate::prompts;
use crate::report::{Report, Timing};
use crate::request_log::RequestLog;
use crate::sse::{SseScan, StreamEnd};
use crate::stats::{Failure, Outcome, Recorder};

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
    let (start, wall_start) = (Instant::now(), SystemTime::now());
    let measure_start = start + config.warmup;
    let mut log = config
        .request_log
        .as_ref()
        .map(|_| RequestLog::new(wall_start + config.warmup));
    let measure_end = config.duration.map(|d| measure_start + d);
    let mut scheduled_measured = 0u64;
    let mut max_lag = Duration::ZERO;
    let mut last_send = measure_start;

    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / config.rate);
        let measured = due >= measure_start;
        let index = if measured {
            if config.requests.is_some_and(|n| scheduled_measured >= n) || measure_end.is_some_and(|end| due >= end) {
                break;
            }
            scheduled_measured += 1;
            scheduled_measured - 1
        } else {
            i
        };
        let due_offset = due.saturating_duration_since(measure_start);
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
                    due_offset,
                    index,
                    measured,
                };
                in_flight.spawn(request.send(permit));
            }
            Err(_) => {
                recorder.drop_one(measured);
                if let (Some(log), true) = (log.as_mut(), measured) {
                    log.dropped(index, due_offset);
                }
            }
        }
        while let Some(done) = in_flight.try_join_next() {
            finish(&mut recorder, log.as_mut(), &done.context("a request task failed")?);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        finish(&mut recorder, log.as_mut(), &done.context("a request task failed")?);
    }
    if let (Some(log), Some(path)) = (log, &config.request_log) {
        log.write(path).await?;
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

/// Counts a finished request (and logs it, when measured and asked to).
fn finish(recorder: &mut Recorder, log: Option<&mut RequestLog>, outcome: &Outcome) {
    recorder.record(outcome);
    if let (Some(log), true) = (log, outcome.measured) {
        log.record(outcome);
    }
}

/// One request, ready to go.
struct Request {
    client: reqwest::Client,
    endpoint: Arc<str>,
    body: Bytes,
    stream: bool,
    /// When the schedule wanted it sent: the zero of its latency.
    due: Instant,
    /// `due`, from the start of the measured phase (zero in the warm-up).
    due_offset: Duration,
    /// Position in its phase's schedule.
    index: u64,
    measured: bool,
}

/// What reading a response found, before it becomes an [`Outcome`].
struct Read {
    status: Option<u16>,
    stream: Option<StreamEnd>,
    reset: bool,
    first_token: Option<Duration>,
    result: Result<(), Failure>,
}

impl Read {
    fn failed(failure: Failure) -> Self {
        Self {
            status: None,
            stream: None,
            reset: false,
            first_token: None,
            result: Err(failure),
        }
    }
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
        let (route, reason, read) = match response {
            Ok(response) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (route, reason) = (header("x-r1-route"), header("x-r1-route-reason"));
                let status = response.status();
                let mut read = if !status.is_success() {
                    Read::failed(Failure::Status(status.as_u16()))
                } else if self.stream {
                    read_stream(response, self.due).await
                } else {
                    read_body(response).await
                };
                read.status = Some(status.as_u16());
                (route, reason, read)
            }
            Err(e) => (None, None, Read::failed(classify(&e))),
        };
        Outcome {
            measured: self.measured,
            index: self.index,
            due: self.due_offset,
            elapsed: self.due.elapsed(),
            route,
            reason,
            status: read.status,
            stream: read.stream,
            reset: read.reset,
            first_token: read.first_token,
            result: read.result,
        }
    }
}

/// Reads and discards a JSON body.
async fn read_body(mut response: reqwest::Response) -> Read {
    loop {
        match response.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => {
                break Read {
                    status: None,
                    stream: None,
                    reset: false,
                    first_token: None,
                    result: Ok(()),
                };
            }
            Err(e) => {
                let failure = classify(&e);
                break Read {
                    reset: failure != Failure::Timeout,
                    ..Read::failed(failure)
                };
            }
        }
    }
}

/// Reads an SSE body to its end, noting when the first token came and which end markers it carried.
/// It is ok only with `[DONE]`, no error event, and a clean end of the body.
async fn read_stream(mut response: reqwest::Response, due: Instant) -> Read {
    let mut scan = SseScan::default();
    let mut reset = false;
    let broken = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if scan.feed(&chunk, due.elapsed()).is_err() {
                    break Some(Failure::Other);
                }
            }
            Ok(None) => break None,
            Err(e) => {
                let failure = classify(&e);
                reset = failure != Failure::Timeout;
                break Some(failure);
            }
        }
    };
    let end = scan.end();
    let result = match (end, broken) {
        (StreamEnd::FakeDone, _) => Err(Failure::FakeDone),
        (StreamEnd::ErrorEvent, _) => Err(Failure::ErrorEvent),
        (StreamEnd::Done, None) => Ok(()),
        (StreamEnd::Done | StreamEnd::Cut, Some(failure)) => Err(failure),
        (StreamEnd::Cut, None) => Err(Failure::Cut),
    };
    Read {
        status: None,
        stream: Some(end),
        reset,
        first_token: scan.first_token,
        result,
    }
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
