//! Login throttling per account and per client IP.
//!
//! Each failed sign-in counts against the account (the email, known or not, so a lockout
//! reveals nothing about which emails exist) and against the client IP, in a window of 15
//! minutes from the first failure. From the 5th failure of an account (20th of an IP) the
//! key is locked for 30 s, doubling with every further failure, at most 15 minutes. A
//! success clears the account's count.
//!
//! State lives in Redis, shared by every replica: a hash per key with the failure count
//! (`HINCRBY`, atomic) and the lock deadline, expiring with the window. Deadlines are
//! timestamps from the injected [`Clock`], not Redis TTLs, so tests move a clock instead
//! of sleeping. When Redis is absent or fails, the same policy runs on a per-process map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use strata_runtime::clock::Clock;
use strata_runtime::redis::RedisHandle;

/// Thresholds and durations.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures of one account before it locks.
    pub account_threshold: i64,
    /// Failures from one IP before it locks.
    pub ip_threshold: i64,
    /// Counting window, from the first failure.
    pub window: Duration,
    /// First lock; doubles with each further failure.
    pub base_lock: Duration,
    /// Longest lock.
    pub max_lock: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_threshold: 5,
            ip_threshold: 20,
            window: Duration::from_secs(15 * 60),
            base_lock: Duration::from_secs(30),
            max_lock: Duration::from_secs(15 * 60),
        }
    }
}

impl ThrottlePolicy {
    fn lock_ms(&self, failures: i64, threshold: i64) -> Option<i64> {
        if failures < threshold {
            return None;
        }
        let doublings = u32::try_from(failures - threshold)
            .unwrap_or(u32::MAX)
            .min(20);
        let lock = self
            .base_lock
            .saturating_mul(1u32 << doublings)
            .min(self.max_lock);
        Some(i64::try_from(lock.as_millis()).unwrap_or(i64::MAX))
    }
}

#[derive(Debug, Clone, Copy)]
struct LocalEntry {
    failures: i64,
    window_ends_ms: i64,
    locked_until_ms: i64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct LoginThrottle {
    redis: Option<RedisHandle>,
    local: Mutex<HashMap<String, LocalEntry>>,
    clock: Arc<dyn Clock>,
    policy: ThrottlePolicy,
}

/// The throttle key of an email: a digest, so no address is stored in Redis.
fn account_key(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    format!("login:acct:{}", hex::encode(&digest[..16]))
}

fn ip_key(ip: &str) -> String {
    format!("login:ip:{ip}")
}

impl LoginThrottle {
    /// A throttle sharing state through `redis` when given.
    pub fn new(redis: Option<RedisHandle>, clock: Arc<dyn Clock>, policy: ThrottlePolicy) -> Self {
        Self {
            redis,
            local: Mutex::new(HashMap::new()),
            clock,
            policy,
        }
    }

    /// How long until `email` from `ip` may try again, if either is locked.
    pub async fn locked_for(&self, email: &str, ip: &str) -> Option<Duration> {
        let keys = [account_key(email), ip_key(ip)];
        let now = self.clock.now_ms();
        let deadlines = match self.redis_deadlines(&keys).await {
            Some(deadlines) => deadlines,
            None => {
                let local = self.local.lock().ok()?;
                keys.iter()
                    .map(|k| local.get(k).map_or(0, |e| e.locked_until_ms))
                    .collect()
            }
        };
        let until = deadlines.into_iter().max().unwrap_or(0);
        (until > now).then(|| Duration::from_millis(u64::try_from(until - now).unwrap_or(0)))
    }

    /// Counts a failed sign-in of `email` from `ip`.
    pub async fn record_failure(&self, email: &str, ip: &str) {
        let now = self.clock.now_ms();
        for (key, threshold) in [
            (account_key(email), self.policy.account_threshold),
            (ip_key(ip), self.policy.ip_threshold),
        ] {
            if !self.redis_failure(&key, threshold, now).await {
                self.local_failure(&key, threshold, now);
            }
        }
    }

    /// Clears the failures of `email` after a successful sign-in.
    pub async fn record_success(&self, email: &str) {
        let key = account_key(email);
        if let Some(redis) = &self.redis {
            let mut conn = redis.connection();
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(redis.key(&key))
                .query_async(&mut conn)
                .await;
        }
        if let Ok(mut local) = self.local.lock() {
            local.remove(&key);
        }
    }

    async fn redis_deadlines(&self, keys: &[String]) -> Option<Vec<i64>> {
        let redis = self.redis.as_ref()?;
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGET").arg(redis.key(key)).arg("locked_until");
        }
        // An outage is logged once by the handle, not once per sign-in.
        let values: Vec<Option<i64>> = redis
            .query_pipeline("login throttling is per process", &pipe)
            .await
            .ok()?;
        Some(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Records a failure in Redis; false when Redis is absent or failed.
    async fn redis_failure(&self, key: &str, threshold: i64, now: i64) -> bool {
        let Some(redis) = &self.redis else {
            return false;
        };
        let full = redis.key(key);
        let window_secs = i64::try_from(self.policy.window.as_secs()).unwrap_or(i64::MAX);
        let mut conn = redis.connection();
        let mut pipe = redis::pipe();
        pipe.cmd("HINCRBY")
            .arg(&full)
            .arg("failures")
            .arg(1)
            // The window starts at the first failure: only set an expiry on a new key.
            .cmd("EXPIRE")
            .arg(&full)
            .arg(window_secs)
            .arg("NX");
        let counted: Result<(i64, i64), _> = redis
            .query_pipeline("login throttling is per process", &pipe)
            .await;
        let Ok((failures, _)) = counted else {
            return false;
        };
        if let Some(lock_ms) = self.policy.lock_ms(failures, threshold) {
            let set: Result<(), _> = redis::cmd("HSET")
                .arg(&full)
                .arg("locked_until")
                .arg(now.saturating_add(lock_ms))
                .query_async(&mut conn)
                .await;
            if set.is_err() {
                return false;
            }
        }
        true
    }

    fn local_failure(&self, key: &str, threshold: i64, now: i64) {
        let Ok(mut local) = self.local.lock() else {
            return;
        };
        let window_ms = i64::try_from(self.policy.window.as_millis()).unwrap_or(i64::MAX);
        // Forget expired windows so the map cannot grow without bound.
        local.retain(|_, e| e.window_ends_ms > now || e.locked_until_ms > now);
        let entry = local.entry(key.to_owned()).or_insert(LocalEntry {
            failures: 0,
            window_ends_ms: now.saturating_add(window_ms),
            locked_until_ms: 0,
        });
        entry.failures += 1;
        if let Some(lock_ms) = self.policy.lock_ms(entry.failures, threshold) {
            entry.locked_until_ms = now.saturating_add(lock_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_double_and_are_capped() {
        let policy = ThrottlePolicy::default();
        assert_eq!(policy.lock_ms(4, 5), None);
        assert_eq!(policy.lock_ms(5, 5), Some(30_000));
        assert_eq!(policy.lock_ms(6, 5), Some(60_000));
        assert_eq!(policy.lock_ms(7, 5), Some(120_000));
        assert_eq!(policy.lock_ms(50, 5), Some(900_000));
    }

    #[test]
    fn account_keys_hide_the_email_and_ignore_case() {
        assert_eq!(
            account_key("Ada@Example.com"),
            account_key(" ada@example.com")
        );
        assert!(!account_key("ada@example.com").contains("ada"));
    }
}
