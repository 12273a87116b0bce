//! Conversations: the owner's (created with an agent, whose version is resolved for the
//! conversation, and a project; read with their latest messages; listed by last activity;
//! updated; deleted), and their messages as a tree: appended in order, atomically, as
//! children of the active leaf or of any earlier message (a sibling branch), read a page at
//! a time along a branch in either direction.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use strata_errors::{ApiError, Violations};
use strata_proto::common::Decimal;
use strata_proto::content as pb;
use strata_runtime::identity::Principal;
use strata_runtime::pagination::{
    Cursor, KeyCursor, PageContext, finish_page, page_size, page_size_within,
};
use strata_runtime::telemetry::current_traceparent;
use strata_runtime::time::{from_timestamp, timestamp};
use strata_runtime::usage;
use tonic::Request;
use uuid::Uuid;

use super::projects::write_owner;
use super::versioned::{self, mask, pick, request_hash};
use super::{ContentHandlers, SCOPE_READ, SCOPE_WRITE, caller, db_now, shared};
use crate::ContentError;
use crate::store::conversations::{self as store, Appended, CONVERSATIONS, Page, Under};
use crate::versions;
use crate::watch::{self, WatchStream};
use crate::{retention, validate};

/// Longest title.
const MAX_TITLE: usize = 200;
/// Most messages of one append.
const MAX_MESSAGES: usize = 100;
/// Most parts of one message.
const MAX_PARTS: usize = 100;
/// Longest text (of a part, of a tool's answer).
const MAX_TEXT: usize = 100_000;
/// Largest message, its parts as JSON.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Longest tool-call id.
const MAX_CALL_ID: usize = 128;
/// Longest tool name.
const MAX_TOOL_NAME: usize = 64;
/// Messages GetConversation returns by default, and at most.
const LATEST: (i64, i64) = (20, 100);
/// ListMessages page sizes: default and most.
const MESSAGE_PAGE: (i64, i64) = (50, 500);
/// Fields a read_mask may name.
const FIELDS: &[&str] = &[
    "id",
    "owner_id",
    "agent_id",
    "agent_version",
    "project_id",
    "title",
    "labels",
    "archived",
    "message_count",
    "active_leaf_id",
    "last_sequence",
    "last_message_time",
    "create_time",
    "update_time",
    "task_id",
];
const LIST: &str = "strata.content.v1.ConversationService/ListConversations";
const LIST_MESSAGES: &str = "strata.content.v1.ConversationService/ListMessages";
const SEARCH: &str = "strata.content.v1.ConversationService/SearchMessages";
/// Longest search query.
const MAX_QUERY: usize = 200;
/// Most messages of one import.
pub const MAX_IMPORT_MESSAGES: usize = 100_000;
/// Most bytes of one import's requests together.
pub const MAX_IMPORT_BYTES: usize = 64 << 20;
/// Messages per export response.
const EXPORT_PAGE: i64 = 500;
/// Bytes per export response, beyond its first message.
const EXPORT_PAGE_BYTES: usize = 3 << 20;
/// The earliest time an import may name, in Unix seconds (1970).
const EARLIEST_IMPORT: i64 = 0;
/// How far ahead of the server's clock an imported time may be (clock skew).
const MAX_IMPORT_SKEW: chrono::Duration = chrono::Duration::days(1);

/// The stream ExportConversation answers with.
pub type ExportStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<Item = Result<pb::ExportConversationResponse, tonic::Status>>
            + Send,
    >,
>;

fn conversation_proto(row: &store::ConversationRow) -> pb::Conversation {
    pb::Conversation {
        id: row.id.to_string(),
        owner_id: row.owner_id.to_string(),
        agent_id: row.agent_id.map(|a| a.to_string()).unwrap_or_default(),
        agent_version: row.agent_version.unwrap_or_default(),
        project_id: row.project_id.map(|p| p.to_string()).unwrap_or_default(),
        title: row.title.clone(),
        labels: validate::labels_map(&row.labels),
        archived: row.archived,
        message_count: row.message_count,
        active_leaf_id: row.active_leaf.map(|m| m.to_string()).unwrap_or_default(),
        last_sequence: row.last_sequence,
        last_message_time: row.last_message_at.map(timestamp),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        task_id: row.task_id.map(|t| t.to_string()).unwrap_or_default(),
    }
}

fn masked(conversation: pb::Conversation, fields: &[&str]) -> pb::Conversation {
    mask!(
        conversation,
        fields,
        [
            id,
            owner_id,
            agent_id,
            agent_version,
            project_id,
            title,
            labels,
            archived,
            message_count,
            active_leaf_id,
            last_sequence,
            last_message_time,
            create_time,
            update_time,
            task_id,
        ]
    )
}

pub(crate) fn message_proto(row: &store::MessageRow) -> pb::Message {
    pb::Message {
        id: row.id.to_string(),
        conversation_id: row.conversation_id.to_string(),
        parent_id: row.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        sequence: row.sequence,
        role: i32::from(row.role),
        parts: parts_proto(&row.parts),
        create_time: Some(timestamp(row.created_at)),
        usage: row.usage.as_ref().map(usage_proto),
    }
}

