//! ExplainQuery is not a way to read the database: every secret column, every way a
//! SELECT can reach it, with and without ANALYZE; errors say what went wrong without
//! quoting the database; and a call leaves nothing behind.

use diesel::sql_types::Text;
use tonic_types::StatusExt as _;

use super::*;

/// A secret as stored, and the spellings it could leak in.
struct Secret {
    table: &'static str,
    column: &'static str,
    /// Substrings that must never appear in an answer.
    forms: Vec<String>,
}

/// Plants one row of every secret-holding table with recognisable values; returns them.
async fn plant_secrets(db: &TestDb) -> Vec<Secret> {
    let mut conn = db.connect().await;
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2VjcmV0c2FsdA$SECRETPASSWORDHASHVALUE0123456789";
    let bytes = |tag: u8| -> Vec<u8> { (0..32u8).map(|i| i.wrapping_mul(7) ^ tag).collect() };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let (token, key, private) = (bytes(0xa1), bytes(0xb2), bytes(0xc3));
    conn.batch_execute(&format!(
        "INSERT INTO auth.users (id, email, password_hash, display_name)
              VALUES ('00000000-0000-7000-8000-000000000001', 'victim@example.com', '{hash}', 'Victim');
         INSERT INTO auth.sessions (id, user_id, idle_expires_at, absolute_expires_at)
              VALUES ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001',
                      now() + interval '1 day', now() + interval '1 day');
         INSERT INTO auth.refresh_tokens (id, session_id, family_id, token_hash, expires_at)
              VALUES ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-000000000002',
                      '00000000-0000-7000-8000-000000000002', '\\x{}', now() + interval '1 day');
         INSERT INTO auth.api_keys (id, user_id, name, prefix, key_hash, scopes)
              VALUES ('00000000-0000-7000-8000-000000000004', '00000000-0000-7000-8000-000000000001',
                      'k', 'sk_abc', '\\x{}', ARRAY['profile:read']);
         INSERT INTO auth.signing_keys (kid, private_key, public_key)
              VALUES ('planted', '\\x{}', '\\x00');
         ANALYZE auth.users, auth.refresh_tokens, auth.api_keys, auth.signing_keys;",
        hex(&token),
        hex(&key),
        hex(&private),
    ))
    .await
    .unwrap();
    let byte_forms = |b: &[u8]| vec![hex(b)[..24].to_owned(), hex(b)[40..].to_owned()];
    vec![
        Secret {
            table: "auth.users",
            column: "password_hash",
            forms: vec!["SECRETPASSWORDHASH".into(), "c2VjcmV0c2FsdA".into()],
        },
        Secret {
            table: "auth.refresh_tokens",
            column: "token_hash",
            forms: byte_forms(&token),
        },
        Secret {
            table: "auth.api_keys",
            column: "key_hash",
            forms: byte_forms(&key),
        },
        Secret {
            table: "auth.signing_keys",
            column: "private_key",
            forms: byte_forms(&private),
        },
    ]
}

/// Every way we could think of for a SELECT to get at column `c` of table `t`.
const ATTACKS: &[&str] = &[
    "SELECT {c} FROM {t}",
    "SELECT {c}::text::int FROM {t}",
    "SELECT * FROM {t}",
    "SELECT x FROM {t} x",
    "SELECT row_to_json(x) FROM {t} x",
    "SELECT row_to_json(x)::text::int FROM {t} x",
    "SELECT to_jsonb(x) ->> '{c}' FROM {t} x",
    "SELECT (SELECT {c} FROM {t} LIMIT 1)::text::int",
    "SELECT 1 FROM {t} WHERE {c}::text = 'x'",
    "SELECT 1 FROM {t} WHERE {c} IS NOT NULL",
    "SELECT count(*) FROM {t} GROUP BY {c}",
    "SELECT length({c}::text) FROM {t}",
    "SELECT encode({c}::text::bytea, 'hex')::int FROM {t}",
    "WITH s AS (SELECT {c} AS v FROM {t}) SELECT v::text::int FROM s",
    "SELECT * FROM generate_series(1, (SELECT ascii({c}::text) FROM {t} LIMIT 1))",
    "SELECT 1 FROM {t} x, LATERAL (SELECT x.{c}) y",
    "SELECT query_to_xml('SELECT {c} FROM {t}', true, false, '')",
    "SELECT query_to_xml('SELECT {c} FROM {t}', true, false, '')::text::int",
    "SELECT table_to_xml('{t}', true, false, '')::text::int",
    "SELECT set_config('role', 'none', true), query_to_xml('SELECT {c} FROM {t}', true, false, '')::text::int",
    "SELECT set_config('role', session_user, true), (SELECT {c} FROM {t} LIMIT 1)::text::int",
    "SELECT set_config('session_authorization', session_user, true), (SELECT {c} FROM {t} LIMIT 1)::text::int",
    "SELECT most_common_vals::text::int FROM pg_stats WHERE attname = '{c}'",
    "SELECT histogram_bounds::text::int FROM pg_stats WHERE attname = '{c}'",
    "SELECT stanumbers1::text, stavalues1::text::int FROM pg_statistic",
    "SELECT pg_read_file('global/pg_control')",
    "SELECT rolpassword::int FROM pg_authid",
];

