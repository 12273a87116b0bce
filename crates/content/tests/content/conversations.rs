//! ConversationService: conversations of their owner with an agent (its version resolved
//! for the conversation) and a project; messages as a tree, appended atomically with
//! gap-free numbers, edited into sibling branches, read along a branch in pages.

use prost_types::FieldMask;
use strata_proto::content::agent_service_client::AgentServiceClient;
use strata_proto::content::conversation_service_client::ConversationServiceClient;
use strata_proto::content::{self as pb};
use strata_testkit::app::TestUser;
use strata_testkit::bearer;
use tonic::Code;
use tonic::transport::Channel;

use super::{start, violations};

type Client = ConversationServiceClient<Channel>;

fn text(role: pb::Role, text: &str) -> pb::NewMessage {
    pb::NewMessage {
        usage: None,
        role: role.into(),
        parts: vec![pb::Part {
            kind: Some(pb::part::Kind::Text(text.into())),
        }],
    }
}

pub(super) async fn create(
    c: &mut Client,
    user: &TestUser,
    conversation: pb::Conversation,
) -> pb::Conversation {
    c.create_conversation(bearer(
        pb::CreateConversationRequest {
            conversation: Some(conversation),
            request_id: String::new(),
        },
        &user.token,
    ))
    .await
    .unwrap()
    .into_inner()
    .conversation
    .unwrap()
}

async fn append(
    c: &mut Client,
    user: &TestUser,
    id: &str,
    parent: &str,
    messages: Vec<pb::NewMessage>,
) -> Result<Vec<pb::Message>, tonic::Status> {
    c.append_messages(bearer(
        pb::AppendMessagesRequest {
            conversation_id: id.into(),
            messages,
            parent_id: parent.into(),
            request_id: String::new(),
        },
        &user.token,
    ))
    .await
    .map(|r| r.into_inner().messages)
}