/// Stored usage as its proto.
fn usage_proto(usage: &serde_json::Value) -> pb::TokenUsage {
    let text = |key: &str| {
        usage
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let number = |key: &str| {
        usage
            .get(key)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or_default()
    };
    pb::TokenUsage {
        model: text("model"),
        provider: text("provider"),
        prompt_tokens: number("prompt_tokens"),
        completion_tokens: number("completion_tokens"),
        cost: Some(Decimal {
            value: text("cost"),
        }),
    }
}

/// Checks a message's usage by analytics' rules (so the shipper is never refused) and
/// returns it as stored.
fn check_usage(v: &mut Violations, field: &str, usage: &pb::TokenUsage) -> serde_json::Value {
    let mut check = |name: &str, result: Result<serde_json::Value, String>| {
        result.unwrap_or_else(|e| {
            v.add(format!("{field}.{name}"), e);
            serde_json::Value::Null
        })
    };
    let model = check("model", usage::check_model(&usage.model).map(Into::into));
    let provider = check(
        "provider",
        usage::check_provider(&usage.provider).map(Into::into),
    );
    let prompt = check(
        "prompt_tokens",
        usage::check_tokens(usage.prompt_tokens).map(Into::into),
    );
    let completion = check(
        "completion_tokens",
        usage::check_tokens(usage.completion_tokens).map(Into::into),
    );
    let cost = match &usage.cost {
        None => check("cost", Err("is required".into())),
        Some(cost) => check("cost.value", usage::check_cost(&cost.value).map(Into::into)),
    };
    serde_json::json!({
        "model": model,
        "provider": provider,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost": cost,
    })
}

/// Stored parts (`[{"text": …} | {"tool_call": {…}} | {"tool_result": {…}}]`) as protos.
fn parts_proto(parts: &serde_json::Value) -> Vec<pb::Part> {
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let kinds = parts.as_array().map(Vec::as_slice).unwrap_or_default();
    kinds
        .iter()
        .filter_map(|part| {
            let kind = if let Some(t) = part.get("text").and_then(serde_json::Value::as_str) {
                pb::part::Kind::Text(t.to_owned())
            } else if let Some(call) = part.get("tool_call") {
                pb::part::Kind::ToolCall(pb::ToolCall {
                    id: text(call, "id"),
                    name: text(call, "name"),
                    arguments: call.get("arguments").map(validate::json_to_struct),
                })
            } else if let Some(result) = part.get("tool_result") {
                pb::part::Kind::ToolResult(pb::ToolResult {
                    call_id: text(result, "call_id"),
                    content: text(result, "content"),
                    is_error: result
                        .get("is_error")
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(false),
                })
            } else {
                return None;
            };
            Some(pb::Part { kind: Some(kind) })
        })
        .collect()
}

/// Checks a message's role and parts; its parts as stored JSON.
fn check_message(v: &mut Violations, field: &str, message: &pb::NewMessage) -> store::NewMessage {
    // Paths under `field` (the request's own fields when it is empty).
    let at = |name: &str| {
        if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        }
    };
    let role = match pb::Role::try_from(message.role) {
        Ok(pb::Role::User) => 1,
        Ok(pb::Role::Assistant) => 2,
        Ok(pb::Role::System) => 3,
        Ok(pb::Role::Tool) => 4,
        Ok(pb::Role::Unspecified) | Err(_) => {
            v.add(at("role"), "must be USER, ASSISTANT, SYSTEM or TOOL");
            0
        }
    };
    let mut parts = Vec::new();
    if message.parts.is_empty() || message.parts.len() > MAX_PARTS {
        v.add(at("parts"), format!("must hold 1 to {MAX_PARTS} parts"));
    } else {
        let mut call_ids: Vec<&str> = Vec::new();
        for (i, part) in message.parts.iter().enumerate() {
            let at = at(&format!("parts[{i}]"));
            parts.push(match &part.kind {
                None => {
                    v.add(at, "must hold text, a tool call or a tool result");
                    serde_json::Value::Null
                }
                Some(pb::part::Kind::Text(text)) => {
                    if text.is_empty() {
                        v.add(format!("{at}.text"), "must not be empty");
                    }
                    validate::long_text(v, &format!("{at}.text"), text, MAX_TEXT);
                    serde_json::json!({ "text": text })
                }
                Some(pb::part::Kind::ToolCall(call)) => {
                    validate::text(v, &format!("{at}.tool_call.id"), &call.id, 1, MAX_CALL_ID);
                    if call_ids.contains(&call.id.as_str()) {
                        v.add(format!("{at}.tool_call.id"), "is another call's id");
                    }
                    call_ids.push(&call.id);
                    let name_ok = (1..=MAX_TOOL_NAME).contains(&call.name.len())
                        && call
                            .name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if !name_ok {
                        v.add(
                            format!("{at}.tool_call.name"),
                            format!("must be 1 to {MAX_TOOL_NAME} letters, digits, _ or -"),
                        );
                    }
                    let arguments = validate::json(
                        v,
                        &format!("{at}.tool_call.arguments"),
                        call.arguments.as_ref(),
                    );
                    serde_json::json!({
                        "tool_call": { "id": call.id, "name": call.name, "arguments": arguments }
                    })
                }
                Some(pb::part::Kind::ToolResult(result)) => {
                    let field = format!("{at}.tool_result.call_id");
                    validate::text(v, &field, &result.call_id, 1, MAX_CALL_ID);
                    let field = format!("{at}.tool_result.content");
                    validate::long_text(v, &field, &result.content, MAX_TEXT);
                    serde_json::json!({
                        "tool_result": {
                            "call_id": result.call_id,
                            "content": result.content,
                            "is_error": result.is_error,
                        }
                    })
                }
            });
        }
    }
    let parts = serde_json::Value::Array(parts);
    if parts.to_string().len() > MAX_MESSAGE_BYTES {
        v.add(
            at("parts"),
            format!("must be at most {MAX_MESSAGE_BYTES} bytes as JSON"),
        );
    }
    let usage = message
        .usage
        .as_ref()
        .map(|u| check_usage(v, &at("usage"), u));
    store::NewMessage { role, parts, usage }
}

impl ContentHandlers {
    /// A conversation `principal` may read (theirs; any for an admin), through the cache.
    async fn visible_conversation(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<Arc<pb::Conversation>, ContentError> {
        let db = self.ctx.db.clone();
        let conversation = self
            .conversations
            .get_or_load(&id.to_string(), || async move {
                let mut conn = db.get().await?;
                let row = store::conversation(&mut conn, id).await?;
                Ok::<_, strata_storage::Error>(row.as_ref().map(conversation_proto))
            })
            .await
            .map_err(shared)?;
        match conversation {
            Some(c) if c.owner_id == principal.user_id.to_string() || principal.is_admin() => Ok(c),
            _ => Err(ContentError::not_found("conversation")),
        }
    }

    async fn conversation_changed(&self, id: Uuid) {
        self.conversations.invalidate(&[id.to_string()]).await;
    }
}

/// `CreateConversation`.
pub async fn create_conversation(
    h: &ContentHandlers,
    request: Request<pb::CreateConversationRequest>,
) -> Result<pb::CreateConversationResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let conversation = req.conversation.unwrap_or_default();
    let mut v = Violations::new();
    let new = check_new(&mut v, &conversation, &req.request_id);
    v.finish()?;
    let id = create(h, &principal, conversation, new, None).await?;
    let conversation = (*h.visible_conversation(&principal, id).await?).clone();
    Ok(pb::CreateConversationResponse {
        conversation: Some(conversation),
    })
}

