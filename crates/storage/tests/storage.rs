//! Storage against a real PostgreSQL: migrations, pool settings and recovery, retry
//! classification of real server errors, and query instrumentation.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use strata_storage::instrument::{QueryStats, scope};
use strata_storage::migrate::{Migrations, State};
use strata_storage::pool::dedicated_connection;
use strata_storage::retry::ErrorClass;
use strata_storage::{Db, DbConfig, Environment, Error};
use strata_testkit::{LogCapture, TestDb};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn schema_count(db: &TestDb) -> i64 {
    let mut conn = db.connect().await;
    let rows: Vec<Count> = sql_query(
        "SELECT count(*) AS n FROM pg_namespace WHERE nspname IN ('auth', 'content', 'analytics')",
    )
    .load(&mut conn)
    .await
    .unwrap();
    rows[0].n
}

#[tokio::test]
async fn every_migration_goes_up_down_and_up_again() {
    let db = TestDb::empty().await;
    let migrations = Migrations::embedded().unwrap();
    let total = migrations.list().len();
    let mut conn = db.connect().await;

    let applied = migrations.run(&mut conn).await.unwrap();
    assert_eq!(applied.len(), total);
    assert_eq!(schema_count(&db).await, 3);
    assert!(
        migrations.run(&mut conn).await.unwrap().is_empty(),
        "second run applies nothing"
    );

    for expected in migrations.list().iter().rev() {
        let reverted = migrations.revert_last(&mut conn).await.unwrap();
        assert_eq!(reverted.as_deref(), Some(expected.version.as_str()));
    }
    assert_eq!(migrations.revert_last(&mut conn).await.unwrap(), None);
    let status = migrations.status(&mut conn).await.unwrap();
    assert_eq!(status.pending().len(), total);
    assert_eq!(
        schema_count(&db).await,
        0,
        "down.sql removes what up.sql created"
    );

    assert_eq!(migrations.run(&mut conn).await.unwrap().len(), total);
    let status = migrations.status(&mut conn).await.unwrap();
    assert_eq!(status.applied().len(), total);
    assert!(status.pending().is_empty() && status.drifted().is_empty());
}

#[tokio::test]
async fn eight_concurrent_migrators_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let migrations = Arc::new(Migrations::embedded().unwrap());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let migrations = Arc::clone(&migrations);
        let url = db.url().to_owned();
        tasks.push(tokio::spawn(async move {
            let config = DbConfig::new(url, "migrator", Environment::Development);
            let mut conn = dedicated_connection(&config).await?;
            migrations.run(&mut conn).await
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap().expect("no migrator fails"));
    }
    let mut expected: Vec<String> = migrations
        .list()
        .iter()
        .map(|m| m.version.clone())
        .collect();
    applied.sort();
    expected.sort();
    assert_eq!(
        applied, expected,
        "each migration applied by exactly one migrator"
    );

    let mut conn = db.connect().await;
    let rows: Vec<Count> = sql_query("SELECT count(*) AS n FROM public.strata_schema_migrations")
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows[0].n as usize, migrations.list().len());
}

#[tokio::test]
async fn status_reports_drift_after_a_file_edit() {
    let db = TestDb::empty().await;
    let dir = std::env::temp_dir().join(format!("strata-drift-{}", db.name()));
    strata_testkit::copy_dir(&strata_testkit::migrations_dir(), &dir).unwrap();
    let mut conn = db.connect().await;
    Migrations::from_dir(&dir)
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();

    let first = Migrations::from_dir(&dir).unwrap().list()[0].clone();
    let up = dir
        .join(format!("{}_{}", first.version, first.name))
        .join("up.sql");
    let mut text = std::fs::read_to_string(&up).unwrap();
    text.push_str("\n-- edited after it was applied\n");
    std::fs::write(&up, text).unwrap();

    let status = Migrations::from_dir(&dir)
        .unwrap()
        .status(&mut conn)
        .await
        .unwrap();
    assert_eq!(status.drifted(), vec![first.version.clone()]);
    assert!(matches!(
        &status.entries[0].state,
        State::Drifted { applied_checksum, .. } if *applied_checksum == first.checksum
    ));
    std::fs::remove_dir_all(&dir).unwrap();

    // A migration the binary does not know is reported as unknown, not silently ignored.
    conn.batch_execute(
        "INSERT INTO public.strata_schema_migrations (version, name, checksum, execution_ms) VALUES ('9999-01-01-000000', 'future', 'x', 0)",
    )
    .await
    .unwrap();
    let status = Migrations::embedded()
        .unwrap()
        .status(&mut conn)
        .await
        .unwrap();
    assert_eq!(status.unknown(), vec!["9999-01-01-000000".to_owned()]);
}

