//! The dynamic batcher: one thread that owns the model and runs the generation loop.
//!
//! Every iteration of the loop (`Batcher::run`):
//! 1. **admit** queued requests while the running batch has room (`max_batch_size`); with
//!    `dynamic = false`, only when the batch is empty (classic static batching);
//! 2. **prefill** the admitted prompts as one left-padded group, sample each one's first token, and
//!    merge the group into the running batch;
//! 3. **decode** one token for every running row;
//! 4. **retire** rows that finished (EOS, stop sequence, `max_tokens`, context length) or whose client
//!    went away, freeing their slots for the next iteration.
//!
//! Requests reach it through a bounded queue ([`Submitter::try_submit`]): a full queue is refused at
//! once (the server answers 429), never buffered without bound, and so is a queue that moves too slowly
//! (its oldest request has waited longer than `max_queue_wait`: whoever joins now would wait longer). Results go back on a per-request
//! channel; a closed channel is how a disconnected client is noticed, at the next step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::engine::{Engine, KvBatch, Logits};
use crate::metrics::{EdgeMetrics, Outcome};
use crate::model::LoadedModel;
use crate::sampling::{Choice, Sampler, SamplingParams};
use crate::text::{IncrementalDecoder, TextCodec};

/// One generation to run.
#[derive(Debug)]
pub struct GenerationRequest {
    /// Token ids of the templated prompt (non-empty).
    pub prompt: Vec<u32>,
    /// How to pick tokens.
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Generation ends before the first occurrence of any of these (not included in the text).
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens until `max_tokens` (vLLM's `ignore_eos`, for
    /// benchmarks that need fixed-length generations).
    pub ignore_eos: bool,
    /// Where results go; dropping the receiver cancels the generation.
    pub events: mpsc::UnboundedSender<Event>,
    /// When the server accepted it.
    pub enqueued_at: Instant,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop sequence.
    Stop,
    /// `max_tokens` or the model's context length.
    Length,
}

/// What a request's channel receives: text pieces, then exactly one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Newly generated text.
    Text(String),
    /// The generation ended normally.
    Done {
        /// Why.
        reason: FinishReason,
        /// Prompt length in tokens.
        prompt_tokens: u32,
        /// Tokens generated.
        completion_tokens: u32,
        /// Mean probability of the chosen tokens.
        confidence: f32,
    },
    /// The model failed, or the server shut down before the generation finished.
    Failed(String),
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The admission queue is full: try again shortly.
    #[error("the admission queue is full")]
    Full,
    /// The oldest queued request has waited longer than `max_queue_wait`: try again shortly.
    #[error("queued requests wait {waited:?}, longer than the admission bound")]
    Backlogged {
        /// How long the oldest queued request has waited.
        waited: Duration,
    },
    /// The batcher has stopped.
    #[error("the generation loop has stopped")]
    Closed,
}

/// The sending side of the admission queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Submitter {
    queue: mpsc::Sender<GenerationRequest>,
    depth: Arc<AtomicUsize>,
    /// When each queued request was queued, oldest first (the queue is FIFO: the batcher pops one
    /// per request it takes).
    waiting: Arc<Mutex<VecDeque<Instant>>>,
    max_queue_wait: Option<Duration>,
    metrics: EdgeMetrics,
}

impl Submitter {
    /// Queues `request`, or refuses at once when the queue is full or its oldest request has waited
    /// longer than `max_queue_wait`.
    pub fn try_submit(&self, request: GenerationRequest) -> Result<(), SubmitError> {
        let Ok(mut waiting) = self.waiting.lock() else {
            return Err(SubmitError::Closed);
        };
        if let (Some(bound), Some(oldest)) = (self.max_queue_wait, waiting.front()) {
            let waited = oldest.elapsed();
            if waited > bound {
                return Err(SubmitError::Backlogged { waited });
            }
        }
        // Counted before the send: the batcher may take the request (and decrement) at once.
        let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        let enqueued_at = request.enqueued_at;
        match self.queue.try_send(request) {
            Ok(()) => {
                waiting.push_back(enqueued_at);
                self.metrics.queue_depth.set(depth as i64);
                Ok(())
            }
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => SubmitError::Full,
                    mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
                })
            }
        }
    }
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Join and leave at every step (true) or run static batches (false).
    pub dynamic: bool,
    /// Most running rows.
    pub max_batch_size: usize,
    /// Most queued requests.
    pub max_queue: usize,
    /// New requests are refused while the oldest queued one has waited longer than this.
    pub max_queue_wait: Option<Duration>,
}

