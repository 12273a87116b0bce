//! Agents: created with version 1 of their definition (model, system prompt, config,
//! tools), read by version or label, listed with filters, updated (never their
//! definition: a new definition is a new version), deleted; versions saved, listed and
//! deleted; labels moved (weighted for experiments) with their history; a version resolved
//! for a subject.

use std::collections::HashMap;
use std::sync::Arc;

use strata_errors::Violations;
use strata_proto::content as pb;
use strata_runtime::identity::Principal;
use strata_runtime::pagination::{Cursor, PageContext, finish_page, page_size};
use strata_runtime::time::timestamp;
use tonic::Request;
use uuid::Uuid;

use super::versioned::{
    self, check_subject, conflict, mask, number_token, pick, request_hash, version_after,
};
use super::{ContentHandlers, SCOPE_READ, SCOPE_WRITE, caller, db_now, may_touch, shared};
use crate::ContentError;
use crate::store::agents::{self as store, AGENTS, Definition};
use crate::validate;
use crate::versions;

/// Longest agent name.
const MAX_NAME: usize = 200;
/// Longest model name.
const MAX_MODEL: usize = 200;
/// Longest system prompt, in characters.
const MAX_SYSTEM_PROMPT: usize = 100_000;
/// Most tools of one version.
const MAX_TOOLS: usize = 128;
/// Longest tool name (the rule of the major model APIs).
const MAX_TOOL_NAME: usize = 64;
/// Longest tool description.
const MAX_TOOL_DESCRIPTION: usize = 4000;
/// Longest name_query.
const MAX_QUERY: usize = 100;
/// Fields a read_mask may name.
const FIELDS: &[&str] = &[
    "id",
    "owner_id",
    "name",
    "type",
    "status",
    "labels",
    "version",
    "latest_version",
    "version_labels",
    "create_time",
    "update_time",
];
const LIST_AGENTS: &str = "strata.content.v1.AgentService/ListAgents";
const LIST_VERSIONS: &str = "strata.content.v1.AgentService/ListAgentVersions";
const LIST_HISTORY: &str = "strata.content.v1.AgentService/ListAgentLabelHistory";

/// Checks an agent's type (a label-like name).
fn check_type(v: &mut Violations, field: &str, kind: &str) {
    if !validate::is_label_name(kind) {
        v.add(
            field,
            "must start with a lowercase letter and hold at most 63 lowercase letters, digits, \
             '-' or '_'",
        );
    }
}

/// Checks a status a caller sets: a known value, not UNSPECIFIED.
fn check_status(v: &mut Violations, field: &str, status: i32) -> i16 {
    match pb::AgentStatus::try_from(status) {
        Ok(pb::AgentStatus::Unspecified) | Err(_) => {
            v.add(field, "must be ACTIVE, PAUSED or ARCHIVED");
            0
        }
        Ok(s) => s as i16,
    }
}

