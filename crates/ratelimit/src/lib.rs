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
//! Concurrent calls share runs of the script: whatever is waiting when a run can start goes
//! into it, so one round trip answers a whole batch under load and a lone call goes at
//! once. A key that calls faster than its sustained rate does not need Redis on every
//! call: with an admitted call, the script also reserves a lease of units for this process
//! (what the key used in a second at its recent rate, at most 1,024), counted in Redis like
//! calls made at once, which the process then admits on its own for up to a second (a
//! lease running low is refilled in the background by the call that finds it so). Until
//! the lease ends, Redis also counts its units as taken in every other call's check, even
//! once the key's arrival time has caught up with the clock, so a burst through another
//! replica never finds the whole budget free while units are in hand: replicas together
//! never admit more than the limit. Each call to Redis also reports the units a process no
//! longer holds (used since its last report, or lost when a lease ended), so what Redis
//! counts as held stays what processes have left, however long a busy key's leases are
//! refilled one after another (reports are of a generation of leases, which changes when
//! they all end: a late report never takes away another process's units). A lease is granted only
//! while four times it per replica is left, so near its limit every call of a key is
//! decided in Redis; a key that goes quiet forfeits at most one small lease. Keys Redis
//! found over their limit are remembered here until their budget allows
//! a call again, so a flood from one key is refused without asking Redis each time (exact:
//! other replicas can only move a key's arrival time later).
//!
//! Redis has no GCRA command (the module that had one is not in Redis); the script is
//! below, and the tests check its arithmetic against a reference implementation.
//!
//! While Redis cannot answer, each process limits on its own with governor, each policy
//! divided by the number of replicas last seen (replicas announce themselves in Redis
//! every second), so the replicas together still admit about the limit. Checks are then
//! applied one after another: a call refused by a later check has used its earlier ones.
//! While an outage lasts, one call per 250 ms tries Redis again and the others decide
//! locally at once. Outages are logged once, by the Redis handle.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher as _;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use strata_cache::RedisHandle;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// How long a replica counts as alive after its last announcement.
const REPLICA_TTL: Duration = Duration::from_secs(5);
/// How often a replica announces itself.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// Numbers the script answers per check.
const PER_CHECK: usize = 5;
/// Numbers the script is given per check.
const ARGS_PER_CHECK: usize = 7;
/// How long a lease of units may be used after Redis granted it.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// Most units leased at once for one key.
const MAX_LEASE: u64 = 1024;
/// A lease is granted only while this many times it (times the replicas) is left.
const LEASE_HEADROOM: u64 = 4;
/// How long the lease-table entry of an idle key is kept: its rate sizes its first lease
/// when its calls resume.
const IDLE_KEPT: Duration = Duration::from_secs(2);
/// How long the entry of an idle hot key (at least [`HOT_RATE`] calls a second) is kept:
/// such a key's calls resuming get a whole lease in one round trip instead of growing one
/// over a second of round trips. There are few such keys (the process's call rate over
/// [`HOT_RATE`] at most), so memory still follows the keys in use.
const HOT_KEPT: Duration = Duration::from_secs(15);
/// Calls a second that make a key hot.
const HOT_RATE: f64 = 10.0;