/// What creating a conversation needs, checked: its request id, agent and project.
struct Checked {
    request_id: Option<Uuid>,
    agent: Option<Uuid>,
    project: Option<Uuid>,
    task: Option<Uuid>,
}

/// Checks a new conversation's fields (under `conversation.`) and `request_id`.
fn check_new(v: &mut Violations, conversation: &pb::Conversation, request_id: &str) -> Checked {
    validate::text(v, "conversation.title", &conversation.title, 0, MAX_TITLE);
    validate::labels(v, "conversation.labels", &conversation.labels);
    Checked {
        request_id: validate::request_id(v, request_id),
        agent: validate::optional_id(v, "conversation.agent_id", &conversation.agent_id),
        project: validate::optional_id(v, "conversation.project_id", &conversation.project_id),
        task: validate::optional_id(v, "conversation.task_id", &conversation.task_id),
    }
}

/// An import's messages and the conversation's recorded state.
struct Import {
    messages: Vec<store::ImportedMessage>,
    created_at: DateTime<Utc>,
    archived: bool,
    /// SHA-256 over the messages as received, for the request hash.
    digest: Vec<u8>,
}

/// Creates the conversation (with an import's messages), or returns the one an earlier
/// attempt with the same request id created.
async fn create(
    h: &ContentHandlers,
    principal: &Principal,
    conversation: pb::Conversation,
    checked: Checked,
    import: Option<Import>,
) -> Result<Uuid, ContentError> {
    let Checked {
        request_id,
        agent,
        project,
        task,
    } = checked;
    let labels = validate::labels_json(&conversation.labels);
    let digest = import
        .as_ref()
        .map(|i| i.digest.as_slice())
        .unwrap_or_default();
    let hash = request_hash(&[
        if import.is_some() {
            b"import"
        } else {
            b"create"
        },
        conversation.title.as_bytes(),
        conversation.agent_id.as_bytes(),
        conversation.project_id.as_bytes(),
        labels.to_string().as_bytes(),
        digest,
        conversation.task_id.as_bytes(),
    ]);
    let owner = principal.user_id;
    let mut conn = h.ctx.db.get().await?;
    let replayed = versioned::replayed(&mut conn, CONVERSATIONS, owner, request_id, &hash).await?;
    drop(conn);
    if let Some(id) = replayed {
        return Ok(id);
    }
    let id = Uuid::now_v7();
    // The agent's version for this conversation: its `production` label (split by the
    // conversation's id when weighted), else its latest version.
    let agent = match agent {
        None => None,
        Some(agent) => {
            let head = h.visible_agent(principal, agent).await?;
            let selected = versions::select(None, &head.version_labels)?;
            let (_, number) = pick(agent, &selected, &id.to_string());
            Some((agent, number))
        }
    };
    if let Some(project) = project {
        h.visible_project(principal, project).await?;
    }
    if let Some(task) = task {
        h.visible_task(principal, task).await?;
    }
    let new = store::NewConversation {
        id,
        owner_id: owner,
        agent,
        project_id: project,
        title: conversation.title,
        labels,
        request_id,
        request_hash: hash.clone(),
        task_id: task,
    };
    let now = db_now();
    let mut conn = h.ctx.db.get().await?;
    let inserted = match &import {
        None => store::insert_conversation(&mut conn, &new, now).await,
        Some(import) => {
            store::import_conversation(
                &mut conn,
                &new,
                &import.messages,
                import.created_at,
                import.archived,
                now,
            )
            .await
        }
    };
    match inserted {
        Ok(()) => Ok(id),
        Err(e) => {
            let request = (request_id, hash.as_slice());
            let table = (CONVERSATIONS, "conversation");
            versioned::create_failed(&mut conn, table, owner, request, e, None).await
        }
    }
}

/// `ExportConversation`: the conversation as of the call, then its messages a page at a
/// time from the primary key.
pub async fn export_conversation(
    h: &ContentHandlers,
    request: Request<pb::ExportConversationRequest>,
) -> Result<ExportStream, ContentError> {
    use futures_util::StreamExt as _;
    let principal = caller(&request, SCOPE_READ)?;
    let id = validate::id("conversation_id", &request.get_ref().conversation_id)?;
    // Read afresh (not through the cache): its last sequence bounds the export.
    let mut conn = h.ctx.db.get().await?;
    let row = store::conversation(&mut conn, id).await?;
    drop(conn);
    let row = row
        .filter(|r| r.owner_id == principal.user_id || principal.is_admin())
        .ok_or_else(|| ContentError::not_found("conversation"))?;
    let upto = row.last_sequence;
    let head = pb::ExportConversationResponse {
        conversation: Some(conversation_proto(&row)),
        messages: Vec::new(),
    };
    let db = h.ctx.db.clone();
    let pages = futures_util::stream::unfold(0i64, move |last| {
        let db = db.clone();
        async move {
            if last >= upto {
                return None;
            }
            let to = (last + EXPORT_PAGE).min(upto);
            let read = async {
                let mut conn = db.get().await?;
                Ok::<_, strata_storage::Error>(
                    store::messages_between(&mut conn, id, last + 1, to).await?,
                )
            };
            Some(match read.await {
                // Numbers are gap-free: fewer rows than asked means the conversation was
                // deleted meanwhile, and the export would be incomplete.
                Ok(rows) if rows.len() as i64 != to - last => (
                    Err(tonic::Status::from(ApiError::from(
                        ContentError::not_found("conversation"),
                    ))),
                    upto,
                ),
                Ok(rows) => {
                    // Pages stay under what a client accepts by default (4 MiB).
                    let mut messages = Vec::new();
                    let mut bytes = 0;
                    let mut next = last;
                    for row in &rows {
                        let message = message_proto(row);
                        bytes += prost::Message::encoded_len(&message);
                        if bytes > EXPORT_PAGE_BYTES && !messages.is_empty() {
                            break;
                        }
                        next = row.sequence;
                        messages.push(message);
                    }
                    (
                        Ok(pb::ExportConversationResponse {
                            conversation: None,
                            messages,
                        }),
                        next,
                    )
                }
                // The stream ends after the error.
                Err(e) => (Err(tonic::Status::from(ApiError::from(e))), upto),
            })
        }
    });
    Ok(Box::pin(
        futures_util::stream::once(async { Ok(head) }).chain(pages),
    ))
}