/// Whether `name` is a tool name: 1 to 64 ASCII letters, digits, '_' or '-'.
fn is_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a version's definition.
fn check_definition(
    v: &mut Violations,
    field: &str,
    version: Option<&pb::AgentVersion>,
) -> Definition {
    let default = pb::AgentVersion::default();
    let version = version.unwrap_or(&default);
    validate::text(v, &format!("{field}.model"), &version.model, 1, MAX_MODEL);
    validate::long_text(
        v,
        &format!("{field}.system_prompt"),
        &version.system_prompt,
        MAX_SYSTEM_PROMPT,
    );
    let config = validate::json(v, &format!("{field}.config"), version.config.as_ref());
    if version.tools.len() > MAX_TOOLS {
        // Checked no further: each tool is compared with those before it.
        v.add(
            format!("{field}.tools"),
            format!("must hold at most {MAX_TOOLS} tools"),
        );
        return Definition {
            model: version.model.clone(),
            system_prompt: version.system_prompt.clone(),
            config,
            tools: serde_json::Value::Array(Vec::new()),
        };
    }
    let mut tools = Vec::with_capacity(version.tools.len());
    for (i, tool) in version.tools.iter().enumerate() {
        let at = format!("{field}.tools[{i}]");
        if !is_tool_name(&tool.name) {
            v.add(
                format!("{at}.name"),
                "must be 1 to 64 letters, digits, '_' or '-'",
            );
        } else if version.tools[..i].iter().any(|t| t.name == tool.name) {
            v.add(format!("{at}.name"), "names a tool already listed");
        }
        validate::long_text(
            v,
            &format!("{at}.description"),
            &tool.description,
            MAX_TOOL_DESCRIPTION,
        );
        let parameters = validate::json(v, &format!("{at}.parameters"), tool.parameters.as_ref());
        tools.push(serde_json::json!({
            "name": tool.name,
            "description": tool.description,
            "parameters": parameters,
        }));
    }
    let tools = serde_json::Value::Array(tools);
    if tools.to_string().len() > 4 * validate::MAX_JSON_BYTES {
        v.add(
            format!("{field}.tools"),
            format!(
                "must be at most {} KiB encoded",
                4 * validate::MAX_JSON_BYTES / 1024
            ),
        );
    }
    Definition {
        model: version.model.clone(),
        system_prompt: version.system_prompt.clone(),
        config,
        tools,
    }
}

fn definition_hash_parts(definition: &Definition) -> [Vec<u8>; 4] {
    [
        definition.model.as_bytes().to_vec(),
        definition.system_prompt.as_bytes().to_vec(),
        definition.config.to_string().into_bytes(),
        definition.tools.to_string().into_bytes(),
    ]
}

/// A stored version as proto.
fn version_proto(row: &store::VersionRow) -> pb::AgentVersion {
    let tools = row
        .tools
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| pb::Tool {
                    name: t["name"].as_str().unwrap_or_default().to_owned(),
                    description: t["description"].as_str().unwrap_or_default().to_owned(),
                    parameters: Some(validate::json_to_struct(&t["parameters"])),
                })
                .collect()
        })
        .unwrap_or_default();
    pb::AgentVersion {
        version: row.version,
        model: row.model.clone(),
        system_prompt: row.system_prompt.clone(),
        config: Some(validate::json_to_struct(&row.config)),
        tools,
        created_by: row.created_by.to_string(),
        create_time: Some(timestamp(row.created_at)),
    }
}