fn pool(db: &TestDb, tweak: impl FnOnce(&mut DbConfig)) -> Db {
    let mut config = DbConfig::new(
        db.url(),
        &format!("strata-t-{}", &db.name()[12..24]),
        Environment::Development,
    );
    config.min_idle = 0;
    tweak(&mut config);
    Db::new(config)
}

#[tokio::test]
async fn pooled_connections_have_the_session_settings() {
    let db = TestDb::new().await;
    let pool = pool(&db, |c| c.statement_timeout = Duration::from_millis(200));
    let mut conn = pool.get().await.unwrap();
    let started = Instant::now();
    let err: Error = sql_query("SELECT pg_sleep(3)")
        .execute(&mut conn)
        .await
        .unwrap_err()
        .into();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cancelled by the server, not after the sleep"
    );
    assert_eq!(err.sqlstate(), Some("57014"));
    assert_eq!(
        err.class(),
        ErrorClass::Permanent,
        "a timeout is not retried"
    );

    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        value: String,
    }
    let rows: Vec<Setting> = sql_query("SELECT current_setting('application_name') AS value")
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows[0].value, pool.config().application_name);

    // No JIT compilation in any Strata session, pooled or dedicated (the analytics folds
    // compiled every second of ingest): the server's default is on.
    let mut dedicated = dedicated_connection(pool.config()).await.unwrap();
    for conn in [&mut *conn, &mut dedicated] {
        let jit: Setting = sql_query("SELECT current_setting('jit') AS value")
            .get_result(conn)
            .await
            .unwrap();
        assert_eq!(jit.value, "off");
    }
}

#[tokio::test]
async fn pool_recovers_after_all_its_connections_are_terminated() {
    let db = TestDb::new().await;
    // Every checkout validates: the kill below is not yet visible on the sockets.
    let pool = pool(&db, |c| {
        c.max_connections = 4;
        c.validation_bypass = Duration::ZERO;
    });
    // Open four connections at once.
    let held: Vec<_> = futures_join(&pool, 4).await;
    drop(held);
    assert_eq!(pool.state().connections, 4);

    let rows: Vec<Count> = pool_backends(&db, &pool, "count(pg_terminate_backend(pid)) AS n").await;
    assert_eq!(
        rows[0].n, 4,
        "found every pooled connection by application_name"
    );

    // No restart: every checkout gets a working connection.
    for _ in 0..10 {
        let mut conn = pool.get().await.unwrap();
        let one: Vec<Count> = sql_query("SELECT 1::bigint AS n")
            .load(&mut conn)
            .await
            .unwrap();
        assert_eq!(one[0].n, 1);
    }
    pool.ping().await.unwrap();
}

/// `SELECT <select>` over the pool's backends in `pg_stat_activity` (found by the pool's
/// `application_name` in the test's database), as a superuser.
async fn pool_backends<T>(db: &TestDb, pool: &Db, select: &str) -> Vec<T>
where
    T: QueryableByName<diesel::pg::Pg> + Send + 'static,
{
    let mut admin = db.admin_connection().await;
    sql_query(format!(
        "SELECT {select} FROM pg_stat_activity WHERE application_name = $1 AND datname = $2"
    ))
    .bind::<Text, _>(&pool.config().application_name)
    .bind::<Text, _>(db.name())
    .load(&mut admin)
    .await
    .unwrap()
}

/// The last statement the pool's one backend ran, from `pg_stat_activity` (set when a
/// statement starts, so it is current as soon as the statement returns).
async fn last_statement(db: &TestDb, pool: &Db) -> String {
    #[derive(QueryableByName)]
    struct Query {
        #[diesel(sql_type = Text)]
        query: String,
    }
    let rows: Vec<Query> = pool_backends(db, pool, "query").await;
    assert_eq!(rows.len(), 1, "one pooled backend");
    rows[0].query.clone()
}

/// Runs `SELECT 42` on a connection of `pool` (one connection), checks it out again and
/// returns the last statement the server saw from it: `SELECT 1` when the checkout
/// validated the connection.
async fn statement_before_reuse(db: &TestDb, pool: &Db) -> String {
    pool.get()
        .await
        .unwrap()
        .batch_execute("SELECT 42")
        .await
        .unwrap();
    drop(pool.get().await.unwrap());
    last_statement(db, pool).await
}

