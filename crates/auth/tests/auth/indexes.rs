//! The hot queries use their indexes: the test runs the store's own functions, records
//! the SQL they send and checks its generic plans (what prepared statements use).

use strata_auth::store::{self, UserFilter};
use strata_testkit::plans;
use uuid::Uuid;

use super::*;

#[tokio::test]
async fn hot_queries_use_their_indexes() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    conn.batch_execute(
        "INSERT INTO auth.users (id, email, password_hash, display_name, role)
         SELECT gen_random_uuid(), 'user' || g || '@example.com', 'x', 'U', CASE WHEN g % 100 = 0 THEN 'ADMIN' ELSE 'USER' END
           FROM generate_series(1, 5000) g;
         INSERT INTO auth.sessions (id, user_id, idle_expires_at, absolute_expires_at, revoked_at)
         SELECT gen_random_uuid(), id, now() + interval '7 days', now() + interval '30 days',
                CASE WHEN random() < 0.5 THEN now() END
           FROM auth.users, generate_series(1, 4);
         INSERT INTO auth.refresh_tokens (id, session_id, family_id, token_hash, expires_at)
         SELECT gen_random_uuid(), id, id, sha256(id::text::bytea), idle_expires_at FROM auth.sessions;
         INSERT INTO auth.api_keys (id, user_id, name, prefix, key_hash, scopes)
         SELECT gen_random_uuid(), id, 'k', 'sk_x', sha256(id::text::bytea), '{a:b}' FROM auth.users;
         ANALYZE auth.users, auth.sessions, auth.refresh_tokens, auth.api_keys;",
    )
    .await
    .unwrap();
    // A refresh token already used: presenting it again takes the reuse path, which
    // revokes its family.
    let used: Vec<Hash> = diesel::sql_query(
        "UPDATE auth.refresh_tokens SET used_at = now()
          WHERE id = (SELECT id FROM auth.refresh_tokens LIMIT 1) RETURNING token_hash",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let used: [u8; 32] = used[0].token_hash.clone().try_into().unwrap();
    let someone = Uuid::now_v7();
    let now = Utc::now();
    let config = AuthConfig::default();
    // Each case runs the store's own code and checks the plans of what it sent.
    let cases: Vec<(&str, Vec<plans::Plan>, &[&str])> = vec![
        (
            "login by email",
            plans::plans_of(&mut conn, async |c| {
                store::user_by_email(c, "user42@example.com").await
            })
            .await,
            &["users_email_key"],
        ),
        (
            "admin email-prefix search",
            plans::plans_of(&mut conn, async |c| {
                let filter = UserFilter {
                    email_prefix: Some("user42".into()),
                    ..Default::default()
                };
                store::list_users(c, &filter, None, 51).await
            })
            .await,
            &["users_email_key"],
        ),
        (
            "admin role filter",
            plans::plans_of(&mut conn, async |c| {
                let filter = UserFilter {
                    role: Some("ADMIN"),
                    ..Default::default()
                };
                store::list_users(c, &filter, None, 51).await
            })
            .await,
            &["users_role_id_idx"],
        ),
        (
            "refresh token lookup, and a reused one revoking its family",
            plans::plans_of(&mut conn, async |c| {
                store::rotate_refresh_token(c, &config, &used, now).await
            })
            .await,
            &["refresh_tokens_hash_key", "refresh_tokens_family_idx"],
        ),
        (
            "API key lookup",
            plans::plans_of(&mut conn, async |c| store::api_key_state(c, &[7; 32]).await).await,
            &["api_keys_hash_key"],
        ),
        (
            "the per-call session check (on a cache miss)",
            plans::plans_of(&mut conn, async |c| store::session_state(c, someone).await).await,
            &["sessions_pkey"],
        ),
        (
            "list a user's live sessions",
            plans::plans_of(&mut conn, async |c| {
                store::live_sessions(c, someone, now, None, 51).await
            })
            .await,
            &["sessions_active_user_idx"],
        ),
        (
            "cleanup of expired and revoked credentials",
            plans::plans_of(&mut conn, async |c| {
                strata_auth::cleanup::run_once(c, now).await
            })
            .await,
            &["sessions_expiry_idx", "sessions_revoked_idx"],
        ),
        (
            "a user's API keys",
            plans::plans_of(&mut conn, async |c| {
                store::list_api_keys(c, someone, None, 51).await
            })
            .await,
            &["api_keys_user_idx"],
        ),
    ];
    for (what, plans, indexes) in cases {
        assert!(!plans.is_empty(), "{what}: no statement captured");
        let all = plans
            .iter()
            .map(|p| format!("{}\n{}", p.sql, p.plan))
            .collect::<Vec<_>>()
            .join("\n\n");
        for index in indexes {
            assert!(all.contains(index), "{what} should use {index}:\n{all}");
        }
        assert!(!all.contains("Seq Scan"), "{what}:\n{all}");
    }
}

#[derive(QueryableByName)]
struct Hash {
    #[diesel(sql_type = Bytea)]
    token_hash: Vec<u8>,
}