/// Controls the running loop from outside.
#[derive(Debug)]
pub struct BatcherHandle {
    thread: Option<JoinHandle<()>>,
    abort: Arc<AtomicBool>,
}

impl BatcherHandle {
    /// Fails every running and queued generation at the next step and stops (shutdown grace is over).
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    /// Waits for the loop to end: it ends once every [`Submitter`] is dropped and the batch is empty.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the generation loop panicked");
        }
    }
}

/// Starts the generation loop on its own thread.
pub fn spawn(
    model: LoadedModel,
    settings: BatchSettings,
    metrics: EdgeMetrics,
) -> std::io::Result<(Submitter, BatcherHandle)> {
    let (tx, rx) = mpsc::channel(settings.max_queue.max(1));
    let depth = Arc::new(AtomicUsize::new(0));
    let waiting = Arc::new(Mutex::new(VecDeque::with_capacity(settings.max_queue.min(4096))));
    let abort = Arc::new(AtomicBool::new(false));
    let eos = model.files.eos_ids();
    let batcher = Batcher {
        context: model.engine.spec().context_length,
        engine: model.engine,
        text: model.text,
        eos,
        settings,
        queue: rx,
        depth: depth.clone(),
        waiting: waiting.clone(),
        abort: abort.clone(),
        metrics: metrics.clone(),
        running: Vec::new(),
        batch: None,
    };
    let thread = std::thread::Builder::new()
        .name("r1-edge-batcher".into())
        .spawn(move || batcher.run())?;
    Ok((
        Submitter {
            queue: tx,
            depth,
            waiting,
            max_queue_wait: settings.max_queue_wait,
            metrics,
        },
        BatcherHandle {
            thread: Some(thread),
            abort,
        },
    ))
}

struct Batcher {
    engine: Engine,
    text: Arc<TextCodec>,
    eos: Vec<u32>,
    context: usize,
    settings: BatchSettings,
    queue: mpsc::Receiver<GenerationRequest>,
    depth: Arc<AtomicUsize>,
    waiting: Arc<Mutex<VecDeque<Instant>>>,
    abort: Arc<AtomicBool>,
    metrics: EdgeMetrics,
    /// Row `i` of `batch` is `running[i]`.
    running: Vec<Sequence>,
    batch: Option<KvBatch>,
}

/// A request in the running batch.
struct Sequence {
    request: GenerationRequest,
    sampler: Sampler,
    decoder: IncrementalDecoder,
    generated: u32,
    /// All text generated so far, and how much of it was sent.
    text: String,
    sent: usize,
    probability_sum: f64,
    /// The token to feed at the next decode step, and its position.
    pending: u32,
    position: i64,
    finished: Option<FinishReason>,
}

impl Batcher {
    fn run(mut self) {
        loop {
            if self.abort.load(Ordering::Relaxed) {
                self.fail_all("the server is shutting down");
                return;
            }
            let admitted = match self.admit() {
                Some(admitted) => admitted,
                None => return, // queue closed and nothing running
            };
            if !admitted.is_empty() {
                self.prefill(admitted);
                self.retire(); // a first token can already end a generation
            }
            if !self.running.is_empty() {
                self.decode();
                self.retire();
            }
        }
    }

