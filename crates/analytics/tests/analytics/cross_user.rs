//! Every RPC that takes a user or project id, called by a user with another user's id:
//! the answer is exactly the answer a missing id gets, and the other user's ledger rows
//! are unchanged afterwards (read back from the database).

use super::*;

#[derive(QueryableByName)]
struct Json {
    #[diesel(sql_type = Text)]
    row: String,
}

async fn ledger_of(h: &Harness, user: Uuid) -> Vec<String> {
    let sql = format!(
        "SELECT row_to_json(u)::text AS row FROM analytics.token_usage u WHERE user_id = '{user}'
         UNION ALL SELECT row_to_json(k)::text FROM analytics.usage_keys k
                     WHERE k.producer_id = '{user}'
         ORDER BY 1"
    );
    diesel::sql_query(sql)
        .load::<Json>(&mut h.conn().await)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.row)
        .collect()
}

fn answer<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String, Vec<u8>) {
    let status = result.unwrap_err();
    (
        status.code(),
        status.message().to_owned(),
        status.details().to_vec(),
    )
}

#[tokio::test]
async fn another_users_usage_is_untouched_and_looks_missing() {
    let h = start().await;
    let mut client = h.client();
    let ada = h.user(Role::User).await;
    let bob = h.user(Role::User).await;
    let now = Utc::now();
    let project = Uuid::now_v7();
    let mut bobs = event("b1", bob.id, "gpt-4o", 7, 7, "0.07", now);
    bobs.project_id = project.to_string();
    record(&mut client, &bob.token, vec![bobs]).await.unwrap();
    let before = ledger_of(&h, bob.id).await;
    assert_eq!(before.len(), 2);
    let day = || range(now - Duration::days(1), now + Duration::hours(1));

    for (theirs, missing) in [(bob.id, Uuid::now_v7()), (project, Uuid::now_v7())] {
        let is_user = theirs == bob.id;
        let scope = |id: Uuid| {
            if is_user {
                user_scope(id)
            } else {
                project_scope(id)
            }
        };
        let mut answers = Vec::new();
        for id in [theirs, missing] {
            let summary = summary(
                &mut client,
                &ada.token,
                pb::GetUsageSummaryRequest {
                    scope: scope(id),
                    time_range: day(),
                    ..Default::default()
                },
            )
            .await;
            let top = client
                .list_top_models(bearer(
                    pb::ListTopModelsRequest {
                        scope: scope(id),
                        time_range: day(),
                        ..Default::default()
                    },
                    &ada.token,
                ))
                .await;
            let listed = list_usage(
                &mut client,
                &ada.token,
                pb::ListUsageRequest {
                    scope: scope(id),
                    ..Default::default()
                },
            )
            .await;
            let stats = project_stats(&mut client, &ada.token, id).await;
            let mut overwrite = event("b1", id, "gpt-4o", 1, 1, "9", now);
            overwrite.project_id = project.to_string();
            let recorded = record(&mut client, &ada.token, vec![overwrite]).await;
            answers.push([
                answer(summary),
                answer(top),
                answer(listed),
                answer(stats),
                answer(recorded),
            ]);
        }
        assert_eq!(answers[0], answers[1], "theirs and missing answer alike");
    }
    assert_eq!(
        ledger_of(&h, bob.id).await,
        before,
        "bob's ledger is unchanged"
    );
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) AS n FROM analytics.token_usage WHERE user_id <> '{}'",
            bob.id
        ))
        .await,
        0,
        "nothing was written for anybody"
    );
}
