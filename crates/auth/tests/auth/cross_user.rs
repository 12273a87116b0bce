//! Every RPC that takes an id, called with another user's id: the answer is exactly the
//! answer a missing id gets, and the other user's objects are unchanged afterwards (read
//! back from the database, not only through the API).

use diesel::sql_types::Text;

use super::*;

#[derive(QueryableByName)]
struct Json {
    #[diesel(sql_type = Text)]
    row: String,
}

/// Every row of `bob`'s sessions, refresh tokens and API keys, as JSON.
async fn rows_of(db: &TestDb, bob: &str) -> Vec<String> {
    let sql = format!(
        "SELECT row_to_json(s)::text AS row FROM auth.sessions s WHERE user_id = '{bob}'
         UNION ALL SELECT row_to_json(t)::text FROM auth.refresh_tokens t
                    JOIN auth.sessions s ON s.id = t.session_id WHERE s.user_id = '{bob}'
         UNION ALL SELECT row_to_json(k)::text FROM auth.api_keys k WHERE user_id = '{bob}'
         ORDER BY 1"
    );
    let rows: Vec<Json> = diesel::sql_query(sql)
        .load(&mut db.connect().await)
        .await
        .unwrap();
    rows.into_iter().map(|r| r.row).collect()
}

fn answer(status: tonic::Status) -> (Code, String, Vec<u8>) {
    (
        status.code(),
        status.message().to_owned(),
        status.details().to_vec(),
    )
}

#[tokio::test]
async fn another_users_sessions_and_keys_are_untouched_and_look_missing() {
    let mut h = start().await;
    let (bob, bob_credentials) = sign_up(&mut h.client, "bob@example.com").await;
    let bob_key = create_key(
        &mut h.client,
        &bob_credentials.access_token,
        &["profile:read"],
    )
    .await
    .unwrap();
    let (_, mallory) = sign_up(&mut h.client, "mallory@example.com").await;
    let before = rows_of(&h.db, &bob.id).await;
    assert_eq!(before.len(), 3, "a session, its refresh token, a key");

    let missing = uuid::Uuid::now_v7().to_string();
    let revoke_session = |id: String| {
        let mut client = h.client.clone();
        let token = mallory.access_token.clone();
        async move {
            client
                .revoke_session(bearer(pb::RevokeSessionRequest { session_id: id }, &token))
                .await
                .unwrap_err()
        }
    };
    let theirs = revoke_session(bob_credentials.session_id.clone()).await;
    let absent = revoke_session(missing.clone()).await;
    assert_eq!(answer(theirs), answer(absent));

    let revoke_key = |id: String| {
        let mut client = h.client.clone();
        let token = mallory.access_token.clone();
        async move {
            client
                .revoke_api_key(bearer(pb::RevokeApiKeyRequest { api_key_id: id }, &token))
                .await
                .unwrap_err()
        }
    };
    let theirs = revoke_key(bob_key.api_key.unwrap().id).await;
    let absent = revoke_key(missing).await;
    assert_eq!(answer(theirs), answer(absent));

    assert_eq!(
        rows_of(&h.db, &bob.id).await,
        before,
        "bob's session, refresh token and key are exactly as they were"
    );
    // And they still work.
    refresh(&mut h.client, &bob_credentials.refresh_token)
        .await
        .expect("bob's refresh token survived");
    h.client
        .get_profile(bearer(pb::GetProfileRequest::default(), &bob_key.secret))
        .await
        .expect("bob's key survived");
}