    /// Takes queued requests into the free rows; blocks only when nothing is running.
    fn admit(&mut self) -> Option<Vec<GenerationRequest>> {
        let room = if self.settings.dynamic || self.running.is_empty() {
            self.settings.max_batch_size.saturating_sub(self.running.len())
        } else {
            0
        };
        let mut admitted = Vec::new();
        if self.running.is_empty() {
            admitted.push(self.queue.blocking_recv()?);
        }
        while admitted.len() < room {
            match self.queue.try_recv() {
                Ok(request) => admitted.push(request),
                Err(_) => break,
            }
        }
        let depth = self.depth.fetch_sub(admitted.len(), Ordering::Relaxed) - admitted.len();
        self.metrics.queue_depth.set(depth as i64);
        if let Ok(mut waiting) = self.waiting.lock() {
            // A submitter pushes under this lock after its send: what was received is in the queue.
            let taken = admitted.len().min(waiting.len());
            waiting.drain(..taken);
        }
        // A client that left while queued costs nothing more.
        admitted.retain(|r| {
            let gone = r.events.is_closed();
            if gone {
                self.metrics.finished(Outcome::Cancelled);
            }
            !gone
        });
        Some(admitted)
    }

    fn prefill(&mut self, admitted: Vec<GenerationRequest>) {
        let started = Instant::now();
        let prompts: Vec<&[u32]> = admitted.iter().map(|r| r.prompt.as_slice()).collect();
        let result = self.engine.prefill(&prompts);
        self.metrics
            .step_seconds
            .with_label_values(&["prefill"])
            .observe(started.elapsed().as_secs_f64());
        let (joined, logits) = match result {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(error = %e, rows = admitted.len(), "prefill failed");
                for request in admitted {
                    self.metrics.finished(Outcome::Error);
                    let _ = request.events.send(Event::Failed(format!("model error: {e}")));
                }
                return;
            }
        };
        let merged = match self.batch.take() {
            Some(batch) => self.engine.merge(batch, joined),
            None => Ok(joined),
        };
        let new_rows: Vec<Sequence> = admitted
            .into_iter()
            .map(|request| Sequence {
                sampler: Sampler::new(request.sampling.clone()),
                position: request.prompt.len() as i64,
                request,
                decoder: IncrementalDecoder::default(),
                generated: 0,
                text: String::new(),
                sent: 0,
                probability_sum: 0.0,
                pending: 0,
                finished: None,
            })
            .collect();
        let first = self.running.len();
        self.running.extend(new_rows);
        match merged {
            Ok(batch) => self.batch = Some(batch),
            Err(e) => return self.fail_all(&format!("model error: {e}")),
        }
        self.accept(first, &logits);
    }

    fn decode(&mut self) {
        let Some(batch) = self.batch.as_mut() else { return };
        let tokens: Vec<u32> = self.running.iter().map(|s| s.pending).collect();
        let positions: Vec<i64> = self.running.iter().map(|s| s.position - 1).collect();
        self.metrics.batch_size.observe(tokens.len() as f64);
        let started = Instant::now();
        let result = self.engine.decode(batch, &tokens, &positions);
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics
            .step_seconds
            .with_label_values(&["decode"])
            .observe(elapsed);
        match result {
            Ok(logits) => {
                let rate = tokens.len() as f64 / elapsed.max(1e-9);
                let previous = self.metrics.tokens_per_second.get();
                self.metrics.tokens_per_second.set(if previous == 0.0 {
                    rate
                } else {
                    0.9 * previous + 0.1 * rate
                });
                self.accept(0, &logits);
            }
            Err(e) => {
                self.batch = None;
                self.fail_all(&format!("model error: {e}"));
            }
        }
    }

    /// Samples a token for rows `first..` from `logits` (row `k` of `logits` is row `first + k`).
    fn accept(&mut self, first: usize, logits: &Logits) {
        for (k, sequence) in self.running[first..].iter_mut().enumerate() {
            if sequence.finished.is_some() {
                continue;
            }
            let choice = sequence.sampler.sample(logits.row(k));
            if sequence.generated == 0 {
                self.metrics
                    .time_to_first_token
                    .observe(sequence.request.enqueued_at.elapsed().as_secs_f64());
            }
            self.metrics.generated_tokens.inc();
            sequence.advance(choice, &self.text, &self.eos, self.context);
        }
    }

    /// Drops finished and abandoned rows from the batch.
    fn retire(&mut self) {
        let keep: Vec<bool> = self
            .running
            .iter()
            .map(|s| {
                if let Some(reason) = s.finished {
                    let outcome = match reason {
                        FinishReason::Stop => Outcome::Stop,
                        FinishReason::Length => Outcome::Length,
                    };
                    self.metrics.finished(outcome);
                    self.metrics.confidence.observe(s.confidence().into());
                    let _ = s.request.events.send(Event::Done {
                        reason,
                        prompt_tokens: s.request.prompt.len() as u32,
                        completion_tokens: s.generated,
                        confidence: s.confidence(),
                    });
                    false
                } else if s.request.events.is_closed() {
                    self.metrics.finished(Outcome::Cancelled);
                    false
                } else {
                    true
                }
            })
            .collect();
        if keep.iter().all(|&k| k) {
            return;
        }
        let mut index = 0;
        self.running.retain(|_| {
            index += 1;
            keep[index - 1]
        });
        if let Some(batch) = self.batch.take() {
            match self.engine.retain(batch, &keep) {
                Ok(batch) if !batch.is_empty() => self.batch = Some(batch),
                Ok(_) => {}
                Err(e) => self.fail_all(&format!("model error: {e}")),
            }
        }
        self.metrics.running.set(self.running.len() as i64);
    }

    fn fail_all(&mut self, message: &str) {
        tracing::warn!(
            rows = self.running.len(),
            reason = message,
            "failing running generations"
        );
        for sequence in self.running.drain(..) {
            self.metrics.finished(Outcome::Error);
            let _ = sequence.request.events.send(Event::Failed(message.to_owned()));
        }
        self.batch = None;
        self.metrics.running.set(0);
        if self.abort.load(Ordering::Relaxed) {
            self.queue.close();
            while let Ok(request) = self.queue.try_recv() {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                self.metrics.finished(Outcome::Error);
                let _ = request.events.send(Event::Failed(message.to_owned()));
            }
            if let Ok(mut waiting) = self.waiting.lock() {
                waiting.clear();
            }
            self.metrics.queue_depth.set(0);
        }
    }
}