/// Reads an import's requests, refusing more than [`MAX_IMPORT_MESSAGES`] messages or
/// [`MAX_IMPORT_BYTES`] bytes as soon as they are passed.
async fn receive_import(
    stream: &mut tonic::Streaming<pb::ImportConversationRequest>,
) -> Result<Vec<pb::ImportConversationRequest>, tonic::Status> {
    use prost::Message as _;
    let (mut parts, mut bytes, mut count) = (Vec::new(), 0usize, 0usize);
    while let Some(part) = stream.message().await? {
        bytes += part.encoded_len();
        count += part.messages.len();
        if count > MAX_IMPORT_MESSAGES || bytes > MAX_IMPORT_BYTES {
            let error = ContentError::invalid(
                "messages",
                format!(
                    "an import holds at most {MAX_IMPORT_MESSAGES} messages and {} MiB",
                    MAX_IMPORT_BYTES >> 20
                ),
            );
            return Err(tonic::Status::from(ApiError::from(error)));
        }
        parts.push(part);
    }
    Ok(parts)
}

/// `ImportConversation`, once its requests are received.
pub async fn import_conversation(
    h: &ContentHandlers,
    principal: &Principal,
    parts: Vec<pb::ImportConversationRequest>,
) -> Result<pb::ImportConversationResponse, ContentError> {
    use prost::Message as _;
    use sha2::Digest as _;
    let mut parts = parts.into_iter();
    let first = parts.next().unwrap_or_default();
    let mut v = Violations::new();
    let Some(conversation) = first.conversation else {
        return Err(ContentError::invalid(
            "conversation",
            "is required (in the first request)",
        ));
    };
    let checked = check_new(&mut v, &conversation, &first.request_id);
    let now = Utc::now();
    let in_range =
        |t: &DateTime<Utc>| t.timestamp() >= EARLIEST_IMPORT && *t <= now + MAX_IMPORT_SKEW;
    let created_at = match conversation.create_time.as_ref().map(from_timestamp) {
        None => None,
        Some(Some(t)) if in_range(&t) => Some(t),
        Some(_) => {
            v.add(
                "conversation.create_time",
                "must be a time from 1970 on, not in the future",
            );
            None
        }
    };
    let mut originals: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    let mut messages = Vec::new();
    let mut digest = sha2::Sha256::new();
    let mut batches = vec![first.messages];
    for part in parts {
        if part.conversation.is_some() || !part.request_id.is_empty() {
            v.add("conversation", "belongs in the first request only");
        }
        batches.push(part.messages);
    }
    for (i, message) in batches.into_iter().flatten().enumerate() {
        let field = format!("messages[{i}]");
        digest.update(message.encode_to_vec());
        let original = match Uuid::try_parse(&message.id) {
            Ok(id) if !originals.contains_key(&id) => Some(id),
            Ok(_) => {
                v.add(
                    format!("{field}.id"),
                    "is used by an earlier message of the import",
                );
                None
            }
            Err(_) => {
                v.add(
                    format!("{field}.id"),
                    "must be a UUID (the message's original id)",
                );
                None
            }
        };
        let parent = if message.parent_id.is_empty() {
            None
        } else {
            let found = Uuid::try_parse(&message.parent_id)
                .ok()
                .and_then(|p| originals.get(&p).copied());
            if found.is_none() {
                v.add(
                    format!("{field}.parent_id"),
                    "must be the id of an earlier message of the import",
                );
            }
            found
        };
        let created = match message.create_time.as_ref().map(from_timestamp) {
            None => now,
            Some(Some(t)) if in_range(&t) => t,
            Some(_) => {
                v.add(
                    format!("{field}.create_time"),
                    "must be a time from 1970 on, not in the future",
                );
                now
            }
        };
        let checked_message = check_message(
            &mut v,
            &field,
            &pb::NewMessage {
                role: message.role,
                parts: message.parts,
                usage: message.usage,
            },
        );
        if let Some(original) = original {
            originals.insert(original, i);
        }
        messages.push(store::ImportedMessage {
            parent,
            message: checked_message,
            created_at: created,
        });
    }
    v.finish()?;
    let first_message = messages.iter().map(|m| m.created_at).min();
    let import = Import {
        created_at: created_at.or(first_message).unwrap_or(now),
        archived: conversation.archived,
        messages,
        digest: digest.finalize().to_vec(),
    };
    let id = create(h, principal, conversation, checked, Some(import)).await?;
    let conversation = (*h.visible_conversation(principal, id).await?).clone();
    Ok(pb::ImportConversationResponse {
        conversation: Some(conversation),
    })
}

/// The project a retention policy names: one the caller owns (an admin: any), else the
/// project looks missing.
async fn policy_project(
    h: &ContentHandlers,
    principal: &Principal,
    field: &str,
    value: &str,
) -> Result<(Uuid, Option<Uuid>), ContentError> {
    let mut v = Violations::new();
    let project = validate::optional_id(&mut v, field, value);
    v.finish()?;
    let Some(project) = project else {
        return Ok((principal.user_id, None));
    };
    let found = h.visible_project(principal, project).await?;
    let owner = Uuid::parse_str(&found.owner_id).unwrap_or_default();
    if owner != principal.user_id && !principal.is_admin() {
        return Err(ContentError::not_found("project"));
    }
    Ok((owner, Some(project)))
}