#[tokio::test]
async fn a_connection_that_just_worked_is_handed_out_without_a_validation_query() {
    let db = TestDb::new().await;
    let trusting = pool(&db, |c| {
        c.max_connections = 1;
        c.min_idle = 0;
        c.validation_bypass = Duration::from_secs(60);
    });
    assert_eq!(statement_before_reuse(&db, &trusting).await, "SELECT 42");

    // Past the bypass (zero here) the checkout runs SELECT 1 first.
    let checking = pool(&db, |c| {
        c.application_name = "strata-checking".into();
        c.max_connections = 1;
        c.min_idle = 0;
        c.validation_bypass = Duration::ZERO;
    });
    assert_eq!(statement_before_reuse(&db, &checking).await, "SELECT 1");
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_handed_out_even_inside_the_bypass() {
    let db = TestDb::new().await;
    let pool = pool(&db, |c| {
        c.max_connections = 2;
        c.validation_bypass = Duration::from_secs(60);
    });
    drop(futures_join(&pool, 2).await);
    let killed: Vec<Count> =
        pool_backends(&db, &pool, "count(pg_terminate_backend(pid)) AS n").await;
    assert_eq!(killed[0].n, 2);
    // Wait until the backends are gone and their sockets closed, as after a restart.
    for _ in 0..100 {
        let rows: Vec<Count> = pool_backends(&db, &pool, "count(*) AS n").await;
        if rows[0].n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..4 {
        let mut conn = pool.get().await.unwrap();
        conn.batch_execute("SELECT 1").await.unwrap();
    }
}

#[tokio::test]
async fn checkouts_are_served_in_arrival_order_and_a_full_line_is_refused_at_once() {
    let db = TestDb::new().await;
    let pool = pool(&db, |c| {
        c.max_connections = 1;
        c.max_waiting = 3;
        c.checkout_timeout = Duration::from_secs(30);
    });
    let held = pool.get().await.unwrap();
    let served = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..3 {
        let waiter = pool.clone();
        let served = Arc::clone(&served);
        waiters.push(tokio::spawn(async move {
            let mut conn = waiter.get().await.unwrap();
            served.lock().unwrap().push(i);
            conn.batch_execute("SELECT 1").await.unwrap();
        }));
        // Each waiter is in line before the next arrives.
        while pool.state().waiting < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    let started = Instant::now();
    let refused = pool.get().await.err().expect("the line is full");
    assert!(matches!(refused, Error::PoolSaturated), "{refused:?}");
    assert!(refused.is_unavailable());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused without waiting"
    );

    drop(held);
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*served.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(pool.state().waiting, 0);
}

async fn futures_join(pool: &Db, n: usize) -> Vec<strata_storage::PooledConn<'_>> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut conn = pool.get().await.unwrap();
        conn.batch_execute("SELECT 1").await.unwrap();
        conns.push(conn);
    }
    conns
}

#[derive(QueryableByName)]
struct Echo {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// `SELECT n, pg_backend_pid()` on a shared connection of `pool`.
async fn shared_echo(pool: &Db, n: i64) -> Result<Echo, Error> {
    pool.shared(move |conn| {
        Box::pin(async move {
            let mut conn = conn;
            sql_query("SELECT $1::bigint AS n, pg_backend_pid() AS pid")
                .bind::<BigInt, _>(n)
                .get_result::<Echo>(&mut conn)
                .await
        })
    })
    .await
}

#[tokio::test]
async fn shared_reads_of_many_calls_run_at_once_on_one_connection_each_counted_in_its_own_call() {
    let db = TestDb::new().await;
    let pool = pool(&db, |c| c.shared_connections = 1);
    let calls: Vec<_> = (0..200i64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let stats = Arc::new(QueryStats::default());
                let echo = scope(Arc::clone(&stats), shared_echo(&pool, i))
                    .await
                    .unwrap();
                (i, echo, stats.count())
            })
        })
        .collect();
    let mut pids = std::collections::HashSet::new();
    for call in calls {
        let (i, echo, queries) = call.await.unwrap();
        assert_eq!(echo.n, i, "each call gets its own answer");
        assert_eq!(
            queries, 1,
            "each call counts its own query, not its neighbours'"
        );
        pids.insert(echo.pid);
    }
    assert_eq!(pids.len(), 1, "one connection served them all");
    // No pooled connection was opened for them.
    assert_eq!(pool.state().connections, 0);
}

