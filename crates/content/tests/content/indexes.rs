//! Every list, filter and order of content is served by an index: the test seeds tables
//! big enough for the planner to care, runs the store's own functions, records the SQL
//! they send and checks the generic plan of each (what prepared statements use).

use chrono::Utc;
use diesel_async::SimpleAsyncConnection;
use strata_content::store::{agents, files, projects, prompts};
use strata_testkit::{TestDb, plans};
use uuid::Uuid;

/// The owner with many objects (the seeded skew puts a tenth of everything on them).
const HEAVY: &str = "00000000-0000-7000-8000-000000000001";

#[tokio::test]
async fn content_queries_use_their_indexes() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    conn.batch_execute(&format!(
        "INSERT INTO content.projects (id, owner_id, name, description, visibility, type, tags,
           like_count, fork_count, view_count, featured, trending, active_at, created_at,
           updated_at)
         SELECT gen_random_uuid(),
           CASE WHEN g % 10 = 0 THEN '{HEAVY}'::uuid ELSE md5((g % 2000)::text)::uuid END,
           'project ' || g || ' ' || (ARRAY['vector', 'chat', 'image', 'agent', 'search'])[g % 5 + 1],
           'about ' || (ARRAY['embeddings', 'support', 'photos', 'tools', 'ranking'])[g % 5 + 1],
           CASE WHEN g % 3 = 0 THEN 1 ELSE 2 END,
           (ARRAY['app', 'notebook', 'library'])[g % 3 + 1],
           ARRAY[(ARRAY['ml', 'web', 'data', 'infra'])[g % 4 + 1]],
           (1000 / (1 + g % 997))::bigint, g % 13, g % 101, g % 5000 = 0,
           CASE WHEN g % 365 < 7 THEN (g % 1000) / 10.0 ELSE 0 END,
           now() - (g % 365) * interval '1 day', now() - g * interval '1 minute',
           now() - g * interval '1 minute'
         FROM generate_series(1, 30000) g;
         INSERT INTO content.blobs (hash, size, content)
         SELECT sha256(g::text::bytea), 10, g::text::bytea FROM generate_series(1, 1000) g;
         INSERT INTO content.project_files (project_id, path, language, hash, size, created_at,
           updated_at)
         SELECT p.id, 'src/f' || f || '.rs', 'rust', sha256((f % 1000 + 1)::text::bytea), 10,
           now(), now()
         FROM (SELECT id FROM content.projects LIMIT 200) p, generate_series(1, 200) f;
         INSERT INTO content.prompts (id, owner_id, name, tags, is_favorite, last_number,
           created_at, updated_at)
         SELECT gen_random_uuid(),
           CASE WHEN g % 10 = 0 THEN '{HEAVY}'::uuid ELSE md5((g % 2000)::text)::uuid END,
           'folder' || (g % 50) || '/prompt ' || g, ARRAY['t' || (g % 40)], g % 20 = 0, 1,
           now() - g * interval '1 minute', now()
         FROM generate_series(1, 30000) g;
         INSERT INTO content.agents (id, owner_id, name, type, status, last_number, created_at,
           updated_at)
         SELECT gen_random_uuid(),
           CASE WHEN g % 10 = 0 THEN '{HEAVY}'::uuid ELSE md5((g % 2000)::text)::uuid END,
           'agent ' || g, (ARRAY['assistant', 'coder', 'critic'])[g % 3 + 1], g % 3 + 1, 1,
           now() - g * interval '1 minute', now()
         FROM generate_series(1, 30000) g;
         ANALYZE content.projects, content.project_files, content.blobs, content.prompts,
           content.agents;"
    ))
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
                    tag: Some("ml".into()),
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
            "search by similarity",
            plans::plans_of(&mut conn, async |c| {
                projects::search_similar(c, someone, "vectr", &[], 20).await
            })
            .await,
            &["projects_words_trgm_idx"],
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
                    prefix: Some("src/f1".into()),
                    language: None,
                };
                files::list(c, project, &filter, Some("src/f10.rs"), true, 101).await
            })
            .await,
            &["project_files_pkey", "blobs_pkey"],
        ),
        (
            "a file",
            plans::plans_of(&mut conn, async |c| {
                files::get(c, project, "src/f1.rs").await
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