/// Calls answered by one run of the script at most.
const MAX_BATCH: usize = 128;
/// Runs of the script in flight at once (each a batch of calls).
const MAX_IN_FLIGHT: usize = 4;
/// While Redis is away, how often a call still tries it; the others decide locally at once
/// instead of each waiting for a timeout.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// GCRA for a batch of calls, each over several keys and decided on its own, in order
/// (`LEASE_US` is replaced by [`LEASE_TTL`] in µs).
/// ARGV[1]: number of calls; then per call: now in µs (empty for Redis's clock), number of
/// checks, then per check: emission interval in µs, tolerance in µs, cost, lease wanted
/// (units), headroom (the lease is granted only while `headroom` times it is left), units
/// this process no longer holds of its leases (used, or lost when they ended) and the
/// generation of those leases. KEYS: every call's keys, in order. Returns per call:
/// allowed (1/0), now, then per check: remaining, reset in µs, retry in µs, lease granted,
/// the generation of the leases.
///
/// The state of a key: its theoretical arrival time, the units leased to processes and not
/// yet reported used (`held`), when the last lease ends (`till`), and the generation of
/// the leases, which changes when they all end (`held` is then 0): a process reports what
/// it no longer holds of one generation, and a report of an ended one changes nothing.
const GCRA: &str = r"
local t = redis.call('TIME')
local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
local result = {}
local a = 2
local k = 0
for c = 1, tonumber(ARGV[1]) do
  local now = clock
  if ARGV[a] ~= '' then now = tonumber(ARGV[a]) end
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  local allowed = 1
  local state = {}
  for i = 1, n do
    local emission = tonumber(ARGV[a])
    local tolerance = tonumber(ARGV[a + 1])
    local cost = tonumber(ARGV[a + 2])
    local want = tonumber(ARGV[a + 3])
    local headroom = tonumber(ARGV[a + 4])
    local gone = tonumber(ARGV[a + 5])
    local of_gen = tonumber(ARGV[a + 6])
    a = a + 7
    -- State: the theoretical arrival time, the units leased to processes (counted in it
    -- when granted) and not reported used, until when they may be used, their generation.
    -- A generation is the time it began: never that of an earlier state of the key.
    local tat, held, till, gen = now, 0, 0, now
    local v = redis.call('GET', KEYS[k + i])
    if v then
      local x, y, z, g = string.match(v, '^(%d+),(%d+),(%d+),(%d+)$')
      if x then
        tat, held, till, gen = tonumber(x), tonumber(y), tonumber(z), tonumber(g)
      else
        -- Written before leases had generations.
        x, y, z = string.match(v, '^(%d+),(%d+),(%d+)$')
        if x then
          tat, held, till, gen = tonumber(x), tonumber(y), tonumber(z), 0
        else
          tat = tonumber(v) or now
        end
      end
    end
    if till <= now then
      held = 0
      if till > 0 then gen = now end
      till = 0
    end
    -- What a process no longer holds of this generation's leases: otherwise the units of
    -- leases refilled before they end would pile up here, and the budget read as spent.
    local reported = 0
    if gone > 0 and of_gen == gen then
      reported = math.min(gone, held)
      held = held - reported
    end
    if tat < now then tat = now end
    -- Units still in processes' hands count as calls ahead of now, even once the arrival
    -- time has caught up with the clock: nobody may take the budget they hold.
    local busy = math.max(tat, now + held * emission)
    local retry = busy + emission * cost - tolerance - now
    if retry > 0 then allowed = 0 else retry = 0 end
    state[i] = {emission, tolerance, tat, cost, retry, want, headroom, held, till, busy, gen, reported}
  end
  result[#result + 1] = allowed
  result[#result + 1] = now
  for i = 1, n do
    local s = state[i]
    local emission, tolerance = s[1], s[2]
    local tat, busy, held, till, gen = s[3], s[10], s[8], s[9], s[11]
    local grant = 0
    if allowed == 1 then
      -- Counted after the units in hand, which stay counted once the lease ends (as
      -- calls made now: never less than they were).
      busy = busy + emission * s[4]
      tat = busy
      -- A lease: up to `want` more units, if what is left is `headroom` times that.
      if s[6] > 0 then
        local left = math.floor((now + tolerance - busy) / emission)
        grant = math.min(s[6], math.floor(left / s[7]))
        if grant < 0 then grant = 0 end
      end
      if grant > 0 then
        busy = busy + grant * emission
        tat = busy
        held = held + grant
        till = now + LEASE_US
      end
      local life = math.max(tat, till) - now
      -- A second longer than needed: an expired state and an elapsed one read alike.
      redis.call('SET', KEYS[k + i], string.format('%d,%d,%d,%d', tat, held, till, gen), 'PX', math.floor(life / 1000) + 1000)
    elseif s[12] > 0 then
      -- Refused, but what was reported is no longer held all the same.
      local life = math.max(tat, till) - now
      redis.call('SET', KEYS[k + i], string.format('%d,%d,%d,%d', tat, held, till, gen), 'PX', math.floor(life / 1000) + 1000)
    end
    local remaining = math.floor((tolerance - (busy - now)) / emission)
    if remaining < 0 then remaining = 0 end
    result[#result + 1] = remaining
    result[#result + 1] = busy - now
    result[#result + 1] = s[5]
    result[#result + 1] = grant
    result[#result + 1] = gen
  end
  k = k + n
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

/// Whose budget a check counts against. Cheap to hash and compare: the calls a process
/// decides on its own (from leases) never format it; it is written out, `kind:id`, only
/// in Redis keys and in what a refusal says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A user: `user:<id>`.
    User(Uuid),
    /// An API key: `api_key:<id>`.
    ApiKey(Uuid),
    /// A client's address: `ip:<address>`; see [`Key::address`].
    Address(IpAddr),
    /// A client whose address is unknown: `ip:unknown`.
    UnknownAddress,
    /// Any other name, written as it is.
    Name(Arc<str>),
}

impl Key {
    /// The key of a client's address: an IPv4 address (also one mapped into IPv6) is
    /// itself, an IPv6 address stands for its /64, the block one subscriber gets.
    pub fn address(ip: Option<IpAddr>) -> Self {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V6(ip)) => {
                let block = u128::from(ip) & !((1u128 << 64) - 1);
                Self::Address(IpAddr::V6(Ipv6Addr::from(block)))
            }
            Some(ip) => Self::Address(ip),
            None => Self::UnknownAddress,
        }
    }

    /// What kind of caller the key stands for, in words (`user`, `API key`, `address`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::ApiKey(_) => "API key",
            Self::Address(_) | Self::UnknownAddress => "address",
            Self::Name(_) => "caller",
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::ApiKey(id) => write!(f, "api_key:{id}"),
            Self::Address(ip @ IpAddr::V4(_)) => write!(f, "ip:{ip}"),
            Self::Address(ip @ IpAddr::V6(_)) => write!(f, "ip:{ip}/64"),
            Self::UnknownAddress => f.write_str("ip:unknown"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

impl From<&str> for Key {
    fn from(name: &str) -> Self {
        Self::Name(name.into())
    }
}

impl From<String> for Key {
    fn from(name: String) -> Self {
        Self::Name(name.into())
    }
}

/// One check of a call: `cost` units of `policy` for `key`.
#[derive(Debug, Clone)]
pub struct Check<'p> {
    /// The policy.
    pub policy: &'p Policy,
    /// Whose budget: an API key, a user, an address.
    pub key: Key,
    /// Units this call uses (at least 1).
    pub cost: u32,
}

/// The answer to a call's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    /// Whether the call may proceed.
    pub allowed: bool,
    /// The policy that decided: the one that refused, else the one with least left.
    pub policy: &'p Policy,
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
    Key,
    governor::state::keyed::DefaultKeyedStateStore<Key>,
    DefaultClock,
    StateInformationMiddleware,
>;

struct Shared {
    redis: Option<RedisHandle>,
    /// Calls waiting for the script, batched by [`run_batches`].
    queue: Option<mpsc::Sender<Pending>>,
    /// Per-process limiters by policy name, with the replica count they were sized for.
    local: Mutex<HashMap<String, (u32, Arc<LocalLimiter>)>>,
    /// Units Redis leased to this process, and each key's recent call rate.
    leases: Arc<Leases>,
    replicas: AtomicU32,
    degraded: AtomicBool,
    /// When a call last tried Redis during an outage.
    last_probe: Mutex<Option<Instant>>,
    maintainer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Lease-table shards: calls on different keys rarely wait for each other's lock.
const SHARDS: usize = 16;

/// The leases of a process, sharded by key. A call locks the shards of its keys (in
/// order, so calls never wait for each other in a circle) and decides under them at once.
struct Leases {
    hasher: foldhash::fast::RandomState,
    shards: Vec<Mutex<LeaseTable>>,
}

impl Leases {
    fn new() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: &Key) -> usize {
        // The top bits: a shard's table places its keys by the low ones.
        usize::try_from(self.hasher.hash_one(key) >> 60).unwrap_or(0) % SHARDS
    }

    /// The shards of `keys`, locked; `None` if one was poisoned.
    fn lock<'k>(&self, keys: impl IntoIterator<Item = &'k Key>) -> Option<Locked<'_>> {
        let mut wanted = 0u32;
        for key in keys {
            wanted |= 1 << self.shard(key);
        }
        let mut guards: [Option<std::sync::MutexGuard<'_, LeaseTable>>; SHARDS] =
            std::array::from_fn(|_| None);
        for (at, guard) in guards.iter_mut().enumerate() {
            if wanted & (1 << at) != 0 {
                *guard = Some(self.shards[at].lock().ok()?);
            }
        }
        Some(Locked {
            leases: self,
            guards,
        })
    }

    /// Keeps the leases `keep` says to keep, in every shard.
    fn retain(&self, mut keep: impl FnMut(&Lease) -> bool) {
        for shard in &self.shards {
            if let Ok(mut table) = shard.lock() {
                table.retain(&mut keep);
            }
        }
    }
}

/// The shards a call locked.
struct Locked<'a> {
    leases: &'a Leases,
    guards: [Option<std::sync::MutexGuard<'a, LeaseTable>>; SHARDS],
}

impl Locked<'_> {
    fn table(&self, key: &Key) -> Option<&LeaseTable> {
        self.guards[self.leases.shard(key)].as_deref()
    }

    fn table_mut(&mut self, key: &Key) -> Option<&mut LeaseTable> {
        self.guards[self.leases.shard(key)].as_deref_mut()
    }

    fn get(&self, check: &Check<'_>) -> Option<&Lease> {
        self.table(&check.key)?.get(check)
    }

    fn get_mut(&mut self, check: &Check<'_>) -> Option<&mut Lease> {
        self.table_mut(&check.key)?.get_mut(check)
    }

    /// The lease of `key` under policy `name`, made with `new` if there is none (`None`
    /// for a key whose shard is not locked).
    fn entry(&mut self, name: &str, key: &Key, new: impl FnOnce() -> Lease) -> Option<&mut Lease> {
        Some(self.table_mut(key)?.entry(name, key, new))
    }
}

/// The leases of a shard: per key, one per policy the key is checked against (a key is
/// rarely under more than two, so a short list beats a second hash).
#[derive(Default)]
struct LeaseTable {
    keys: HashMap<Key, Vec<(String, Lease)>, foldhash::fast::RandomState>,
}

impl LeaseTable {
    fn get(&self, check: &Check<'_>) -> Option<&Lease> {
        let policy = check.policy.name.as_str();
        self.keys
            .get(&check.key)?
            .iter()
            .find_map(|(p, lease)| (p == policy).then_some(lease))
    }

    fn get_mut(&mut self, check: &Check<'_>) -> Option<&mut Lease> {
        let policy = check.policy.name.as_str();
        self.keys
            .get_mut(&check.key)?
            .iter_mut()
            .find_map(|(p, lease)| (p == policy).then_some(lease))
    }

    /// The lease of `key` under policy `name`, made with `new` if there is none.
    fn entry(&mut self, name: &str, key: &Key, new: impl FnOnce() -> Lease) -> &mut Lease {
        let leases = self.keys.entry(key.clone()).or_default();
        let at = match leases.iter().position(|(p, _)| p == name) {
            Some(at) => at,
            None => {
                leases.push((name.to_owned(), new()));
                leases.len() - 1
            }
        };
        &mut leases[at].1
    }

    /// Keeps the leases `keep` says to keep, and the keys with any left.
    fn retain(&mut self, mut keep: impl FnMut(&Lease) -> bool) {
        self.keys.retain(|_, leases| {
            leases.retain(|(_, lease)| keep(lease));
            !leases.is_empty()
        });
    }
}

/// Units of one key that Redis reserved for this process (already counted there), to
/// admit calls without asking, and the key's call rate here, to size the next lease.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Units left to use.
    units: u64,
    /// When the units may no longer be used.
    expires: Instant,
    /// What Redis said was left beyond the lease, and when the budget is whole again (the
    /// key's theoretical arrival time, on this process's clock).
    remaining: u64,
    reset_at: Instant,
    /// When Redis last refused the key: its theoretical arrival time then, a lower bound
    /// of the real one (other replicas can only have moved it later).
    over_limit: Option<Instant>,
    /// Calls since `window_start`, and the rate (per second) of the window before.
    window_start: Instant,
    window_calls: u64,
    rate: f64,
    /// When the last call was counted.
    last_call: Instant,
    /// When a refill of the lease was sent (before it ran out), if Redis has not answered
    /// it yet.
    refilling: Option<Instant>,
    /// Units Redis counts as held by this process in generation `generation` of the key's
    /// leases: granted, and not yet reported used (or lost).
    leased: u64,
    generation: i64,
    /// Units taken from the lease by calls that went on to Redis for the rest, until it
    /// answers: still this process's (given back if Redis refuses or does not answer).
    in_flight: u64,
}

impl Lease {
    fn new(now: Instant) -> Self {
        Self {
            units: 0,
            expires: now,
            remaining: 0,
            reset_at: now,
            over_limit: None,
            window_start: now,
            window_calls: 0,
            rate: 0.0,
            last_call: now,
            refilling: None,
            leased: 0,
            generation: -1,
            in_flight: 0,
        }
    }

    /// `paid` units taken for a call that went on to Redis, once it answered: `used` (Redis
    /// admitted the call; the next report counts them), or given back to the lease (Redis
    /// refused it, or did not answer).
    fn settle(&mut self, paid: u64, used: bool) {
        self.in_flight = self.in_flight.saturating_sub(paid);
        if !used {
            self.units += paid;
        }
    }

    /// What this process no longer holds of the units Redis counts as its own (used, or
    /// lost when the lease ended), to report with the next call to Redis, and of which
    /// generation; counted as reported.
    fn report(&mut self, now: Instant) -> (u64, i64) {
        let usable = if now < self.expires { self.units } else { 0 };
        let gone = self.leased.saturating_sub(usable + self.in_flight);
        self.leased -= gone;
        (gone, self.generation)
    }

    /// Counts a call (of `cost` units) in the rate. A window's rate is over the time from
    /// its start to its last call (a second at least): a pause after it says nothing of
    /// the rate at which the key's calls resume, and the window that follows measures that.
    fn count(&mut self, now: Instant, cost: u64) {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            let active = self
                .last_call
                .saturating_duration_since(self.window_start)
                .max(Duration::from_secs(1));
            self.rate = self.window_calls as f64 / active.as_secs_f64();
            self.window_start = now;
            self.window_calls = 0;
        }
        self.window_calls += cost;
        self.last_call = now;
    }

    /// Whether the entry is worth keeping at `now`: its key was used lately, or is hot and
    /// was used not long ago, or is known to be over its limit still.
    fn worth_keeping(&self, now: Instant) -> bool {
        let idle = now.saturating_duration_since(self.last_call);
        idle < IDLE_KEPT
            || (idle < HOT_KEPT && self.rate.max(self.window_calls as f64) >= HOT_RATE)
            || self.over_limit.is_some_and(|t| t > now)
    }

    /// Units worth leasing: what the key used in [`LEASE_TTL`] at its recent rate (at
    /// least over a whole second, so a quick pair of calls does not look like a flood).
    fn wanted(&self, now: Instant) -> u64 {
        let elapsed = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        let rate = self.rate.max(self.window_calls as f64 / elapsed.max(1.0));
        ((rate * LEASE_TTL.as_secs_f64()) as u64).min(MAX_LEASE)
    }

    /// Whether the lease runs low (a quarter of what the key uses in a lease's time left,
    /// or a quarter of its time) with no refill on its way: the call that finds it so asks
    /// Redis for more in the background, so the key's calls keep being decided here.
    fn wants_refill(&mut self, now: Instant) -> bool {
        if self.refilling.is_some_and(|at| now < at + LEASE_TTL) {
            return false;
        }
        let low = self.units.saturating_mul(4) <= self.wanted(now)
            || self.expires.saturating_duration_since(now) <= LEASE_TTL / 4;
        if low {
            self.refilling = Some(now);
        }
        low
    }

    /// Whether `cost` units can be used at `now` (Redis counts the units as taken until
    /// the lease's end, which it sets no earlier than this process does).
    fn usable(&self, now: Instant, cost: u64) -> bool {
        self.units >= cost && now < self.expires
    }

    /// The refusal of `check` at `now`, if the key is known to be over its limit still.
    fn refusal<'p>(&mut self, check: &Check<'p>, now: Instant) -> Option<Decision<'p>> {
        let tat = self.over_limit?;
        let emission = Duration::from_micros(check.policy.emission_us());
        let tolerance = Duration::from_micros(check.policy.tolerance_us());
        let conforms_at = (tat + emission * check.cost.max(1))
            .checked_sub(tolerance)
            .unwrap_or(now);
        if conforms_at <= now {
            if tat <= now {
                self.over_limit = None;
            }
            return None;
        }
        Some(Decision {
            allowed: false,
            policy: check.policy,
            remaining: 0,
            reset: tat.saturating_duration_since(now),
            retry_after: Some(
                conforms_at
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            ),
            local: false,
        })
    }
}