/// A stored agent and its labels as proto (no version).
fn agent_proto(row: &store::AgentRow, labels: &[versions::LabelRow]) -> pb::Agent {
    pb::Agent {
        id: row.id.to_string(),
        owner_id: row.owner_id.to_string(),
        name: row.name.clone(),
        r#type: row.kind.clone(),
        status: i32::from(row.status),
        labels: validate::labels_map(&row.labels),
        version: None,
        latest_version: row.latest.unwrap_or_default(),
        version_labels: versioned::version_labels(labels, row.latest, row.updated_at),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

/// Keeps only the fields a read mask names.
fn masked(agent: pb::Agent, fields: &[&str]) -> pb::Agent {
    mask!(
        agent,
        fields,
        [
            id,
            owner_id,
            name,
            r#type,
            status,
            labels,
            version,
            latest_version,
            version_labels,
            create_time,
            update_time,
        ]
    )
}

impl ContentHandlers {
    /// Agent `id` without its definition, from the cache, if `principal` may see it;
    /// another user's agent is NOT_FOUND like a missing one.
    pub(super) async fn visible_agent(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<Arc<pb::Agent>, ContentError> {
        let db = self.ctx.db.clone();
        let agent = self
            .agents
            .get_or_load(&id.to_string(), || async move {
                let mut conn = db.get().await?;
                let Some(row) = store::agent(&mut conn, id).await? else {
                    return Ok(None);
                };
                let labels = versions::labels_of(&mut conn, AGENTS, id).await?;
                Ok::<_, strata_storage::Error>(Some(agent_proto(&row, &labels)))
            })
            .await
            .map_err(shared)?;
        match agent {
            Some(a) if Uuid::parse_str(&a.owner_id).is_ok_and(|o| may_touch(principal, o)) => Ok(a),
            _ => Err(ContentError::not_found("agent")),
        }
    }

    /// Version `number` of agent `id` (whose visibility was checked), from the cache.
    async fn agent_version(
        &self,
        id: Uuid,
        number: i32,
    ) -> Result<Arc<pb::AgentVersion>, ContentError> {
        let db = self.ctx.db.clone();
        self.agent_versions
            .get_or_load(&format!("{id}/{number}"), || async move {
                let mut conn = db.get().await?;
                let row = versions::version_row::<store::VersionRow>(&mut conn, AGENTS, id, number)
                    .await?;
                Ok::<_, strata_storage::Error>(row.as_ref().map(version_proto))
            })
            .await
            .map_err(shared)?
            .ok_or(ContentError::not_found("version"))
    }

    /// Forgets agent `id` in every replica's caches (after the write committed).
    async fn agent_changed(&self, id: Uuid) {
        self.agents.invalidate(&[id.to_string()]).await;
    }
}

/// `CreateAgent`.
pub async fn create_agent(
    h: &ContentHandlers,
    request: Request<pb::CreateAgentRequest>,
) -> Result<pb::CreateAgentResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let agent = req.agent.unwrap_or_default();
    let mut v = Violations::new();
    validate::text(&mut v, "agent.name", &agent.name, 1, MAX_NAME);
    check_type(&mut v, "agent.type", &agent.r#type);
    let status = if agent.status == 0 {
        pb::AgentStatus::Active as i16
    } else {
        check_status(&mut v, "agent.status", agent.status)
    };
    validate::labels(&mut v, "agent.labels", &agent.labels);
    let definition = check_definition(&mut v, "version", req.version.as_ref());
    let request_id = validate::request_id(&mut v, &req.request_id);
    v.finish()?;
    let labels = validate::labels_json(&agent.labels);
    let [model, system_prompt, config, tools] = definition_hash_parts(&definition);
    let hash = request_hash(&[
        agent.name.as_bytes(),
        agent.r#type.as_bytes(),
        &status.to_be_bytes(),
        labels.to_string().as_bytes(),
        &model,
        &system_prompt,
        &config,
        &tools,
    ]);
    let new = store::NewAgent {
        owner_id: principal.user_id,
        name: agent.name,
        kind: agent.r#type,
        status,
        labels,
        definition,
        request_id,
        request_hash: hash.clone(),
    };
    let mut conn = h.ctx.db.get().await?;
    let owner = principal.user_id;
    let request = (request_id, hash.as_slice());
    let table = (AGENTS.items, AGENTS.what);
    let id = versioned::create_once(&mut conn, table, owner, request, None, async |c| {
        store::insert_agent(c, &new, db_now()).await
    })
    .await?;
    drop(conn);
    let mut agent = (*h.visible_agent(&principal, id).await?).clone();
    agent.version = Some((*h.agent_version(id, 1).await?).clone());
    Ok(pb::CreateAgentResponse { agent: Some(agent) })
}

/// `GetAgent`.
pub async fn get_agent(
    h: &ContentHandlers,
    request: Request<pb::GetAgentRequest>,
) -> Result<pb::GetAgentResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("agent_id", &req.agent_id)?;
    let fields = validate::read_mask(req.read_mask.as_ref(), FIELDS)?;
    let selector = req.selector.and_then(|s| s.selector);
    let head = h.visible_agent(&principal, id).await?;
    let mut agent = (*head).clone();
    if fields.contains(&"version") {
        let selected = versions::select(selector.as_ref(), &head.version_labels)?;
        let (_, number) = pick(id, &selected, "");
        agent.version = Some((*h.agent_version(id, number).await?).clone());
    }
    Ok(pb::GetAgentResponse {
        agent: Some(masked(agent, &fields)),
    })
}

/// `ListAgents`: the caller's agents, newest first, with the default version of each when
/// the mask asks for it, read in one more statement.
pub async fn list_agents(
    h: &ContentHandlers,
    request: Request<pb::ListAgentsRequest>,
) -> Result<pb::ListAgentsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let limit = page_size(req.page_size)?;
    let fields = validate::read_mask(req.read_mask.as_ref(), FIELDS)?;
    let mut v = Violations::new();
    let status = (req.status != 0).then(|| check_status(&mut v, "status", req.status));
    if !req.r#type.is_empty() {
        check_type(&mut v, "type", &req.r#type);
    }
    if !req.name_query.is_empty() {
        validate::text(&mut v, "name_query", &req.name_query, 1, MAX_QUERY);
    }
    v.finish()?;
    let filter = store::AgentFilter {
        status,
        kind: (!req.r#type.is_empty()).then(|| req.r#type.clone()),
        name_query: (!req.name_query.is_empty()).then(|| req.name_query.to_lowercase()),
    };
    let context = PageContext::new(
        LIST_AGENTS,
        &principal.user_id,
        &[&req.status.to_string(), &req.r#type, &req.name_query],
    );
    let after = Cursor::decode(&req.page_token, &context)?.map(|c| (c.time, c.id));
    let mut conn = h.ctx.db.get().await?;
    let rows = store::list_agents(&mut conn, principal.user_id, &filter, after, limit + 1).await?;
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        Cursor {
            time: last.created_at,
            id: last.id,
        }
        .encode(&context)
    });
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let labels = if fields.contains(&"version") || fields.contains(&"version_labels") {
        versioned::labels_by_item(&mut conn, AGENTS, &ids).await?
    } else {
        HashMap::new()
    };
    let mut agents: Vec<pb::Agent> = rows
        .iter()
        .map(|row| agent_proto(row, labels.get(&row.id).map_or(&[][..], Vec::as_slice)))
        .collect();
    if fields.contains(&"version") {
        let wanted = versioned::default_versions(
            agents
                .iter()
                .zip(&ids)
                .map(|(a, id)| (*id, a.version_labels.as_slice())),
        );
        let found = versions::versions_of::<store::VersionRow>(&mut conn, AGENTS, &wanted).await?;
        for (agent, id) in agents.iter_mut().zip(&ids) {
            agent.version = wanted
                .iter()
                .find(|(w, _)| w == id)
                .and_then(|(_, n)| found.iter().find(|f| f.item_id == *id && f.version == *n))
                .map(version_proto);
        }
    }
    Ok(pb::ListAgentsResponse {
        agents: agents.into_iter().map(|a| masked(a, &fields)).collect(),
        next_page_token,
    })
}

/// `UpdateAgent`.
pub async fn update_agent(
    h: &ContentHandlers,
    request: Request<pb::UpdateAgentRequest>,
) -> Result<pb::UpdateAgentResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let agent = req.agent.unwrap_or_default();
    let id = validate::id("agent.id", &agent.id)?;
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field");
    }
    let mut changes = store::AgentChanges::default();
    for path in &paths {
        match path.as_str() {
            "name" => {
                validate::text(&mut v, "agent.name", &agent.name, 1, MAX_NAME);
                changes.name = Some(agent.name.clone());
            }
            "type" => {
                check_type(&mut v, "agent.type", &agent.r#type);
                changes.kind = Some(agent.r#type.clone());
            }
            "status" => changes.status = Some(check_status(&mut v, "agent.status", agent.status)),
            "labels" => {
                validate::labels(&mut v, "agent.labels", &agent.labels);
                changes.labels = Some(validate::labels_json(&agent.labels));
            }
            other => v.add(
                "update_mask",
                format!("{other:?} cannot be updated (updatable: name, type, status, labels)"),
            ),
        }
    }
    v.finish()?;
    let mut conn = h.ctx.db.get().await?;
    let may_write = |owner| may_touch(&principal, owner);
    if !store::update_agent(&mut conn, id, may_write, &changes, db_now()).await? {
        return Err(ContentError::not_found("agent"));
    }
    drop(conn);
    h.agent_changed(id).await;
    Ok(pb::UpdateAgentResponse {
        agent: Some((*h.visible_agent(&principal, id).await?).clone()),
    })
}

/// `DeleteAgent`.
pub async fn delete_agent(
    h: &ContentHandlers,
    request: Request<pb::DeleteAgentRequest>,
) -> Result<pb::DeleteAgentResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let id = validate::id("agent_id", &request.get_ref().agent_id)?;
    let mut conn = h.ctx.db.get().await?;
    let may_write = |owner| may_touch(&principal, owner);
    let Some(last) = versions::delete_item(&mut conn, AGENTS, id, may_write).await? else {
        return Err(ContentError::not_found("agent"));
    };
    drop(conn);
    h.agent_changed(id).await;
    versioned::forget_versions(&h.agent_versions, id, last).await;
    Ok(pb::DeleteAgentResponse {})
}