fn policy_proto(project: Option<Uuid>, row: Option<&retention::PolicyRow>) -> pb::RetentionPolicy {
    pb::RetentionPolicy {
        project_id: project.map(|p| p.to_string()).unwrap_or_default(),
        archive_after_days: row.and_then(|r| r.archive_after_days).unwrap_or_default(),
        delete_after_days: row.and_then(|r| r.delete_after_days).unwrap_or_default(),
        update_time: row.map(|r| timestamp(r.updated_at)),
    }
}

/// `GetRetentionPolicy`.
pub async fn get_retention_policy(
    h: &ContentHandlers,
    request: Request<pb::GetRetentionPolicyRequest>,
) -> Result<pb::GetRetentionPolicyResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let (owner, project) =
        policy_project(h, &principal, "project_id", &request.get_ref().project_id).await?;
    let mut conn = h.ctx.db.get().await?;
    let row = retention::policy(&mut conn, owner, project).await?;
    Ok(pb::GetRetentionPolicyResponse {
        policy: Some(policy_proto(project, row.as_ref())),
    })
}

/// `SetRetentionPolicy`.
pub async fn set_retention_policy(
    h: &ContentHandlers,
    request: Request<pb::SetRetentionPolicyRequest>,
) -> Result<pb::SetRetentionPolicyResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let Some(policy) = request.into_inner().policy else {
        return Err(ContentError::invalid(
            "policy",
            "is required (both days 0 removes it)",
        ));
    };
    let mut v = Violations::new();
    let mut days = |field: &str, value: i32| match value {
        0 => None,
        1..=retention::MAX_DAYS => Some(value),
        _ => {
            v.add(
                format!("policy.{field}"),
                format!("must be 0 (never) or 1 to {}", retention::MAX_DAYS),
            );
            None
        }
    };
    let archive = days("archive_after_days", policy.archive_after_days);
    let delete = days("delete_after_days", policy.delete_after_days);
    v.finish()?;
    let (owner, project) =
        policy_project(h, &principal, "policy.project_id", &policy.project_id).await?;
    let mut conn = h.ctx.db.get().await?;
    let row = retention::set_policy(&mut conn, owner, project, archive, delete, db_now()).await?;
    Ok(pb::SetRetentionPolicyResponse {
        policy: Some(policy_proto(project, row.as_ref())),
    })
}

impl ContentHandlers {
    /// One retention round (the `content.retention` task): archives and deletes what the
    /// policies say, then forgets the cached conversations it changed.
    pub async fn apply_retention(&self) -> Result<retention::Applied, ContentError> {
        let mut conn = self.ctx.db.get().await?;
        let applied = retention::apply(&mut conn, db_now()).await?;
        drop(conn);
        let changed: Vec<String> = applied
            .archived
            .iter()
            .chain(&applied.deleted)
            .map(Uuid::to_string)
            .collect();
        if !changed.is_empty() {
            self.conversations.invalidate(&changed).await;
            tracing::info!(
                archived = applied.archived.len(),
                deleted = applied.deleted.len(),
                "retention applied"
            );
        }
        Ok(applied)
    }
}

/// `GetConversation`.
pub async fn get_conversation(
    h: &ContentHandlers,
    request: Request<pb::GetConversationRequest>,
) -> Result<pb::GetConversationResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("conversation_id", &req.conversation_id)?;
    let count = match req.message_count {
        n if n < 0 => 0,
        n => page_size_within(n, LATEST.0, LATEST.1)?,
    };
    let conversation = h.visible_conversation(&principal, id).await?;
    let leaf = Uuid::parse_str(&conversation.active_leaf_id).ok();
    let mut messages = match leaf {
        Some(leaf) if count > 0 => {
            let mut conn = h.ctx.db.get().await?;
            let page = Page::Newest { before: None };
            store::branch_page(&mut conn, id, leaf, page, count).await?
        }
        _ => Vec::new(),
    };
    messages.reverse();
    Ok(pb::GetConversationResponse {
        conversation: Some((*conversation).clone()),
        messages: messages.iter().map(message_proto).collect(),
    })
}

/// `ListConversations`.
pub async fn list_conversations(
    h: &ContentHandlers,
    request: Request<pb::ListConversationsRequest>,
) -> Result<pb::ListConversationsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let limit = page_size(req.page_size)?;
    let fields = validate::read_mask(req.read_mask.as_ref(), FIELDS)?;
    let mut v = Violations::new();
    let agent_id = validate::optional_id(&mut v, "agent_id", &req.agent_id);
    let project_id = validate::optional_id(&mut v, "project_id", &req.project_id);
    let task_id = validate::optional_id(&mut v, "task_id", &req.task_id);
    let archived = match pb::ArchivedFilter::try_from(req.archived) {
        Ok(pb::ArchivedFilter::Unspecified | pb::ArchivedFilter::Active) => Some(false),
        Ok(pb::ArchivedFilter::Archived) => Some(true),
        Ok(pb::ArchivedFilter::All) => None,
        Err(_) => {
            v.add("archived", "is not an ArchivedFilter");
            None
        }
    };
    v.finish()?;
    let filter = store::ConversationFilter {
        agent_id,
        project_id,
        archived,
        task_id,
    };
    let archived_key = req.archived.to_string();
    let context = PageContext::new(
        LIST,
        &principal.user_id,
        &[&req.agent_id, &req.project_id, &archived_key, &req.task_id],
    );
    let after = Cursor::decode(&req.page_token, &context)?.map(|c| (c.time, c.id));
    let mut conn = h.ctx.db.get().await?;
    let rows =
        store::list_conversations(&mut conn, principal.user_id, &filter, after, limit + 1).await?;
    drop(conn);
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        Cursor {
            time: last.active_at,
            id: last.id,
        }
        .encode(&context)
    });
    Ok(pb::ListConversationsResponse {
        conversations: rows
            .iter()
            .map(|r| masked(conversation_proto(r), &fields))
            .collect(),
        next_page_token,
    })
}

