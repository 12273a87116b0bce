//! The GCRA script against a reference implementation, limits shared by two replicas, and
//! the per-process fallback, against a real Redis.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use strata_cache::RedisHandle;
use strata_ratelimit::{Check, Limiter, Policy};
use strata_testkit::TestRedis;
use strata_testkit::redis_server::RedisServer;

/// GCRA as the textbook states it, in integer microseconds.
#[derive(Default)]
struct Reference {
    tats: HashMap<String, u64>,
}

/// What the reference decides for one call: allowed, then per check (remaining, reset µs,
/// retry µs).
type Expected = (bool, Vec<(u64, u64, u64)>);

impl Reference {
    fn check(&mut self, checks: &[(Arc<Policy>, String, u32)], now: u64) -> Expected {
        let mut allowed = true;
        let mut state = Vec::new();
        for (policy, key, cost) in checks {
            let (t, tau) = (policy.emission_us(), policy.tolerance_us());
            let tat = self
                .tats
                .get(&format!("{}:{key}", policy.name))
                .copied()
                .unwrap_or(now)
                .max(now);
            let new_tat = tat + t * u64::from(*cost);
            let retry = (new_tat - tau).saturating_sub(now);
            if new_tat > tau + now {
                allowed = false;
            }
            state.push((tat, new_tat, retry, t, tau));
        }
        let mut out = Vec::new();
        for ((policy, key, _), (tat, new_tat, retry, t, tau)) in checks.iter().zip(state) {
            let tat = if allowed {
                self.tats.insert(format!("{}:{key}", policy.name), new_tat);
                new_tat
            } else {
                tat
            };
            let remaining = tau.saturating_sub(tat - now) / t;
            out.push((remaining, tat - now, if allowed { 0 } else { retry }));
        }
        (allowed, out)
    }
}

#[tokio::test]
async fn the_script_agrees_with_a_reference_gcra() {
    let redis = TestRedis::new();
    let limiter = Limiter::new(Some(redis.handle().clone()));
    let mut reference = Reference::default();
    let mut rng = rand::rng();
    // Random limits, but one tight (most of its calls refused) and one loose (most of
    // them admitted), so both answers are compared often whatever the draw.
    let policies: Vec<Arc<Policy>> = (0..4)
        .map(|i| {
            let (limit, period_us) = match i {
                0 => (
                    rng.random_range(1..=2),
                    rng.random_range(5_000_000..=10_000_000),
                ),
                1 => (rng.random_range(5..=20), rng.random_range(1_000..=50_000)),
                _ => (
                    rng.random_range(1..=20),
                    rng.random_range(1_000..=10_000_000),
                ),
            };
            Arc::new(Policy::new(
                format!("p{i}"),
                limit,
                Duration::from_micros(period_us),
            ))
        })
        .collect();
    let mut now: u64 = 1_700_000_000_000_000;
    let (mut admitted, mut refused) = (0, 0);
    for step in 0..1500 {
        let n = rng.random_range(1..=3);
        let mut checks = Vec::new();
        for _ in 0..n {
            let policy = Arc::clone(&policies[rng.random_range(0..policies.len())]);
            let key = format!("k{}", rng.random_range(0..4));
            if checks
                .iter()
                .any(|(p, k, _): &(Arc<Policy>, String, u32)| p.name == policy.name && *k == key)
            {
                continue;
            }
            checks.push((policy, key, rng.random_range(1..=4)));
        }
        let expected = reference.check(&checks, now);
        let calls: Vec<Check> = checks
            .iter()
            .map(|(policy, key, cost)| Check {
                policy,
                key: key.clone().into(),
                cost: *cost,
            })
            .collect();
        let decision = limiter.check_at(&calls, Some(now)).await;
        assert!(!decision.local, "Redis answered");
        assert_eq!(decision.allowed, expected.0, "step {step}: {checks:?}");
        // The binding check: the refusing one with the longest wait, else the one with
        // the least left.
        let binding = if expected.0 {
            expected.1.iter().map(|e| e.0).min().unwrap()
        } else {
            expected.1.iter().map(|e| e.2).max().unwrap()
        };
        let matching: Vec<&(u64, u64, u64)> = expected
            .1
            .iter()
            .filter(|e| {
                if expected.0 {
                    e.0 == binding
                } else {
                    e.2 == binding
                }
            })
            .collect();
        assert!(
            matching.iter().any(|e| decision.remaining == e.0
                && decision.reset == Duration::from_micros(e.1)
                && decision.retry_after
                    == (!expected.0)
                        .then(|| Duration::from_micros(e.2).max(Duration::from_millis(1)))),
            "step {step}: {decision:?} against {expected:?}"
        );
        if decision.allowed {
            admitted += 1;
        } else {
            refused += 1;
        }
        now += rng.random_range(0..=200_000);
    }
    assert!(
        admitted > 100 && refused > 100,
        "{admitted} admitted, {refused} refused"
    );
}