impl Sequence {
    fn confidence(&self) -> f32 {
        if self.generated == 0 {
            0.0
        } else {
            (self.probability_sum / f64::from(self.generated)) as f32
        }
    }

    /// Takes the sampled token: updates text, checks every end condition, sends what is safe to send.
    fn advance(&mut self, choice: Choice, text: &TextCodec, eos: &[u32], context: usize) {
        self.generated += 1;
        self.probability_sum += f64::from(choice.probability);
        self.pending = choice.token;
        self.position += 1;

        if !self.request.ignore_eos && eos.contains(&choice.token) {
            self.finished = Some(FinishReason::Stop);
        } else {
            let piece = self.decoder.push(text, choice.token);
            let search_from = self.text.len().saturating_sub(self.max_stop_len());
            self.text.push_str(&piece);
            if let Some(at) = self.first_stop(search_from) {
                self.text.truncate(at);
                self.finished = Some(FinishReason::Stop);
            } else if self.generated >= self.request.max_tokens || self.position as usize >= context {
                self.finished = Some(FinishReason::Length);
            }
        }
        // Hold back a tail that could still become a stop sequence; flush everything at the end.
        let safe = if self.finished.is_some() {
            self.text.len()
        } else {
            self.text.len() - self.stop_prefix_len()
        };
        // `safe` may fall below `sent` only if a stop prefix began in text already sent: nothing to do then.
        if safe > self.sent {
            let _ = self
                .request
                .events
                .send(Event::Text(self.text[self.sent..safe].to_owned()));
            self.sent = safe;
        }
    }

    fn max_stop_len(&self) -> usize {
        self.request.stop.iter().map(String::len).max().unwrap_or(0)
    }

    /// Byte offset of the earliest stop sequence starting at or after `from` (a char boundary search).
    fn first_stop(&self, from: usize) -> Option<usize> {
        let from = (from..=self.text.len()).find(|&i| self.text.is_char_boundary(i))?;
        self.request
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
    }

    /// Length of the longest suffix of the text that is a proper prefix of some stop sequence.
    fn stop_prefix_len(&self) -> usize {
        let mut longest = 0;
        for stop in &self.request.stop {
            for (end, _) in stop.char_indices().skip(1) {
                if end > longest && self.text.ends_with(&stop[..end]) {
                    longest = end;
                }
            }
        }
        longest
    }
}