#[tokio::test]
async fn a_call_on_a_shared_connection_is_timed_from_its_own_start() {
    let db = TestDb::new().await;
    let pool = pool(&db, |c| c.shared_connections = 1);
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let stats = Arc::new(QueryStats::default());
            scope(Arc::clone(&stats), async {
                pool.shared(|conn| {
                    Box::pin(async move {
                        let mut conn = conn;
                        sql_query("SELECT pg_sleep(0.3)").execute(&mut conn).await
                    })
                })
                .await
                .unwrap()
            })
            .await;
            stats
        })
    };
    // A second call starts while the first is in flight and is answered after it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let quick = tokio::spawn(async move {
        let stats = Arc::new(QueryStats::default());
        scope(Arc::clone(&stats), shared_echo(&pool, 1))
            .await
            .unwrap();
        stats
    });
    let (slow, quick) = (slow.await.unwrap(), quick.await.unwrap());
    assert_eq!((slow.count(), quick.count()), (1, 1));
    // Matched to the other call's start, the slow call would be timed from 150 ms later.
    assert!(
        slow.total() >= Duration::from_millis(300),
        "{:?}",
        slow.total()
    );
    assert!(quick.total() < slow.total());
}

#[tokio::test]
async fn a_shared_connection_the_server_ended_is_replaced_without_failing_a_call() {
    let db = TestDb::new().await;
    let pool = pool(&db, |c| c.shared_connections = 1);
    let first = shared_echo(&pool, 1).await.unwrap().pid;
    let rows: Vec<Count> = pool_backends(&db, &pool, "count(pg_terminate_backend(pid)) AS n").await;
    assert_eq!(rows[0].n, 1);
    for n in 2..5 {
        let echo = shared_echo(&pool, n).await.unwrap();
        assert_eq!(echo.n, n);
        assert_ne!(echo.pid, first, "a new backend");
    }
}

#[tokio::test]
async fn without_shared_connections_shared_reads_use_the_pool() {
    let db = TestDb::new().await;
    let pool = pool(&db, |c| c.shared_connections = 0);
    assert_eq!(shared_echo(&pool, 7).await.unwrap().n, 7);
    assert_eq!(pool.state().connections, 1);
}

#[tokio::test]
async fn real_server_errors_are_classified_for_retry() {
    let db = TestDb::new().await;
    let config = DbConfig::new(db.url(), "strata-classify", Environment::Development);

    // 57P01: the server terminates our backend.
    let mut victim = dedicated_connection(&config).await.unwrap();
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let pid: Vec<Pid> = sql_query("SELECT pg_backend_pid() AS pid")
        .load(&mut victim)
        .await
        .unwrap();
    let mut admin = db.admin_connection().await;
    sql_query("SELECT pg_terminate_backend($1)")
        .bind::<Integer, _>(pid[0].pid)
        .execute(&mut admin)
        .await
        .unwrap();
    let err: Error = victim.batch_execute("SELECT 1").await.unwrap_err().into();
    assert_eq!(err.class(), ErrorClass::Transient, "{err:?}");
    assert!(err.is_unavailable());

    // 40P01: two transactions lock rows in opposite orders.
    let mut setup = db.connect().await;
    setup
        .batch_execute("CREATE TABLE public.deadlock (id int PRIMARY KEY, v int); INSERT INTO public.deadlock VALUES (1, 0), (2, 0)")
        .await
        .unwrap();
    let mut a = dedicated_connection(&config).await.unwrap();
    let mut b = dedicated_connection(&config).await.unwrap();
    a.batch_execute("BEGIN; UPDATE public.deadlock SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("BEGIN; UPDATE public.deadlock SET v = 1 WHERE id = 2")
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.batch_execute("UPDATE public.deadlock SET v = 2 WHERE id = 2"),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            b.batch_execute("UPDATE public.deadlock SET v = 2 WHERE id = 1")
                .await
        }
    );
    let loser: Error = ra
        .err()
        .or(rb.err())
        .expect("one side is chosen as deadlock victim")
        .into();
    assert_eq!(loser.sqlstate(), Some("40P01"));
    assert_eq!(loser.class(), ErrorClass::RetryTransaction);
    a.batch_execute("ROLLBACK").await.unwrap();
    b.batch_execute("ROLLBACK").await.unwrap();

    // 23505 is never retried.
    let err: Error = setup
        .batch_execute("INSERT INTO public.deadlock VALUES (1, 0)")
        .await
        .unwrap_err()
        .into();
    assert_eq!(err.sqlstate(), Some("23505"));
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn retrying_reruns_a_transaction_that_lost_a_serialization_race() {
    let db = TestDb::new().await;
    let pool = pool(&db, |_| {});
    let mut setup = db.connect().await;
    setup
        .batch_execute("CREATE TABLE public.counter (id int PRIMARY KEY, v int); INSERT INTO public.counter VALUES (1, 0)")
        .await
        .unwrap();
    let attempts = Arc::new(Mutex::new(0));
    // Two SERIALIZABLE read-modify-write transactions in lockstep: one must fail with
    // 40001 and be rerun by `retrying`; both increments land.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let run = |pool: Db, barrier: Arc<tokio::sync::Barrier>, attempts: Arc<Mutex<u32>>| async move {
        pool.retrying("increment", || {
            let barrier = Arc::clone(&barrier);
            let attempts = Arc::clone(&attempts);
            let pool = pool.clone();
            async move {
                *attempts.lock().unwrap() += 1;
                let mut conn = pool.get().await?;
                conn.build_transaction()
                    .serializable()
                    .run(async |c| {
                        let v: Vec<Count> =
                            sql_query("SELECT v::bigint AS n FROM public.counter WHERE id = 1")
                                .load(c)
                                .await?;
                        if *attempts.lock().unwrap() <= 2 {
                            barrier.wait().await;
                        }
                        sql_query("UPDATE public.counter SET v = $1 WHERE id = 1")
                            .bind::<BigInt, _>(v[0].n + 1)
                            .execute(c)
                            .await?;
                        Ok::<_, Error>(())
                    })
                    .await
            }
        })
        .await
    };
    let (r1, r2) = tokio::join!(
        run(pool.clone(), Arc::clone(&barrier), Arc::clone(&attempts)),
        run(pool.clone(), Arc::clone(&barrier), Arc::clone(&attempts))
    );
    r1.unwrap();
    r2.unwrap();
    assert!(*attempts.lock().unwrap() >= 3, "one transaction was rerun");
    let v: Vec<Count> = sql_query("SELECT v::bigint AS n FROM public.counter")
        .load(&mut setup)
        .await
        .unwrap();
    assert_eq!(v[0].n, 2, "no lost update");
}

