//! AgentService: the definition's versions, labels, resolution, filters, ownership and
//! input checks.

use prost_types::FieldMask;
use strata_proto::content::agent_service_client::AgentServiceClient;
use strata_proto::content::{self as pb, version_selector::Selector};
use strata_testkit::app::{self, TestUser};
use strata_testkit::bearer;
use tonic::Code;
use tonic::transport::Channel;

use super::{start, violations};

type Client = AgentServiceClient<Channel>;

fn definition(model: &str, tools: &[&str]) -> pb::AgentVersion {
    pb::AgentVersion {
        model: model.into(),
        system_prompt: "You are helpful.\nBe brief.".into(),
        config: Some(prost_types::Struct {
            fields: [(
                "temperature".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(0.2)),
                },
            )]
            .into(),
        }),
        tools: tools
            .iter()
            .map(|name| pb::Tool {
                name: (*name).into(),
                description: format!("the {name} tool"),
                parameters: None,
            })
            .collect(),
        ..Default::default()
    }
}

async fn create(c: &mut Client, user: &TestUser, name: &str, kind: &str) -> pb::Agent {
    c.create_agent(bearer(
        pb::CreateAgentRequest {
            agent: Some(pb::Agent {
                name: name.into(),
                r#type: kind.into(),
                ..Default::default()
            }),
            version: Some(definition("gpt-4o", &["search"])),
            request_id: String::new(),
        },
        &user.token,
    ))
    .await
    .unwrap()
    .into_inner()
    .agent
    .unwrap()
}

