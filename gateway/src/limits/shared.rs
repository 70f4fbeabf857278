//! The shared counters in Redis: keys, the Lua scripts (admit, renew a lease, record usage), leases and the backend's health.

use super::*;

/// A subject's keys; `{subject}` is the hash tag, so a subject's keys share a Redis Cluster slot.
pub(super) struct Keys {
    pub(super) rate: String,
    pub(super) conc: String,
    pub(super) tok: String,
}

impl Keys {
    pub(super) fn new(subject: &str) -> Self {
        Self {
            rate: format!("r1:limits:{{{subject}}}:rate"),
            conc: format!("r1:limits:{{{subject}}}:conc"),
            tok: format!("r1:limits:{{{subject}}}:tok"),
        }
    }
}

/// KEYS: rate bucket, concurrency leases, token bucket.
/// ARGV: requests/s, burst, concurrent, lease id, lease ms, tokens/min, tokens asked (a limit of 0 is off).
/// Returns `{0, 0}` admitted (all three taken), or `{1|2|3, retry ms}` refused by rate|concurrency|tokens
/// (nothing taken). Buckets are hashes `{l = level, t = ms}`; leases a sorted set scored by expiry.
pub(super) static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rps, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, lease, ttl = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local tpm, cost = tonumber(ARGV[6]), tonumber(ARGV[7])
local function level(key, cap, per_ms)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, at = tonumber(v[1]), tonumber(v[2])
  if not l or not at then return cap end
  if now > at then l = l + (now - at) * per_ms end
  if l > cap then l = cap end
  return l
end
local rate, tokens
if rps > 0 then
  rate = level(KEYS[1], burst, rps / 1000)
  if rate < 1 then return {1, math.ceil((1 - rate) * 1000 / rps)} end
end
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= limit then return {2, 1000} end
end
if tpm > 0 then
  tokens = level(KEYS[3], tpm, tpm / 60000)
  local need = math.min(cost, tpm)
  if tokens < need then return {3, math.ceil((need - tokens) * 60000 / tpm)} end
end
if rps > 0 then
  rate = rate - 1
  redis.call('HSET', KEYS[1], 'l', rate, 't', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - rate) * 1000 / rps) + 1000)
end
if limit > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if tpm > 0 then
  tokens = tokens - cost
  redis.call('HSET', KEYS[3], 'l', tokens, 't', now)
  redis.call('PEXPIRE', KEYS[3], math.ceil((tpm - tokens) * 60000 / tpm) + 1000)
end
return {0, 0}
",
    )
});

/// KEYS: concurrency leases. ARGV: lease id, lease ms. Re-adds the lease if it lapsed meanwhile.
pub(super) static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// KEYS: token bucket. ARGV: tokens/min, actual − reserved (a refund when negative).
pub(super) static RECORD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'l', 't')
local l, at = tonumber(v[1]), tonumber(v[2])
if not l or not at then l = tpm elseif now > at then l = l + (now - at) * tpm / 60000 end
if l > tpm then l = tpm end
l = l - delta
if l > tpm then l = tpm end
redis.call('HSET', KEYS[1], 'l', l, 't', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((tpm - l) * 60000 / tpm) + 1000)
return 1
",
    )
});

/// Renews a Redis concurrency lease until the returned sender is dropped, then removes it. If the task
/// cannot run (its runtime went away), the lease lapses after `concurrency_lease`.
pub(super) fn spawn_lease(inner: Arc<Inner>, key: String, lease: String) -> oneshot::Sender<()> {
    let (done, mut dropped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let Some(redis) = &inner.redis else { return };
        loop {
            let period = inner.section.load().concurrency_lease / 3;
            tokio::select! {
                _ = &mut dropped => break,
                () = tokio::time::sleep(period) => {
                    let section = inner.section.load_full();
                    let mut invocation = RENEW.prepare_invoke();
                    invocation.key(&key).arg(&lease).arg(millis(section.concurrency_lease));
                    if let Ok(mut connection) = redis.connection(&section) {
                        let _ = redis.call::<i64>(&section, invocation.invoke_async(&mut connection)).await;
                    }
                }
            }
        }
        let section = inner.section.load_full();
        let mut release = redis::cmd("ZREM");
        release.arg(&key).arg(&lease);
        if let Ok(mut connection) = redis.connection(&section) {
            let _ = redis.call::<i64>(&section, release.query_async(&mut connection)).await;
        }
    });
    done
}

