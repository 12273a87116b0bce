//! ProjectService: ownership and visibility, discovery orders, search, likes, forks,
//! views folded from Redis, trending.

use std::sync::Arc;

use diesel_async::RunQueryDsl;
use prost_types::FieldMask;
use strata_content::ContentHandlers;
use strata_proto::content::file_service_client::FileServiceClient;
use strata_proto::content::project_service_client::ProjectServiceClient;
use strata_proto::content::{self as pb};
use strata_testkit::app::{self, TestUser};
use strata_testkit::{TestDb, TestRedis, TestServer, bearer};
use tonic::Code;
use tonic::transport::Channel;

use super::{serve, violations};

pub type Projects = ProjectServiceClient<Channel>;

/// A server with Redis (views need it), its handlers and database.
pub struct Site {
    pub db: TestDb,
    pub server: TestServer,
    pub handlers: Arc<ContentHandlers>,
    _redis: TestRedis,
}

impl Site {
    pub async fn start() -> Self {
        let redis = TestRedis::new();
        let db = TestDb::new().await;
        let mut config = db.server_config("content");
        config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
        config.redis_prefix = redis.handle().prefix().to_owned();
        let (server, handlers) = serve(config).await;
        Self {
            db,
            server,
            handlers,
            _redis: redis,
        }
    }

    pub fn projects(&self) -> Projects {
        ProjectServiceClient::new(self.server.channel())
    }

    pub fn files(&self) -> FileServiceClient<Channel> {
        FileServiceClient::new(self.server.channel())
    }

    pub async fn user(&self) -> TestUser {
        app::sign_up(self.server.channel()).await
    }
}

pub async fn create(
    c: &mut Projects,
    user: &TestUser,
    name: &str,
    description: &str,
    public: bool,
    tags: &[&str],
) -> pb::Project {
    c.create_project(bearer(
        pb::CreateProjectRequest {
            project: Some(pb::Project {
                name: name.into(),
                description: description.into(),
                visibility: if public {
                    pb::Visibility::Public as i32
                } else {
                    0
                },
                r#type: "app".into(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                ..Default::default()
            }),
            request_id: String::new(),
        },
        &user.token,
    ))
    .await
    .unwrap()
    .into_inner()
    .project
    .unwrap()
}

async fn like(c: &mut Projects, user: &TestUser, id: &str) -> pb::LikeProjectResponse {
    c.like_project(bearer(
        pb::LikeProjectRequest {
            project_id: id.into(),
        },
        &user.token,
    ))
    .await
    .unwrap()
    .into_inner()
}

async fn public(
    c: &mut Projects,
    user: &TestUser,
    req: pb::ListPublicProjectsRequest,
) -> pb::ListPublicProjectsResponse {
    c.list_public_projects(bearer(req, &user.token))
        .await
        .unwrap()
        .into_inner()
}

fn names(projects: &[pb::Project]) -> Vec<&str> {
    projects.iter().map(|p| p.name.as_str()).collect()
}