#[tokio::test]
async fn two_replicas_together_admit_the_limit_and_no_more() {
    let redis = TestRedis::new();
    let a = Limiter::new(Some(redis.handle().clone()));
    let b = Limiter::new(Some(redis.handle().clone()));
    let policy = Arc::new(Policy::new("burst", 10, Duration::from_secs(60)));
    let check = |key: &str| {
        vec![Check {
            policy: &policy,
            key: key.into(),
            cost: 1,
        }]
    };
    let calls = (0..40).map(|i| {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let checks = check("ada");
        async move { limiter.check(&checks).await }
    });
    let decisions = futures_util::future::join_all(calls).await;
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 10);
    let refused = decisions.iter().find(|d| !d.allowed).unwrap();
    assert_eq!(refused.remaining, 0);
    // One call every 6 s at the sustained rate.
    let retry = refused.retry_after.unwrap();
    assert!(
        retry > Duration::from_secs(5) && retry <= Duration::from_secs(6),
        "{retry:?}"
    );
    // Another key has its own budget.
    assert!(a.check(&check("grace")).await.allowed);
}

#[tokio::test]
async fn a_refused_call_is_admitted_once_its_retry_after_has_passed() {
    let redis = TestRedis::new();
    let limiter = Limiter::new(Some(redis.handle().clone()));
    let policy = Arc::new(Policy::new("quick", 2, Duration::from_millis(400)));
    let checks = vec![Check {
        policy: &policy,
        key: "ada".into(),
        cost: 1,
    }];
    assert!(limiter.check(&checks).await.allowed);
    assert!(limiter.check(&checks).await.allowed);
    let refused = limiter.check(&checks).await;
    assert!(!refused.allowed);
    let retry = refused.retry_after.unwrap();
    assert!(retry <= Duration::from_millis(200), "{retry:?}");
    tokio::time::sleep(retry).await;
    assert!(limiter.check(&checks).await.allowed);
}

#[tokio::test]
async fn a_call_refused_by_one_policy_uses_none_of_the_others() {
    let redis = TestRedis::new();
    let limiter = Limiter::new(Some(redis.handle().clone()));
    let wide = Arc::new(Policy::new("wide", 100, Duration::from_secs(60)));
    let narrow = Arc::new(Policy::new("narrow", 1, Duration::from_secs(60)));
    let both = vec![
        Check {
            policy: &wide,
            key: "ada".into(),
            cost: 1,
        },
        Check {
            policy: &narrow,
            key: "10.0.0.1".into(),
            cost: 1,
        },
    ];
    let first = limiter.check(&both).await;
    assert!(first.allowed);
    assert_eq!(first.policy.name, "narrow", "the tighter one is reported");
    for _ in 0..5 {
        let refused = limiter.check(&both).await;
        assert!(!refused.allowed);
        assert_eq!(refused.policy.name, "narrow");
    }
    let wide_only = limiter.check(&both[..1]).await;
    assert_eq!(
        wide_only.remaining, 98,
        "refused calls used none of the wide budget"
    );
}

