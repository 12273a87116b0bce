//! Every list, filter and order of content is served by an index: the test seeds tables
//! big enough for the planner to care, runs the store's own functions, records the SQL
//! they send and checks the generic plan of each (what prepared statements use).

use chrono::Utc;
use diesel_async::SimpleAsyncConnection;
use strata_content::seed;
use strata_content::store::{agents, conversations, files, projects, prompts, workflows};
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
    // Conversations: a tenth the heavy owner's, some with an agent, a project, archived;
    // 300 conversations of 100 messages in one chain each (the heavy owner's of 500); the
    // words' index is flushed as autovacuum would (a bulk insert leaves them pending).
    conn.batch_execute(&format!(
        "INSERT INTO content.search_words (word) \
         SELECT substr(md5(g::text), 1, 3 + g % 9) FROM generate_series(1, 30000) g \
         ON CONFLICT DO NOTHING; \
         INSERT INTO content.conversations (id, owner_id, agent_id, agent_version, project_id, \
           archived, active_at, created_at, updated_at) \
         SELECT md5('c' || g)::uuid, \
           CASE WHEN g % 10 = 0 THEN '{HEAVY}'::uuid ELSE md5((g % 2000)::text)::uuid END, \
           CASE WHEN g % 3 = 0 THEN md5('a' || g % 50)::uuid END, \
           CASE WHEN g % 3 = 0 THEN 1 END, \
           CASE WHEN g % 5 = 0 THEN md5('p' || g % 70)::uuid END, g % 7 = 0, \
           now() - g * interval '1 minute', now() - g * interval '1 minute', now() \
         FROM generate_series(1, 30000) g; \
         INSERT INTO content.messages (conversation_id, sequence, id, parent_id, role, parts, \
           created_at, owner_id) \
         SELECT md5('c' || c)::uuid, n, md5(c || '-' || n)::uuid, \
           CASE WHEN n > 1 THEN md5(c || '-' || (n - 1))::uuid END, 1 + n % 2, \
           jsonb_build_array(jsonb_build_object('text', \
             'hello ' || (ARRAY['bread', 'travel', 'code', 'music'])[1 + n % 4] || ' ' || n)), \
           now(), \
           CASE WHEN c % 10 = 0 THEN '{HEAVY}'::uuid ELSE md5((c % 2000)::text)::uuid END \
         FROM generate_series(1, 300) c, \
           generate_series(1, CASE WHEN c % 10 = 0 THEN 500 ELSE 100 END) n ORDER BY c, n; \
         SELECT gin_clean_pending_list('content.messages_owner_document_idx'); \
         INSERT INTO content.workflows (id, owner_id, name, status, task_count, remaining, \
           created_at, updated_at, finished_at) \
         SELECT md5('w' || g)::uuid, \
           CASE WHEN g % 10 = 0 THEN '{HEAVY}'::uuid ELSE md5((g % 2000)::text)::uuid END, \
           'w' || g, 1 + g % 5, 10, CASE WHEN g % 5 IN (2, 3, 4) THEN 0 ELSE 10 END, \
           now() - g * interval '1 minute', now(), \
           CASE WHEN g % 5 IN (2, 3, 4) THEN now() - g * interval '1 minute' END \
         FROM generate_series(1, 5000) g; \
         INSERT INTO content.tasks (id, workflow_id, owner_id, position, name, queue, input, \
           status, max_attempts, backoff_ms, max_backoff_ms, waiting_on, ready_at, \
           lease_expires_at, created_at, updated_at) \
         SELECT md5('t' || g || '-' || k)::uuid, md5('w' || g)::uuid, \
           CASE WHEN g % 10 = 0 THEN '{HEAVY}'::uuid ELSE md5((g % 2000)::text)::uuid END, \
           k, 't' || k, 'queue' || (k % 3), '{{}}', 1 + (g + k) % 6, 3, 1000, 60000, 0, \
           now() - g * interval '1 second', \
           CASE WHEN (g + k) % 6 = 2 THEN now() + k * interval '1 second' END, now(), now() \
         FROM generate_series(1, 5000) g, generate_series(0, 9) k; \
         ANALYZE content.search_words, content.conversations, content.messages, \
           content.workflows, content.tasks"
    ))
    .await
    .unwrap();
    let heavy = Uuid::parse_str(HEAVY).unwrap();
    let someone = Uuid::now_v7();
    let project = Uuid::now_v7();
    let now = Utc::now();
    // A search is planned with its values: how common its words are decides the index.
    // Its parameters: words, owner, after (rank, id), limit, then the filters it uses.
    let owner = format!("'{HEAVY}'");
    let search_values = |words: &str, role: Option<&str>| -> Vec<String> {
        let mut values = vec![format!("'{words}'"), owner.clone()];
        values.extend(["NULL", "NULL", "21"].map(String::from));
        values.extend(role.map(String::from));
        values
    };
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
            "my conversations by activity",
            plans::plans_of(&mut conn, async |c| {
                let filter = conversations::ConversationFilter {
                    archived: Some(false),
                    ..Default::default()
                };
                conversations::list_conversations(c, heavy, &filter, Some((now, someone)), 51).await
            })
            .await,
            &["conversations_owner_active_idx"],
        ),
        (
            "all my conversations",
            plans::plans_of(&mut conn, async |c| {
                let filter = conversations::ConversationFilter::default();
                conversations::list_conversations(c, heavy, &filter, None, 51).await
            })
            .await,
            &["conversations_owner_all_idx"],
        ),
        (
            "my conversations with an agent",
            plans::plans_of(&mut conn, async |c| {
                let filter = conversations::ConversationFilter {
                    agent_id: Some(someone),
                    archived: Some(false),
                    ..Default::default()
                };
                conversations::list_conversations(c, heavy, &filter, None, 51).await
            })
            .await,
            &["conversations_agent_idx"],
        ),
        (
            "my conversations of a project",
            plans::plans_of(&mut conn, async |c| {
                let filter = conversations::ConversationFilter {
                    project_id: Some(someone),
                    ..Default::default()
                };
                conversations::list_conversations(c, heavy, &filter, None, 51).await
            })
            .await,
            &["conversations_project_idx"],
        ),
        (
            "a branch, newest first, next page",
            plans::plans_of(&mut conn, async |c| {
                let page = conversations::Page::Newest { before: Some(50) };
                conversations::branch_page(c, someone, someone, page, 51).await
            })
            .await,
            &["messages_id_key", "messages_pkey"],
        ),
        (
            "a branch, oldest first",
            plans::plans_of(&mut conn, async |c| {
                let page = conversations::Page::Oldest { after: None };
                conversations::branch_page(c, someone, someone, page, 51).await
            })
            .await,
            &["messages_id_key"],
        ),
        (
            "a watcher's read of what follows its last sequence",
            plans::plans_of(&mut conn, async |c| {
                conversations::messages_after(c, someone, 40, 100).await
            })
            .await,
            &["messages_pkey"],
        ),
        (
            "where an append's parent sits, and whether it has a child already",
            plans::plans_of(&mut conn, async |c| {
                conversations::parent_place(c, someone, someone).await
            })
            .await,
            &["messages_id_key", "messages_parent_idx"],
        ),
        (
            "search my messages for a rare word",
            plans::custom_plans_of(
                &mut conn,
                &search_values("bread 40", Some("2")),
                async |c| {
                    let filter = conversations::MessageFilter {
                        role: Some(2),
                        ..Default::default()
                    };
                    conversations::search_messages(c, heavy, "bread 40", &filter, None, 21).await
                },
            )
            .await,
            &["messages_owner_document_idx"],
        ),
        (
            // In every message: the newest thousand are read newest first.
            "search my messages for a common word",
            plans::custom_plans_of(&mut conn, &search_values("hello", None), async |c| {
                let filter = conversations::MessageFilter::default();
                conversations::search_messages(c, heavy, "hello", &filter, None, 21).await
            })
            .await,
            &["messages_owner_time_idx"],
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
    let workflow_cases: Vec<(&str, Vec<plans::Plan>, &[&str])> = vec![
        (
            "claim ready tasks",
            plans::plans_of(&mut conn, async |c| {
                workflows::claim(c, heavy, "queue1", 10, 30_000, now).await
            })
            .await,
            &["tasks_ready_idx"],
        ),
        (
            "expired leases",
            plans::plans_of(&mut conn, async |c| {
                workflows::expire_leases(c, now, 500).await
            })
            .await,
            &["tasks_lease_idx"],
        ),
        (
            "my workflows",
            plans::plans_of(&mut conn, async |c| {
                let filter = workflows::WorkflowFilter::default();
                workflows::list_workflows(c, heavy, &filter, Some((now, someone)), 51).await
            })
            .await,
            &["workflows_owner_created_idx"],
        ),
        (
            "my workflows by status",
            plans::plans_of(&mut conn, async |c| {
                let filter = workflows::WorkflowFilter {
                    status: Some(2),
                    ..Default::default()
                };
                workflows::list_workflows(c, heavy, &filter, None, 51).await
            })
            .await,
            &["workflows_owner_status_created_idx"],
        ),
        (
            "finished workflows past retention",
            plans::plans_of(&mut conn, async |c| {
                workflows::delete_finished(c, now - chrono::Duration::days(30), 100).await
            })
            .await,
            &["workflows_finished_idx"],
        ),
        (
            "a workflow's tasks",
            plans::plans_of(&mut conn, async |c| workflows::tasks_of(c, someone).await).await,
            // Either unique index led by the workflow.
            &["tasks_workflow_id_"],
        ),
    ];
    for (what, plans, indexes) in cases.into_iter().chain(workflow_cases) {
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