/// `CreateAgentVersion`.
pub async fn create_agent_version(
    h: &ContentHandlers,
    request: Request<pb::CreateAgentVersionRequest>,
) -> Result<pb::CreateAgentVersionResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let id = validate::id("agent_id", &req.agent_id)?;
    let mut v = Violations::new();
    let definition = check_definition(&mut v, "version", req.version.as_ref());
    let request_id = validate::request_id(&mut v, &req.request_id);
    v.finish()?;
    let [model, system_prompt, config, tools] = definition_hash_parts(&definition);
    let hash = request_hash(&[&model, &system_prompt, &config, &tools]);
    let mut conn = h.ctx.db.get().await?;
    let made = store::insert_version(
        &mut conn,
        id,
        |owner| may_touch(&principal, owner),
        &definition,
        principal.user_id,
        request_id.map(|r| (r, hash.as_slice())),
        db_now(),
    )
    .await?;
    drop(conn);
    let row = match made {
        None => return Err(ContentError::not_found("agent")),
        Some(versions::NewVersion::Conflict) => return Err(conflict()),
        Some(versions::NewVersion::Replayed(row)) => row,
        Some(versions::NewVersion::Made(row)) => {
            h.agent_changed(id).await;
            row
        }
    };
    Ok(pb::CreateAgentVersionResponse {
        version: Some(version_proto(&row)),
    })
}