/// `UpdateConversation`.
pub async fn update_conversation(
    h: &ContentHandlers,
    request: Request<pb::UpdateConversationRequest>,
) -> Result<pb::UpdateConversationResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let conversation = req.conversation.unwrap_or_default();
    let id = validate::id("conversation.id", &conversation.id)?;
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field");
    }
    let mut changes = store::ConversationChanges::default();
    for path in &paths {
        match path.as_str() {
            "title" => {
                let title = &conversation.title;
                validate::text(&mut v, "conversation.title", title, 0, MAX_TITLE);
                changes.title = Some(title.clone());
            }
            "labels" => {
                validate::labels(&mut v, "conversation.labels", &conversation.labels);
                changes.labels = Some(validate::labels_json(&conversation.labels));
            }
            "archived" => changes.archived = Some(conversation.archived),
            other => v.add(
                "update_mask",
                format!("{other:?} cannot be updated (updatable: title, labels, archived)"),
            ),
        }
    }
    v.finish()?;
    let mut conn = h.ctx.db.get().await?;
    let owner = write_owner(&principal);
    if !store::update_conversation(&mut conn, id, owner, &changes, db_now()).await? {
        return Err(ContentError::not_found("conversation"));
    }
    drop(conn);
    h.conversation_changed(id).await;
    let conversation = (*h.visible_conversation(&principal, id).await?).clone();
    Ok(pb::UpdateConversationResponse {
        conversation: Some(conversation),
    })
}

/// `DeleteConversation`.
pub async fn delete_conversation(
    h: &ContentHandlers,
    request: Request<pb::DeleteConversationRequest>,
) -> Result<pb::DeleteConversationResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let id = validate::id("conversation_id", &request.get_ref().conversation_id)?;
    let mut conn = h.ctx.db.get().await?;
    if !store::delete_conversation(&mut conn, id, write_owner(&principal)).await? {
        return Err(ContentError::not_found("conversation"));
    }
    drop(conn);
    h.conversation_changed(id).await;
    Ok(pb::DeleteConversationResponse {})
}

/// `WatchConversation`: see [`crate::watch`].
pub async fn watch_conversation(
    h: &ContentHandlers,
    request: Request<pb::WatchConversationRequest>,
) -> Result<WatchStream, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("conversation_id", &req.conversation_id)?;
    if req.from_sequence < 0 {
        return Err(ContentError::invalid(
            "from_sequence",
            "must not be negative",
        ));
    }
    let conversation = h.visible_conversation(&principal, id).await?;
    // The cached row may trail the table by a few appends; far beyond it is a mistake.
    if req.from_sequence > conversation.last_sequence + MAX_MESSAGES as i64 {
        return Err(ContentError::invalid(
            "from_sequence",
            "is beyond the conversation's last sequence",
        ));
    }
    watch::stream(
        Arc::clone(&h.ctx),
        &h.hub,
        principal.user_id,
        id,
        req.from_sequence,
    )
}

/// `AppendMessages`.
pub async fn append_messages(
    h: &ContentHandlers,
    request: Request<pb::AppendMessagesRequest>,
) -> Result<pb::AppendMessagesResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let id = validate::id("conversation_id", &req.conversation_id)?;
    let mut v = Violations::new();
    let parent = validate::optional_id(&mut v, "parent_id", &req.parent_id);
    let request_id = validate::request_id(&mut v, &req.request_id);
    let mut messages = Vec::new();
    if req.messages.is_empty() || req.messages.len() > MAX_MESSAGES {
        v.add(
            "messages",
            format!("must hold 1 to {MAX_MESSAGES} messages"),
        );
    } else {
        for (i, message) in req.messages.iter().enumerate() {
            messages.push(check_message(&mut v, &format!("messages[{i}]"), message));
        }
    }
    v.finish()?;
    let under = parent.map_or(Under::ActiveLeaf, Under::Message);
    let rows = append(h, &principal, id, under, &messages, request_id).await?;
    Ok(pb::AppendMessagesResponse {
        messages: rows.iter().map(message_proto).collect(),
    })
}

/// Appends checked `messages` to conversation `id` under `under`, replaying
/// `request_id`'s first attempt; then tells the cache.
async fn append(
    h: &ContentHandlers,
    principal: &Principal,
    id: Uuid,
    under: Under,
    messages: &[store::NewMessage],
    request_id: Option<Uuid>,
) -> Result<Vec<store::MessageRow>, ContentError> {
    let under_key = match under {
        Under::ActiveLeaf => String::new(),
        Under::Root => "root".to_owned(),
        Under::Message(p) => p.to_string(),
    };
    let mut parts: Vec<Vec<u8>> = vec![b"append".to_vec(), under_key.into_bytes()];
    for m in messages {
        parts.push(m.role.to_be_bytes().to_vec());
        parts.push(m.parts.to_string().into_bytes());
        parts.push(
            m.usage
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
                .into_bytes(),
        );
    }
    let hash = request_hash(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let request = request_id.map(|r| (r, hash.as_slice()));
    let traceparent = current_traceparent();
    let mut conn = h.ctx.db.get().await?;
    let owner = write_owner(principal);
    let appended = store::append_messages(
        &mut conn,
        id,
        owner,
        under,
        messages,
        request,
        traceparent.as_deref(),
        db_now(),
    )
    .await?;
    drop(conn);
    let rows = match appended {
        Appended::NotFound => return Err(ContentError::not_found("conversation")),
        Appended::NoParent => {
            return Err(ContentError::invalid(
                "parent_id",
                "is not a message of this conversation",
            ));
        }
        Appended::Conflict => return Err(versioned::conflict()),
        Appended::Messages(rows) => rows,
    };
    h.conversation_changed(id).await;
    Ok(rows)
}

/// `EditMessage`: the new text becomes a sibling of the edited message (same parent, same
/// role) and the active leaf; the original and what followed it stay on their branch.
pub async fn edit_message(
    h: &ContentHandlers,
    request: Request<pb::EditMessageRequest>,
) -> Result<pb::EditMessageResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let id = validate::id("conversation_id", &req.conversation_id)?;
    let mut v = Violations::new();
    let message = validate::optional_id(&mut v, "message_id", &req.message_id);
    if req.message_id.is_empty() {
        v.add("message_id", "is required");
    }
    let request_id = validate::request_id(&mut v, &req.request_id);
    // The role is the edited message's; any valid one checks the parts.
    let mut edited = check_message(
        &mut v,
        "",
        &pb::NewMessage {
            role: pb::Role::User.into(),
            parts: req.parts,
            usage: None,
        },
    );
    v.finish()?;
    let Some(message) = message else {
        return Err(ContentError::invalid("message_id", "is required"));
    };
    let mut conn = h.ctx.db.get().await?;
    let place = store::message_place(&mut conn, id, write_owner(&principal), message).await?;
    drop(conn);
    let (parent, role) = match place {
        store::Place::NoConversation => return Err(ContentError::not_found("conversation")),
        store::Place::NoMessage => return Err(ContentError::not_found("message")),
        store::Place::Found { parent, role } => (parent, role),
    };
    edited.role = role;
    let under = parent.map_or(Under::Root, Under::Message);
    let rows = append(h, &principal, id, under, &[edited], request_id).await?;
    Ok(pb::EditMessageResponse {
        message: rows.first().map(message_proto),
    })
}