/// The shared counters' Redis, its health, and the switch to local counting.
pub(super) struct RedisBackend {
    pub(super) client: RedisClient,
    /// The connection (made lazily) and when it was made.
    pub(super) connection: ArcSwapOption<(RedisConnection, Instant)>,
    /// Set while Redis is unreachable: admissions count locally.
    pub(super) fallback: AtomicBool,
    /// While in fallback, when the next probe may try Redis (ms since `epoch`).
    pub(super) next_probe_ms: AtomicU64,
    pub(super) epoch: Instant,
    pub(super) errors: AtomicU64,
}

impl RedisBackend {
    pub(super) fn new(client: RedisClient) -> Self {
        Self {
            client,
            connection: ArcSwapOption::empty(),
            fallback: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            errors: AtomicU64::new(0),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// Whether this admission should ask Redis: always when healthy; in fallback, one caller per
    /// `redis_retry_interval` (the one that moves the next probe time on).
    pub(super) fn should_try(&self, section: &LimitsSection) -> bool {
        if !self.fallback.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe_ms.load(Ordering::Acquire);
        let after = now.saturating_add(millis(section.redis_retry_interval));
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(next, after, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// The connection, made now (lazily connecting, in the background) if there is none.
    pub(super) fn connection(&self, section: &LimitsSection) -> Result<RedisConnection, RedisUnavailable> {
        if let Some(current) = self.connection.load().as_ref() {
            return Ok(current.0.clone());
        }
        let timeouts = Timeouts {
            connect: REDIS_CONNECT_TIMEOUT,
            response: section.redis_timeout.max(Duration::from_millis(250)),
            retries: 0,
        };
        let manager = self
            .client
            .lazy(timeouts)
            .map_err(|e| self.failed(section, self.client.explain(&e)))?;
        self.connection.store(Some(Arc::new((manager.clone(), Instant::now()))));
        // Drive the lazy connection to the end even if the request that made it gives up first.
        let mut warm = manager.clone();
        tokio::spawn(async move {
            let ping = redis::cmd("PING");
            let _ = tokio::time::timeout(REDIS_CONNECT_TIMEOUT, ping.query_async::<String>(&mut warm)).await;
        });
        Ok(manager)
    }

    /// Runs `call` within `redis_timeout`; an error or timeout counts and switches to the fallback.
    pub(super) async fn call<T>(
        &self,
        section: &LimitsSection,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisUnavailable> {
        match tokio::time::timeout(section.redis_timeout, call).await {
            Ok(Ok(value)) => {
                self.answered();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.failed(section, self.client.explain(&e))),
            Err(_) => Err(self.failed(
                section,
                format!("no answer within {}", humantime::format_duration(section.redis_timeout)),
            )),
        }
    }

    pub(super) fn answered(&self) {
        if self.fallback.swap(false, Ordering::AcqRel) {
            tracing::info!("limits: Redis answers again; counting in Redis");
        }
    }

    pub(super) fn failed(&self, section: &LimitsSection, error: String) -> RedisUnavailable {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.next_probe_ms.store(
            self.now_ms().saturating_add(millis(section.redis_retry_interval)),
            Ordering::Release,
        );
        if !self.fallback.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "limits: Redis unreachable; counting locally until it answers");
        }
        // A connection that had its chance and still fails is replaced on the next try (a blackholed
        // connection is never noticed by the manager itself); a younger one may still be connecting.
        let current = self.connection.load();
        if let Some(current) = current.as_ref()
            && current.1.elapsed() >= REDIS_CONNECT_TIMEOUT
        {
            self.connection.compare_and_swap(current, None);
        }
        RedisUnavailable(error)
    }
}