#[tokio::test]
async fn without_redis_each_replica_admits_its_share() {
    let mut server = RedisServer::start().await;
    let handle =
        || RedisHandle::connect_lazy(&server.url(), "t:", Duration::from_millis(200)).unwrap();
    let a = Limiter::new(Some(handle()));
    let b = Limiter::new(Some(handle()));
    for _ in 0..100 {
        if a.known_replicas() == 2 && b.known_replicas() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((a.known_replicas(), b.known_replicas()), (2, 2));
    server.stop();
    let policy = Arc::new(Policy::new("fallback", 10, Duration::from_secs(60)));
    let checks = vec![Check {
        policy: &policy,
        key: "ada".into(),
        cost: 1,
    }];
    for limiter in [&a, &b] {
        let decisions: Vec<_> =
            futures_util::future::join_all((0..10).map(|_| limiter.check(&checks))).await;
        assert!(decisions.iter().all(|d| d.local));
        assert_eq!(
            decisions.iter().filter(|d| d.allowed).count(),
            5,
            "half of 10 each"
        );
        let refused = decisions.iter().find(|d| !d.allowed).unwrap();
        assert!(refused.retry_after.unwrap() > Duration::from_secs(1));
        assert!(limiter.degraded());
    }
    // Redis back (empty): shared limits again, once the handle has reconnected.
    server.restart().await;
    let mut shared = a.check(&checks).await;
    for _ in 0..100 {
        if !shared.local {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        shared = a.check(&checks).await;
    }
    assert!(!shared.local && shared.allowed, "{shared:?}");
    assert!(!a.degraded());
}

#[tokio::test]
async fn a_key_over_its_limit_is_refused_here_until_its_budget_allows_a_call() {
    let redis = TestRedis::new();
    let limiter = Limiter::new(Some(redis.handle().clone()));
    let policy = Arc::new(Policy::new("flood", 2, Duration::from_millis(600)));
    let checks = |cost| {
        vec![Check {
            policy: &policy,
            key: "ada".into(),
            cost,
        }]
    };
    assert!(limiter.check(&checks(2)).await.allowed);
    let refused = limiter.check(&checks(1)).await;
    assert!(!refused.allowed);
    // Redis forgets the key; the process still knows it is over its limit and refuses
    // without asking, with the same delay (less the time gone by).
    let mut conn = redis.handle().connection();
    let _: () = redis::cmd("DEL")
        .arg(redis.handle().key("ratelimit:flood:ada"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let again = limiter.check(&checks(1)).await;
    assert!(!again.allowed && !again.local, "{again:?}");
    assert!(again.retry_after.unwrap() <= refused.retry_after.unwrap());
    // A dearer call waits one more emission interval (300 ms).
    let dearer = limiter.check(&checks(2)).await.retry_after.unwrap();
    assert!(
        dearer > again.retry_after.unwrap() + Duration::from_millis(250),
        "{dearer:?}"
    );
    // Other keys are not affected, and the key is asked about again once its delay is over.
    let other = vec![Check {
        policy: &policy,
        key: "grace".into(),
        cost: 1,
    }];
    assert!(limiter.check(&other).await.allowed);
    tokio::time::sleep(again.retry_after.unwrap()).await;
    let admitted = limiter.check(&checks(1)).await;
    assert!(admitted.allowed, "{admitted:?}");
}

#[tokio::test]
async fn concurrent_calls_on_many_keys_are_answered_each_by_its_own_budget() {
    let redis = TestRedis::new();
    let limiter = Limiter::new(Some(redis.handle().clone()));
    let policy = Arc::new(Policy::new("many", 3, Duration::from_secs(60)));
    // 50 keys × 5 calls, all at once: they share runs of the script, and each key gets
    // exactly its 3.
    let calls = (0..250).map(|i| {
        let limiter = limiter.clone();
        let checks = vec![Check {
            policy: &policy,
            key: format!("user-{}", i % 50).into(),
            cost: 1,
        }];
        async move { (i % 50, limiter.check(&checks).await) }
    });
    let decisions = futures_util::future::join_all(calls).await;
    let mut admitted = HashMap::new();
    for (key, decision) in &decisions {
        assert!(!decision.local);
        *admitted.entry(*key).or_insert(0) += u32::from(decision.allowed);
    }
    assert_eq!(admitted.len(), 50);
    assert!(admitted.values().all(|&n| n == 3), "{admitted:?}");
}

/// Script runs Redis has answered so far (`EVALSHA` and `EVAL` calls).
async fn script_runs(handle: &RedisHandle) -> u64 {
    let mut conn = handle.connection();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test]
async fn a_busy_key_is_served_from_leases_and_two_replicas_still_admit_the_limit_exactly() {
    let server = RedisServer::start().await;
    let handle = RedisHandle::connect_lazy(&server.url(), "t:", Duration::from_secs(2)).unwrap();
    let a = Limiter::new(Some(handle.clone()));
    let b = Limiter::new(Some(handle.clone()));
    let policy = Arc::new(Policy::new("busy", 600, Duration::from_secs(60)));
    let checks = vec![Check {
        policy: &policy,
        key: "ada".into(),
        cost: 1,
    }];
    let before = script_runs(&handle).await;
    let mut admitted = 0;
    let mut refused_in_a_row = 0;
    for i in 0..2_000 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let decision = limiter.check(&checks).await;
        assert!(!decision.local);
        if decision.allowed {
            admitted += 1;
            refused_in_a_row = 0;
        } else {
            refused_in_a_row += 1;
            if refused_in_a_row == 20 {
                break;
            }
        }
    }
    let runs = script_runs(&handle).await - before;
    // Every unit leased was used: exactly the limit (the refill during the loop included).
    let refill = 2;
    assert!(
        (600..=600 + refill).contains(&admitted),
        "admitted {admitted}"
    );
    assert!(
        runs < admitted / 3,
        "{runs} script runs for {admitted} admitted calls: leases unused"
    );
}

#[tokio::test]
async fn units_leased_to_one_replica_are_not_in_another_replicas_burst_after_a_refill() {
    let redis = TestRedis::new();
    let a = Limiter::new(Some(redis.handle().clone()));
    let b = Limiter::new(Some(redis.handle().clone()));
    let policy = Arc::new(Policy::new("refill", 100, Duration::from_secs(1)));
    let checks = vec![Check {
        policy: &policy,
        key: "ada".into(),
        cost: 1,
    }];
    // A calls quickly enough to be leased units, then stops while holding some.
    for _ in 0..12 {
        assert!(a.check(&checks).await.allowed);
    }
    // The key's arrival time catches up with the clock (the budget is whole again in
    // Redis's arithmetic); A's lease lasts a second.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    let burst = futures_util::future::join_all((0..150).map(|_| b.check(&checks))).await;
    let mut from_a = 0;
    for _ in 0..20 {
        from_a += u32::from(a.check(&checks).await.allowed);
    }
    let refill = (started.elapsed().as_millis() / 10) as u32 + 1;
    let from_b = burst.iter().filter(|d| d.allowed).count() as u32;
    assert!(from_a > 0, "A held no lease: the test shows nothing");
    assert!(
        from_a + from_b <= 100 + refill,
        "{from_b} through B and {from_a} from A's lease: more than the budget (+{refill} refilled)"
    );
}

#[tokio::test]
async fn a_busy_keys_lease_is_refilled_before_it_runs_out_and_remembered_through_a_pause() {
    let server = RedisServer::start().await;
    let handle = RedisHandle::connect_lazy(&server.url(), "t:", Duration::from_secs(2)).unwrap();
    let limiter = Limiter::new(Some(handle.clone()));
    let policy = Arc::new(Policy::new("busy", 1_000_000_000, Duration::from_secs(60)));
    let checks = vec![Check {
        policy: &policy,
        key: "ada".into(),
        cost: 1,
    }];
    // A call every 2 ms (or so) for `span`; how many had to wait for Redis.
    let run = |span: Duration| {
        let (limiter, checks) = (&limiter, &checks);
        async move {
            let started = std::time::Instant::now();
            let mut waited = 0;
            while started.elapsed() < span {
                if let Err(unpaid) = limiter.check_here(checks) {
                    waited += 1;
                    assert!(limiter.check_rest(checks, unpaid).await.allowed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            waited
        }
    };
    // The first second measures the key's rate; its leases grow to it.
    run(Duration::from_millis(1_200)).await;
    // From then on, each lease is refilled while a quarter of it is left: no call waits.
    let before = script_runs(&handle).await;
    assert_eq!(run(Duration::from_millis(1_500)).await, 0);
    let refills = script_runs(&handle).await - before;
    assert!(
        (1..=10).contains(&refills),
        "{refills} script runs in 1.5 s of a busy key"
    );
    // A pause longer than an idle key is remembered, shorter than a busy one's: the first
    // call after it gets a lease of the key's rate, and the calls after it do not wait.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(limiter.check(&checks).await.allowed);
    assert_eq!(run(Duration::from_millis(200)).await, 0);
}

#[tokio::test]
async fn a_key_busy_for_seconds_holds_in_redis_only_what_its_leases_have_left() {
    let redis = TestRedis::new();
    let handle = redis.handle().clone();
    let a = Limiter::new(Some(handle.clone()));
    let b = Limiter::new(Some(handle.clone()));
    // 10,000 calls a second; the key makes about 2,000 a second through A, whose leases
    // are refilled before they end, one after another, for six seconds.
    let policy = Arc::new(Policy::new("held", 600_000, Duration::from_secs(60)));
    let checks = vec![Check {
        policy: &policy,
        key: "ada".into(),
        cost: 1,
    }];
    let state_key = handle.key("ratelimit:held:ada");
    let mut conn = handle.connection();
    let started = std::time::Instant::now();
    let mut most_held = 0_u64;
    while started.elapsed() < Duration::from_secs(6) {
        for _ in 0..20 {
            assert!(a.check(&checks).await.allowed);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let state: Option<String> = redis::cmd("GET")
            .arg(&state_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // `tat,held,till,generation`
        let held = state
            .as_deref()
            .and_then(|s| s.split(',').nth(1))
            .and_then(|h| h.parse().ok())
            .unwrap_or(0);
        if started.elapsed() > Duration::from_secs(1) {
            most_held = most_held.max(held);
        }
    }
    // Held: what A's lease has left and at most a refill on its way, not every unit
    // leased since the first lease (about 2,000 a second, 12,000 by now).
    assert!(most_held > 0, "A held no lease: the test shows nothing");
    assert!(most_held <= 3_000, "Redis counts {most_held} units as held");
    // So another replica finds the budget less what was used lately and what A holds.
    let other = b.check(&checks).await;
    assert!(other.allowed);
    assert!(
        other.remaining >= 595_000,
        "{} left through another replica",
        other.remaining
    );
}