#[tokio::test]
async fn query_scope_counts_exactly_the_queries_run_inside_it() {
    let db = TestDb::new().await;
    let pool = pool(&db, |_| {});
    let stats = Arc::new(QueryStats::default());
    scope(Arc::clone(&stats), async {
        let mut conn = pool.get().await.unwrap();
        for _ in 0..3 {
            sql_query("SELECT pg_sleep(0.01)")
                .execute(&mut conn)
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(stats.count(), 3, "checkout validation is not counted");
    assert!(stats.total() >= Duration::from_millis(30));

    // Queries outside the scope are not counted.
    pool.ping().await.unwrap();
    assert_eq!(stats.count(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn slow_queries_are_logged_with_sql_but_without_bind_values() {
    let db = TestDb::new().await;
    let pool = pool(&db, |c| {
        c.slow_query.warn = Duration::from_millis(20);
        c.slow_query.error = Duration::from_millis(150);
    });
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber(tracing::Level::WARN));

    let mut conn = pool.get().await.unwrap();
    sql_query("SELECT pg_sleep(0.05), $1::text AS secret")
        .bind::<Text, _>("hunter2-bind-value")
        .execute(&mut conn)
        .await
        .unwrap();
    sql_query("SELECT pg_sleep(0.2)")
        .execute(&mut conn)
        .await
        .unwrap();
    sql_query("SELECT 1").execute(&mut conn).await.unwrap();

    let log = capture.text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("slow query")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("pg_sleep(0.05), $1::text"),
        "{log}"
    );
    assert!(
        lines[1].contains("ERROR") && lines[1].contains("pg_sleep(0.2)"),
        "{log}"
    );
    assert!(
        !log.contains("hunter2"),
        "bind values never reach the log: {log}"
    );
}

#[tokio::test]
async fn migrations_are_not_cut_short_by_the_pool_statement_timeout() {
    let db = TestDb::empty().await;
    let dir = std::env::temp_dir().join(format!("strata-slow-{}", db.name()));
    let folder = dir.join("2000-01-01-000000_slow");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("up.sql"), "SELECT pg_sleep(0.5);").unwrap();
    std::fs::write(folder.join("down.sql"), "SELECT 1;").unwrap();

    let mut config = DbConfig::new(db.url(), "strata-slow", Environment::Development);
    config.statement_timeout = Duration::from_millis(100);
    let mut conn = dedicated_connection(&config).await.unwrap();
    let applied = Migrations::from_dir(&dir)
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    assert_eq!(applied, vec!["2000-01-01-000000".to_owned()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[path = "storage/durability.rs"]
mod durability;
