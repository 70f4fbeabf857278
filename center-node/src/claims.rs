//! One task, one result: redeliveries are recognised by task id.
//!
//! A node that starts a task claims it (`SET NX PX` in Redis, refreshed while it runs) and bumps
//! the task's attempt counter; when the task's last chunk is acknowledged it marks the task done.
//! A redelivered copy then finds one of three things:
//! - **done**: the answer was already produced — store the offset, run nothing (duplicate suppressed);
//! - **claimed** by a live node (a rebalance moved the partition while the task was running): wait
//!   until that node finishes or its claim lapses;
//! - **free** (the node that had it died; its claim lapsed): run it again as the next attempt.
//!
//! Without Redis (the embedded stack) the same rules hold in memory, for one process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use r1_queue::redis_conn::{RedisClient, RedisConnection, Timeouts};

/// What claiming a task found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours to run; this is run number `attempt` (0 first).
    Acquired {
        /// Runs before this one.
        attempt: u32,
    },
    /// Already answered.
    Done,
    /// Another node is running it.
    Busy,
}

/// Claim failures (the store is unreachable): the task is not run now and not acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("task claim store: {0}")]
pub struct ClaimError(pub String);

/// Where claims live.
#[async_trait]
pub trait Claims: Send + Sync + std::fmt::Debug {
    /// Tries to take `task_id` for `node` for `ttl`.
    async fn claim(&self, task_id: &str, node: &str, ttl: Duration) -> Result<Claim, ClaimError>;
    /// Extends our claim; `false` if it was lost.
    async fn refresh(&self, task_id: &str, node: &str, ttl: Duration) -> Result<bool, ClaimError>;
    /// Counts one more run of a task we hold (a retry after a failure); returns its number.
    async fn bump(&self, task_id: &str) -> Result<u32, ClaimError>;
    /// Marks the task answered (kept for `keep`) and drops the claim.
    async fn complete(&self, task_id: &str, keep: Duration) -> Result<(), ClaimError>;
}

/// Claims in Redis, shared by every center node.
#[derive(Clone)]
pub struct RedisClaims {
    connection: RedisConnection,
    timeout: Duration,
}

impl std::fmt::Debug for RedisClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClaims").finish_non_exhaustive()
    }
}

/// KEYS: done, claim, attempts. ARGV: owner, ttl ms, attempts ttl ms.
/// Returns -1 done, -2 busy (held by anyone, this process included), else the attempt number.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local n = redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  return n - 1
end
return -2
";

/// KEYS: claim. ARGV: node, ttl ms. 1 if refreshed.
const REFRESH: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// A task's keys; `{<task id>}` is the hash tag, so they share a Redis Cluster slot (the claim script and
/// the completion's `MULTI` touch several at once).
fn keys(task_id: &str) -> [String; 3] {
    [
        format!("r1:task:{{{task_id}}}:done"),
        format!("r1:task:{{{task_id}}}:claim"),
        format!("r1:task:{{{task_id}}}:attempts"),
    ]
}

/// The connection's own limits: a connection manager's defaults (the calls are bounded by `timeout`).
const CONNECTION: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    response: Duration::from_millis(500),
    retries: 6,
};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisClaims {
    /// Connects through `redis` (one server or a cluster); every call is bounded by `timeout`. A refused
    /// login or TLS handshake is an error naming the `[redis]` key to fix.
    pub async fn connect(redis: &RedisClient, timeout: Duration) -> Result<Self, ClaimError> {
        let connection = tokio::time::timeout(timeout * 4, redis.connect(CONNECTION))
            .await
            .map_err(|_| ClaimError(format!("connecting to Redis timed out after {:?}", timeout * 4)))?
            .map_err(|e| ClaimError(redis.explain(&e)))?;
        Ok(Self { connection, timeout })
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &str,
        keys: &[String],
        args: &[String],
    ) -> Result<T, ClaimError> {
        let mut connection = self.connection.clone();
        let script = redis::Script::new(script);
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(a);
        }
        tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| ClaimError("timed out".to_owned()))?
            .map_err(|e| ClaimError(e.to_string()))
    }
}

#[async_trait]
impl Claims for RedisClaims {
    async fn claim(&self, task_id: &str, node: &str, ttl: Duration) -> Result<Claim, ClaimError> {
        let n: i64 = self
            .run(
                CLAIM,
                &keys(task_id),
                &[
                    node.to_owned(),
                    ms(ttl).to_string(),
                    ms(Duration::from_secs(86_400)).to_string(),
                ],
            )
            .await?;
        Ok(match n {
            -1 => Claim::Done,
            -2 => Claim::Busy,
            n => Claim::Acquired {
                attempt: u32::try_from(n).unwrap_or(u32::MAX),
            },
        })
    }

