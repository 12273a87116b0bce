//! PromptService through its generated client against real servers, PostgreSQL and Redis.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost_types::FieldMask;
use strata_content::ContentHandlers;
use strata_proto::content::prompt_service_client::PromptServiceClient;
use strata_proto::content::{self as pb, version_selector::Selector};
use strata_runtime::ServerConfig;
use strata_testkit::app::{self, TestUser};
use strata_testkit::{TestDb, TestRedis, TestServer, bearer};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

#[path = "content/agents.rs"]
mod agents;
#[path = "content/conversations.rs"]
mod conversations;
#[path = "content/files.rs"]
mod files;
#[path = "content/indexes.rs"]
mod indexes;
#[path = "content/projects.rs"]
mod projects;
#[path = "content/retention.rs"]
mod retention;
#[path = "content/usage.rs"]
mod usage;
#[path = "content/watch.rs"]
mod watch;
#[path = "content/workflows.rs"]
mod workflows;

type Client = PromptServiceClient<Channel>;

struct Harness {
    db: TestDb,
    server: TestServer,
}

/// A server with auth and content on `config`.
async fn serve(config: ServerConfig) -> (TestServer, Arc<ContentHandlers>) {
    let slot = Arc::new(Mutex::new(None));
    let handlers_slot = Arc::clone(&slot);
    let server = TestServer::start(config, move |builder| {
        strata_auth::register(builder, strata_auth::AuthConfig::default()).unwrap();
        *handlers_slot.lock().unwrap() = Some(strata_content::register(
            builder,
            strata_content::ContentConfig::default(),
        ));
    })
    .await;
    let handlers = slot.lock().unwrap().take().unwrap();
    (server, handlers)
}

async fn start() -> Harness {
    let db = TestDb::new().await;
    let (server, _) = serve(db.server_config("content")).await;
    Harness { db, server }
}

impl Harness {
    fn client(&self) -> Client {
        PromptServiceClient::new(self.server.channel())
    }

    async fn user(&self) -> TestUser {
        app::sign_up(self.server.channel()).await
    }
}

fn body(template: &str) -> pb::PromptVersion {
    pb::PromptVersion {
        template: template.into(),
        ..Default::default()
    }
}

