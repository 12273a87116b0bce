//! Every list, filter and order of content is served by an index: the test seeds tables
//! big enough for the planner to care, runs the store's own functions, records the SQL
//! they send and checks the generic plan of each (what prepared statements use).

use chrono::Utc;
use diesel_async::SimpleAsyncConnection;
use strata_content::seed;
use strata_content::store::{agents, files, projects, prompts};
use strata_testkit::{TestDb, plans};
use uuid::Uuid;

/// The owner with many objects (the seeded skew puts a tenth of everything on them).
const HEAVY: &str = "00000000-0000-7000-8000-000000000001";

#[tokio::test]
async fn content_queries_use_their_indexes() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    // `strata seed content` at a small scale: the heavy owner holds a tenth of everything.
    let options = seed::SeedOptions {
        projects: 30_000,
        files_per_project: 2,
        agents: 30_000,
        prompts: 30_000,
        owners: 2_000,
        known_owners: vec![Uuid::parse_str(HEAVY).unwrap()],
        ..seed::SeedOptions::default()
    };
    let config = db.server_config("content-indexes").db;
    let seeded = seed::seed(&config, &options, 2, |_, _| {}).await.unwrap();
    assert_eq!(
        (seeded.projects, seeded.files, seeded.prompts, seeded.agents),
        (30_000, 60_000, 30_000, 30_000)
    );
    // The seed's words are a small vocabulary; real projects write tens of thousands.
    conn.batch_execute(
        "INSERT INTO content.search_words (word) \
         SELECT substr(md5(g::text), 1, 3 + g % 9) FROM generate_series(1, 30000) g \
         ON CONFLICT DO NOTHING; \
         ANALYZE content.search_words",
    )
    .await
    .unwrap();
    let heavy = Uuid::parse_str(HEAVY).unwrap();
    let someone = Uuid::now_v7();
    let project = Uuid::now_v7();
    let now = Utc::now();
    let public = |order| {
        let filter = projects::PublicFilter::default();
        async move |c: &mut diesel_async::AsyncPgConnection| {
            projects::list_public(c, order, &filter, None, 51).await
        }
    };
    let cases: Vec<(&str, Vec<plans::Plan>, &[&str])> = vec![
        (
            "my projects by update",
            plans::plans_of(&mut conn, async |c| {
                projects::list_mine(c, heavy, Some((now, someone)), 51).await
            })
            .await,
            &["projects_owner_updated_idx"],
        ),
        (
            "public by likes",
            plans::plans_of(&mut conn, public(projects::Order::Likes)).await,
            &["projects_public_likes_idx"],
        ),
        (
            "public by forks",
            plans::plans_of(&mut conn, public(projects::Order::Forks)).await,
            &["projects_public_forks_idx"],
        ),
        (
            "public by views",
            plans::plans_of(&mut conn, public(projects::Order::Views)).await,
            &["projects_public_views_idx"],
        ),
        (
            "public newest",
            plans::plans_of(&mut conn, public(projects::Order::Newest)).await,
            &["projects_public_newest_idx"],
        ),
        (
            "public trending, next page",
            plans::plans_of(&mut conn, async |c| {
                let filter = projects::PublicFilter::default();
                let after = Some((projects::Key::Rank(50.0), someone));
                projects::list_public(c, projects::Order::Trending, &filter, after, 51).await
            })
            .await,
            &["projects_public_trending_idx"],
        ),
        (
            "public featured first: the featured few",
            plans::plans_of(&mut conn, async |c| {
                let filter = projects::PublicFilter {
                    featured: Some(true),
                    ..Default::default()
                };
                projects::list_public(c, projects::Order::Likes, &filter, None, 51).await
            })
            .await,
            &["projects_featured_idx"],
        ),
        (
            "public by likes with a type and a tag",
            plans::plans_of(&mut conn, async |c| {
                let filter = projects::PublicFilter {
                    kind: Some("app".into()),
                    tag: Some("chat".into()),
                    featured: Some(false),
                };
                projects::list_public(c, projects::Order::Likes, &filter, None, 51).await
            })
            .await,
            &["projects_public_likes_idx"],
        ),
        (
            "search",
            plans::plans_of(&mut conn, async |c| {
                projects::search(c, someone, "vector embeddings", None, 21).await
            })
            .await,
            &["projects_document_idx"],
        ),
        (
            "search for one word",
            plans::plans_of(&mut conn, async |c| {
                projects::search(c, someone, "vector", Some((0.5, someone)), 21).await
            })
            .await,
            &["project_terms_rank_idx", "projects_pkey"],
        ),
        (
            "typo correction",
            plans::plans_of(&mut conn, async |c| {
                projects::corrections(c, &["vectr".into(), "serch".into()]).await
            })
            .await,
            &["search_words_trgm_idx"],
        ),
        (
            "trending recomputation",
            plans::plans_of(&mut conn, async |c| {
                projects::recompute_trending(c, now - chrono::Duration::days(7), now).await
            })
            .await,
            &["projects_public_active_idx"],
        ),
        (
            "files by path prefix",
            plans::plans_of(&mut conn, async |c| {
                let filter = files::FileFilter {
                    prefix: Some("src/lib/".into()),
                    language: None,
                };
                files::list(c, project, &filter, Some("src/lib/chat_1.rs"), true, 101).await
            })
            .await,
            &["project_files_pkey", "blobs_pkey"],
        ),
        (
            "a file",
            plans::plans_of(&mut conn, async |c| {
                files::get(c, project, "src/chat_1.rs").await
            })
            .await,
            &["project_files_pkey"],
        ),
        (
            "my prompts",
            plans::plans_of(&mut conn, async |c| {
                let filter = prompts::PromptFilter::default();
                prompts::list_prompts(c, heavy, &filter, Some((now, someone)), 51).await
            })
            .await,
            &["prompts_owner_created_idx"],
        ),
        (
            "my favorite prompts",
            plans::plans_of(&mut conn, async |c| {
                let filter = prompts::PromptFilter {
                    favorites_only: true,
                    ..Default::default()
                };
                prompts::list_prompts(c, heavy, &filter, None, 51).await
            })
            .await,
            &["prompts_owner_favorites_idx"],
        ),
        (
            "my prompts in a folder",
            plans::plans_of(&mut conn, async |c| {
                let filter = prompts::PromptFilter {
                    folder: Some("folder7".into()),
                    ..Default::default()
                };
                prompts::list_prompts(c, heavy, &filter, None, 51).await
            })
            .await,
            &["prompts_owner_name_key"],
        ),
        (
            "my agents",
            plans::plans_of(&mut conn, async |c| {
                let filter = agents::AgentFilter::default();
                agents::list_agents(c, heavy, &filter, None, 51).await
            })
            .await,
            &["agents_owner_created_idx"],
        ),
        (
            "my agents by status",
            plans::plans_of(&mut conn, async |c| {
                let filter = agents::AgentFilter {
                    status: Some(2),
                    ..Default::default()
                };
                agents::list_agents(c, heavy, &filter, None, 51).await
            })
            .await,
            &["agents_owner_status_idx"],
        ),
        (
            "my agents by type",
            plans::plans_of(&mut conn, async |c| {
                let filter = agents::AgentFilter {
                    kind: Some("coder".into()),
                    ..Default::default()
                };
                agents::list_agents(c, heavy, &filter, None, 51).await
            })
            .await,
            &["agents_owner_type_idx"],
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
