//! Retention: per-user and per-project policies, applied in batches by the task.

use diesel::sql_query;
use diesel::sql_types::{Integer, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use strata_proto::content::conversation_service_client::ConversationServiceClient;
use strata_proto::content::project_service_client::ProjectServiceClient;
use strata_proto::content::{self as pb};
use strata_testkit::app::{self, TestUser};
use strata_testkit::{TestDb, bearer};
use tonic::Code;
use tonic::transport::Channel;

use super::{serve, violations};

type Client = ConversationServiceClient<Channel>;

async fn conversation(c: &mut Client, user: &TestUser, project: &str) -> String {
    c.create_conversation(bearer(
        pb::CreateConversationRequest {
            conversation: Some(pb::Conversation {
                project_id: project.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        },
        &user.token,
    ))
    .await
    .unwrap()
    .into_inner()
    .conversation
    .unwrap()
    .id
}

async fn set(
    c: &mut Client,
    user: &TestUser,
    project: &str,
    archive: i32,
    delete: i32,
) -> Result<pb::RetentionPolicy, tonic::Status> {
    c.set_retention_policy(bearer(
        pb::SetRetentionPolicyRequest {
            policy: Some(pb::RetentionPolicy {
                project_id: project.into(),
                archive_after_days: archive,
                delete_after_days: delete,
                update_time: None,
            }),
        },
        &user.token,
    ))
    .await
    .map(|r| r.into_inner().policy.unwrap())
}

/// Makes conversation `id` idle for `days` days.
async fn idle(db: &TestDb, id: &str, days: i32) {
    let mut conn = db.connect().await;
    sql_query(
        "UPDATE content.conversations SET active_at = now() - make_interval(days => $2) \
         WHERE id = $1::uuid",
    )
    .bind::<Text, _>(id)
    .bind::<Integer, _>(days)
    .execute(&mut conn)
    .await
    .unwrap();
}

/// `(archived, exists)` of conversation `id`, read from the table.
async fn state(db: &TestDb, id: &str) -> Option<bool> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        archived: bool,
    }
    let mut conn = db.connect().await;
    let id = uuid::Uuid::parse_str(id).unwrap();
    let rows: Vec<Row> = sql_query("SELECT archived FROM content.conversations WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .load(&mut conn)
        .await
        .unwrap();
    rows.into_iter().next().map(|r| r.archived)
}

#[tokio::test]
async fn policies_archive_then_delete_idle_conversations_in_batches() {
    let db = TestDb::new().await;
    let (server, handlers) = serve(db.server_config("content")).await;
    let mut c = Client::new(server.channel());
    let mut projects = ProjectServiceClient::new(server.channel());
    let ada = app::sign_up(server.channel()).await;
    let bob = app::sign_up(server.channel()).await;
    let project = super::projects::create(&mut projects, &ada, "lab", "", true, &[]).await;

    // No policy yet: days 0, no time.
    let none = c
        .get_retention_policy(bearer(pb::GetRetentionPolicyRequest::default(), &ada.token))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(
        (
            none.archive_after_days,
            none.delete_after_days,
            none.update_time
        ),
        (0, 0, None)
    );
    // Ada: archive after 10 idle days, delete after 30; in her project, delete after 5.
    let mine = set(&mut c, &ada, "", 10, 30).await.unwrap();
    assert!(mine.update_time.is_some());
    set(&mut c, &ada, &project.id, 0, 5).await.unwrap();
    let read = c
        .get_retention_policy(bearer(
            pb::GetRetentionPolicyRequest {
                project_id: project.id.clone(),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!((read.archive_after_days, read.delete_after_days), (0, 5));

    let fresh = conversation(&mut c, &ada, "").await;
    let quiet = conversation(&mut c, &ada, "").await;
    let old = conversation(&mut c, &ada, "").await;
    let in_project = conversation(&mut c, &ada, &project.id).await;
    let quiet_in_project = conversation(&mut c, &ada, &project.id).await;
    // Bob's conversation of Ada's public project follows Bob's policy (none).
    let bobs = conversation(&mut c, &bob, &project.id).await;
    idle(&db, &quiet, 12).await;
    idle(&db, &old, 31).await;
    // `old` holds 12,000 messages in one chain: deleted a bounded chunk at a time.
    {
        let mut conn = db.connect().await;
        sql_query(
            "INSERT INTO content.messages (conversation_id, sequence, id, parent_id, role, \
               parts, created_at, owner_id) \
             SELECT c.id, n, md5(c.id::text || n)::uuid, \
               CASE WHEN n > 1 THEN md5(c.id::text || (n - 1))::uuid END, 1, \
               '[{\"text\": \"hello\"}]', now(), c.owner_id \
             FROM content.conversations c, generate_series(1, 12000) n WHERE c.id = $1::uuid",
        )
        .bind::<Text, _>(&old)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    idle(&db, &in_project, 6).await;
    idle(&db, &quiet_in_project, 12).await; // the project's policy never archives… but deletes
    idle(&db, &bobs, 400).await;
    // 250 more of Ada's, long idle: several delete batches in one round.
    let mut many = Vec::new();
    for _ in 0..250 {
        let id = conversation(&mut c, &ada, "").await;
        idle(&db, &id, 40).await;
        many.push(id);
    }

    let applied = handlers.apply_retention().await.unwrap();
    assert_eq!(state(&db, &fresh).await, Some(false));
    assert_eq!(state(&db, &quiet).await, Some(true));
    assert_eq!(state(&db, &old).await, None);
    {
        #[derive(diesel::QueryableByName)]
        struct Left {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = db.connect().await;
        let left: Left = sql_query(
            "SELECT count(*) AS n FROM content.messages WHERE conversation_id = $1::uuid",
        )
        .bind::<Text, _>(&old)
        .get_result(&mut conn)
        .await
        .unwrap();
        assert_eq!(left.n, 0);
    }
    assert_eq!(state(&db, &in_project).await, None);
    assert_eq!(state(&db, &quiet_in_project).await, None);
    assert_eq!(state(&db, &bobs).await, Some(false));
    for id in &many {
        assert_eq!(state(&db, id).await, None);
    }
    assert_eq!(
        applied.archived.len(),
        1 + 1 + 250,
        "archived before their deletion"
    );
    assert_eq!(applied.deleted.len(), 1 + 2 + 250);
    // Reads agree at once (the cache was told).
    let status = c
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: old.clone(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A second round has nothing to do.
    let again = handlers.apply_retention().await.unwrap();
    assert_eq!((again.archived.len(), again.deleted.len()), (0, 0));

    // Both zero removes the policy.
    let cleared = set(&mut c, &ada, "", 0, 0).await.unwrap();
    assert_eq!((cleared.archive_after_days, cleared.update_time), (0, None));
    // Someone else's project looks missing, public or not; bad periods are named.
    let status = set(&mut c, &bob, &project.id, 1, 0).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "project not found")
    );
    let status = c
        .set_retention_policy(bearer(
            pb::SetRetentionPolicyRequest { policy: None },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&status), ["policy"]);
    let status = set(&mut c, &ada, "", -1, 36_501).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        ["policy.archive_after_days", "policy.delete_after_days"]
    );
}