/// `ListAgentVersions`.
pub async fn list_agent_versions(
    h: &ContentHandlers,
    request: Request<pb::ListAgentVersionsRequest>,
) -> Result<pb::ListAgentVersionsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("agent_id", &req.agent_id)?;
    let limit = page_size(req.page_size)?;
    let context = PageContext::new(LIST_VERSIONS, &principal.user_id, &[&req.agent_id]);
    let before = version_after(&req.page_token, &context)?;
    h.visible_agent(&principal, id).await?;
    let mut conn = h.ctx.db.get().await?;
    let rows =
        versions::version_page::<store::VersionRow>(&mut conn, AGENTS, id, before, limit + 1)
            .await?;
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        number_token(i64::from(last.version), &context)
    });
    Ok(pb::ListAgentVersionsResponse {
        versions: rows.iter().map(version_proto).collect(),
        next_page_token,
    })
}

/// `DeleteAgentVersion`.
pub async fn delete_agent_version(
    h: &ContentHandlers,
    request: Request<pb::DeleteAgentVersionRequest>,
) -> Result<pb::DeleteAgentVersionResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let id = validate::id("agent_id", &req.agent_id)?;
    h.remove_version(&principal, AGENTS, id, req.version)
        .await?;
    h.agent_changed(id).await;
    h.agent_versions
        .invalidate(&[format!("{id}/{}", req.version)])
        .await;
    Ok(pb::DeleteAgentVersionResponse {})
}

/// `SetAgentLabel`.
pub async fn set_agent_label(
    h: &ContentHandlers,
    request: Request<pb::SetAgentLabelRequest>,
) -> Result<pb::SetAgentLabelResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let id = validate::id("agent_id", &req.agent_id)?;
    let label = h
        .move_label(&principal, AGENTS, id, &req.label, &req.versions)
        .await?;
    h.agent_changed(id).await;
    Ok(pb::SetAgentLabelResponse { label: Some(label) })
}

