//! Rate limiting shared by every replica: GCRA (the generic cell rate algorithm) in one
//! atomic Redis script, and a per-process limiter (governor) while Redis is away.
//!
//! A [`Policy`] allows `limit` calls per `period`, all of them at once if they come at
//! once (the burst is the limit), then one every `period / limit`: a call of cost `c` at
//! time `now` conforms when the key's theoretical arrival time, moved `c` emission
//! intervals later, is at most `period` ahead of `now`. Unlike a fixed window it never
//! admits twice the limit around a window's edge, and it needs one number per key.
//!
//! One [`Limiter::check`] takes several checks (per key, per user, per IP …) and answers
//! them in one round trip: the script admits the call only if every check conforms, and
//! then updates every key; a refused call changes nothing. Time is Redis's own clock, so
//! replicas whose clocks disagree still share one limit.
//!
//! Redis has no GCRA command (the module that had one is not in Redis); the script is
//! below, and the tests check its arithmetic against a reference implementation.
//!
//! While Redis cannot answer, each process limits on its own with governor, each policy
//! divided by the number of replicas last seen (replicas announce themselves in Redis
//! every second), so the replicas together still admit about the limit. Checks are then
//! applied one after another: a call refused by a later check has used its earlier ones.
//! Outages are logged once, by the Redis handle.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use strata_cache::RedisHandle;

/// How long a replica counts as alive after its last announcement.
const REPLICA_TTL: Duration = Duration::from_secs(5);
/// How often a replica announces itself.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// GCRA over several keys at once (KEYS: one per check; ARGV[1]: now in µs, empty for
/// Redis's clock; then per check: emission interval in µs, tolerance in µs, cost).
/// Returns: allowed (1/0), now, then per check: remaining, reset in µs, retry in µs.
const GCRA: &str = r"
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local allowed = 1
local state = {}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[2 + (i - 1) * 3])
  local tolerance = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + emission * cost
  local retry = new_tat - tolerance - now
  if retry > 0 then allowed = 0 else retry = 0 end
  state[i] = {emission, tolerance, tat, new_tat, retry}
end
local result = {allowed, now}
for i = 1, #KEYS do
  local s = state[i]
  local tat = s[3]
  if allowed == 1 then
    tat = s[4]
    -- A second longer than needed: an expired state and an elapsed one read alike.
    redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
  end
  local remaining = math.floor((s[2] - (tat - now)) / s[1])
  if remaining < 0 then remaining = 0 end
  result[#result + 1] = remaining
  result[#result + 1] = tat - now
  result[#result + 1] = s[5]
end
return result
";

/// Records a replica (KEYS[1]: the set; ARGV: replica id, life in ms); how many live.
const ANNOUNCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
";

/// `limit` calls per `period`, as a burst or spread out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Its name, in `RateLimit-Policy` and the Redis keys.
    pub name: String,
    /// Calls allowed per period (at least 1).
    pub limit: u32,
    /// The period (at least 1 ms).
    pub period: Duration,
}

impl Policy {
    /// `limit` calls per `period`.
    pub fn new(name: impl Into<String>, limit: u32, period: Duration) -> Self {
        Self {
            name: name.into(),
            limit: limit.max(1),
            period: period.max(Duration::from_millis(1)),
        }
    }

    /// Microseconds between two calls at the sustained rate.
    pub fn emission_us(&self) -> u64 {
        let period = u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX);
        (period / u64::from(self.limit)).max(1)
    }

    /// How far ahead of now the theoretical arrival time may be: the whole burst.
    pub fn tolerance_us(&self) -> u64 {
        self.emission_us().saturating_mul(u64::from(self.limit))
    }
}

/// One check of a call: `cost` units of `policy` for `key`.
#[derive(Debug, Clone)]
pub struct Check {
    /// The policy.
    pub policy: Arc<Policy>,
    /// Whose budget: an API key, a user, an address.
    pub key: String,
    /// Units this call uses (at least 1).
    pub cost: u32,
}

/// The answer to a call's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may proceed.
    pub allowed: bool,
    /// The policy that decided: the one that refused, else the one with least left.
    pub policy: Arc<Policy>,
    /// Calls of cost 1 that policy still admits now.
    pub remaining: u64,
    /// Until that policy's budget is whole again.
    pub reset: Duration,
    /// When refused, how long until the call would be admitted.
    pub retry_after: Option<Duration>,
    /// Decided by this process alone (Redis away).
    pub local: bool,
}