async fn create(client: &mut Client, user: &TestUser, name: &str, template: &str) -> pb::Prompt {
    client
        .create_prompt(bearer(
            pb::CreatePromptRequest {
                prompt: Some(pb::Prompt {
                    name: name.into(),
                    tags: vec!["support".into()],
                    ..Default::default()
                }),
                version: Some(body(template)),
                request_id: String::new(),
            },
            &user.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .prompt
        .unwrap()
}

async fn new_version(client: &mut Client, user: &TestUser, id: &str, template: &str) -> i32 {
    client
        .create_prompt_version(bearer(
            pb::CreatePromptVersionRequest {
                prompt_id: id.into(),
                version: Some(body(template)),
                request_id: String::new(),
            },
            &user.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap()
        .version
}

async fn set_label(
    client: &mut Client,
    user: &TestUser,
    id: &str,
    label: &str,
    versions: &[(i32, i32)],
) -> Result<pb::Label, tonic::Status> {
    client
        .set_prompt_label(bearer(
            pb::SetPromptLabelRequest {
                prompt_id: id.into(),
                label: label.into(),
                versions: versions
                    .iter()
                    .map(|&(version, weight)| pb::WeightedVersion { version, weight })
                    .collect(),
            },
            &user.token,
        ))
        .await
        .map(|r| r.into_inner().label.unwrap())
}

async fn get(
    client: &mut Client,
    user: &TestUser,
    id: &str,
    selector: Option<Selector>,
) -> Result<pb::Prompt, tonic::Status> {
    client
        .get_prompt(bearer(
            pb::GetPromptRequest {
                prompt_id: id.into(),
                selector: selector.map(|s| pb::VersionSelector { selector: Some(s) }),
                read_mask: None,
            },
            &user.token,
        ))
        .await
        .map(|r| r.into_inner().prompt.unwrap())
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn prompts_are_created_read_listed_updated_and_deleted() {
    let h = start().await;
    let mut c = h.client();
    let ada = h.user().await;
    let created = create(
        &mut c,
        &ada,
        "support/greeting",
        "Hello {{name}}, from {{ city }}",
    )
    .await;
    let version = created.version.clone().unwrap();
    assert_eq!((version.version, created.latest_version), (1, 1));
    assert_eq!(version.variables, ["name", "city"]);
    assert_eq!(created.owner_id, ada.id.to_string());
    assert!(created.version_labels.iter().any(|l| l.name == "latest"));
    create(&mut c, &ada, "support/farewell", "Bye").await;
    create(&mut c, &ada, "sales/pitch", "Buy").await;
    // The name is unique per owner.
    let taken = c
        .create_prompt(bearer(
            pb::CreatePromptRequest {
                prompt: Some(pb::Prompt {
                    name: "sales/pitch".into(),
                    ..Default::default()
                }),
                version: Some(body("x")),
                request_id: String::new(),
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    let list = |folder: &str, query: &str, page_size: i32, token: &str, mask: Option<&[&str]>| {
        bearer(
            pb::ListPromptsRequest {
                page_size,
                page_token: token.into(),
                folder: folder.into(),
                name_query: query.into(),
                read_mask: mask.map(|m| FieldMask {
                    paths: m.iter().map(|p| (*p).to_owned()).collect(),
                }),
                ..Default::default()
            },
            &ada.token,
        )
    };
    let names = |prompts: &[pb::Prompt]| prompts.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let all = c
        .list_prompts(list("", "", 0, "", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        names(&all.prompts),
        ["sales/pitch", "support/farewell", "support/greeting"]
    );
    assert_eq!(
        all.prompts[2].version.as_ref().unwrap().template,
        "Hello {{name}}, from {{ city }}"
    );
    let folder = c
        .list_prompts(list("support/", "", 0, "", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        names(&folder.prompts),
        ["support/farewell", "support/greeting"]
    );
    let query = c
        .list_prompts(list("", "GREET", 0, "", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&query.prompts), ["support/greeting"]);
    // Pages, and a read mask that leaves the bodies unread.
    let first = c
        .list_prompts(list("", "", 2, "", Some(&["id", "name"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.prompts.len(), 2);
    assert!(
        first
            .prompts
            .iter()
            .all(|p| p.version.is_none() && p.tags.is_empty())
    );
    let second = c
        .list_prompts(list(
            "",
            "",
            2,
            &first.next_page_token,
            Some(&["id", "name"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&second.prompts), ["support/greeting"]);
    assert!(second.next_page_token.is_empty());
    // A token is bound to its filters.
    let moved = c
        .list_prompts(list("sales", "", 2, &first.next_page_token, None))
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Code::InvalidArgument);

    let updated = c
        .update_prompt(bearer(
            pb::UpdatePromptRequest {
                prompt: Some(pb::Prompt {
                    id: created.id.clone(),
                    name: "support/hello".into(),
                    is_favorite: true,
                    labels: HashMap::from([("team".to_owned(), "care".to_owned())]),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into(), "is_favorite".into(), "labels".into()],
                }),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .prompt
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.is_favorite),
        ("support/hello", true)
    );
    assert_eq!(updated.labels["team"], "care");
    assert_eq!(
        updated.tags,
        ["support"],
        "fields outside the mask are kept"
    );
    let favorites = c
        .list_prompts(bearer(
            pb::ListPromptsRequest {
                favorites_only: true,
                tag: "support".into(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&favorites.prompts), ["support/hello"]);

    c.delete_prompt(bearer(
        pb::DeletePromptRequest {
            prompt_id: created.id.clone(),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    assert_eq!(
        get(&mut c, &ada, &created.id, None)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn versions_are_immutable_and_labels_move_with_their_history() {
    let h = start().await;
    let mut c = h.client();
    let ada = h.user().await;
    let p = create(&mut c, &ada, "p", "one").await;
    assert_eq!(new_version(&mut c, &ada, &p.id, "two").await, 2);
    assert_eq!(new_version(&mut c, &ada, &p.id, "three").await, 3);
    // No production label: the default is the latest version.
    let read = get(&mut c, &ada, &p.id, None).await.unwrap();
    assert_eq!(read.version.unwrap().template, "three");
    assert_eq!(
        get(&mut c, &ada, &p.id, Some(Selector::Version(1)))
            .await
            .unwrap()
            .version
            .unwrap()
            .template,
        "one"
    );
    set_label(&mut c, &ada, &p.id, "production", &[(2, 1)])
        .await
        .unwrap();
    assert_eq!(
        get(&mut c, &ada, &p.id, None)
            .await
            .unwrap()
            .version
            .unwrap()
            .version,
        2
    );
    set_label(&mut c, &ada, &p.id, "production", &[(1, 1)])
        .await
        .unwrap();
    assert_eq!(
        get(&mut c, &ada, &p.id, None)
            .await
            .unwrap()
            .version
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        get(&mut c, &ada, &p.id, Some(Selector::Label("latest".into())))
            .await
            .unwrap()
            .version
            .unwrap()
            .version,
        3
    );
    // A label at a version that does not exist, and `latest`, are refused.
    let missing = set_label(&mut c, &ada, &p.id, "staging", &[(9, 1)])
        .await
        .unwrap_err();
    assert_eq!(violations(&missing), ["versions[0].version"]);
    let latest = set_label(&mut c, &ada, &p.id, "latest", &[(1, 1)])
        .await
        .unwrap_err();
    assert_eq!(violations(&latest), ["label"]);

    let history = c
        .list_prompt_label_history(bearer(
            pb::ListPromptLabelHistoryRequest {
                prompt_id: p.id.clone(),
                label: "production".into(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .moves;
    assert_eq!(history.len(), 2);
    let versions = |w: &[pb::WeightedVersion]| w.iter().map(|w| w.version).collect::<Vec<_>>();
    assert_eq!(
        (
            versions(&history[0].from_versions),
            versions(&history[0].to_versions)
        ),
        (vec![2], vec![1])
    );
    assert_eq!(
        (
            versions(&history[1].from_versions),
            versions(&history[1].to_versions)
        ),
        (vec![], vec![2])
    );
    assert_eq!(history[0].actor_id, ada.id.to_string());

    // A labelled version cannot be deleted; the answer names the label.
    let delete = |version| {
        bearer(
            pb::DeletePromptVersionRequest {
                prompt_id: p.id.clone(),
                version,
            },
            &ada.token,
        )
    };
    let refused = c.delete_prompt_version(delete(1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("production"),
        "{}",
        refused.message()
    );
    c.delete_prompt_version(delete(3)).await.unwrap();
    assert_eq!(
        c.delete_prompt_version(delete(3)).await.unwrap_err().code(),
        Code::NotFound
    );
    // `latest` follows the newest version left, and numbers are never reused.
    assert_eq!(
        get(&mut c, &ada, &p.id, Some(Selector::Label("latest".into())))
            .await
            .unwrap()
            .version
            .unwrap()
            .version,
        2
    );
    assert_eq!(new_version(&mut c, &ada, &p.id, "four").await, 4);
    let listed = c
        .list_prompt_versions(bearer(
            pb::ListPromptVersionsRequest {
                prompt_id: p.id.clone(),
                page_size: 2,
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [4, 2]
    );
    assert!(!listed.next_page_token.is_empty());
    // The version read before is still what it was.
    assert_eq!(
        get(&mut c, &ada, &p.id, Some(Selector::Version(2)))
            .await
            .unwrap()
            .version
            .unwrap()
            .template,
        "two"
    );
}

#[tokio::test]
async fn a_weighted_label_gives_each_subject_one_version_in_the_weights_proportions() {
    let h = start().await;
    let mut c = h.client();
    let ada = h.user().await;
    let p = create(&mut c, &ada, "p", "v1").await;
    new_version(&mut c, &ada, &p.id, "v2").await;
    set_label(&mut c, &ada, &p.id, "production", &[(1, 90), (2, 10)])
        .await
        .unwrap();
    let mut twos = 0;
    for i in 0..10_000 {
        let subject = format!("user-{i}");
        let resolve = || {
            bearer(
                pb::ResolvePromptRequest {
                    prompt_id: p.id.clone(),
                    label: String::new(),
                    subject: subject.clone(),
                },
                &ada.token,
            )
        };
        let answer = c.resolve_prompt(resolve()).await.unwrap().into_inner();
        assert_eq!(answer.label, "production");
        let version = answer.version.unwrap().version;
        if i % 500 == 0 {
            let again = c.resolve_prompt(resolve()).await.unwrap().into_inner();
            assert_eq!(again.version.unwrap().version, version, "{subject}");
        }
        if version == 2 {
            twos += 1;
        }
    }
    // 10 % ± 2 points.
    assert!(
        (800..=1200).contains(&twos),
        "{twos} of 10000 got version 2"
    );
}

#[tokio::test]
async fn rendering_fills_every_declared_variable_and_names_the_ones_wrong() {
    let h = start().await;
    let mut c = h.client();
    let ada = h.user().await;
    let p = create(&mut c, &ada, "p", "Hi {{name}} from {{city}}").await;
    let render = |vars: &[(&str, &str)]| {
        bearer(
            pb::RenderPromptRequest {
                prompt_id: p.id.clone(),
                selector: None,
                variables: vars
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                subject: String::new(),
            },
            &ada.token,
        )
    };
    let text = c
        .render_prompt(render(&[("name", "Ada"), ("city", "Paris")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((text.text.as_str(), text.version), ("Hi Ada from Paris", 1));
    let missing = c
        .render_prompt(render(&[("name", "Ada")]))
        .await
        .unwrap_err();
    assert_eq!(violations(&missing), ["variables[\"city\"]"]);
    let extra = c
        .render_prompt(render(&[("name", "Ada"), ("city", "Paris"), ("zip", "1")]))
        .await
        .unwrap_err();
    assert_eq!(violations(&extra), ["variables[\"zip\"]"]);
}

#[tokio::test]
async fn a_retried_create_returns_the_first_result_and_another_request_is_refused() {
    let h = start().await;
    let mut c = h.client();
    let ada = h.user().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = |name: &str| {
        bearer(
            pb::CreatePromptRequest {
                prompt: Some(pb::Prompt {
                    name: name.into(),
                    labels: HashMap::from([
                        ("a".to_owned(), "1".to_owned()),
                        ("b".to_owned(), "2".to_owned()),
                    ]),
                    ..Default::default()
                }),
                version: Some(body("x")),
                request_id: request_id.clone(),
            },
            &ada.token,
        )
    };
    let first = c
        .create_prompt(request("p"))
        .await
        .unwrap()
        .into_inner()
        .prompt
        .unwrap();
    let again = c
        .create_prompt(request("p"))
        .await
        .unwrap()
        .into_inner()
        .prompt
        .unwrap();
    assert_eq!(first.id, again.id);
    let other = c.create_prompt(request("q")).await.unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    let version = |rid: &str, template: &str| {
        bearer(
            pb::CreatePromptVersionRequest {
                prompt_id: first.id.clone(),
                version: Some(body(template)),
                request_id: rid.into(),
            },
            &ada.token,
        )
    };
    let rid = uuid::Uuid::new_v4().to_string();
    let v2 = c
        .create_prompt_version(version(&rid, "y"))
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap();
    let v2_again = c
        .create_prompt_version(version(&rid, "y"))
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap();
    assert_eq!((v2.version, v2_again.version), (2, 2));
    assert_eq!(
        c.create_prompt_version(version(&rid, "z"))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    assert_eq!(
        get(&mut c, &ada, &first.id, None)
            .await
            .unwrap()
            .latest_version,
        2
    );
}

#[tokio::test]
async fn another_users_prompt_looks_exactly_like_a_missing_one() {
    let h = start().await;
    let mut c = h.client();
    let (ada, eve) = (h.user().await, h.user().await);
    let p = create(&mut c, &ada, "secret", "{{x}}").await;
    set_label(&mut c, &ada, &p.id, "production", &[(1, 1)])
        .await
        .unwrap();
    let missing = uuid::Uuid::now_v7().to_string();
    for id in [p.id.clone(), missing] {
        macro_rules! who {
            ($m:expr) => {
                bearer($m, &eve.token)
            };
        }
        let mut answers: Vec<(&str, tonic::Status)> = vec![
            (
                "get",
                c.get_prompt(who!(pb::GetPromptRequest {
                    prompt_id: id.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            ),
            (
                "update",
                c.update_prompt(who!(pb::UpdatePromptRequest {
                    prompt: Some(pb::Prompt {
                        id: id.clone(),
                        name: "mine".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["name".into()],
                    }),
                }))
                .await
                .unwrap_err(),
            ),
            (
                "delete",
                c.delete_prompt(who!(pb::DeletePromptRequest {
                    prompt_id: id.clone(),
                }))
                .await
                .unwrap_err(),
            ),
            (
                "new version",
                c.create_prompt_version(who!(pb::CreatePromptVersionRequest {
                    prompt_id: id.clone(),
                    version: Some(body("x")),
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            ),
            (
                "versions",
                c.list_prompt_versions(who!(pb::ListPromptVersionsRequest {
                    prompt_id: id.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            ),
            (
                "delete version",
                c.delete_prompt_version(who!(pb::DeletePromptVersionRequest {
                    prompt_id: id.clone(),
                    version: 1,
                }))
                .await
                .unwrap_err(),
            ),
            (
                "label",
                c.set_prompt_label(who!(pb::SetPromptLabelRequest {
                    prompt_id: id.clone(),
                    label: "x".into(),
                    versions: vec![pb::WeightedVersion {
                        version: 1,
                        weight: 1,
                    }],
                }))
                .await
                .unwrap_err(),
            ),
            (
                "history",
                c.list_prompt_label_history(who!(pb::ListPromptLabelHistoryRequest {
                    prompt_id: id.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            ),
            (
                "resolve",
                c.resolve_prompt(who!(pb::ResolvePromptRequest {
                    prompt_id: id.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            ),
            (
                "render",
                c.render_prompt(who!(pb::RenderPromptRequest {
                    prompt_id: id.clone(),
                    variables: HashMap::from([("x".to_owned(), "1".to_owned())]),
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            ),
        ];
        for (rpc, status) in answers.drain(..) {
            assert_eq!(
                (rpc, status.code(), status.message()),
                (rpc, Code::NotFound, "prompt not found")
            );
        }
    }
    // Nothing changed, and Eve's list does not show it.
    let read = get(&mut c, &ada, &p.id, None).await.unwrap();
    assert_eq!((read.name.as_str(), read.latest_version), ("secret", 1));
    let eves = c
        .list_prompts(bearer(pb::ListPromptsRequest::default(), &eve.token))
        .await
        .unwrap()
        .into_inner();
    assert!(eves.prompts.is_empty());
    // An admin sees it.
    let mut admin = app::sign_up(h.server.channel()).await;
    app::promote(&h.db, h.server.channel(), &mut admin).await;
    assert_eq!(
        get(&mut c, &admin, &p.id, None).await.unwrap().name,
        "secret"
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_naming_the_field_and_write_nothing() {
    let h = start().await;
    let mut c = h.client();
    let ada = h.user().await;
    let bad = c
        .create_prompt(bearer(
            pb::CreatePromptRequest {
                prompt: Some(pb::Prompt {
                    name: "a//b".into(),
                    tags: vec![String::new()],
                    labels: HashMap::from([("Bad Key".to_owned(), "v".to_owned())]),
                    ..Default::default()
                }),
                version: Some(pb::PromptVersion {
                    template: "x".repeat(100_001),
                    ..Default::default()
                }),
                request_id: "nope".into(),
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(
        fields,
        [
            "prompt.labels[\"Bad Key\"]",
            "prompt.name",
            "prompt.tags[0]",
            "request_id",
            "version.template"
        ]
    );
    for id in ["", "not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let status = get(&mut c, &ada, id, None).await.unwrap_err();
        assert_eq!(violations(&status), ["prompt_id"], "{id:?}");
    }
    let p = create(&mut c, &ada, "p", "x").await;
    for (selector, field) in [
        (Selector::Version(0), "selector.version"),
        (Selector::Version(-5), "selector.version"),
        (Selector::Label("Not A Label".into()), "selector.label"),
    ] {
        let status = get(&mut c, &ada, &p.id, Some(selector)).await.unwrap_err();
        assert_eq!(violations(&status), [field]);
    }
    assert_eq!(
        get(&mut c, &ada, &p.id, Some(Selector::Version(7)))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let weights = set_label(&mut c, &ada, &p.id, "exp", &[(1, 0), (1, 20_000)])
        .await
        .unwrap_err();
    assert_eq!(
        violations(&weights),
        [
            "versions[0].weight",
            "versions[1].version",
            "versions[1].weight"
        ]
    );
    let mask = c
        .get_prompt(bearer(
            pb::GetPromptRequest {
                prompt_id: p.id.clone(),
                read_mask: Some(FieldMask {
                    paths: vec!["password".into()],
                }),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&mask), ["read_mask"]);
    // Nothing but the one good prompt was written.
    let all = c
        .list_prompts(bearer(pb::ListPromptsRequest::default(), &ada.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.prompts.len(), 1);
    // An API key without the write scope reads but does not write.
    let key = app::api_key(h.server.channel(), &ada, &["content:read"]).await;
    get(
        &mut c,
        &TestUser {
            token: key.clone(),
            ..ada.clone()
        },
        &p.id,
        None,
    )
    .await
    .unwrap();
    let denied = set_label(
        &mut c,
        &TestUser {
            token: key,
            ..ada.clone()
        },
        &p.id,
        "x",
        &[(1, 1)],
    )
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_label_move_is_seen_by_a_second_instance_within_100_ms() {
    let redis = TestRedis::new();
    let db = TestDb::new().await;
    let config = || {
        let mut config = db.server_config("content");
        config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
        config.redis_prefix = redis.handle().prefix().to_owned();
        config
    };
    let (a, a_handlers) = serve(config()).await;
    let (b, b_handlers) = serve(config()).await;
    for handlers in [&a_handlers, &b_handlers] {
        assert!(handlers_listening(handlers).await);
    }
    let (mut ca, mut cb) = (
        PromptServiceClient::new(a.channel()),
        PromptServiceClient::new(b.channel()),
    );
    let ada = app::sign_up(a.channel()).await;
    let p = create(&mut ca, &ada, "p", "one").await;
    new_version(&mut ca, &ada, &p.id, "two").await;
    set_label(&mut ca, &ada, &p.id, "production", &[(1, 1)])
        .await
        .unwrap();
    let resolved = async |client: &mut Client| {
        client
            .resolve_prompt(bearer(
                pb::ResolvePromptRequest {
                    prompt_id: p.id.clone(),
                    ..Default::default()
                },
                &ada.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .version
            .unwrap()
            .version
    };
    // B caches the resolution.
    while resolved(&mut cb).await != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(resolved(&mut cb).await, 1);
    set_label(&mut ca, &ada, &p.id, "production", &[(2, 1)])
        .await
        .unwrap();
    let moved = Instant::now();
    assert_eq!(
        resolved(&mut ca).await,
        2,
        "the writer reads its own write at once"
    );
    while resolved(&mut cb).await != 2 {
        assert!(
            moved.elapsed() < Duration::from_millis(100),
            "not seen within 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn handlers_listening(handlers: &ContentHandlers) -> bool {
    handlers
        .context()
        .caches
        .wait_listening(Duration::from_secs(5))
        .await
}
