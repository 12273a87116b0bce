//! Every read RPC over a range without usage: an empty, valid answer (a new user's first
//! call), for every bucket width, grouping and scope.

use super::*;

#[tokio::test]
async fn reads_of_ranges_without_usage_answer_empty_results() {
    let h = start().await;
    let mut client = h.client();
    let newcomer = h.user(Role::User).await;
    let admin = h.user(Role::Admin).await;
    let now = Utc::now();
    let scopes = [
        (newcomer.token.clone(), None),
        (newcomer.token.clone(), user_scope(newcomer.id)),
        (admin.token.clone(), project_scope(Uuid::now_v7())),
        (
            admin.token.clone(),
            Some(pb::UsageScope {
                subject: Some(Subject::AllUsers(true)),
            }),
        ),
    ];
    for (token, scope) in &scopes {
        for bucket_width in [pb::BucketWidth::Day, pb::BucketWidth::Hour] {
            for group_by in [
                pb::GroupBy::Unspecified,
                pb::GroupBy::Model,
                pb::GroupBy::Operation,
            ] {
                let response = summary(
                    &mut client,
                    token,
                    pb::GetUsageSummaryRequest {
                        scope: scope.clone(),
                        time_range: range(now - Duration::days(2), now),
                        bucket_width: bucket_width.into(),
                        group_by: group_by.into(),
                    },
                )
                .await
                .unwrap_or_else(|s| panic!("{scope:?} {bucket_width:?} {group_by:?}: {s:?}"));
                assert!(response.buckets.is_empty());
                assert_eq!(figures(&response.totals), (0, 0, 0, 0, "0".to_owned()));
                assert!(response.time_range.is_some());
            }
        }
        let top = client
            .list_top_models(bearer(
                pb::ListTopModelsRequest {
                    scope: scope.clone(),
                    time_range: range(now - Duration::days(2), now),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(top.models.is_empty());
        let listed = list_usage(
            &mut client,
            token,
            pb::ListUsageRequest {
                scope: scope.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(listed.records.is_empty() && listed.next_page_token.is_empty());
    }
    // Before any refresh: both views, no watermark yet.
    let views = client
        .get_view_status(bearer(pb::GetViewStatusRequest {}, &admin.token))
        .await
        .unwrap()
        .into_inner()
        .views;
    assert_eq!(views.len(), 2);
    // An empty ledger refreshes, and reads still answer empty.
    let refreshed = h.refresh(&admin).await;
    assert!(refreshed.views.iter().all(|v| v.row_count == 0));
    let response = summary(
        &mut client,
        &newcomer.token,
        pb::GetUsageSummaryRequest {
            time_range: range(now - Duration::days(2), now),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(figures(&response.totals), (0, 0, 0, 0, "0".to_owned()));
}
