//! Background work owned by the server: listed by GetHealth with when each task last ran,
//! and drained at shutdown, so pending API-key uses are written rather than lost.

use strata_proto::admin::admin_service_client::AdminServiceClient;
use strata_proto::admin::{self as admin_pb};

use super::*;

#[tokio::test]
async fn tasks_are_listed_and_pending_key_uses_are_written_at_shutdown() {
    let mut h = start().await;
    let root = admin_credentials(&mut h, "root@example.com").await;
    let mut admin = AdminServiceClient::new(h._server.channel());
    let tasks = loop {
        let tasks = admin
            .get_health(bearer(
                admin_pb::GetHealthRequest::default(),
                &root.access_token,
            ))
            .await
            .unwrap()
            .into_inner()
            .tasks;
        if tasks.iter().all(|t| t.run_count > 0) {
            break tasks;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["auth.key_usage", "auth.revocations", "auth.cleanup"]
    );
    assert_eq!(tasks[0].interval.unwrap().seconds, 30);
    assert!(
        tasks
            .iter()
            .all(|t| t.last_run_time.is_some() && !t.last_run_failed)
    );

    // A key used once: the use waits in memory for the next 30-second flush…
    let key = create_key(&mut h.client, &root.access_token, &["profile:read"])
        .await
        .unwrap();
    h.client
        .get_profile(bearer(pb::GetProfileRequest::default(), &key.secret))
        .await
        .unwrap();
    let used = "SELECT count(*) AS n FROM auth.api_keys WHERE last_used_at IS NOT NULL";
    assert_eq!(count(&h.db, used).await, 0);
    // …and is written when the server stops, before the process would exit.
    let Harness { db, _server, .. } = h;
    _server.stop().await.unwrap();
    assert_eq!(count(&db, used).await, 1);
}