/// `ListAgentLabelHistory`.
pub async fn list_agent_label_history(
    h: &ContentHandlers,
    request: Request<pb::ListAgentLabelHistoryRequest>,
) -> Result<pb::ListAgentLabelHistoryResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("agent_id", &req.agent_id)?;
    let visible = async { h.visible_agent(&principal, id).await.map(|_| ()) };
    let (moves, next_page_token) = h
        .label_history(
            &principal,
            AGENTS,
            LIST_HISTORY,
            id,
            &req.label,
            req.page_size,
            &req.page_token,
            visible,
        )
        .await?;
    Ok(pb::ListAgentLabelHistoryResponse {
        moves,
        next_page_token,
    })
}

/// `ResolveAgent`.
pub async fn resolve_agent(
    h: &ContentHandlers,
    request: Request<pb::ResolveAgentRequest>,
) -> Result<pb::ResolveAgentResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("agent_id", &req.agent_id)?;
    check_subject(&req.subject)?;
    let selector =
        (!req.label.is_empty()).then_some(pb::version_selector::Selector::Label(req.label));
    let head = h.visible_agent(&principal, id).await?;
    let selected = versions::select(selector.as_ref(), &head.version_labels)?;
    let (label, number) = pick(id, &selected, &req.subject);
    let version = h.agent_version(id, number).await?;
    Ok(pb::ResolveAgentResponse {
        label,
        version: Some((*version).clone()),
    })
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for ContentHandlers {
    async fn create_agent(
        &self,
        request: Request<pb::CreateAgentRequest>,
    ) -> Result<tonic::Response<pb::CreateAgentResponse>, tonic::Status> {
        strata_errors::respond(create_agent(self, request).await)
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<tonic::Response<pb::GetAgentResponse>, tonic::Status> {
        strata_errors::respond(get_agent(self, request).await)
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<tonic::Response<pb::ListAgentsResponse>, tonic::Status> {
        strata_errors::respond(list_agents(self, request).await)
    }

    async fn update_agent(
        &self,
        request: Request<pb::UpdateAgentRequest>,
    ) -> Result<tonic::Response<pb::UpdateAgentResponse>, tonic::Status> {
        strata_errors::respond(update_agent(self, request).await)
    }

    async fn delete_agent(
        &self,
        request: Request<pb::DeleteAgentRequest>,
    ) -> Result<tonic::Response<pb::DeleteAgentResponse>, tonic::Status> {
        strata_errors::respond(delete_agent(self, request).await)
    }

    async fn create_agent_version(
        &self,
        request: Request<pb::CreateAgentVersionRequest>,
    ) -> Result<tonic::Response<pb::CreateAgentVersionResponse>, tonic::Status> {
        strata_errors::respond(create_agent_version(self, request).await)
    }

    async fn list_agent_versions(
        &self,
        request: Request<pb::ListAgentVersionsRequest>,
    ) -> Result<tonic::Response<pb::ListAgentVersionsResponse>, tonic::Status> {
        strata_errors::respond(list_agent_versions(self, request).await)
    }

    async fn delete_agent_version(
        &self,
        request: Request<pb::DeleteAgentVersionRequest>,
    ) -> Result<tonic::Response<pb::DeleteAgentVersionResponse>, tonic::Status> {
        strata_errors::respond(delete_agent_version(self, request).await)
    }

    async fn set_agent_label(
        &self,
        request: Request<pb::SetAgentLabelRequest>,
    ) -> Result<tonic::Response<pb::SetAgentLabelResponse>, tonic::Status> {
        strata_errors::respond(set_agent_label(self, request).await)
    }

    async fn list_agent_label_history(
        &self,
        request: Request<pb::ListAgentLabelHistoryRequest>,
    ) -> Result<tonic::Response<pb::ListAgentLabelHistoryResponse>, tonic::Status> {
        strata_errors::respond(list_agent_label_history(self, request).await)
    }

    async fn resolve_agent(
        &self,
        request: Request<pb::ResolveAgentRequest>,
    ) -> Result<tonic::Response<pb::ResolveAgentResponse>, tonic::Status> {
        strata_errors::respond(resolve_agent(self, request).await)
    }
}