/// `ListMessages`.
pub async fn list_messages(
    h: &ContentHandlers,
    request: Request<pb::ListMessagesRequest>,
) -> Result<pb::ListMessagesResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("conversation_id", &req.conversation_id)?;
    let mut v = Violations::new();
    let leaf = validate::optional_id(&mut v, "leaf_id", &req.leaf_id);
    v.finish()?;
    let limit = page_size_within(req.page_size, MESSAGE_PAGE.0, MESSAGE_PAGE.1)?;
    let conversation = h.visible_conversation(&principal, id).await?;
    // The token holds the leaf its pages follow: appends that move the active leaf meanwhile
    // do not change the branch a reader is paging through.
    let order = if req.newest_first { "newest" } else { "oldest" };
    let context = PageContext::new(
        LIST_MESSAGES,
        &principal.user_id,
        &[&req.conversation_id, &req.leaf_id, order],
    );
    let (leaf, bound) = match KeyCursor::decode(&req.page_token, &context)? {
        Some(cursor) => {
            let mut reader = cursor.reader();
            let leaf = reader.uuid()?;
            let sequence = reader.i64()?;
            reader.end()?;
            (leaf, Some(sequence))
        }
        None => match leaf.or_else(|| Uuid::parse_str(&conversation.active_leaf_id).ok()) {
            Some(leaf) => (leaf, None),
            // No message yet.
            None => return Ok(pb::ListMessagesResponse::default()),
        },
    };
    let page = if req.newest_first {
        Page::Newest { before: bound }
    } else {
        Page::Oldest { after: bound }
    };
    let mut conn = h.ctx.db.get().await?;
    if leaf.to_string() != conversation.active_leaf_id
        && !store::has_message(&mut conn, id, leaf).await?
    {
        return Err(ContentError::Api(ApiError::not_found("message")));
    }
    let rows = store::branch_page(&mut conn, id, leaf, page, limit + 1).await?;
    drop(conn);
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        KeyCursor::default()
            .push_uuid(&leaf)
            .push_i64(last.sequence)
            .encode(&context)
    });
    Ok(pb::ListMessagesResponse {
        messages: rows.iter().map(message_proto).collect(),
        next_page_token,
    })
}

/// `ForkConversation`.
pub async fn fork_conversation(
    h: &ContentHandlers,
    request: Request<pb::ForkConversationRequest>,
) -> Result<pb::ForkConversationResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let source = validate::id("conversation_id", &req.conversation_id)?;
    let message = validate::id("message_id", &req.message_id)?;
    let mut v = Violations::new();
    validate::text(&mut v, "title", &req.title, 0, MAX_TITLE);
    let request_id = validate::request_id(&mut v, &req.request_id);
    v.finish()?;
    let original = h.visible_conversation(&principal, source).await?;
    let hash = request_hash(&[
        b"fork",
        source.as_bytes(),
        message.as_bytes(),
        req.title.as_bytes(),
    ]);
    let owner = principal.user_id;
    let mut conn = h.ctx.db.get().await?;
    let id = match versioned::replayed(&mut conn, CONVERSATIONS, owner, request_id, &hash).await? {
        Some(id) => id,
        None => {
            let agent = Uuid::parse_str(&original.agent_id)
                .ok()
                .map(|a| (a, original.agent_version));
            let new = store::NewConversation {
                id: Uuid::now_v7(),
                owner_id: owner,
                agent,
                project_id: Uuid::parse_str(&original.project_id).ok(),
                title: if req.title.is_empty() {
                    original.title.clone()
                } else {
                    req.title
                },
                labels: serde_json::json!({}),
                request_id,
                request_hash: hash.clone(),
                task_id: None,
            };
            match store::fork(&mut conn, source, message, &new, db_now()).await {
                Ok(Some(_)) => new.id,
                Ok(None) => return Err(ContentError::Api(ApiError::not_found("message"))),
                Err(e) => {
                    let request = (request_id, hash.as_slice());
                    let table = (CONVERSATIONS, "conversation");
                    versioned::create_failed(&mut conn, table, owner, request, e, None).await?
                }
            }
        }
    };
    drop(conn);
    let conversation = (*h.visible_conversation(&principal, id).await?).clone();
    Ok(pb::ForkConversationResponse {
        conversation: Some(conversation),
    })
}

