//! The gateway's side of results: every waiting request registers its task id and gets a
//! [`ReplyStream`]; the results source (a Kafka partition, or the in-process center) hands chunks to
//! [`ResultRouter::dispatch`], which never blocks (a task's answer is bounded by its `max_tokens`,
//! so an unbounded per-request channel is bounded in practice, and one slow client never stalls the
//! others).
//!
//! Order and duplicates: the chunks of one run of a task arrive in order; a chunk whose `seq` was
//! already seen is dropped. When a center node dies mid-answer the task is redelivered and run
//! again as a higher `attempt`: the stream reports [`ReplyEvent::Restarted`] and follows the new run;
//! chunks of older runs are dropped from then on. What to do with the text already sent to a
//! client is the caller's decision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use r1_proto::ResultChunk;
use tokio::sync::mpsc;

/// Counters of the router (exported as metrics by the gateway).
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Chunks handed to a waiting request.
    pub delivered: AtomicU64,
    /// Chunks for no waiting request (the client left, or an earlier incarnation of this instance).
    pub orphaned: AtomicU64,
    /// Chunks dropped as duplicates or as leftovers of an older attempt.
    pub duplicates: AtomicU64,
}

/// Task id → the request waiting for it.
#[derive(Debug, Default)]
pub struct ResultRouter {
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<ResultChunk>>>,
    /// Counters.
    pub stats: RouterStats,
}

impl ResultRouter {
    /// A router with nobody waiting.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts waiting for `task_id` (before the task is handed over, so no chunk can be missed).
    pub fn register(self: &Arc<Self>, task_id: &str) -> ReplyStream {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(task_id.to_owned(), tx);
        }
        ReplyStream {
            task_id: task_id.to_owned(),
            rx,
            router: self.clone(),
            attempt: None,
            next_seq: 0,
        }
    }

    /// Hands `chunk` to the request waiting for it; `false` if none is.
    pub fn dispatch(&self, chunk: ResultChunk) -> bool {
        let sender = self
            .waiting
            .lock()
            .ok()
            .and_then(|waiting| waiting.get(&chunk.task_id).cloned());
        let delivered = sender.is_some_and(|tx| tx.send(chunk).is_ok());
        let counter = if delivered {
            &self.stats.delivered
        } else {
            &self.stats.orphaned
        };
        counter.fetch_add(1, Ordering::Relaxed);
        delivered
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().map_or(0, |w| w.len())
    }

    fn forget(&self, task_id: &str) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(task_id);
        }
    }
}

/// What a waiting request reads.
#[allow(clippy::large_enum_variant)] // each chunk is moved once; boxing would allocate per chunk
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyEvent {
    /// The next chunk of the current run.
    Chunk(ResultChunk),
    /// A new run of the task started (a redelivery); its chunks follow, from `seq` 0.
    Restarted {
        /// The new run.
        attempt: u32,
    },
}

/// The chunks of one task, in order, without duplicates. Dropping it stops the waiting.
#[derive(Debug)]
pub struct ReplyStream {
    task_id: String,
    rx: mpsc::UnboundedReceiver<ResultChunk>,
    router: Arc<ResultRouter>,
    attempt: Option<u32>,
    next_seq: u64,
}

impl ReplyStream {
    /// The task this stream waits for.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The next event; `None` only if the router went away.
    pub async fn next(&mut self) -> Option<ReplyEvent> {
        loop {
            let chunk = self.rx.recv().await?;
            match self.attempt {
                Some(current) if chunk.attempt < current => {}
                Some(current) if chunk.attempt == current && chunk.seq < self.next_seq => {}
                Some(current) if chunk.attempt == current => {
                    self.next_seq = chunk.seq + 1;
                    return Some(ReplyEvent::Chunk(chunk));
                }
                None if chunk.seq == 0 || chunk.attempt == 0 => {
                    // The first run we hear of.
                    self.attempt = Some(chunk.attempt);
                    self.next_seq = chunk.seq + 1;
                    return Some(ReplyEvent::Chunk(chunk));
                }
                _ => {
                    // A newer run: report it, then deliver this chunk on the next call.
                    let attempt = chunk.attempt;
                    self.attempt = Some(attempt);
                    self.next_seq = 0;
                    self.push_front(chunk);
                    return Some(ReplyEvent::Restarted { attempt });
                }
            }
            self.router.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn push_front(&mut self, chunk: ResultChunk) {
        // Re-queue through a fresh channel: the chunk first, then whatever was already waiting.
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(chunk);
        while let Ok(rest) = self.rx.try_recv() {
            let _ = tx.send(rest);
        }
        if let Ok(mut waiting) = self.router.waiting.lock() {
            waiting.insert(self.task_id.clone(), tx);
        }
        self.rx = rx;
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        self.router.forget(&self.task_id);
    }
}

#[cfg(test)]
mod tests {
    use r1_proto::ResultDelta;

    use super::*;

    fn chunk(seq: u64, attempt: u32, text: &str) -> ResultChunk {
        ResultChunk::delta("t", seq, ResultDelta::content(text)).with_attempt(attempt)
    }

    fn text(event: Option<ReplyEvent>) -> String {
        match event {
            Some(ReplyEvent::Chunk(c)) => c.delta.and_then(|d| d.content).unwrap_or_default(),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn duplicates_and_older_attempts_are_dropped_and_a_new_attempt_is_announced() {
        let router = ResultRouter::new();
        let mut stream = router.register("t");
        assert!(!router.dispatch(ResultChunk::delta("other", 0, ResultDelta::default())));
        for c in [chunk(0, 0, "a"), chunk(0, 0, "a"), chunk(1, 0, "b"), chunk(0, 1, "A")] {
            assert!(router.dispatch(c));
        }
        assert_eq!(text(stream.next().await), "a");
        assert_eq!(text(stream.next().await), "b");
        assert_eq!(stream.next().await, Some(ReplyEvent::Restarted { attempt: 1 }));
        // A late chunk of attempt 0 is dropped; attempt 1 continues.
        router.dispatch(chunk(2, 0, "c"));
        router.dispatch(chunk(1, 1, "B"));
        assert_eq!(text(stream.next().await), "A");
        assert_eq!(text(stream.next().await), "B");
        assert_eq!(router.stats.duplicates.load(Ordering::Relaxed), 2);
        assert_eq!(router.stats.orphaned.load(Ordering::Relaxed), 1);
        drop(stream);
        assert_eq!(router.waiting(), 0);
        assert!(
            !router.dispatch(chunk(2, 1, "C")),
            "nobody waits after the stream is dropped"
        );
    }
}
