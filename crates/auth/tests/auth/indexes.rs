//! The hot queries use their indexes.

use super::*;

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

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
    let cases = [
        ("login by email", "SELECT * FROM auth.users WHERE lower(email) = 'user42@example.com'", "users_email_key"),
        (
            "admin email-prefix search",
            "SELECT * FROM auth.users WHERE lower(email) LIKE 'user42%' ORDER BY id LIMIT 51",
            "users_email_key",
        ),
        ("admin role filter", "SELECT * FROM auth.users WHERE role = 'ADMIN' ORDER BY id LIMIT 51", "users_role_id_idx"),
        (
            "refresh token lookup",
            "SELECT * FROM auth.refresh_tokens WHERE token_hash = sha256('x'::bytea)",
            "refresh_tokens_hash_key",
        ),
        ("API key lookup", "SELECT * FROM auth.api_keys WHERE key_hash = sha256('x'::bytea)", "api_keys_hash_key"),
        (
            "list a user's live sessions",
            "SELECT * FROM auth.sessions WHERE user_id = '01900000-0000-7000-8000-000000000000' AND revoked_at IS NULL
              ORDER BY created_at DESC, id DESC LIMIT 51",
            "sessions_active_user_idx",
        ),
        (
            "revoke a family",
            "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE family_id = '01900000-0000-7000-8000-000000000000' AND revoked_at IS NULL",
            "refresh_tokens_family_idx",
        ),
        (
            "cleanup of expired sessions",
            "SELECT id FROM auth.sessions WHERE idle_expires_at < now() - interval '1 day' LIMIT 1000",
            "sessions_expiry_idx",
        ),
        (
            "cleanup of revoked sessions",
            "SELECT id FROM auth.sessions WHERE revoked_at < now() - interval '1 day' LIMIT 1000",
            "sessions_revoked_idx",
        ),
        (
            "a user's API keys",
            "SELECT * FROM auth.api_keys WHERE user_id = '01900000-0000-7000-8000-000000000000' ORDER BY created_at DESC, id DESC LIMIT 51",
            "api_keys_user_idx",
        ),
    ];
    for (what, sql, index) in cases {
        let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {sql}"))
            .load(&mut conn)
            .await
            .unwrap();
        let plan = plan
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(plan.contains(index), "{what} should use {index}:\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{what}:\n{plan}");
    }
}