#[tokio::test]
async fn no_secret_column_is_readable_in_any_way() {
    let db = TestDb::new().await;
    let secrets = plant_secrets(&db).await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);
    let mut denied = 0;
    for secret in &secrets {
        for attack in ATTACKS {
            let sql = attack
                .replace("{c}", secret.column)
                .replace("{t}", secret.table);
            for analyze in [false, true] {
                for format in [pb::ExplainFormat::Text, pb::ExplainFormat::Json] {
                    let answer = client
                        .explain_query(admin_request(pb::ExplainQueryRequest {
                            sql: sql.clone(),
                            analyze,
                            format: format.into(),
                            timeout: None,
                        }))
                        .await;
                    let text = match answer {
                        Ok(plan) => plan.into_inner().plan,
                        Err(status) => {
                            if status.code() == Code::PermissionDenied {
                                denied += 1;
                            }
                            assert_ne!(status.code(), Code::Internal, "{sql}: {status:?}");
                            format!("{status:?} {:?}", status.get_error_details())
                        }
                    };
                    for form in &secret.forms {
                        assert!(
                            !text.contains(form.as_str()),
                            "{sql} (analyze {analyze}) leaked {}.{}: {text}",
                            secret.table,
                            secret.column
                        );
                    }
                }
            }
        }
        // The plain read is refused outright, however it is phrased.
        for sql in [
            format!("SELECT {} FROM {}", secret.column, secret.table),
            format!("SELECT * FROM {}", secret.table),
        ] {
            let status = client
                .explain_query(admin_request(pb::ExplainQueryRequest {
                    sql,
                    analyze: true,
                    ..Default::default()
                }))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(status.message().contains("42501"), "{status:?}");
        }
    }
    assert!(denied > secrets.len() * 40, "{denied} refusals");
    // Non-secret columns of the same tables stay explainable.
    let plan = client
        .explain_query(admin_request(pb::ExplainQueryRequest {
            sql: "SELECT u.id, u.email, k.name FROM auth.users u JOIN auth.api_keys k ON k.user_id = u.id"
                .into(),
            analyze: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(plan.plan.contains("actual time"), "{}", plan.plan);
}

fn error_info(status: &tonic::Status) -> std::collections::HashMap<String, String> {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.metadata.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn failed_statements_are_described_by_sqlstate_and_position_only() {
    let db = TestDb::new().await;
    plant_secrets(&db).await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);
    let explain = |sql: &str, analyze: bool| {
        admin_request(pb::ExplainQueryRequest {
            sql: sql.into(),
            analyze,
            timeout: Some(Duration::from_millis(200).try_into().unwrap()),
            ..Default::default()
        })
    };
    for (sql, analyze, code, sqlstate, position, phrase) in [
        (
            "SELECT FROM WHERE",
            false,
            Code::InvalidArgument,
            "42601",
            Some("13"),
            "syntax error",
        ),
        (
            "SELECT nope FROM auth.sessions",
            false,
            Code::InvalidArgument,
            "42703",
            Some("8"),
            "unknown column",
        ),
        (
            "   SELECT nope FROM auth.sessions",
            false,
            Code::InvalidArgument,
            "42703",
            Some("11"),
            "unknown column",
        ),
        (
            "SELECT 1 FROM auth.nothing",
            true,
            Code::InvalidArgument,
            "42P01",
            Some("15"),
            "unknown relation",
        ),
        // The value that failed the cast is a real email: it must not come back.
        (
            "SELECT email::int FROM auth.users",
            true,
            Code::InvalidArgument,
            "22P02",
            None,
            "invalid input value",
        ),
        (
            "SELECT 1 / 0",
            true,
            Code::InvalidArgument,
            "22012",
            None,
            "division by zero",
        ),
        (
            "SELECT pg_sleep(5)",
            true,
            Code::DeadlineExceeded,
            "57014",
            None,
            "timed out",
        ),
        (
            "SELECT * FROM auth.users",
            false,
            Code::PermissionDenied,
            "42501",
            None,
            "permission denied",
        ),
    ] {
        let status = client
            .explain_query(explain(sql, analyze))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{sql}: {status:?}");
        let info = error_info(&status);
        assert_eq!(
            info.get("sqlstate").map(String::as_str),
            Some(sqlstate),
            "{sql}: {status:?}"
        );
        assert_eq!(
            info.get("position").map(String::as_str),
            position,
            "{sql}: {status:?}"
        );
        assert!(status.message().contains(phrase), "{sql}: {status:?}");
        assert!(status.message().contains(sqlstate), "{sql}: {status:?}");
        let everything = format!("{status:?} {:?}", status.get_error_details());
        for leak in [
            "victim@example.com",
            "users",
            "integer",
            "nope",
            "nothing",
            "canceling",
        ] {
            assert!(!everything.contains(leak), "{sql}: {leak} in {everything}");
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Calls {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
    #[diesel(sql_type = Text)]
    kind: String,
}

/// Sequential scans of `content.once_probe` so far, as the statistics system reports them.
async fn probe_scans(db: &TestDb) -> i64 {
    let rows: Vec<Count> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT coalesce(seq_scan, 0) AS n FROM pg_stat_user_tables
              WHERE schemaname = 'content' AND relname = 'once_probe'",
        ),
        &mut db.connect().await,
    )
    .await
    .unwrap();
    rows[0].n
}

#[tokio::test]
async fn a_call_runs_its_statement_once_and_leaves_nothing_behind() {
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);
    // Every execution of the statement scans this (empty, unindexed) table once.
    let mut conn = db.connect().await;
    conn.batch_execute("CREATE TABLE content.once_probe (x int)")
        .await
        .unwrap();
    for format in [pb::ExplainFormat::Text, pb::ExplainFormat::Json] {
        let before = probe_scans(&db).await;
        let response = client
            .explain_query(admin_request(pb::ExplainQueryRequest {
                sql: "SELECT pg_advisory_lock(4242), pg_advisory_lock_shared(4343), \
                             set_config('application_name', 'hijacked', false), \
                             (SELECT count(*) FROM content.once_probe)"
                    .into(),
                analyze: true,
                format: format.into(),
                timeout: None,
            }))
            .await
            .unwrap();
        assert!(
            response
                .into_inner()
                .execution_time
                .is_some_and(|d| d.seconds > 0 || d.nanos > 0)
        );
        // The call's session flushes its statistics when it ends; both executions of a
        // statement run twice would land together.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut scans = probe_scans(&db).await;
        while scans == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            scans = probe_scans(&db).await;
        }
        assert_eq!(
            scans - before,
            1,
            "{format:?}: the statement ran exactly once"
        );
        let calls: Vec<Calls> = diesel_async::RunQueryDsl::load(
            diesel::sql_query(
                "SELECT count(*) AS n, 'locks' AS kind FROM pg_locks
                  WHERE locktype = 'advisory' AND objid IN (4242, 4343)",
            ),
            &mut db.admin_connection().await,
        )
        .await
        .unwrap();
        let n = |kind: &str| calls.iter().find(|c| c.kind == kind).map(|c| c.n);
        assert_eq!(n("locks"), Some(0), "advisory locks died with the call");
    }
    // The connection of the call is gone too (give its close a moment to land).
    let mut admin_conn = db.admin_connection().await;
    let mut sessions = 1;
    for _ in 0..50 {
        let rows: Vec<Count> = diesel_async::RunQueryDsl::load(
            diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'hijacked'",
            ),
            &mut admin_conn,
        )
        .await
        .unwrap();
        sessions = rows[0].n;
        if sessions == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sessions, 0);
}