#[tokio::test]
async fn projects_are_owned_listed_by_update_and_private_ones_stay_private() {
    let site = Site::start().await;
    let mut c = site.projects();
    let (ada, eve) = (site.user().await, site.user().await);
    let draft = create(&mut c, &ada, "draft", "", false, &[]).await;
    assert_eq!(draft.visibility, pb::Visibility::Private as i32);
    let shown = create(&mut c, &ada, "shown", "a demo", true, &["demo"]).await;
    let mine = c
        .list_projects(bearer(pb::ListProjectsRequest::default(), &ada.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&mine.projects), ["shown", "draft"]);
    // Updating the older one brings it first; a page of one carries on.
    c.update_project(bearer(
        pb::UpdateProjectRequest {
            project: Some(pb::Project {
                id: draft.id.clone(),
                description: "now described".into(),
                labels: [("team".to_owned(), "core".to_owned())].into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["description".into(), "labels".into()],
            }),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let first = c
        .list_projects(bearer(
            pb::ListProjectsRequest {
                page_size: 1,
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&first.projects), ["draft"]);
    let second = c
        .list_projects(bearer(
            pb::ListProjectsRequest {
                page_size: 1,
                page_token: first.next_page_token,
                read_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&second.projects), ["shown"]);
    assert!(second.projects[0].id.is_empty());

    // Eve sees the public one (without Ada's labels), not the private one.
    let get = |id: &str| pb::GetProjectRequest {
        project_id: id.into(),
    };
    let seen = c
        .get_project(bearer(get(&shown.id), &eve.token))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(seen.description, "a demo");
    let hidden = c
        .get_project(bearer(get(&draft.id), &eve.token))
        .await
        .unwrap_err();
    assert_eq!(
        (hidden.code(), hidden.message()),
        (Code::NotFound, "project not found")
    );
    let labelled = c
        .get_project(bearer(get(&draft.id), &ada.token))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(labelled.labels["team"], "core");

    // Only admins feature projects; Eve cannot even tell the private one exists.
    let feature = |id: &str| pb::UpdateProjectRequest {
        project: Some(pb::Project {
            id: id.into(),
            featured: true,
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["featured".into()],
        }),
    };
    let refused = c
        .update_project(bearer(feature(&shown.id), &ada.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let hidden = c
        .update_project(bearer(feature(&draft.id), &eve.token))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let mut admin = site.user().await;
    app::promote(&site.db, site.server.channel(), &mut admin).await;
    let featured = c
        .update_project(bearer(feature(&shown.id), &admin.token))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert!(featured.featured);

    // Bad inputs name their fields and write nothing.
    let bad = c
        .create_project(bearer(
            pb::CreateProjectRequest {
                project: Some(pb::Project {
                    name: "x".repeat(201),
                    r#type: "Bad Type".into(),
                    tags: vec![String::new()],
                    ..Default::default()
                }),
                request_id: "nope".into(),
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&bad),
        [
            "project.name",
            "project.type",
            "project.tags[0]",
            "request_id"
        ]
    );
    let count = c
        .list_projects(bearer(pb::ListProjectsRequest::default(), &ada.token))
        .await
        .unwrap()
        .into_inner()
        .projects
        .len();
    assert_eq!(count, 2);

    // Delete.
    c.delete_project(bearer(
        pb::DeleteProjectRequest {
            project_id: draft.id.clone(),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let gone = c
        .get_project(bearer(get(&draft.id), &ada.token))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn discovery_orders_by_likes_forks_views_newest_and_trending_with_featured_first() {
    let site = Site::start().await;
    let mut c = site.projects();
    let users = futures_util::future::join_all((0..4).map(|_| site.user())).await;
    let ada = &users[0];
    let a = create(&mut c, ada, "alpha", "", true, &["ml"]).await;
    let b = create(&mut c, ada, "beta", "", true, &["web"]).await;
    let g = create(&mut c, ada, "gamma", "", true, &["ml"]).await;
    create(&mut c, ada, "private", "", false, &["ml"]).await;
    for u in &users {
        like(&mut c, u, &b.id).await;
    }
    like(&mut c, &users[0], &g.id).await;
    let order = |o: pb::ProjectOrder| pb::ListPublicProjectsRequest {
        order: o as i32,
        ..Default::default()
    };
    let by_likes = public(&mut c, ada, order(pb::ProjectOrder::Likes)).await;
    assert_eq!(names(&by_likes.projects), ["beta", "gamma", "alpha"]);
    let newest = public(&mut c, ada, order(pb::ProjectOrder::Newest)).await;
    assert_eq!(names(&newest.projects), ["gamma", "beta", "alpha"]);
    // Forks.
    c.fork_project(bearer(
        pb::ForkProjectRequest {
            project_id: a.id.clone(),
            ..Default::default()
        },
        &users[1].token,
    ))
    .await
    .unwrap();
    let by_forks = public(&mut c, ada, order(pb::ProjectOrder::Forks)).await;
    assert_eq!(by_forks.projects[0].name, "alpha");
    assert_eq!(by_forks.projects[0].fork_count, 1);
    // Views, once folded.
    for u in &users {
        c.record_project_view(bearer(
            pb::RecordProjectViewRequest {
                project_id: g.id.clone(),
            },
            &u.token,
        ))
        .await
        .unwrap();
    }
    site.handlers.fold_views().await.unwrap();
    let by_views = public(&mut c, ada, order(pb::ProjectOrder::Views)).await;
    assert_eq!(
        (
            by_views.projects[0].name.as_str(),
            by_views.projects[0].view_count
        ),
        ("gamma", 4)
    );
    // Trending: stored by the task; beta (4 likes: 4 points) over alpha (1 fork: 3) over
    // gamma (1 like, 4 viewers: 1.4).
    site.handlers.recompute_trending().await.unwrap();
    let trending = public(&mut c, ada, order(pb::ProjectOrder::Trending)).await;
    assert_eq!(names(&trending.projects), ["beta", "alpha", "gamma"]);
    assert!(trending.projects[0].trending_score > trending.projects[1].trending_score);
    // Filters.
    let ml = public(
        &mut c,
        ada,
        pb::ListPublicProjectsRequest {
            order: pb::ProjectOrder::Likes as i32,
            tag: "ml".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&ml.projects), ["gamma", "alpha"]);
    // Featured first, paged one at a time across the two phases.
    let mut admin = site.user().await;
    app::promote(&site.db, site.server.channel(), &mut admin).await;
    c.update_project(bearer(
        pb::UpdateProjectRequest {
            project: Some(pb::Project {
                id: a.id.clone(),
                featured: true,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["featured".into()],
            }),
        },
        &admin.token,
    ))
    .await
    .unwrap();
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = public(
            &mut c,
            ada,
            pb::ListPublicProjectsRequest {
                order: pb::ProjectOrder::Likes as i32,
                featured_first: true,
                page_size: 1,
                page_token: token,
                ..Default::default()
            },
        )
        .await;
        seen.extend(page.projects.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["alpha", "beta", "gamma"]);
}

#[tokio::test]
async fn search_ranks_by_words_tolerates_typos_and_highlights() {
    let site = Site::start().await;
    let mut c = site.projects();
    let (ada, eve) = (site.user().await, site.user().await);
    create(
        &mut c,
        &ada,
        "Vector database",
        "A fast vector store for embeddings.",
        true,
        &["postgres"],
    )
    .await;
    create(
        &mut c,
        &ada,
        "Chat bot",
        "Talks to a vector database for memory.",
        true,
        &["llm"],
    )
    .await;
    create(
        &mut c,
        &ada,
        "Image tagger",
        "Tags photos.",
        true,
        &["vision"],
    )
    .await;
    create(&mut c, &ada, "Secret vector notes", "private", false, &[]).await;
    let search = async |c: &mut Projects, user: &TestUser, query: &str| {
        c.search_projects(bearer(
            pb::SearchProjectsRequest {
                query: query.into(),
                ..Default::default()
            },
            &user.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .results
    };
    // The name (weight A) ranks above the description (C); Eve never sees Ada's private
    // project, Ada does.
    let found = search(&mut c, &eve, "vector database").await;
    let found_names: Vec<&str> = found
        .iter()
        .map(|r| r.project.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(found_names, ["Vector database", "Chat bot"]);
    assert!(found[0].rank > found[1].rank);
    assert!(!found[0].fuzzy);
    assert_eq!(found[0].name_snippet, "<b>Vector</b> <b>database</b>");
    assert!(
        found[1].description_snippet.contains("<b>vector</b>"),
        "{:?}",
        found[1]
    );
    let own = search(&mut c, &ada, "vector").await;
    assert_eq!(own.len(), 3);
    // Tags are searched.
    let tagged = search(&mut c, &eve, "postgres").await;
    assert_eq!(tagged[0].project.as_ref().unwrap().name, "Vector database");
    // A typo finds by similarity, marked fuzzy.
    let typo = search(&mut c, &eve, "imgae tager").await;
    assert_eq!(typo[0].project.as_ref().unwrap().name, "Image tagger");
    assert!(typo[0].fuzzy);
    let typo = search(&mut c, &eve, "postgers").await;
    assert_eq!(typo[0].project.as_ref().unwrap().name, "Vector database");
    // Nothing similar: nothing.
    assert!(search(&mut c, &eve, "zzzzqqqq").await.is_empty());
    // Words of private projects are never offered as corrections: Eve cannot learn that
    // Ada's private project says "zeusplan" (her own public "zeusplanx" is what a
    // correction finds, as if the word were nowhere).
    create(&mut c, &ada, "Zeusplan", "private", false, &[]).await;
    create(&mut c, &eve, "Zeusplanx", "public", true, &[]).await;
    let probe = search(&mut c, &eve, "zeusplan").await;
    assert_eq!(probe.len(), 1);
    assert_eq!(probe[0].project.as_ref().unwrap().name, "Zeusplanx");
    assert!(probe[0].fuzzy);
    // One word is read from the stored ranks: exactly the rank a search computes.
    let one = search(&mut c, &eve, "memory").await;
    assert_eq!(one.len(), 1);
    #[derive(diesel::QueryableByName)]
    struct Rank {
        #[diesel(sql_type = diesel::sql_types::Double)]
        r: f64,
    }
    let computed: Rank = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT ts_rank_cd(document, websearch_to_tsquery('english', 'memory'), 1)::float8 \
             AS r FROM content.projects WHERE name = 'Chat bot'",
        ),
        &mut site.db.connect().await,
    )
    .await
    .unwrap();
    assert_eq!(one[0].rank, computed.r);
    // Renamed: found by its new words only, at once.
    let tagger = search(&mut c, &eve, "tagger").await[0]
        .project
        .clone()
        .unwrap();
    c.update_project(bearer(
        pb::UpdateProjectRequest {
            project: Some(pb::Project {
                id: tagger.id.clone(),
                name: "Photo labeler".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["name".into()],
            }),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let renamed = search(&mut c, &eve, "labeler").await;
    assert_eq!(renamed[0].project.as_ref().unwrap().id, tagger.id);
    assert!(!renamed[0].fuzzy);
    assert!(
        search(&mut c, &eve, "tagger")
            .await
            .iter()
            .all(|r| r.project.as_ref().unwrap().id != tagger.id || r.fuzzy)
    );
    // Paging: one at a time, no repeats.
    let first = c
        .search_projects(bearer(
            pb::SearchProjectsRequest {
                query: "vector".into(),
                page_size: 1,
                ..Default::default()
            },
            &eve.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let second = c
        .search_projects(bearer(
            pb::SearchProjectsRequest {
                query: "vector".into(),
                page_size: 1,
                page_token: first.next_page_token,
            },
            &eve.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        first.results[0].project.as_ref().unwrap().id,
        second.results[0].project.as_ref().unwrap().id
    );
    let empty = c
        .search_projects(bearer(
            pb::SearchProjectsRequest {
                query: "   ".into(),
                ..Default::default()
            },
            &eve.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&empty), ["query"]);
}

#[tokio::test]
async fn likes_count_once_per_user_under_concurrency() {
    let site = Site::start().await;
    let c = site.projects();
    let users = futures_util::future::join_all((0..20).map(|_| site.user())).await;
    let p = create(&mut c.clone(), &users[0], "liked", "", true, &[]).await;
    // Every user likes five times at once.
    let likes = users.iter().flat_map(|u| {
        (0..5).map(|_| {
            let mut c = c.clone();
            let (id, token) = (p.id.clone(), u.token.clone());
            async move {
                c.like_project(bearer(pb::LikeProjectRequest { project_id: id }, &token))
                    .await
                    .unwrap()
                    .into_inner()
                    .changed
            }
        })
    });
    let changed = futures_util::future::join_all(likes).await;
    assert_eq!(changed.iter().filter(|c| **c).count(), 20);
    let mut c = c.clone();
    let get = c
        .get_project(bearer(
            pb::GetProjectRequest {
                project_id: p.id.clone(),
            },
            &users[0].token,
        ))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(get.like_count, 20);
    let mut conn = site.db.connect().await;
    let rows: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM content.project_likes)",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows, 20);
    // Unlike twice: once counted.
    for expected in [true, false] {
        let un = c
            .unlike_project(bearer(
                pb::UnlikeProjectRequest {
                    project_id: p.id.clone(),
                },
                &users[3].token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((un.changed, un.like_count), (expected, 19));
    }
}

#[tokio::test]
async fn ten_thousand_views_from_200_callers_fold_into_unique_viewers() {
    let site = Site::start().await;
    let c = site.projects();
    let users = futures_util::future::join_all((0..200).map(|_| site.user())).await;
    let p = create(&mut c.clone(), &users[0], "viral", "", true, &[]).await;
    // Views are counted per UTC day; a run that crosses midnight counts on two days.
    let first_day = chrono::Utc::now().date_naive();
    let views = users.iter().map(|u| {
        let mut c = c.clone();
        let (id, token) = (p.id.clone(), u.token.clone());
        async move {
            for _ in 0..50 {
                // 200 callers' first calls at once, beside every other test on two cores,
                // may find the credential check unable to answer in time: UNAVAILABLE says
                // to retry, as a client does (a view counted twice is counted once).
                let mut attempts = 0;
                loop {
                    let answer = c
                        .record_project_view(bearer(
                            pb::RecordProjectViewRequest {
                                project_id: id.clone(),
                            },
                            &token,
                        ))
                        .await;
                    match answer {
                        Err(status)
                            if status.code() == tonic::Code::Unavailable && attempts < 10 =>
                        {
                            attempts += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        answer => {
                            answer.unwrap();
                            break;
                        }
                    }
                }
            }
        }
    });
    futures_util::future::join_all(views).await;
    let spanned: i64 = if chrono::Utc::now().date_naive() == first_day {
        1
    } else {
        2
    };
    site.handlers.fold_views().await.unwrap();
    // Folding again changes nothing (counts are absolute).
    site.handlers.fold_views().await.unwrap();
    let mut c = c.clone();
    let folded = c
        .get_project(bearer(
            pb::GetProjectRequest {
                project_id: p.id.clone(),
            },
            &users[0].token,
        ))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    // HyperLogLog: 200 viewers within a few of its 0.81 % standard errors (196 seen).
    assert!(
        (192..=208 * spanned).contains(&folded.view_count),
        "{}",
        folded.view_count
    );
    let mut conn = site.db.connect().await;
    let days: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM content.project_views)",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!((1..=spanned).contains(&days), "{days} days");
}

#[tokio::test]
async fn another_users_private_project_looks_exactly_like_a_missing_one() {
    let site = Site::start().await;
    let mut c = site.projects();
    let mut f = site.files();
    let (ada, eve) = (site.user().await, site.user().await);
    let p = create(&mut c, &ada, "private", "", false, &[]).await;
    let shared = create(&mut c, &ada, "public", "", true, &[]).await;
    f.batch_upsert_files(bearer(
        pb::BatchUpsertFilesRequest {
            project_id: p.id.clone(),
            files: vec![pb::File {
                path: "a.rs".into(),
                content: b"fn main() {}".to_vec(),
                ..Default::default()
            }],
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let missing = uuid::Uuid::now_v7().to_string();
    let t = &eve.token;
    for id in [p.id.clone(), missing] {
        let answers = [
            (
                "get",
                c.get_project(bearer(
                    pb::GetProjectRequest {
                        project_id: id.clone(),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "update",
                c.update_project(bearer(
                    pb::UpdateProjectRequest {
                        project: Some(pb::Project {
                            id: id.clone(),
                            name: "mine".into(),
                            ..Default::default()
                        }),
                        update_mask: Some(FieldMask {
                            paths: vec!["name".into()],
                        }),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "delete",
                c.delete_project(bearer(
                    pb::DeleteProjectRequest {
                        project_id: id.clone(),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "like",
                c.like_project(bearer(
                    pb::LikeProjectRequest {
                        project_id: id.clone(),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "unlike",
                c.unlike_project(bearer(
                    pb::UnlikeProjectRequest {
                        project_id: id.clone(),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "fork",
                c.fork_project(bearer(
                    pb::ForkProjectRequest {
                        project_id: id.clone(),
                        ..Default::default()
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "view",
                c.record_project_view(bearer(
                    pb::RecordProjectViewRequest {
                        project_id: id.clone(),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "upsert files",
                f.batch_upsert_files(bearer(
                    pb::BatchUpsertFilesRequest {
                        project_id: id.clone(),
                        files: vec![pb::File {
                            path: "b.rs".into(),
                            ..Default::default()
                        }],
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "list files",
                f.list_files(bearer(
                    pb::ListFilesRequest {
                        project_id: id.clone(),
                        ..Default::default()
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "get file",
                f.get_file(bearer(
                    pb::GetFileRequest {
                        project_id: id.clone(),
                        path: "a.rs".into(),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "delete files",
                f.delete_files(bearer(
                    pb::DeleteFilesRequest {
                        project_id: id.clone(),
                        paths: vec!["a.rs".into()],
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
        ];
        for (rpc, answer) in answers {
            let status = answer.unwrap_err();
            assert_eq!(
                (rpc, status.code(), status.message()),
                (rpc, Code::NotFound, "project not found")
            );
        }
    }
    // A public project: readable, likable, forkable; never writable by Eve.
    let write = f
        .batch_upsert_files(bearer(
            pb::BatchUpsertFilesRequest {
                project_id: shared.id.clone(),
                files: vec![pb::File {
                    path: "x.rs".into(),
                    ..Default::default()
                }],
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(write.code(), Code::NotFound);
    let rename = c
        .update_project(bearer(
            pb::UpdateProjectRequest {
                project: Some(pb::Project {
                    id: shared.id.clone(),
                    name: "mine".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(rename.code(), Code::NotFound);
    let deleted = c
        .delete_project(bearer(
            pb::DeleteProjectRequest {
                project_id: shared.id.clone(),
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(deleted.code(), Code::NotFound);
    assert!(like(&mut c, &eve, &shared.id).await.changed);
    // Nothing of Ada's changed.
    let files = f
        .list_files(bearer(
            pb::ListFilesRequest {
                project_id: p.id.clone(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .files;
    assert_eq!(files.len(), 1);
    let mine = c
        .get_project(bearer(
            pb::GetProjectRequest {
                project_id: p.id.clone(),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!((mine.name.as_str(), mine.like_count), ("private", 0));
}