/// The texts of a branch, a page of `size` at a time, following the tokens.
async fn branch(
    c: &mut Client,
    user: &TestUser,
    id: &str,
    leaf: &str,
    newest_first: bool,
    size: i32,
) -> Vec<String> {
    let mut texts = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_messages(bearer(
                pb::ListMessagesRequest {
                    conversation_id: id.into(),
                    leaf_id: leaf.into(),
                    page_size: size,
                    page_token: token,
                    newest_first,
                },
                &user.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.messages.len() <= size as usize);
        texts.extend(page.messages.iter().map(|m| match &m.parts[0].kind {
            Some(pb::part::Kind::Text(t)) => t.clone(),
            other => panic!("{other:?}"),
        }));
        if page.next_page_token.is_empty() {
            return texts;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn messages_form_a_tree_whose_branches_are_read_in_pages() {
    let h = start().await;
    let mut c = Client::new(h.server.channel());
    let ada = h.user().await;
    let conv = create(
        &mut c,
        &ada,
        pb::Conversation {
            title: "Trip".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((conv.message_count, conv.last_sequence), (0, 0));
    assert!(conv.active_leaf_id.is_empty());
    let first = append(
        &mut c,
        &ada,
        &conv.id,
        "",
        vec![
            text(pb::Role::System, "be brief"),
            text(pb::Role::User, "where to?"),
            text(pb::Role::Assistant, "Lisbon"),
        ],
    )
    .await
    .unwrap();
    let sequences: Vec<i64> = first.iter().map(|m| m.sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert!(first[0].parent_id.is_empty());
    assert_eq!(first[1].parent_id, first[0].id);
    assert_eq!(first[2].parent_id, first[1].id);
    // Regenerating the answer: a sibling of "Lisbon", now the active branch.
    let again = append(
        &mut c,
        &ada,
        &conv.id,
        &first[1].id,
        vec![text(pb::Role::Assistant, "Porto")],
    )
    .await
    .unwrap();
    assert_eq!(
        (again[0].sequence, again[0].parent_id.as_str()),
        (4, first[1].id.as_str())
    );
    let follow = append(
        &mut c,
        &ada,
        &conv.id,
        "",
        vec![text(pb::Role::User, "why?")],
    )
    .await
    .unwrap();
    assert_eq!(follow[0].parent_id, again[0].id);

    let got = c
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: conv.id.clone(),
                message_count: 3,
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let shown = got.conversation.unwrap();
    assert_eq!((shown.message_count, shown.last_sequence), (5, 5));
    assert_eq!(shown.active_leaf_id, follow[0].id);
    let latest: Vec<i64> = got.messages.iter().map(|m| m.sequence).collect();
    assert_eq!(
        latest,
        [2, 4, 5],
        "the latest three of the active branch, oldest first"
    );

    // The active branch and the old one, in either order, one message per page and more.
    let active = ["be brief", "where to?", "Porto", "why?"];
    for size in [1, 2, 50] {
        assert_eq!(
            branch(&mut c, &ada, &conv.id, "", false, size).await,
            active
        );
        let mut newest = active.to_vec();
        newest.reverse();
        assert_eq!(branch(&mut c, &ada, &conv.id, "", true, size).await, newest);
        assert_eq!(
            branch(&mut c, &ada, &conv.id, &first[2].id, false, size).await,
            ["be brief", "where to?", "Lisbon"]
        );
    }
    // Paging back through history while the chat goes on: the token keeps its branch.
    let first_page = c
        .list_messages(bearer(
            pb::ListMessagesRequest {
                conversation_id: conv.id.clone(),
                page_size: 2,
                newest_first: true,
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    append(
        &mut c,
        &ada,
        &conv.id,
        "",
        vec![text(pb::Role::Assistant, "because")],
    )
    .await
    .unwrap();
    let rest = c
        .list_messages(bearer(
            pb::ListMessagesRequest {
                conversation_id: conv.id.clone(),
                page_size: 2,
                newest_first: true,
                page_token: first_page.next_page_token,
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let sequences: Vec<i64> = first_page
        .messages
        .iter()
        .chain(&rest.messages)
        .map(|m| m.sequence)
        .collect();
    assert_eq!(sequences, [5, 4, 2, 1]);
    // A message of another conversation is not a leaf or a parent here.
    let other = create(&mut c, &ada, pb::Conversation::default()).await;
    let elsewhere = append(
        &mut c,
        &ada,
        &other.id,
        "",
        vec![text(pb::Role::User, "hi")],
    )
    .await
    .unwrap();
    let refused = append(
        &mut c,
        &ada,
        &conv.id,
        &elsewhere[0].id,
        vec![text(pb::Role::User, "x")],
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&refused), ["parent_id"]);
    let missing = c
        .list_messages(bearer(
            pb::ListMessagesRequest {
                conversation_id: conv.id.clone(),
                leaf_id: elsewhere[0].id.clone(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn concurrent_appends_get_gap_free_numbers_and_retries_append_once() {
    let h = start().await;
    let c = Client::new(h.server.channel());
    let ada = h.user().await;
    let conv = create(&mut c.clone(), &ada, pb::Conversation::default()).await;
    let appends = (0..20).map(|i| {
        let (mut c, ada, id) = (c.clone(), ada.clone(), conv.id.clone());
        async move {
            let two = vec![
                text(pb::Role::User, &format!("q{i}")),
                text(pb::Role::Assistant, &format!("a{i}")),
            ];
            append(&mut c, &ada, &id, "", two).await.unwrap()
        }
    });
    let mut all: Vec<Vec<pb::Message>> = futures_util::future::join_all(appends).await;
    // Each append's two numbers are consecutive, the second answers the first.
    for pair in &all {
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
        assert_eq!(pair[1].parent_id, pair[0].id);
    }
    all.sort_by_key(|p| p[0].sequence);
    let numbers: Vec<i64> = all.iter().flatten().map(|m| m.sequence).collect();
    assert_eq!(numbers, (1..=40).collect::<Vec<_>>());
    // One chain: each append answers the one committed before it.
    for window in all.windows(2) {
        assert_eq!(window[1][0].parent_id, window[0][1].id);
    }

    // A retry with the same request_id returns the first attempt's messages; the same
    // id with other messages is refused.
    let mut c = c.clone();
    let request = |message: &str| pb::AppendMessagesRequest {
        conversation_id: conv.id.clone(),
        messages: vec![text(pb::Role::User, message)],
        parent_id: String::new(),
        request_id: "0190f3a4-0000-7000-8000-000000000001".into(),
    };
    let once = c
        .append_messages(bearer(request("retry me"), &ada.token))
        .await
        .unwrap()
        .into_inner();
    let twice = c
        .append_messages(bearer(request("retry me"), &ada.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(once.messages, twice.messages);
    assert_eq!(once.messages[0].sequence, 41);
    let other = c
        .append_messages(bearer(request("something else"), &ada.token))
        .await
        .unwrap_err();
    assert_eq!(other.code(), versioned_conflict_code());
    let got = c
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: conv.id.clone(),
                message_count: -1,
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.conversation.unwrap().message_count, 41);
    assert!(got.messages.is_empty());
}

/// The code a reused request_id with another payload answers (as for every create).
fn versioned_conflict_code() -> Code {
    Code::AlreadyExists
}

#[tokio::test]
async fn another_users_conversation_looks_exactly_like_a_missing_one() {
    let h = start().await;
    let mut c = Client::new(h.server.channel());
    let (ada, eve) = (h.user().await, h.user().await);
    let conv = create(
        &mut c,
        &ada,
        pb::Conversation {
            title: "mine".into(),
            ..Default::default()
        },
    )
    .await;
    append(
        &mut c,
        &ada,
        &conv.id,
        "",
        vec![text(pb::Role::User, "secret")],
    )
    .await
    .unwrap();
    let nobody = "0190f3a4-0000-7000-8000-0000000000ff";
    for id in [conv.id.as_str(), nobody] {
        let get = c
            .get_conversation(bearer(
                pb::GetConversationRequest {
                    conversation_id: id.into(),
                    message_count: 5,
                },
                &eve.token,
            ))
            .await
            .unwrap_err();
        let update = c
            .update_conversation(bearer(
                pb::UpdateConversationRequest {
                    conversation: Some(pb::Conversation {
                        id: id.into(),
                        title: "hijacked".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["title".into()],
                    }),
                },
                &eve.token,
            ))
            .await
            .unwrap_err();
        let delete = c
            .delete_conversation(bearer(
                pb::DeleteConversationRequest {
                    conversation_id: id.into(),
                },
                &eve.token,
            ))
            .await
            .unwrap_err();
        let appended = append(&mut c, &eve, id, "", vec![text(pb::Role::User, "x")])
            .await
            .unwrap_err();
        let listed = c
            .list_messages(bearer(
                pb::ListMessagesRequest {
                    conversation_id: id.into(),
                    ..Default::default()
                },
                &eve.token,
            ))
            .await
            .unwrap_err();
        for status in [get, update, delete, appended, listed] {
            assert_eq!(
                (status.code(), status.message()),
                (Code::NotFound, "conversation not found"),
                "{id}"
            );
        }
    }
    let eves = c
        .list_conversations(bearer(pb::ListConversationsRequest::default(), &eve.token))
        .await
        .unwrap()
        .into_inner();
    assert!(eves.conversations.is_empty());
    // Untouched.
    let got = c
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: conv.id.clone(),
                message_count: 5,
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.conversation.unwrap().title, "mine");
    assert_eq!(got.messages.len(), 1);
}

#[tokio::test]
async fn conversations_resolve_their_agent_filter_archive_and_refuse_bad_messages() {
    let h = start().await;
    let mut c = Client::new(h.server.channel());
    let ada = h.user().await;
    let mut agents = AgentServiceClient::new(h.server.channel());
    let agent = agents
        .create_agent(bearer(
            pb::CreateAgentRequest {
                agent: Some(pb::Agent {
                    name: "guide".into(),
                    r#type: "assistant".into(),
                    ..Default::default()
                }),
                version: Some(pb::AgentVersion {
                    model: "gpt-4o".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    let with_agent = create(
        &mut c,
        &ada,
        pb::Conversation {
            agent_id: agent.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (with_agent.agent_id.as_str(), with_agent.agent_version),
        (agent.id.as_str(), 1)
    );
    let plain = create(
        &mut c,
        &ada,
        pb::Conversation {
            title: "plain".into(),
            ..Default::default()
        },
    )
    .await;
    // Someone else's agent, or none: missing.
    let eve = h.user().await;
    let refused = c
        .create_conversation(bearer(
            pb::CreateConversationRequest {
                conversation: Some(pb::Conversation {
                    agent_id: agent.id.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &eve.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    let list = async |c: &mut Client, request: pb::ListConversationsRequest| -> Vec<String> {
        c.list_conversations(bearer(request, &ada.token))
            .await
            .unwrap()
            .into_inner()
            .conversations
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    let by_agent = list(
        &mut c,
        pb::ListConversationsRequest {
            agent_id: agent.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_agent, [with_agent.id.as_str()]);
    // Activity orders the list: a message moves a conversation first.
    append(
        &mut c,
        &ada,
        &with_agent.id,
        "",
        vec![text(pb::Role::User, "hi")],
    )
    .await
    .unwrap();
    assert_eq!(
        list(&mut c, pb::ListConversationsRequest::default()).await,
        [with_agent.id.clone(), plain.id.clone()]
    );
    // Archived ones leave the default list.
    c.update_conversation(bearer(
        pb::UpdateConversationRequest {
            conversation: Some(pb::Conversation {
                id: plain.id.clone(),
                archived: true,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["archived".into()],
            }),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    assert_eq!(
        list(&mut c, pb::ListConversationsRequest::default()).await,
        [with_agent.id.as_str()]
    );
    let archived = pb::ListConversationsRequest {
        archived: pb::ArchivedFilter::Archived.into(),
        ..Default::default()
    };
    assert_eq!(list(&mut c, archived).await, [plain.id.as_str()]);
    let all = pb::ListConversationsRequest {
        archived: pb::ArchivedFilter::All.into(),
        page_size: 1,
        ..Default::default()
    };
    let first_page = c
        .list_conversations(bearer(all.clone(), &ada.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.conversations.len(), 1);
    let second = pb::ListConversationsRequest {
        page_token: first_page.next_page_token,
        ..all
    };
    assert_eq!(list(&mut c, second).await, [plain.id.as_str()]);

    // Bad messages: nothing written, every fault named.
    let bad = vec![
        pb::NewMessage {
            usage: None,
            role: 0,
            parts: vec![],
        },
        pb::NewMessage {
            usage: None,
            role: pb::Role::Assistant.into(),
            parts: vec![
                pb::Part { kind: None },
                pb::Part {
                    kind: Some(pb::part::Kind::ToolCall(pb::ToolCall {
                        id: "c1".into(),
                        name: "no spaces".into(),
                        arguments: None,
                    })),
                },
                pb::Part {
                    kind: Some(pb::part::Kind::Text("".into())),
                },
            ],
        },
    ];
    let refused = append(&mut c, &ada, &plain.id, "", bad).await.unwrap_err();
    assert_eq!(
        violations(&refused),
        [
            "messages[0].role",
            "messages[0].parts",
            "messages[1].parts[0]",
            "messages[1].parts[1].tool_call.name",
            "messages[1].parts[2].text",
        ]
    );
    let none = append(&mut c, &ada, &plain.id, "", vec![])
        .await
        .unwrap_err();
    assert_eq!(violations(&none), ["messages"]);
    let got = c
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: plain.id.clone(),
                message_count: 0,
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.conversation.unwrap().message_count, 0);
    // Deleted, with its messages.
    c.delete_conversation(bearer(
        pb::DeleteConversationRequest {
            conversation_id: with_agent.id.clone(),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let gone = c
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: with_agent.id.clone(),
                message_count: 0,
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn a_fork_copies_the_path_to_any_message_and_stays_independent() {
    let h = start().await;
    let mut c = Client::new(h.server.channel());
    let (ada, eve) = (h.user().await, h.user().await);
    let conv = create(
        &mut c,
        &ada,
        pb::Conversation {
            title: "Plans".into(),
            ..Default::default()
        },
    )
    .await;
    let made = append(
        &mut c,
        &ada,
        &conv.id,
        "",
        vec![
            text(pb::Role::User, "one"),
            text(pb::Role::Assistant, "two"),
            text(pb::Role::User, "three"),
            text(pb::Role::Assistant, "four"),
        ],
    )
    .await
    .unwrap();
    // A side branch the fork must not take.
    append(
        &mut c,
        &ada,
        &conv.id,
        &made[0].id,
        vec![text(pb::Role::Assistant, "side")],
    )
    .await
    .unwrap();
    let forker = c.clone();
    let fork = |message: &str, user: &TestUser, request_id: &str| {
        let request = pb::ForkConversationRequest {
            conversation_id: conv.id.clone(),
            message_id: message.into(),
            title: String::new(),
            request_id: request_id.into(),
        };
        let token = user.token.clone();
        let mut c = forker.clone();
        async move { c.fork_conversation(bearer(request, &token)).await }
    };
    // From an assistant's answer: its path, renumbered 1 to n, the copy's own ids.
    let key = "0190f3a4-0000-7000-8000-0000000000aa";
    let copy = fork(&made[1].id, &ada, key)
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    assert_ne!(copy.id, conv.id);
    assert_eq!(
        (copy.title.as_str(), copy.message_count, copy.last_sequence),
        ("Plans", 2, 2)
    );
    let texts = branch(&mut c, &ada, &copy.id, "", false, 50).await;
    assert_eq!(texts, ["one", "two"]);
    let got = c
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: copy.id.clone(),
                message_count: 10,
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        got.messages
            .iter()
            .all(|m| made.iter().all(|o| o.id != m.id))
    );
    assert_eq!(got.messages[1].parent_id, got.messages[0].id);
    assert_eq!(got.conversation.unwrap().active_leaf_id, got.messages[1].id);
    // A retry returns the same copy.
    let again = fork(&made[1].id, &ada, key)
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    assert_eq!(again.id, copy.id);
    // From a user's message, the whole path of the active branch.
    let full = fork(&made[3].id, &ada, "")
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    assert_eq!(
        branch(&mut c, &ada, &full.id, "", false, 2).await,
        ["one", "two", "three", "four"]
    );
    // Independent: the original deleted, the copies stay whole.
    c.delete_conversation(bearer(
        pb::DeleteConversationRequest {
            conversation_id: conv.id.clone(),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    assert_eq!(
        branch(&mut c, &ada, &copy.id, "", true, 50).await,
        ["two", "one"]
    );
    // Another user's conversation, or a message not in it: missing.
    let other = create(&mut c, &eve, pb::Conversation::default()).await;
    let theirs = append(
        &mut c,
        &eve,
        &other.id,
        "",
        vec![text(pb::Role::User, "mine")],
    )
    .await
    .unwrap();
    let refused = c
        .fork_conversation(bearer(
            pb::ForkConversationRequest {
                conversation_id: other.id.clone(),
                message_id: theirs[0].id.clone(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::NotFound, "conversation not found")
    );
    let foreign = c
        .fork_conversation(bearer(
            pb::ForkConversationRequest {
                conversation_id: copy.id.clone(),
                message_id: theirs[0].id.clone(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
}

#[tokio::test]
async fn search_finds_the_callers_messages_ranked_with_snippets_and_filters() {
    let h = start().await;
    let mut c = Client::new(h.server.channel());
    let (ada, eve) = (h.user().await, h.user().await);
    let baking = create(&mut c, &ada, pb::Conversation::default()).await;
    let made = append(
        &mut c,
        &ada,
        &baking.id,
        "",
        vec![
            text(pb::Role::User, "How do I bake sourdough bread?"),
            text(
                pb::Role::Assistant,
                "Feed the starter, shape the bread, then bake the bread in a hot oven.",
            ),
            pb::NewMessage {
                usage: None,
                role: pb::Role::Tool.into(),
                parts: vec![pb::Part {
                    kind: Some(pb::part::Kind::ToolResult(pb::ToolResult {
                        call_id: "c1".into(),
                        content: "oven temperature 250 degrees".into(),
                        is_error: false,
                    })),
                }],
            },
        ],
    )
    .await
    .unwrap();
    let prices = create(&mut c, &ada, pb::Conversation::default()).await;
    append(
        &mut c,
        &ada,
        &prices.id,
        "",
        vec![text(pb::Role::User, "bread prices in Paris")],
    )
    .await
    .unwrap();
    let secret = create(&mut c, &eve, pb::Conversation::default()).await;
    append(
        &mut c,
        &eve,
        &secret.id,
        "",
        vec![text(pb::Role::User, "my sourdough bread secret")],
    )
    .await
    .unwrap();
    let search = async |c: &mut Client, user: &TestUser, request: pb::SearchMessagesRequest| {
        c.search_messages(bearer(request, &user.token))
            .await
            .map(|r| r.into_inner())
    };
    let ask = |query: &str| pb::SearchMessagesRequest {
        query: query.into(),
        ..Default::default()
    };
    let found = search(&mut c, &ada, ask("bread")).await.unwrap();
    let ids: Vec<&str> = found
        .hits
        .iter()
        .map(|h| h.message.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids.len(), 3, "Ada's three messages with bread, not Eve's");
    // Twice in the answer ranks above once.
    assert_eq!(ids[0], made[1].id);
    assert!(found.hits[0].rank > found.hits[1].rank);
    assert!(
        found.hits[0].snippet.contains("<b>bread</b>"),
        "{:?}",
        found.hits[0]
    );
    // Tools' answers are searched; Eve finds only her own.
    let tool = search(&mut c, &ada, ask("temperature")).await.unwrap();
    assert_eq!(tool.hits[0].message.as_ref().unwrap().id, made[2].id);
    let eves = search(&mut c, &eve, ask("oven")).await.unwrap();
    assert!(eves.hits.is_empty());
    // Filters: a role, a time range.
    let answers = search(
        &mut c,
        &ada,
        pb::SearchMessagesRequest {
            role: pb::Role::Assistant.into(),
            ..ask("bread")
        },
    )
    .await
    .unwrap();
    assert_eq!(answers.hits.len(), 1);
    let later = search(
        &mut c,
        &ada,
        pb::SearchMessagesRequest {
            time_range: Some(strata_proto::common::TimeRange {
                start_time: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() + 3600,
                    nanos: 0,
                }),
                end_time: None,
            }),
            ..ask("bread")
        },
    )
    .await
    .unwrap();
    assert!(later.hits.is_empty());
    // Pages of one: the same three, once each.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = search(
            &mut c,
            &ada,
            pb::SearchMessagesRequest {
                page_size: 1,
                page_token: token,
                ..ask("bread")
            },
        )
        .await
        .unwrap();
        seen.extend(
            page.hits
                .iter()
                .map(|h| h.message.as_ref().unwrap().id.clone()),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    let empty = search(&mut c, &ada, ask("  ")).await.unwrap_err();
    assert_eq!(violations(&empty), ["query"]);
}

#[tokio::test]
async fn a_common_search_ranks_its_newest_thousand_matches_and_a_time_range_reaches_older_ones() {
    let h = start().await;
    let mut c = Client::new(h.server.channel());
    let ada = h.user().await;
    let conv = create(&mut c, &ada, pb::Conversation::default()).await;
    // Ten old messages that say "needle" four times each, then a thousand that say it once.
    let old = append(
        &mut c,
        &ada,
        &conv.id,
        "",
        (0..10)
            .map(|i| text(pb::Role::User, &format!("needle needle needle needle {i}")))
            .collect(),
    )
    .await
    .unwrap();
    let mut newer = Vec::new();
    for round in 0..10 {
        let batch = (0..100)
            .map(|i| text(pb::Role::User, &format!("a needle in round {round} {i}")))
            .collect();
        newer.extend(append(&mut c, &ada, &conv.id, "", batch).await.unwrap());
    }
    let search = async |c: &mut Client, request: pb::SearchMessagesRequest| {
        c.search_messages(bearer(request, &ada.token))
            .await
            .unwrap()
            .into_inner()
    };
    let ask = pb::SearchMessagesRequest {
        query: "needle".into(),
        page_size: 100,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    loop {
        let page = search(
            &mut c,
            pb::SearchMessagesRequest {
                page_token: token,
                ..ask.clone()
            },
        )
        .await;
        for hit in &page.hits {
            assert!(seen.insert(hit.message.as_ref().unwrap().id.clone()));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest: std::collections::HashSet<String> = newer.iter().map(|m| m.id.clone()).collect();
    assert_eq!(seen, newest, "the newest thousand matches, each once");
    // Before the first of the thousand: the ten old ones, which rank above them all.
    let before = search(
        &mut c,
        pb::SearchMessagesRequest {
            time_range: Some(strata_proto::common::TimeRange {
                start_time: None,
                end_time: newer[0].create_time,
            }),
            ..ask.clone()
        },
    )
    .await;
    let found: Vec<&str> = before
        .hits
        .iter()
        .map(|h| h.message.as_ref().unwrap().id.as_str())
        .collect();
    let mut expected: Vec<&str> = old.iter().map(|m| m.id.as_str()).collect();
    let mut sorted = found.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    let best = search(&mut c, ask.clone()).await.hits[0].rank;
    assert!(before.hits[0].rank > best);
}

async fn edit(
    c: &mut Client,
    user: &TestUser,
    id: &str,
    message: &str,
    body: &str,
    request_id: &str,
) -> Result<pb::Message, tonic::Status> {
    c.edit_message(bearer(
        pb::EditMessageRequest {
            conversation_id: id.into(),
            message_id: message.into(),
            parts: vec![pb::Part {
                kind: Some(pb::part::Kind::Text(body.into())),
            }],
            request_id: request_id.into(),
        },
        &user.token,
    ))
    .await
    .map(|r| r.into_inner().message.unwrap())
}

#[tokio::test]
async fn an_edit_becomes_a_sibling_branch_and_keeps_the_original() {
    let h = start().await;
    let mut c = Client::new(h.server.channel());
    let ada = h.user().await;
    let conv = create(&mut c, &ada, pb::Conversation::default()).await;
    let m = append(
        &mut c,
        &ada,
        &conv.id,
        "",
        vec![
            text(pb::Role::User, "q1"),
            text(pb::Role::Assistant, "a1"),
            text(pb::Role::User, "q2"),
            text(pb::Role::Assistant, "a2"),
        ],
    )
    .await
    .unwrap();
    let retry = uuid::Uuid::now_v7().to_string();
    let edited = edit(&mut c, &ada, &conv.id, &m[2].id, "q2 again", &retry)
        .await
        .unwrap();
    assert_eq!(
        (edited.parent_id.as_str(), edited.role, edited.sequence),
        (m[1].id.as_str(), i32::from(pb::Role::User), 5)
    );
    // A retry returns the same message and appends nothing.
    let again = edit(&mut c, &ada, &conv.id, &m[2].id, "q2 again", &retry)
        .await
        .unwrap();
    assert_eq!(again, edited);
    assert_eq!(
        branch(&mut c, &ada, &conv.id, "", false, 10).await,
        ["q1", "a1", "q2 again"]
    );
    assert_eq!(
        branch(&mut c, &ada, &conv.id, &m[3].id, false, 10).await,
        ["q1", "a1", "q2", "a2"]
    );
    // Regenerating an answer: a new answer under the question.
    append(
        &mut c,
        &ada,
        &conv.id,
        &m[0].id,
        vec![text(pb::Role::Assistant, "a1 again")],
    )
    .await
    .unwrap();
    assert_eq!(
        branch(&mut c, &ada, &conv.id, "", false, 10).await,
        ["q1", "a1 again"]
    );
    // Editing the first message starts a new root.
    let root = edit(&mut c, &ada, &conv.id, &m[0].id, "q1 again", "")
        .await
        .unwrap();
    assert!(root.parent_id.is_empty());
    assert_eq!(
        branch(&mut c, &ada, &conv.id, "", false, 10).await,
        ["q1 again"]
    );

    // Someone else's conversation looks missing; a missing message is named.
    let eve = h.user().await;
    let status = edit(&mut c, &eve, &conv.id, &m[2].id, "mine", "")
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "conversation not found")
    );
    let status = edit(&mut c, &ada, &conv.id, &conv.id, "x", "")
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "message not found")
    );
    let status = edit(&mut c, &ada, &conv.id, &m[2].id, "", "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), vec!["parts[0].text".to_owned()]);
    let status = edit(&mut c, &ada, &conv.id, "", "x", "").await.unwrap_err();
    assert_eq!(violations(&status), vec!["message_id".to_owned()]);
}

async fn export(
    c: &mut Client,
    user: &TestUser,
    id: &str,
) -> Result<Vec<pb::ExportConversationResponse>, tonic::Status> {
    let mut stream = c
        .export_conversation(bearer(
            pb::ExportConversationRequest {
                conversation_id: id.into(),
            },
            &user.token,
        ))
        .await?
        .into_inner();
    let mut parts = Vec::new();
    while let Some(part) = stream.message().await? {
        parts.push(part);
    }
    Ok(parts)
}

async fn import(
    c: &mut Client,
    user: &TestUser,
    parts: Vec<pb::ImportConversationRequest>,
) -> Result<pb::Conversation, tonic::Status> {
    c.import_conversation(bearer(futures_util::stream::iter(parts), &user.token))
        .await
        .map(|r| r.into_inner().conversation.unwrap())
}

#[tokio::test]
async fn an_export_imports_into_the_same_tree_with_its_times_once_per_request_id() {
    let h = start().await;
    let mut c = Client::new(h.server.channel());
    let ada = h.user().await;
    let conv = create(
        &mut c,
        &ada,
        pb::Conversation {
            title: "Recipes".into(),
            ..Default::default()
        },
    )
    .await;
    // 1200 messages (three export pages), then a branch off the first answer.
    let mut last = String::new();
    for round in 0..12 {
        let batch = (0..100)
            .map(|i| {
                text(
                    if i % 2 == 0 {
                        pb::Role::User
                    } else {
                        pb::Role::Assistant
                    },
                    &format!("m{round}.{i}"),
                )
            })
            .collect();
        last = append(&mut c, &ada, &conv.id, "", batch)
            .await
            .unwrap()
            .pop()
            .unwrap()
            .id;
    }
    let first_answer = &branch(&mut c, &ada, &conv.id, &last, false, 500).await[1];
    assert_eq!(first_answer, "m0.1");
    let mut answers = ConversationServiceClient::clone(&c);
    let stored = answers
        .list_messages(bearer(
            pb::ListMessagesRequest {
                conversation_id: conv.id.clone(),
                page_size: 2,
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .messages;
    append(
        &mut c,
        &ada,
        &conv.id,
        &stored[1].id,
        vec![text(pb::Role::User, "branch")],
    )
    .await
    .unwrap();

    let parts = export(&mut c, &ada, &conv.id).await.unwrap();
    let exported = parts[0].conversation.clone().unwrap();
    assert_eq!(
        (exported.title.as_str(), exported.message_count),
        ("Recipes", 1201)
    );
    let messages: Vec<pb::Message> = parts.iter().flat_map(|p| p.messages.clone()).collect();
    assert_eq!(messages.len(), 1201);
    assert!(parts.iter().all(|p| p.messages.len() <= 500));
    assert!(
        messages
            .windows(2)
            .all(|w| w[0].sequence + 1 == w[1].sequence)
    );

    // Import it in three requests, as a client streams it.
    let request_id = uuid::Uuid::now_v7().to_string();
    let requests = |request_id: &str| {
        let mut requests = vec![pb::ImportConversationRequest {
            conversation: Some(exported.clone()),
            messages: messages[..400].to_vec(),
            request_id: request_id.into(),
        }];
        for chunk in messages[400..].chunks(500) {
            requests.push(pb::ImportConversationRequest {
                messages: chunk.to_vec(),
                ..Default::default()
            });
        }
        requests
    };
    let imported = import(&mut c, &ada, requests(&request_id)).await.unwrap();
    assert_ne!(imported.id, conv.id);
    assert_eq!(
        (
            imported.title.as_str(),
            imported.message_count,
            imported.last_sequence
        ),
        ("Recipes", 1201, 1201)
    );
    assert_eq!(imported.create_time, exported.create_time);
    assert_eq!(imported.last_message_time, exported.last_message_time);
    // The same tree: texts, roles, times and parents (by position), new ids.
    let copy: Vec<pb::Message> = export(&mut c, &ada, &imported.id)
        .await
        .unwrap()
        .iter()
        .flat_map(|p| p.messages.clone())
        .collect();
    let position = |list: &[pb::Message], id: &str| list.iter().position(|m| m.id == id);
    for (a, b) in messages.iter().zip(&copy) {
        assert_eq!(
            (&a.parts, a.role, &a.create_time, a.sequence),
            (&b.parts, b.role, &b.create_time, b.sequence)
        );
        assert_ne!(a.id, b.id);
        assert_eq!(
            position(&messages, &a.parent_id),
            position(&copy, &b.parent_id)
        );
    }
    assert_eq!(
        branch(&mut c, &ada, &imported.id, "", false, 500).await,
        ["m0.0", "m0.1", "branch"]
    );
    // A retry makes nothing new; the same key with other content is refused.
    let again = import(&mut c, &ada, requests(&request_id)).await.unwrap();
    assert_eq!(again.id, imported.id);
    let mut other = requests(&request_id);
    other[0].messages.truncate(10);
    other.truncate(1);
    let status = import(&mut c, &ada, other).await.unwrap_err();
    assert_eq!(status.code(), versioned_conflict_code());

    // Bad imports name the message and field, and write nothing.
    let mut bad = messages[..3].to_vec();
    bad[1].parent_id = bad[2].id.clone();
    bad[2].id = bad[0].id.clone();
    bad[0].create_time = Some(prost_types::Timestamp {
        seconds: 4_102_444_800,
        nanos: 0,
    });
    let status = import(
        &mut c,
        &ada,
        vec![pb::ImportConversationRequest {
            conversation: Some(exported.clone()),
            messages: bad,
            request_id: String::new(),
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        [
            "messages[0].create_time",
            "messages[1].parent_id",
            "messages[2].id"
        ]
    );
    let status = import(&mut c, &ada, vec![pb::ImportConversationRequest::default()])
        .await
        .unwrap_err();
    assert_eq!(violations(&status), ["conversation"]);

    // Someone else's conversation cannot be exported.
    let eve = h.user().await;
    let status = export(&mut c, &eve, &conv.id).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "conversation not found")
    );
}