/// What each of `checks` costs (every check costs one unit at least).
fn paid_in_full(checks: &[Check<'_>]) -> Vec<u64> {
    checks.iter().map(|c| u64::from(c.cost.max(1))).collect()
}

/// What [`Limiter::check_here`] left to ask: what leases paid of each check meanwhile.
#[derive(Debug)]
pub struct Unpaid {
    covered: Vec<u64>,
}

/// The admission of a call its leases paid: the tightest check's budget.
fn from_leases<'p>(checks: &[Check<'p>], leases: &Locked<'_>, now: Instant) -> Decision<'p> {
    let mut tightest: Option<(&'p Policy, u64, Instant)> = None;
    for check in checks {
        if let Some(lease) = leases.get(check) {
            tightest = tighter(tightest, check.policy, lease);
        }
    }
    admission(checks, tightest, now)
}

/// The tighter of `tightest` and `lease` (of `policy`): least left, with that budget and
/// when it is whole again.
fn tighter<'p>(
    tightest: Option<(&'p Policy, u64, Instant)>,
    policy: &'p Policy,
    lease: &Lease,
) -> Option<(&'p Policy, u64, Instant)> {
    let left = lease.remaining + lease.units;
    match tightest {
        Some((_, least, _)) if least <= left => tightest,
        _ => Some((policy, left, lease.reset_at)),
    }
}

/// The admission of a call whose checks leases paid, told by the `tightest` of them.
fn admission<'p>(
    checks: &[Check<'p>],
    tightest: Option<(&'p Policy, u64, Instant)>,
    now: Instant,
) -> Decision<'p> {
    // Every check was paid, so each had a lease: `None` is not reached.
    let (policy, remaining, reset_at) = tightest.unwrap_or((checks[0].policy, 0, now));
    Decision {
        allowed: true,
        policy,
        remaining,
        reset: reset_at.saturating_duration_since(now),
        retry_after: None,
        local: false,
    }
}

/// One call waiting for the script.
struct Pending {
    keys: Vec<String>,
    /// The call's checks (policy name and key), when a granted lease is to be kept.
    lease_for: Option<Vec<(String, Key)>>,
    /// Now (empty: Redis's clock), the number of checks, then seven numbers per check.
    args: Vec<String>,
    /// The call's part of the answer, and when the run was sent (this process's clock
    /// for Redis's "now", a little early).
    reply: oneshot::Sender<Option<(Vec<i64>, Instant)>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(Some(task)) = self.maintainer.get_mut().map(Option::take) {
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
    /// A limiter sharing its limits through `redis` (none: per process only). Starts, on
    /// the current tokio runtime, the task that batches calls for Redis and the one that
    /// announces this replica every second (to size the fallback).
    pub fn new(redis: Option<RedisHandle>) -> Self {
        let leases = Arc::new(Leases::new());
        let queue = redis.clone().map(|redis| {
            let (tx, rx) = mpsc::channel(MAX_BATCH * MAX_IN_FLIGHT * 4);
            tokio::spawn(run_batches(redis, rx, Arc::clone(&leases)));
            tx
        });
        let shared = Arc::new(Shared {
            redis,
            queue,
            local: Mutex::new(HashMap::new()),
            leases,
            replicas: AtomicU32::new(1),
            degraded: AtomicBool::new(false),
            last_probe: Mutex::new(None),
            maintainer: Mutex::new(None),
        });
        let task = tokio::spawn(maintain(Arc::downgrade(&shared)));
        if let Ok(mut slot) = shared.maintainer.lock() {
            *slot = Some(task);
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

    /// Whether limits are shared through Redis at all (configured with one).
    pub fn shared(&self) -> bool {
        self.shared.redis.is_some()
    }

    /// Admits a call or not, against every check at once. Concurrent calls share runs
    /// of the script: one round trip answers a whole batch.
    ///
    /// # Panics
    /// With no checks: a programming error.
    pub async fn check<'p>(&self, checks: &[Check<'p>]) -> Decision<'p> {
        match self.check_here(checks) {
            Ok(decision) => decision,
            Err(unpaid) => self.check_rest(checks, unpaid).await,
        }
    }

    /// [`Limiter::check`] as far as this process can go without waiting: the decision
    /// when leases (or a refusal Redis gave lately) decide the call, as nearly every call
    /// of a busy key is, or when there is no Redis; otherwise what is left to ask, for
    /// [`Limiter::check_rest`] (what leases paid stays paid until it says).
    pub fn check_here<'p>(&self, checks: &[Check<'p>]) -> Result<Decision<'p>, Unpaid> {
        assert!(!checks.is_empty(), "a call needs at least one check");
        if self.shared.redis.is_none() {
            return Ok(self.check_locally(checks));
        }
        match self.decide_here(checks) {
            Ok((decision, refill)) => {
                if refill {
                    self.refill(checks);
                }
                Ok(decision)
            }
            Err(covered) => Err(Unpaid { covered }),
        }
    }

    /// The rest of [`Limiter::check`] after [`Limiter::check_here`] could not decide:
    /// Redis decides, or this process alone when Redis is away.
    pub async fn check_rest<'p>(&self, checks: &[Check<'p>], unpaid: Unpaid) -> Decision<'p> {
        let wants = self.wanted_leases(checks);
        self.ask(checks, None, &wants, unpaid.covered).await
    }

    /// [`Limiter::check`] at `now_us` (microseconds) instead of Redis's clock, for the
    /// tests of the arithmetic (no leases, no remembered refusals: only the script).
    #[doc(hidden)]
    pub async fn check_at<'p>(&self, checks: &[Check<'p>], now_us: Option<u64>) -> Decision<'p> {
        assert!(!checks.is_empty(), "a call needs at least one check");
        match now_us {
            None => self.check(checks).await,
            Some(_) => {
                self.ask(checks, now_us, &vec![0; checks.len()], Vec::new())
                    .await
            }
        }
    }

    /// Asks Redis (`covered`: what leases paid of each check), or decides in this process
    /// when Redis does not answer.
    async fn ask<'p>(
        &self,
        checks: &[Check<'p>],
        now_us: Option<u64>,
        wants: &[u64],
        mut covered: Vec<u64>,
    ) -> Decision<'p> {
        let real_time = now_us.is_none();
        covered.resize(checks.len(), 0);
        if let Some(redis) = &self.shared.redis {
            if (!redis.is_down() || self.probe_due())
                && let Some((answer, sent)) = self.ask_redis(checks, now_us, wants, &covered).await
            {
                if self.shared.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limits are shared by every replica again");
                }
                let decision = decide(checks, &answer);
                if real_time && decision.allowed {
                    self.settle(checks, &covered, true);
                }
                if real_time && !decision.allowed {
                    // Units a concurrent call of this process leased meanwhile are this
                    // process's to use: already counted in Redis.
                    if let Some(admitted) = self.refused_in_redis(checks, &covered, &answer, sent) {
                        return admitted;
                    }
                }
                return decision;
            }
            self.settle(checks, &covered, false);
            if !self.shared.degraded.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    replicas = self.known_replicas(),
                    "rate limits are per process until Redis answers again: each limit divided by the replicas last seen"
                );
            }
        }
        self.check_locally(checks)
    }

    /// Whether a call may try Redis during an outage (one per [`PROBE_EVERY`]).
    fn probe_due(&self) -> bool {
        let Ok(mut last) = self.shared.last_probe.lock() else {
            return true;
        };
        if last.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The script's answer for this call (through the batching task), or `None` when
    /// Redis did not give one.
    async fn ask_redis(
        &self,
        checks: &[Check<'_>],
        now_us: Option<u64>,
        wants: &[u64],
        covered: &[u64],
    ) -> Option<(Vec<i64>, Instant)> {
        let queue = self.shared.queue.as_ref()?;
        let reports = self.reports(checks, now_us);
        let Some((pending, answer)) = self.pending(checks, now_us, wants, covered, &reports) else {
            self.unreport(checks, &reports);
            return None;
        };
        if queue.send(pending).await.is_err() {
            self.unreport(checks, &reports);
            return None;
        }
        answer
            .await
            .ok()
            .flatten()
            .filter(|(a, _)| a.len() == 2 + PER_CHECK * checks.len())
    }

    /// Asks Redis, without waiting, for more units for the leases of a call paid from
    /// them (every check of cost 0: it only reports, and takes the lease if granted).
    fn refill(&self, checks: &[Check<'_>]) {
        let up = self.shared.redis.as_ref().is_some_and(|r| !r.is_down());
        let paid = paid_in_full(checks);
        if up && let Some(queue) = &self.shared.queue {
            let reports = self.reports(checks, None);
            if let Some((pending, _)) =
                self.pending(checks, None, &self.wanted_leases(checks), &paid, &reports)
                && queue.try_send(pending).is_ok()
            {
                return;
            }
            self.unreport(checks, &reports);
        }
        // Not sent (a full queue, Redis away): the next call that finds the lease low
        // tries again.
        if let Some(mut leases) = self.shared.leases.lock(checks.iter().map(|c| &c.key)) {
            for check in checks {
                if let Some(lease) = leases.get_mut(check) {
                    lease.refilling = None;
                }
            }
        }
    }

    /// A call for the script, and where its answer will come.
    #[expect(clippy::type_complexity, reason = "a pair, named where used")]
    fn pending(
        &self,
        checks: &[Check<'_>],
        now_us: Option<u64>,
        wants: &[u64],
        covered: &[u64],
        reports: &[(u64, i64)],
    ) -> Option<(Pending, oneshot::Receiver<Option<(Vec<i64>, Instant)>>)> {
        let redis = self.shared.redis.as_ref()?;
        let mut args = Vec::with_capacity(2 + ARGS_PER_CHECK * checks.len());
        args.push(now_us.map(|n| n.to_string()).unwrap_or_default());
        args.push(checks.len().to_string());
        let headroom = LEASE_HEADROOM * u64::from(self.known_replicas());
        for (((check, want), paid), (gone, generation)) in checks
            .iter()
            .zip(wants)
            .zip(covered)
            .zip(reports.iter().copied())
        {
            args.push(check.policy.emission_us().to_string());
            args.push(check.policy.tolerance_us().to_string());
            // What a lease paid is not charged again (a check of cost 0 only reports).
            let cost = u64::from(check.cost.max(1)).saturating_sub(*paid);
            args.push(cost.to_string());
            args.push(want.to_string());
            args.push(headroom.to_string());
            args.push(gone.to_string());
            args.push(generation.to_string());
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            keys: checks
                .iter()
                .map(|c| redis.key(&format!("ratelimit:{}:{}", c.policy.name, c.key)))
                .collect(),
            args,
            lease_for: now_us.is_none().then(|| {
                checks
                    .iter()
                    .map(|c| (c.policy.name.clone(), c.key.clone()))
                    .collect()
            }),
            reply,
        };
        Some((pending, answer))
    }

    /// What this process can decide without Redis, under one lock: a refusal, when one
    /// of the keys is known to be over its limit still (Redis said so; other replicas can
    /// only have moved its arrival time later), or an admission, when every check can be
    /// paid from a lease (and whether a lease runs low: see [`Lease::wants_refill`]).
    /// Otherwise pays what leases can and says how much each check paid (the rest goes to
    /// Redis). Counts the call in each key's rate. One look-up per check: leases pay as
    /// they are found, and what they paid goes back if a later check refuses the call.
    fn decide_here<'p>(&self, checks: &[Check<'p>]) -> Result<(Decision<'p>, bool), Vec<u64>> {
        let now = Instant::now();
        let Some(mut leases) = self.shared.leases.lock(checks.iter().map(|c| &c.key)) else {
            return Err(vec![0; checks.len()]);
        };
        // What leases paid, check by check, once one could not (until then: all of each).
        let mut short: Option<Vec<u64>> = None;
        let mut refill = false;
        // The check with least left, its budget and when that is whole again.
        let mut tightest: Option<(&'p Policy, u64, Instant)> = None;
        for (i, check) in checks.iter().enumerate() {
            let cost = u64::from(check.cost.max(1));
            // Keys get an entry when Redis answers for them, never merely because a call
            // named them.
            if let Some(lease) = leases.get_mut(check) {
                lease.count(now, cost);
                if let Some(refusal) = lease.refusal(check, now) {
                    // What the checks before paid goes back.
                    let paid = short.unwrap_or_else(|| paid_in_full(&checks[..i]));
                    for (check, paid) in checks.iter().zip(paid) {
                        if let Some(lease) = leases.get_mut(check) {
                            lease.units += paid;
                        }
                    }
                    return Ok((refusal, false));
                }
                if lease.usable(now, cost) {
                    lease.units -= cost;
                    match &mut short {
                        Some(paid) => paid[i] = cost,
                        None => refill |= lease.wants_refill(now),
                    }
                    tightest = tighter(tightest, check.policy, lease);
                    continue;
                }
            }
            short.get_or_insert_with(|| {
                let mut paid = paid_in_full(&checks[..i]);
                paid.resize(checks.len(), 0);
                paid
            });
        }
        if let Some(paid) = short {
            for (check, paid) in checks.iter().zip(&paid) {
                if let Some(lease) = leases.get_mut(check) {
                    lease.in_flight += paid;
                }
            }
            return Err(paid);
        }
        Ok((admission(checks, tightest, now), refill))
    }

    /// A call Redis refused: what `covered` paid goes back to the leases; if leases now
    /// pay every check (a concurrent call of this process was granted units meanwhile),
    /// the call is admitted from them; otherwise the keys over their limit are remembered.
    fn refused_in_redis<'p>(
        &self,
        checks: &[Check<'p>],
        covered: &[u64],
        answer: &[i64],
        sent: Instant,
    ) -> Option<Decision<'p>> {
        let now = Instant::now();
        let mut leases = self.shared.leases.lock(checks.iter().map(|c| &c.key))?;
        for (check, paid) in checks.iter().zip(covered) {
            if let Some(lease) = leases.get_mut(check) {
                lease.settle(*paid, false);
            }
        }
        let all = checks.iter().all(|check| {
            leases
                .get(check)
                .is_some_and(|l| l.usable(now, u64::from(check.cost.max(1))))
        });
        if all {
            for check in checks {
                if let Some(lease) = leases.get_mut(check) {
                    lease.units -= u64::from(check.cost.max(1));
                }
            }
            return Some(from_leases(checks, &leases, now));
        }
        for (check, a) in checks.iter().zip(answer[2..].chunks_exact(PER_CHECK)) {
            if a[2] > 0
                && let Some(lease) =
                    leases.entry(&check.policy.name, &check.key, || Lease::new(now))
            {
                lease.over_limit = Some(sent + Duration::from_micros(a[1].max(0).unsigned_abs()));
            }
        }
        None
    }

    /// What this process no longer holds of each check's lease, and of which generation
    /// (see [`Lease::report`]).
    /// Only calls on Redis's clock have leases (`now_us`: the tests of the arithmetic).
    fn reports(&self, checks: &[Check<'_>], now_us: Option<u64>) -> Vec<(u64, i64)> {
        let now = Instant::now();
        let leases = now_us
            .is_none()
            .then(|| self.shared.leases.lock(checks.iter().map(|c| &c.key)))
            .flatten();
        let Some(mut leases) = leases else {
            return vec![(0, -1); checks.len()];
        };
        checks
            .iter()
            .map(|c| leases.get_mut(c).map_or((0, -1), |l| l.report(now)))
            .collect()
    }

    /// The lease worth asking for with each check (as counted by [`Self::decide_here`]).
    fn wanted_leases(&self, checks: &[Check<'_>]) -> Vec<u64> {
        let now = Instant::now();
        let Some(leases) = self.shared.leases.lock(checks.iter().map(|c| &c.key)) else {
            return vec![0; checks.len()];
        };
        checks
            .iter()
            .map(|c| leases.get(c).map_or(0, |l| l.wanted(now)))
            .collect()
    }

    /// Settles the units [`Self::decide_here`] paid for a call that then went to Redis
    /// (see [`Lease::settle`]).
    fn settle(&self, checks: &[Check<'_>], paid: &[u64], used: bool) {
        if paid.iter().all(|p| *p == 0) {
            return;
        }
        let Some(mut leases) = self.shared.leases.lock(checks.iter().map(|c| &c.key)) else {
            return;
        };
        for (check, paid) in checks.iter().zip(paid) {
            if let Some(lease) = leases.get_mut(check) {
                lease.settle(*paid, used);
            }
        }
    }

    /// Counts again as this process's the units `reports` said it no longer held, when
    /// they were never sent.
    fn unreport(&self, checks: &[Check<'_>], reports: &[(u64, i64)]) {
        let Some(mut leases) = self.shared.leases.lock(checks.iter().map(|c| &c.key)) else {
            return;
        };
        for (check, (gone, generation)) in checks.iter().zip(reports) {
            if let Some(lease) = leases.get_mut(check)
                && lease.generation == *generation
            {
                lease.leased += gone;
            }
        }
    }

    /// The per-process decision: each policy divided among the replicas last seen.
    fn check_locally<'p>(&self, checks: &[Check<'p>]) -> Decision<'p> {
        let replicas = self.known_replicas();
        let clock = DefaultClock::default();
        let mut tightest: Option<Decision> = None;
        for check in checks {
            let limiter = self.local_limiter(check.policy, replicas);
            let share = (check.policy.limit / replicas).max(1);
            let emission = check.policy.period / share;
            let cost = NonZeroU32::new(check.cost.max(1)).unwrap_or(NonZeroU32::MIN);
            let decision = match limiter.check_key_n(&check.key, cost) {
                Ok(Ok(snapshot)) => {
                    let remaining = u64::from(snapshot.remaining_burst_capacity());
                    Decision {
                        allowed: true,
                        policy: check.policy,
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
                    policy: check.policy,
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
                    policy: check.policy,
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
}

/// A decision for checks none of which was looked at (cannot happen: checks are never
/// empty); refuses, to be safe.
fn unreachable_decision<'p>(checks: &[Check<'p>]) -> Decision<'p> {
    static NONE: std::sync::LazyLock<Policy> =
        std::sync::LazyLock::new(|| Policy::new("none", 1, Duration::from_secs(1)));
    let policy = checks.first().map_or(&*NONE, |c| c.policy);
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
fn decide<'p>(checks: &[Check<'p>], answer: &[i64]) -> Decision<'p> {
    let allowed = answer[0] == 1;
    let micros = |v: i64| Duration::from_micros(v.max(0).unsigned_abs());
    let per_check = checks.iter().zip(answer[2..].chunks_exact(PER_CHECK));
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
        policy: check.policy,
        // What the caller may still use includes the lease this process was just granted.
        remaining: a[0].max(0).unsigned_abs() + a[3].max(0).unsigned_abs(),
        reset: micros(a[1]),
        retry_after: (!allowed).then(|| micros(a[2]).max(Duration::from_millis(1))),
        local: false,
    }
}

/// Answers the calls queued by [`Limiter::ask_redis`]: whatever is waiting when a run can
/// start goes into it (up to [`MAX_BATCH`]), with up to [`MAX_IN_FLIGHT`] runs at once.
/// A lone call goes at once; under load, batches grow on their own. Ends when every
/// limiter sharing the queue is gone.
async fn run_batches(redis: RedisHandle, mut queue: mpsc::Receiver<Pending>, leases: Arc<Leases>) {
    let script = Arc::new(redis::Script::new(
        &GCRA.replace("LEASE_US", &LEASE_TTL.as_micros().to_string()),
    ));
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = queue.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                in_flight.push(run_batch(
                    redis.clone(),
                    Arc::clone(&script),
                    batch,
                    Arc::clone(&leases),
                ));
            }
        }
    }
}