type LocalLimiter = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

struct Shared {
    redis: Option<RedisHandle>,
    gcra: redis::Script,
    /// Per-process limiters by policy name, with the replica count they were sized for.
    local: Mutex<HashMap<String, (u32, Arc<LocalLimiter>)>>,
    replicas: AtomicU32,
    degraded: AtomicBool,
    announcer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(Some(task)) = self.announcer.get_mut().map(Option::take) {
            task.abort();
        }
    }
}

/// The rate limiter of a process. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("replicas", &self.known_replicas())
            .field("degraded", &self.degraded())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter sharing its limits through `redis` (none: per process only). Announces
    /// this replica every second on the current tokio runtime, to size the fallback.
    pub fn new(redis: Option<RedisHandle>) -> Self {
        let shared = Arc::new(Shared {
            redis,
            gcra: redis::Script::new(GCRA),
            local: Mutex::new(HashMap::new()),
            replicas: AtomicU32::new(1),
            degraded: AtomicBool::new(false),
            announcer: Mutex::new(None),
        });
        if shared.redis.is_some() {
            let task = tokio::spawn(announce(Arc::downgrade(&shared)));
            if let Ok(mut slot) = shared.announcer.lock() {
                *slot = Some(task);
            }
        }
        Self { shared }
    }

    /// Replicas last seen sharing this Redis (1 without Redis).
    pub fn known_replicas(&self) -> u32 {
        self.shared.replicas.load(Ordering::Relaxed).max(1)
    }

    /// Whether the last call was decided per process because Redis could not answer.
    pub fn degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::Relaxed)
    }

    /// Admits a call or not, against every check at once.
    ///
    /// # Panics
    /// With no checks: a programming error.
    pub async fn check(&self, checks: &[Check]) -> Decision {
        self.check_at(checks, None).await
    }

    /// [`Limiter::check`] at `now_us` (microseconds) instead of Redis's clock, for the
    /// tests of the arithmetic.
    #[doc(hidden)]
    pub async fn check_at(&self, checks: &[Check], now_us: Option<u64>) -> Decision {
        assert!(!checks.is_empty(), "a call needs at least one check");
        if let Some(redis) = &self.shared.redis {
            let mut invocation = self.shared.gcra.prepare_invoke();
            for check in checks {
                invocation
                    .key(redis.key(&format!("ratelimit:{}:{}", check.policy.name, check.key)));
            }
            invocation.arg(now_us.map(|n| n.to_string()).unwrap_or_default());
            for check in checks {
                invocation
                    .arg(check.policy.emission_us())
                    .arg(check.policy.tolerance_us())
                    .arg(check.cost.max(1));
            }
            let answer: Result<Vec<i64>, _> = redis
                .invoke("rate limits are per process", &invocation)
                .await;
            if let Ok(answer) = answer
                && answer.len() == 2 + 3 * checks.len()
            {
                self.shared.degraded.store(false, Ordering::Relaxed);
                return decide(checks, &answer);
            }
        }
        if self.shared.redis.is_some() {
            self.shared.degraded.store(true, Ordering::Relaxed);
        }
        self.check_locally(checks)
    }

    /// The per-process decision: each policy divided among the replicas last seen.
    fn check_locally(&self, checks: &[Check]) -> Decision {
        let replicas = self.known_replicas();
        let clock = DefaultClock::default();
        let mut tightest: Option<Decision> = None;
        for check in checks {
            let limiter = self.local_limiter(&check.policy, replicas);
            let share = (check.policy.limit / replicas).max(1);
            let emission = check.policy.period / share;
            let cost = NonZeroU32::new(check.cost.max(1)).unwrap_or(NonZeroU32::MIN);
            let decision = match limiter.check_key_n(&check.key, cost) {
                Ok(Ok(snapshot)) => {
                    let remaining = u64::from(snapshot.remaining_burst_capacity());
                    Decision {
                        allowed: true,
                        policy: Arc::clone(&check.policy),
                        remaining,
                        reset: emission
                            * u32::try_from(u64::from(share).saturating_sub(remaining))
                                .unwrap_or(u32::MAX),
                        retry_after: None,
                        local: true,
                    }
                }
                Ok(Err(not_until)) => Decision {
                    allowed: false,
                    policy: Arc::clone(&check.policy),
                    remaining: 0,
                    reset: check.policy.period,
                    retry_after: Some(
                        not_until
                            .wait_time_from(clock.now())
                            .max(Duration::from_millis(1)),
                    ),
                    local: true,
                },
                Err(_) => Decision {
                    allowed: false,
                    policy: Arc::clone(&check.policy),
                    remaining: 0,
                    reset: check.policy.period,
                    retry_after: Some(check.policy.period),
                    local: true,
                },
            };
            if !decision.allowed {
                return decision;
            }
            if tightest
                .as_ref()
                .is_none_or(|t| decision.remaining < t.remaining)
            {
                tightest = Some(decision);
            }
        }
        tightest.unwrap_or_else(|| unreachable_decision(checks))
    }

    fn local_limiter(&self, policy: &Policy, replicas: u32) -> Arc<LocalLimiter> {
        let mut local = self
            .shared
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((sized_for, limiter)) = local.get(&policy.name)
            && *sized_for == replicas
        {
            return Arc::clone(limiter);
        }
        let share = (policy.limit / replicas).max(1);
        let burst = NonZeroU32::new(share).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period((policy.period / share).max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        let limiter =
            Arc::new(RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>());
        local.insert(policy.name.clone(), (replicas, Arc::clone(&limiter)));
        limiter
    }

    /// Drops per-process state of keys whose budgets are whole again (bounded memory).
    pub fn forget_idle_keys(&self) {
        if let Ok(local) = self.shared.local.lock() {
            for (_, limiter) in local.values() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

/// A decision for checks none of which was looked at (cannot happen: checks are never
/// empty); refuses, to be safe.
fn unreachable_decision(checks: &[Check]) -> Decision {
    let policy = checks.first().map_or_else(
        || Arc::new(Policy::new("none", 1, Duration::from_secs(1))),
        |c| Arc::clone(&c.policy),
    );
    Decision {
        allowed: false,
        reset: policy.period,
        retry_after: Some(policy.period),
        policy,
        remaining: 0,
        local: true,
    }
}

/// The decision the script's answer describes.
fn decide(checks: &[Check], answer: &[i64]) -> Decision {
    let allowed = answer[0] == 1;
    let micros = |v: i64| Duration::from_micros(v.max(0).unsigned_abs());
    let per_check = checks.iter().zip(answer[2..].chunks_exact(3));
    let binding = if allowed {
        per_check.min_by_key(|(_, a)| a[0])
    } else {
        per_check.max_by_key(|(_, a)| a[2])
    };
    let Some((check, a)) = binding else {
        return unreachable_decision(checks);
    };
    Decision {
        allowed,
        policy: Arc::clone(&check.policy),
        remaining: a[0].max(0).unsigned_abs(),
        reset: micros(a[1]),
        retry_after: (!allowed).then(|| micros(a[2]).max(Duration::from_millis(1))),
        local: false,
    }
}

/// Announces this replica every second and keeps the count of live ones.
async fn announce(shared: Weak<Shared>) {
    let id = uuid::Uuid::new_v4().to_string();
    let script = redis::Script::new(ANNOUNCE);
    let mut every = tokio::time::interval(ANNOUNCE_EVERY);
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(redis) = &shared.redis else {
            return;
        };
        let mut invocation = script.prepare_invoke();
        invocation
            .key(redis.key("ratelimit:replicas"))
            .arg(&id)
            .arg(u64::try_from(REPLICA_TTL.as_millis()).unwrap_or(u64::MAX));
        if let Ok(count) = redis
            .invoke::<u32>("rate limits are per process", &invocation)
            .await
        {
            shared.replicas.store(count.max(1), Ordering::Relaxed);
        }
    }
}