/// `SearchMessages`.
pub async fn search_messages(
    h: &ContentHandlers,
    request: Request<pb::SearchMessagesRequest>,
) -> Result<pb::SearchMessagesResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let query = req.query.trim();
    let mut v = Violations::new();
    validate::text(&mut v, "query", query, 1, MAX_QUERY);
    let role = match pb::Role::try_from(req.role) {
        Ok(pb::Role::Unspecified) => None,
        Ok(role) => Some(role as i16),
        Err(_) => {
            v.add("role", "is not a Role");
            None
        }
    };
    let agent_id = validate::optional_id(&mut v, "agent_id", &req.agent_id);
    let project_id = validate::optional_id(&mut v, "project_id", &req.project_id);
    let range = req.time_range.unwrap_or_default();
    let mut bound = |field: &str, t: Option<&prost_types::Timestamp>| {
        t.and_then(|t| {
            let time = from_timestamp(t);
            if time.is_none() {
                v.add(field, "is not a valid timestamp");
            }
            time
        })
    };
    let since = bound("time_range.start_time", range.start_time.as_ref());
    let until = bound("time_range.end_time", range.end_time.as_ref());
    v.finish()?;
    let limit = page_size_within(req.page_size, 20, 100)?;
    let filter = store::MessageFilter {
        role,
        agent_id,
        project_id,
        since,
        until,
    };
    let role_key = req.role.to_string();
    let (since_key, until_key) = (
        since.map(|t| t.to_rfc3339()).unwrap_or_default(),
        until.map(|t| t.to_rfc3339()).unwrap_or_default(),
    );
    let context = PageContext::new(
        SEARCH,
        &principal.user_id,
        &[
            query,
            &role_key,
            &req.agent_id,
            &req.project_id,
            &since_key,
            &until_key,
        ],
    );
    let after = versioned::rank_after(&req.page_token, &context)?;
    let mut conn = h.ctx.db.get().await?;
    let found = store::search_messages(
        &mut conn,
        principal.user_id,
        query,
        &filter,
        after,
        limit + 1,
    )
    .await?;
    drop(conn);
    let (found, next_page_token) = finish_page(found, limit, |last| {
        versioned::rank_token(last.rank, &last.message.id, &context)
    });
    Ok(pb::SearchMessagesResponse {
        hits: found
            .iter()
            .map(|f| pb::MessageHit {
                message: Some(message_proto(&f.message)),
                rank: f.rank,
                snippet: f.snippet.clone(),
            })
            .collect(),
        next_page_token,
    })
}

#[tonic::async_trait]
impl pb::conversation_service_server::ConversationService for ContentHandlers {
    type WatchConversationStream = WatchStream;

    async fn get_retention_policy(
        &self,
        request: Request<pb::GetRetentionPolicyRequest>,
    ) -> Result<tonic::Response<pb::GetRetentionPolicyResponse>, tonic::Status> {
        strata_errors::respond(get_retention_policy(self, request).await)
    }

    async fn set_retention_policy(
        &self,
        request: Request<pb::SetRetentionPolicyRequest>,
    ) -> Result<tonic::Response<pb::SetRetentionPolicyResponse>, tonic::Status> {
        strata_errors::respond(set_retention_policy(self, request).await)
    }
    type ExportConversationStream = ExportStream;

    async fn export_conversation(
        &self,
        request: Request<pb::ExportConversationRequest>,
    ) -> Result<tonic::Response<ExportStream>, tonic::Status> {
        strata_errors::respond(export_conversation(self, request).await)
    }

    async fn import_conversation(
        &self,
        mut request: Request<tonic::Streaming<pb::ImportConversationRequest>>,
    ) -> Result<tonic::Response<pb::ImportConversationResponse>, tonic::Status> {
        let principal =
            caller(&request, SCOPE_WRITE).map_err(|e| tonic::Status::from(ApiError::from(e)))?;
        let parts = receive_import(request.get_mut()).await?;
        strata_errors::respond(import_conversation(self, &principal, parts).await)
    }

    async fn edit_message(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<tonic::Response<pb::EditMessageResponse>, tonic::Status> {
        strata_errors::respond(edit_message(self, request).await)
    }

    async fn watch_conversation(
        &self,
        request: Request<pb::WatchConversationRequest>,
    ) -> Result<tonic::Response<WatchStream>, tonic::Status> {
        strata_errors::respond(watch_conversation(self, request).await)
    }

    async fn search_messages(
        &self,
        request: Request<pb::SearchMessagesRequest>,
    ) -> Result<tonic::Response<pb::SearchMessagesResponse>, tonic::Status> {
        strata_errors::respond(search_messages(self, request).await)
    }

    async fn fork_conversation(
        &self,
        request: Request<pb::ForkConversationRequest>,
    ) -> Result<tonic::Response<pb::ForkConversationResponse>, tonic::Status> {
        strata_errors::respond(fork_conversation(self, request).await)
    }

    async fn create_conversation(
        &self,
        request: Request<pb::CreateConversationRequest>,
    ) -> Result<tonic::Response<pb::CreateConversationResponse>, tonic::Status> {
        strata_errors::respond(create_conversation(self, request).await)
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<tonic::Response<pb::GetConversationResponse>, tonic::Status> {
        strata_errors::respond(get_conversation(self, request).await)
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<tonic::Response<pb::ListConversationsResponse>, tonic::Status> {
        strata_errors::respond(list_conversations(self, request).await)
    }

    async fn update_conversation(
        &self,
        request: Request<pb::UpdateConversationRequest>,
    ) -> Result<tonic::Response<pb::UpdateConversationResponse>, tonic::Status> {
        strata_errors::respond(update_conversation(self, request).await)
    }

    async fn delete_conversation(
        &self,
        request: Request<pb::DeleteConversationRequest>,
    ) -> Result<tonic::Response<pb::DeleteConversationResponse>, tonic::Status> {
        strata_errors::respond(delete_conversation(self, request).await)
    }

    async fn append_messages(
        &self,
        request: Request<pb::AppendMessagesRequest>,
    ) -> Result<tonic::Response<pb::AppendMessagesResponse>, tonic::Status> {
        strata_errors::respond(append_messages(self, request).await)
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<tonic::Response<pb::ListMessagesResponse>, tonic::Status> {
        strata_errors::respond(list_messages(self, request).await)
    }
}
