//! What an admitted request holds: its place under `max_in_flight`, its concurrency slot and its token reservation.

use super::*;

/// A place among `max_in_flight`; given back on drop.
#[derive(Debug)]
pub struct InFlightGuard {
    pub(super) inner: Arc<Inner>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted request. Holds its concurrency slot until dropped; [`Admission::record_usage`] corrects its
/// token reservation by what it actually used.
#[derive(Debug)]
pub struct Admission {
    pub(super) inner: Option<Arc<Inner>>,
    /// Tokens reserved against `tokens_per_minute` (0 when that limit is off).
    pub(super) reserved: u64,
    pub(super) holder: Holder,
}

#[derive(Debug)]
pub(super) enum Holder {
    Unlimited,
    Redis {
        /// The token bucket, when `tokens_per_minute` was counted.
        token_key: Option<String>,
        /// Dropping it makes the lease task remove the lease (it renews it meanwhile).
        _lease: Option<oneshot::Sender<()>>,
    },
    Local {
        entry: Arc<Mutex<LocalSubject>>,
        /// Whether a concurrency slot was taken.
        slot: bool,
        /// The share of the limits it was admitted under.
        share: f64,
        /// Whether tokens were reserved.
        tokens: bool,
    },
}

impl Admission {
    pub(super) fn unlimited() -> Self {
        Self {
            inner: None,
            reserved: 0,
            holder: Holder::Unlimited,
        }
    }

    /// Who decided it.
    pub fn admitted_by(&self) -> AdmittedBy {
        match self.holder {
            Holder::Unlimited => AdmittedBy::Unlimited,
            Holder::Redis { .. } => AdmittedBy::Redis,
            Holder::Local { .. } => AdmittedBy::Local,
        }
    }

    /// Tokens reserved against `tokens_per_minute` (0 when that limit is off).
    pub fn reserved_tokens(&self) -> u64 {
        self.reserved
    }

    /// Corrects the token reservation to `actual_tokens` (the response's `usage.total_tokens`; 0 when the
    /// request failed before the model ran), then frees the concurrency slot. Does not wait: the Redis
    /// update runs in a task, bounded by `redis_timeout`, and is lost if Redis does not answer.
    pub fn record_usage(self, actual_tokens: u64) {
        let Some(inner) = &self.inner else { return };
        if self.reserved == 0 || actual_tokens == self.reserved {
            return;
        }
        let delta = i128::from(actual_tokens) - i128::from(self.reserved);
        let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
        let section = inner.section.load_full();
        match &self.holder {
            Holder::Unlimited => {}
            Holder::Redis {
                token_key: Some(key), ..
            } => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let tpm = section.quota(1.0).tpm;
                if tpm <= 0.0 {
                    return;
                }
                let (inner, key) = (inner.clone(), key.clone());
                runtime.spawn(async move {
                    let Some(redis) = &inner.redis else { return };
                    let mut invocation = RECORD.prepare_invoke();
                    invocation.key(&key).arg(tpm).arg(delta);
                    let Ok(mut connection) = redis.connection(&section) else {
                        return;
                    };
                    let _ = redis
                        .call::<i64>(&section, invocation.invoke_async(&mut connection))
                        .await;
                });
            }
            Holder::Redis { token_key: None, .. } => {}
            Holder::Local {
                entry, share, tokens, ..
            } => {
                let tpm = section.quota(*share).tpm;
                if *tokens && tpm > 0.0 {
                    let mut state = entry.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = Instant::now();
                    let level = state.tokens.level(now, tpm, tpm / 60.0);
                    state.tokens.set(now, (level - delta as f64).min(tpm));
                }
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Holder::Local { entry, slot: true, .. } = &self.holder {
            let mut state = entry.lock().unwrap_or_else(PoisonError::into_inner);
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}