/// Keeps the leases Redis granted with an admitted call (`answer`: its part of the
/// script's answer; `sent`: when the run was sent), before the call's caller or any other
/// learns the answer.
fn store_leases(leases: &Leases, checks: &[(String, Key)], answer: &[i64], sent: Instant) {
    let Some(mut leases) = leases.lock(checks.iter().map(|(_, key)| key)) else {
        return;
    };
    for ((name, key), a) in checks.iter().zip(answer[2..].chunks_exact(PER_CHECK)) {
        let (granted, generation) = (a[3].max(0).unsigned_abs(), a[4]);
        let Some(lease) = leases.entry(name, key, || {
            let mut lease = Lease::new(sent);
            lease.count(sent, 1);
            lease
        }) else {
            continue;
        };
        if granted > 0 {
            let same_generation = generation == lease.generation;
            // Units of an ended lease, or of leases Redis no longer counts, are not used;
            // those of this generation not yet reported stay counted as this process's.
            lease.units = if sent < lease.expires && same_generation {
                lease.units + granted
            } else {
                granted
            };
            if same_generation {
                lease.leased += granted;
            } else {
                lease.leased = granted;
                lease.generation = generation;
            }
            lease.expires = sent + LEASE_TTL;
        }
        if granted > 0 {
            // A refill that got nothing is not asked for again before its time is up.
            lease.refilling = None;
        }
        lease.remaining = a[0].max(0).unsigned_abs();
        lease.reset_at = sent + Duration::from_micros(a[1].max(0).unsigned_abs());
    }
}