/// Secret columns, by table.
const SECRET_COLUMNS: &[(&str, &str)] = &[
    ("auth.users", "password_hash"),
    ("auth.refresh_tokens", "token_hash"),
    ("auth.api_keys", "key_hash"),
    ("auth.signing_keys", "private_key"),
];

/// Views and materialized views the explain role may read that use a secret column: they
/// run with their owner's rights, so each would hand the column over.
async fn secret_views(conn: &mut diesel_async::AsyncPgConnection) -> i64 {
    let pairs = SECRET_COLUMNS
        .iter()
        .map(|(table, column)| format!("('{table}'::regclass, '{column}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows: Vec<Count> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT count(*) AS n
               FROM pg_depend d
               JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
               JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               JOIN (VALUES {pairs}) AS s (rel, col) ON s.rel = d.refobjid AND s.col = a.attname
              WHERE r.ev_class <> d.refobjid
                AND has_table_privilege('strata_explain', r.ev_class, 'SELECT')"
        )),
        conn,
    )
    .await
    .unwrap();
    rows[0].n
}

/// A catalog check every migration passes through: no secret column is granted to the
/// explain role, and no relation it may read (a view, say) reaches one.
#[tokio::test]
async fn no_relation_the_explain_role_reads_reaches_a_secret_column() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    for (table, column) in SECRET_COLUMNS {
        let rows: Vec<Count> = diesel_async::RunQueryDsl::load(
            diesel::sql_query(format!(
                "SELECT has_column_privilege('strata_explain', '{table}', '{column}', 'SELECT')::int::bigint AS n"
            )),
            &mut conn,
        )
        .await
        .unwrap();
        assert_eq!(rows[0].n, 0, "{table}.{column} is readable");
    }
    assert_eq!(secret_views(&mut conn).await, 0);
    // The check sees such a view: one in analytics (readable by default) over a secret.
    conn.batch_execute("CREATE VIEW analytics.leak AS SELECT id, password_hash FROM auth.users")
        .await
        .unwrap();
    assert_eq!(secret_views(&mut conn).await, 1);
}