    async fn refresh(&self, task_id: &str, node: &str, ttl: Duration) -> Result<bool, ClaimError> {
        let [_, claim, _] = keys(task_id);
        let n: i64 = self
            .run(REFRESH, &[claim], &[node.to_owned(), ms(ttl).to_string()])
            .await?;
        Ok(n == 1)
    }

    async fn bump(&self, task_id: &str) -> Result<u32, ClaimError> {
        let [_, _, attempts] = keys(task_id);
        let mut connection = self.connection.clone();
        let n: i64 = tokio::time::timeout(
            self.timeout,
            redis::cmd("INCR").arg(&attempts).query_async(&mut connection),
        )
        .await
        .map_err(|_| ClaimError("timed out".to_owned()))?
        .map_err(|e| ClaimError(e.to_string()))?;
        Ok(u32::try_from(n - 1).unwrap_or(0))
    }

    async fn complete(&self, task_id: &str, keep: Duration) -> Result<(), ClaimError> {
        let [done, claim, _] = keys(task_id);
        let mut connection = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&done)
            .arg(1)
            .arg("PX")
            .arg(ms(keep))
            .ignore()
            .cmd("DEL")
            .arg(&claim)
            .ignore();
        tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut connection))
            .await
            .map_err(|_| ClaimError("timed out".to_owned()))?
            .map_err(|e| ClaimError(e.to_string()))
    }
}

/// Claims in this process only (the embedded stack).
#[derive(Debug, Default)]
pub struct MemoryClaims {
    state: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    done_until: Option<Instant>,
    claim: Option<(String, Instant)>,
    attempts: u32,
}

#[async_trait]
impl Claims for MemoryClaims {
    async fn claim(&self, task_id: &str, node: &str, ttl: Duration) -> Result<Claim, ClaimError> {
        let now = Instant::now();
        let mut state = self.state.lock().map_err(|_| ClaimError("poisoned".into()))?;
        state.retain(|_, e| e.done_until.is_none_or(|t| t > now) || e.claim.is_some());
        let entry = state.entry(task_id.to_owned()).or_insert(Entry {
            done_until: None,
            claim: None,
            attempts: 0,
        });
        if entry.done_until.is_some_and(|t| t > now) {
            return Ok(Claim::Done);
        }
        match &entry.claim {
            // Held, by another node or by another delivery on this one: one run at a time.
            Some((_, until)) if *until > now => Ok(Claim::Busy),
            _ => {
                entry.claim = Some((node.to_owned(), now + ttl));
                entry.attempts += 1;
                Ok(Claim::Acquired {
                    attempt: entry.attempts - 1,
                })
            }
        }
    }

    async fn refresh(&self, task_id: &str, node: &str, ttl: Duration) -> Result<bool, ClaimError> {
        let mut state = self.state.lock().map_err(|_| ClaimError("poisoned".into()))?;
        Ok(match state.get_mut(task_id).and_then(|e| e.claim.as_mut()) {
            Some((owner, until)) if owner == node => {
                *until = Instant::now() + ttl;
                true
            }
            _ => false,
        })
    }

    async fn bump(&self, task_id: &str) -> Result<u32, ClaimError> {
        let mut state = self.state.lock().map_err(|_| ClaimError("poisoned".into()))?;
        Ok(state.get_mut(task_id).map_or(0, |e| {
            e.attempts += 1;
            e.attempts - 1
        }))
    }

    async fn complete(&self, task_id: &str, keep: Duration) -> Result<(), ClaimError> {
        let mut state = self.state.lock().map_err(|_| ClaimError("poisoned".into()))?;
        if let Some(entry) = state.get_mut(task_id) {
            entry.claim = None;
            entry.done_until = Some(Instant::now() + keep);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_claims_follow_the_rules() {
        let c = MemoryClaims::default();
        let ttl = Duration::from_millis(50);
        assert_eq!(c.claim("t", "a", ttl).await.unwrap(), Claim::Acquired { attempt: 0 });
        assert_eq!(c.claim("t", "b", ttl).await.unwrap(), Claim::Busy);
        assert_eq!(
            c.claim("t", "a", ttl).await.unwrap(),
            Claim::Busy,
            "one run at a time, even on one node"
        );
        tokio::time::sleep(Duration::from_millis(80)).await; // a's claim lapses: a died
        assert_eq!(c.claim("t", "b", ttl).await.unwrap(), Claim::Acquired { attempt: 1 });
        assert!(!c.refresh("t", "a", ttl).await.unwrap());
        c.complete("t", Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.claim("t", "c", ttl).await.unwrap(), Claim::Done);
    }
}