impl Shared {
    /// Drops the state of idle keys, so memory follows the keys in use: lease-table
    /// entries no longer [worth keeping](Lease::worth_keeping), and the per-process
    /// limiters' keys whose budgets are whole again.
    fn forget_idle_keys(&self) {
        let now = Instant::now();
        self.leases.retain(|l| l.worth_keeping(now));
        if let Ok(local) = self.local.lock() {
            for (_, limiter) in local.values() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

/// One run of the script for `batch`; each call gets its part of the answer, or `None`.
/// Leases granted in the run are kept first, so a call the run refused can use them.
async fn run_batch(
    redis: RedisHandle,
    script: Arc<redis::Script>,
    batch: Vec<Pending>,
    leases: Arc<Leases>,
) {
    let mut invocation = script.prepare_invoke();
    invocation.arg(batch.len());
    for pending in &batch {
        for key in &pending.keys {
            invocation.key(key);
        }
        for arg in &pending.args {
            invocation.arg(arg);
        }
    }
    let sent = Instant::now();
    let answer: Option<Vec<i64>> = redis
        .invoke("the shared rate limits", &invocation)
        .await
        .ok();
    let mut offset = 0;
    let mut parts = Vec::with_capacity(batch.len());
    for pending in &batch {
        let len = 2 + PER_CHECK * pending.keys.len();
        let part = answer
            .as_ref()
            .and_then(|a| a.get(offset..offset + len))
            .map(<[i64]>::to_vec);
        offset += len;
        if let (Some(part), Some(checks)) = (&part, &pending.lease_for)
            && part[0] == 1
        {
            store_leases(&leases, checks, part, sent);
        }
        parts.push(part);
    }
    for (pending, part) in batch.into_iter().zip(parts) {
        let _ = pending.reply.send(part.map(|p| (p, sent)));
    }
}

/// Every second: drops the state of idle keys (lease table, per-process limiters), so
/// memory follows the keys in use, and announces this replica (with Redis).
async fn maintain(shared: Weak<Shared>) {
    let id = uuid::Uuid::new_v4().to_string();
    let script = redis::Script::new(ANNOUNCE);
    let mut every = tokio::time::interval(ANNOUNCE_EVERY);
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.forget_idle_keys();
        let Some(redis) = &shared.redis else {
            continue;
        };
        let mut invocation = script.prepare_invoke();
        invocation
            .key(redis.key("ratelimit:replicas"))
            .arg(&id)
            .arg(u64::try_from(REPLICA_TTL.as_millis()).unwrap_or(u64::MAX));
        if let Ok(count) = redis
            .invoke::<u32>("the shared rate limits", &invocation)
            .await
        {
            shared.replicas.store(count.max(1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `calls` calls of one unit, `every` apart from `start`; the time of the last.
    fn calls(lease: &mut Lease, start: Instant, calls: u32, every: Duration) -> Instant {
        let mut now = start;
        for i in 0..calls {
            now = start + every * i;
            lease.count(now, 1);
        }
        now
    }

    #[test]
    fn a_busy_key_that_pauses_keeps_its_rate_and_its_entry_a_while() {
        let start = Instant::now();
        let mut lease = Lease::new(start);
        // 200 calls a second for two seconds, then a pause of five.
        let last = calls(&mut lease, start, 400, Duration::from_millis(5));
        let resumed = last + Duration::from_secs(5);
        assert!(
            lease.worth_keeping(resumed),
            "a hot key is kept through a pause"
        );
        assert!(!lease.worth_keeping(last + HOT_KEPT), "but not for ever");
        lease.count(resumed, 1);
        // The window before the pause was busy for its whole second: its rate stands,
        // and sizes the first lease after the pause.
        let wanted = lease.wanted(resumed);
        assert!((180..=MAX_LEASE).contains(&wanted), "{wanted}");
    }

    #[test]
    fn a_slow_key_gets_small_leases_and_is_forgotten_soon() {
        let start = Instant::now();
        let mut lease = Lease::new(start);
        // One call every three seconds.
        let last = calls(&mut lease, start, 4, Duration::from_secs(3));
        assert!(lease.wanted(last) <= 1, "{}", lease.wanted(last));
        assert!(lease.worth_keeping(last + Duration::from_secs(1)));
        assert!(!lease.worth_keeping(last + IDLE_KEPT));
    }

    #[test]
    fn a_key_whose_rate_falls_gets_smaller_leases() {
        let start = Instant::now();
        let mut lease = Lease::new(start);
        let busy = calls(&mut lease, start, 400, Duration::from_millis(5));
        // Then two calls a second for three seconds.
        let slow = calls(
            &mut lease,
            busy + Duration::from_millis(500),
            6,
            Duration::from_millis(500),
        );
        assert!(lease.wanted(slow) <= 4, "{}", lease.wanted(slow));
    }
}
