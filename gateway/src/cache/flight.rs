//! Singleflight: identical requests in flight at once share one generation. The first of them leads
//! (goes upstream); the others wait, bounded, for its answer.
//!
//! One map of flights per process, under a plain mutex held only to look up, insert or remove — never
//! across an `.await`. A flight's outcome is published on a `watch` channel, so a waiter that joins
//! after the outcome was published still sees it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use r1_proto::ChatCompletionResponse;
use tokio::sync::watch;

/// Where a flight is.
#[derive(Debug, Clone)]
pub(super) enum State {
    /// The leader is generating.
    Pending,
    /// The leader's answer.
    Done(Arc<ChatCompletionResponse>),
    /// The leader failed or went away: waiters go upstream themselves.
    Released,
}

/// One generation in progress.
#[derive(Debug)]
pub(super) struct Flight {
    state: watch::Sender<State>,
    waiters: AtomicUsize,
}

impl Flight {
    /// Publishes the outcome (waiters wake).
    pub(super) fn publish(&self, state: State) {
        self.state.send_replace(state);
    }
}

/// What joining a key's flight gave.
#[derive(Debug)]
pub(super) enum Join {
    /// No flight was in progress: this request leads a new one.
    Lead(Arc<Flight>),
    /// One is in progress: wait on the receiver (the slot counts this waiter until dropped).
    Wait(watch::Receiver<State>, WaiterSlot),
    /// One is in progress but `max_waiters` already wait for it.
    Full,
}

/// Counts one waiter of a flight while it lives.
#[derive(Debug)]
pub(super) struct WaiterSlot(Arc<Flight>);

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The flights in progress, by cache key.
#[derive(Debug, Default)]
pub(super) struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

impl Flights {
    /// Leads a new flight for `key`, or joins the one in progress.
    pub(super) fn join(&self, key: &str, max_waiters: usize) -> Join {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.entry(key.to_owned()) {
            Entry::Occupied(entry) => {
                let flight = entry.get();
                // Counted under the map lock, so the bound holds exactly.
                if flight.waiters.load(Ordering::Acquire) >= max_waiters {
                    return Join::Full;
                }
                flight.waiters.fetch_add(1, Ordering::AcqRel);
                Join::Wait(flight.state.subscribe(), WaiterSlot(Arc::clone(flight)))
            }
            Entry::Vacant(entry) => {
                let flight = Arc::new(Flight {
                    state: watch::Sender::new(State::Pending),
                    waiters: AtomicUsize::new(0),
                });
                entry.insert(Arc::clone(&flight));
                Join::Lead(flight)
            }
        }
    }

    /// Ends `flight` (if it is still the one under `key`): later requests start afresh.
    pub(super) fn remove(&self, key: &str, flight: &Arc<Flight>) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(key).is_some_and(|current| Arc::ptr_eq(current, flight)) {
            map.remove(key);
        }
    }

    /// How many requests wait for `key`'s flight right now.
    pub(super) fn waiters(&self, key: &str) -> usize {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).map_or(0, |flight| flight.waiters.load(Ordering::Acquire))
    }

    /// How many flights are in progress.
    pub(super) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