async fn new_version(c: &mut Client, user: &TestUser, id: &str, model: &str) -> i32 {
    c.create_agent_version(bearer(
        pb::CreateAgentVersionRequest {
            agent_id: id.into(),
            version: Some(definition(model, &["search", "browse"])),
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

async fn list(c: &mut Client, user: &TestUser, req: pb::ListAgentsRequest) -> Vec<String> {
    c.list_agents(bearer(req, &user.token))
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .map(|a| a.name)
        .collect()
}

#[tokio::test]
async fn agents_keep_every_definition_as_a_version_and_move_labels_between_them() {
    let h = start().await;
    let mut c = AgentServiceClient::new(h.server.channel());
    let ada = h.user().await;
    let bot = create(&mut c, &ada, "Support bot", "assistant").await;
    assert_eq!(bot.status, pb::AgentStatus::Active as i32);
    assert_eq!(bot.latest_version, 1);
    let v1 = bot.version.clone().unwrap();
    assert_eq!((v1.model.as_str(), v1.tools.len()), ("gpt-4o", 1));
    assert_eq!(v1.tools[0].name, "search");
    assert_eq!(v1.config, definition("x", &[]).config);

    // A new definition is version 2; version 1 stays as it was.
    assert_eq!(
        new_version(&mut c, &ada, &bot.id, "claude-sonnet-4").await,
        2
    );
    let get = |selector: Option<Selector>| pb::GetAgentRequest {
        agent_id: bot.id.clone(),
        selector: selector.map(|s| pb::VersionSelector { selector: Some(s) }),
        read_mask: None,
    };
    let read = |r: tonic::Response<pb::GetAgentResponse>| r.into_inner().agent.unwrap();
    let latest = read(c.get_agent(bearer(get(None), &ada.token)).await.unwrap());
    assert_eq!(latest.version.unwrap().model, "claude-sonnet-4");
    let first = read(
        c.get_agent(bearer(get(Some(Selector::Version(1))), &ada.token))
            .await
            .unwrap(),
    );
    assert_eq!(first.version.unwrap(), v1);

    // production → v1: reads default to it; the move is in the history.
    let label = c
        .set_agent_label(bearer(
            pb::SetAgentLabelRequest {
                agent_id: bot.id.clone(),
                label: "production".into(),
                versions: vec![pb::WeightedVersion {
                    version: 1,
                    weight: 0,
                }],
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .label
        .unwrap();
    assert_eq!(label.updated_by, ada.id.to_string());
    let default = read(c.get_agent(bearer(get(None), &ada.token)).await.unwrap());
    assert_eq!(default.version.unwrap().version, 1);
    let names: Vec<&str> = default
        .version_labels
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["latest", "production"]);
    let history = c
        .list_agent_label_history(bearer(
            pb::ListAgentLabelHistoryRequest {
                agent_id: bot.id.clone(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.moves.len(), 1);
    assert_eq!(history.moves[0].to_versions[0].version, 1);
    assert!(history.moves[0].from_versions.is_empty());

    // Resolution: a 50/50 split gives each subject one version, the same every time.
    c.set_agent_label(bearer(
        pb::SetAgentLabelRequest {
            agent_id: bot.id.clone(),
            label: "production".into(),
            versions: vec![
                pb::WeightedVersion {
                    version: 1,
                    weight: 50,
                },
                pb::WeightedVersion {
                    version: 2,
                    weight: 50,
                },
            ],
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let mut seen = [0; 3];
    for i in 0..40 {
        let resolve = pb::ResolveAgentRequest {
            agent_id: bot.id.clone(),
            label: String::new(),
            subject: format!("conversation-{i}"),
        };
        let a = c
            .resolve_agent(bearer(resolve.clone(), &ada.token))
            .await
            .unwrap()
            .into_inner();
        let b = c
            .resolve_agent(bearer(resolve, &ada.token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a.label, "production");
        assert_eq!(a.version, b.version);
        seen[a.version.unwrap().version as usize] += 1;
    }
    assert!(seen[1] > 0 && seen[2] > 0, "{seen:?}");

    // A labelled version cannot be deleted; the label is named.
    let refused = c
        .delete_agent_version(bearer(
            pb::DeleteAgentVersionRequest {
                agent_id: bot.id.clone(),
                version: 1,
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("production"), "{refused:?}");
    assert_eq!(new_version(&mut c, &ada, &bot.id, "model-3").await, 3);
    c.set_agent_label(bearer(
        pb::SetAgentLabelRequest {
            agent_id: bot.id.clone(),
            label: "production".into(),
            versions: vec![pb::WeightedVersion {
                version: 3,
                weight: 1,
            }],
        },
        &ada.token,
    ))
    .await
    .unwrap();
    c.delete_agent_version(bearer(
        pb::DeleteAgentVersionRequest {
            agent_id: bot.id.clone(),
            version: 1,
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let versions = c
        .list_agent_versions(bearer(
            pb::ListAgentVersionsRequest {
                agent_id: bot.id.clone(),
                page_size: 1,
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(versions.versions[0].version, 3);
    let rest = c
        .list_agent_versions(bearer(
            pb::ListAgentVersionsRequest {
                agent_id: bot.id.clone(),
                page_size: 10,
                page_token: versions.next_page_token,
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let numbers: Vec<i32> = rest.versions.iter().map(|v| v.version).collect();
    assert_eq!((numbers, rest.next_page_token.as_str()), (vec![2], ""));
    let gone = c
        .get_agent(bearer(get(Some(Selector::Version(1))), &ada.token))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Update: name, type, status, labels; the definition never changes in place.
    let updated = c
        .update_agent(bearer(
            pb::UpdateAgentRequest {
                agent: Some(pb::Agent {
                    id: bot.id.clone(),
                    name: "Paused bot".into(),
                    status: pb::AgentStatus::Paused as i32,
                    labels: [("team".to_owned(), "care".to_owned())].into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into(), "status".into(), "labels".into()],
                }),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(
        (
            updated.name.as_str(),
            updated.status,
            updated.r#type.as_str()
        ),
        ("Paused bot", pb::AgentStatus::Paused as i32, "assistant")
    );
    assert_eq!(updated.labels["team"], "care");

    // Filters: status, type, name search; newest first; read_mask leaves the body out.
    create(&mut c, &ada, "Code reviewer", "coder").await;
    create(&mut c, &ada, "Code writer", "coder").await;
    let all = list(&mut c, &ada, pb::ListAgentsRequest::default()).await;
    assert_eq!(all, ["Code writer", "Code reviewer", "Paused bot"]);
    let paused = pb::ListAgentsRequest {
        status: pb::AgentStatus::Paused as i32,
        ..Default::default()
    };
    assert_eq!(list(&mut c, &ada, paused).await, ["Paused bot"]);
    let coders = pb::ListAgentsRequest {
        r#type: "coder".into(),
        name_query: "REVIEW".into(),
        ..Default::default()
    };
    assert_eq!(list(&mut c, &ada, coders).await, ["Code reviewer"]);
    let slim = c
        .list_agents(bearer(
            pb::ListAgentsRequest {
                read_mask: Some(FieldMask {
                    paths: vec!["id".into(), "name".into()],
                }),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        slim.agents
            .iter()
            .all(|a| a.version.is_none() && a.version_labels.is_empty())
    );
    let full = c
        .list_agents(bearer(pb::ListAgentsRequest::default(), &ada.token))
        .await
        .unwrap()
        .into_inner();
    let paused_bot = full.agents.iter().find(|a| a.id == bot.id).unwrap();
    assert_eq!(paused_bot.version.as_ref().unwrap().model, "model-3");

    // Delete: gone with its versions.
    c.delete_agent(bearer(
        pb::DeleteAgentRequest {
            agent_id: bot.id.clone(),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let gone = c
        .get_agent(bearer(get(None), &ada.token))
        .await
        .unwrap_err();
    assert_eq!(
        (gone.code(), gone.message()),
        (Code::NotFound, "agent not found")
    );
}

#[tokio::test]
async fn another_users_agent_looks_exactly_like_a_missing_one() {
    let h = start().await;
    let mut c = AgentServiceClient::new(h.server.channel());
    let (ada, eve) = (h.user().await, h.user().await);
    let bot = create(&mut c, &ada, "secret bot", "assistant").await;
    let missing = uuid::Uuid::now_v7().to_string();
    for id in [bot.id.clone(), missing] {
        let t = &eve.token;
        let one = || {
            vec![pb::WeightedVersion {
                version: 1,
                weight: 1,
            }]
        };
        let answers = [
            (
                "get",
                c.get_agent(bearer(
                    pb::GetAgentRequest {
                        agent_id: id.clone(),
                        ..Default::default()
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "update",
                c.update_agent(bearer(
                    pb::UpdateAgentRequest {
                        agent: Some(pb::Agent {
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
                c.delete_agent(bearer(
                    pb::DeleteAgentRequest {
                        agent_id: id.clone(),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "new version",
                c.create_agent_version(bearer(
                    pb::CreateAgentVersionRequest {
                        agent_id: id.clone(),
                        version: Some(definition("m", &[])),
                        ..Default::default()
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "versions",
                c.list_agent_versions(bearer(
                    pb::ListAgentVersionsRequest {
                        agent_id: id.clone(),
                        ..Default::default()
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "delete version",
                c.delete_agent_version(bearer(
                    pb::DeleteAgentVersionRequest {
                        agent_id: id.clone(),
                        version: 1,
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "label",
                c.set_agent_label(bearer(
                    pb::SetAgentLabelRequest {
                        agent_id: id.clone(),
                        label: "x".into(),
                        versions: one(),
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "history",
                c.list_agent_label_history(bearer(
                    pb::ListAgentLabelHistoryRequest {
                        agent_id: id.clone(),
                        ..Default::default()
                    },
                    t,
                ))
                .await
                .map(|_| ()),
            ),
            (
                "resolve",
                c.resolve_agent(bearer(
                    pb::ResolveAgentRequest {
                        agent_id: id.clone(),
                        ..Default::default()
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
                (rpc, Code::NotFound, "agent not found")
            );
        }
    }
    let eves = list(&mut c, &eve, pb::ListAgentsRequest::default()).await;
    assert!(eves.is_empty());
    let still = c
        .get_agent(bearer(
            pb::GetAgentRequest {
                agent_id: bot.id.clone(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(
        (still.name.as_str(), still.latest_version),
        ("secret bot", 1)
    );
    let mut admin = app::sign_up(h.server.channel()).await;
    app::promote(&h.db, h.server.channel(), &mut admin).await;
    c.get_agent(bearer(
        pb::GetAgentRequest {
            agent_id: bot.id,
            ..Default::default()
        },
        &admin.token,
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_agents_are_refused_naming_every_field_and_a_retry_returns_the_first() {
    let h = start().await;
    let mut c = AgentServiceClient::new(h.server.channel());
    let ada = h.user().await;
    // An unknown enum value is refused before the handler, naming the field.
    let unknown = c
        .create_agent(bearer(
            pb::CreateAgentRequest {
                agent: Some(pb::Agent {
                    name: "x".into(),
                    r#type: "assistant".into(),
                    status: 42,
                    ..Default::default()
                }),
                version: Some(definition("m", &[])),
                request_id: String::new(),
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.code(), violations(&unknown)),
        (Code::InvalidArgument, vec!["agent.status".to_owned()])
    );
    let mut bad_definition = definition("", &["ok", "ok", "no spaces"]);
    bad_definition.system_prompt = "bell\u{7}".into();
    let bad = c
        .create_agent(bearer(
            pb::CreateAgentRequest {
                agent: Some(pb::Agent {
                    name: String::new(),
                    r#type: "Not A Type".into(),
                    ..Default::default()
                }),
                version: Some(bad_definition),
                request_id: "nope".into(),
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&bad),
        [
            "agent.name",
            "agent.type",
            "version.model",
            "version.system_prompt",
            "version.tools[1].name",
            "version.tools[2].name",
            "request_id",
        ]
    );
    let filters = c
        .list_agents(bearer(
            pb::ListAgentsRequest {
                r#type: "X".into(),
                name_query: "x".repeat(101),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&filters), ["type", "name_query"]);
    assert!(
        list(&mut c, &ada, pb::ListAgentsRequest::default())
            .await
            .is_empty()
    );

    // A retry returns the first agent; the same id with another request is refused.
    let request = pb::CreateAgentRequest {
        agent: Some(pb::Agent {
            name: "once".into(),
            r#type: "assistant".into(),
            ..Default::default()
        }),
        version: Some(definition("gpt-4o", &[])),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let first = c
        .create_agent(bearer(request.clone(), &ada.token))
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    let again = c
        .create_agent(bearer(request.clone(), &ada.token))
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(first.id, again.id);
    let mut other = request;
    other.version = Some(definition("another-model", &[]));
    let refused = c.create_agent(bearer(other, &ada.token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert_eq!(
        list(&mut c, &ada, pb::ListAgentsRequest::default()).await,
        ["once"]
    );
}
