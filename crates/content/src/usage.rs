//! Shipping messages' token usage to analytics: never lost, never twice.
//!
//! - An append that carries usage writes `content.usage_outbox` rows in the same statement
//!   as the messages (see `store::conversations::append_messages`), so a message and its
//!   billing commit together or not at all.
//! - [`Shipper::round`], a task of every content replica, claims due rows a batch at a
//!   time with `FOR UPDATE SKIP LOCKED` (replicas share the work; a row claimed by one is
//!   skipped by the others until that transaction ends), sends them to analytics'
//!   `RecordUsage` with the row's id (the message's) as idempotency key and the trace
//!   context of a span linked to each append's, and deletes them in the same transaction
//!   once analytics acknowledged them. A crash between analytics' commit and ours sends the
//!   rows again later; analytics skips a key it has, so they count once.
//! - While analytics fails (down, overloaded, refusing the key) the shipper pauses, the
//!   pause doubling from the shipping interval up to a configured longest one; rows wait.
//! - A row analytics refuses as invalid (INVALID_ARGUMENT naming `events[i]`, which the
//!   append's checks, the same as analytics', make unlikely: e.g. usage older than analytics
//!   keeps) is marked refused with the reason, kept for an operator, and no longer blocks
//!   the others.
//! - At shutdown a last round ships what it can (the server's in-flight calls are done by
//!   then); what it cannot stays in the outbox for the next start.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, RunQueryDsl};
use strata_proto::analytics::{self as pb, analytics_service_client::AnalyticsServiceClient};
use strata_proto::common::Decimal;
use strata_runtime::server::Peer;
use strata_runtime::telemetry::{TraceContextInterceptor, link_to};
use strata_runtime::time::timestamp;
use strata_storage::{Db, Secret};
use tracing::Instrument as _;
use uuid::Uuid;

/// Rows sent per `RecordUsage` call.
pub const BATCH: i64 = 500;
/// How long one `RecordUsage` call may take (the batch's rows stay locked meanwhile).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The database failed.
    #[error("usage outbox: {0}")]
    Database(#[from] strata_storage::Error),
    /// Analytics failed; the rows wait for the next attempt.
    #[error("analytics RecordUsage failed ({0:?}); usage waits in the outbox")]
    Analytics(tonic::Code),
    /// Usage is due but no key to send it with is configured.
    #[error(
        "usage waits in content.usage_outbox: set STRATA_CONTENT_USAGE_KEY (an API key of an admin account with usage:write)"
    )]
    NoKey,
    /// Usage is due but no analytics service is known to this process.
    #[error(
        "usage waits in content.usage_outbox: no analytics service here; set STRATA_ANALYTICS_URL"
    )]
    NoAnalytics,
    /// Paused after failures; nothing was tried.
    #[error("analytics failed recently; next attempt in {0:?}")]
    Paused(Duration),
}

impl From<diesel::result::Error> for ShipError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Database(e.into())
    }
}

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    conversation_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    project_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    agent_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Integer>)]
    agent_version: Option<i32>,
    #[diesel(sql_type = Text)]
    model: String,
    #[diesel(sql_type = Text)]
    provider: String,
    #[diesel(sql_type = BigInt)]
    prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    completion_tokens: i64,
    #[diesel(sql_type = Text)]
    cost: String,
    #[diesel(sql_type = Timestamptz)]
    occurred_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    traceparent: Option<String>,
}

impl Due {
    fn event(&self) -> pb::UsageEvent {
        pb::UsageEvent {
            idempotency_key: self.id.to_string(),
            user_id: self.owner_id.to_string(),
            project_id: self.project_id.map(|p| p.to_string()).unwrap_or_default(),
            conversation_id: self.conversation_id.to_string(),
            agent_id: self.agent_id.map(|a| a.to_string()).unwrap_or_default(),
            agent_version: self.agent_version.unwrap_or_default(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            operation: pb::Operation::Chat.into(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cost: Some(Decimal {
                value: self.cost.clone(),
            }),
            latency: None,
            status: pb::CallStatus::Succeeded.into(),
            occur_time: Some(timestamp(self.occurred_at)),
        }
    }
}

/// Failures in a row and when the next attempt is due.
#[derive(Debug, Default)]
struct Pause {
    failures: u32,
    until: Option<Instant>,
}

/// What one batch did.
enum Batch {
    /// This many rows were acknowledged (and deleted) or refused (and marked).
    Done(usize),
    /// Analytics failed; nothing changed.
    Failed(tonic::Code),
}

/// The usage shipper of one replica. See the module documentation.
#[derive(Debug)]
pub struct Shipper {
    db: Db,
    analytics: Peer,
    key: Option<Secret<String>>,
    every: Duration,
    max_pause: Duration,
    pause: Mutex<Pause>,
}

impl Shipper {
    /// A shipper sending through `analytics` with `key`, every `every` while it works,
    /// pausing up to `max_pause` while analytics fails.
    pub fn new(
        db: Db,
        analytics: Peer,
        key: Option<Secret<String>>,
        every: Duration,
        max_pause: Duration,
    ) -> Self {
        Self {
            db,
            analytics,
            key,
            every,
            max_pause,
            pause: Mutex::new(Pause::default()),
        }
    }

    /// Ships every due row, a batch at a time, until none is left or analytics fails.
    /// Returns how many rows it shipped or marked refused.
    pub async fn round(&self) -> Result<usize, ShipError> {
        if let Ok(pause) = self.pause.lock()
            && let Some(until) = pause.until
        {
            let now = Instant::now();
            if until > now {
                return Err(ShipError::Paused(until - now));
            }
        }
        let result = self.ship().await;
        if let Ok(mut pause) = self.pause.lock() {
            match &result {
                Err(ShipError::Analytics(_) | ShipError::NoKey | ShipError::NoAnalytics) => {
                    pause.failures = pause.failures.saturating_add(1);
                    let pow = 2u32.saturating_pow(pause.failures.min(16));
                    pause.until = Some(Instant::now() + (self.every * pow).min(self.max_pause));
                }
                _ => *pause = Pause::default(),
            }
        }
        result
    }

    /// The last round at shutdown: ships what it can, paused or not.
    pub async fn drain(&self) -> Result<usize, ShipError> {
        self.ship().await
    }

    async fn ship(&self) -> Result<usize, ShipError> {
        let mut shipped = 0;
        loop {
            match self.batch().await? {
                Batch::Done(0) => return Ok(shipped),
                Batch::Done(n) => shipped += n,
                Batch::Failed(code) => return Err(ShipError::Analytics(code)),
            }
        }
    }

    /// Claims up to [`BATCH`] due rows, sends them, and deletes (or marks refused) what
    /// analytics answered for, in one transaction.
    async fn batch(&self) -> Result<Batch, ShipError> {
        let mut conn = self.db.get().await?;
        let key = self.key.as_ref();
        let analytics = &self.analytics;
        let outcome = conn
            .transaction::<_, ShipError, _>(async |conn| {
                let due: Vec<Due> = sql_query(
                    "SELECT id, owner_id, conversation_id, project_id, agent_id, agent_version, \
                       model, provider, prompt_tokens, completion_tokens, \
                       trim_scale(cost)::text AS cost, occurred_at, traceparent \
                     FROM content.usage_outbox WHERE refused_at IS NULL \
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                )
                .bind::<BigInt, _>(BATCH)
                .load(conn)
                .await?;
                if due.is_empty() {
                    return Ok(Batch::Done(0));
                }
                let Some(key) = key else {
                    return Err(ShipError::NoKey);
                };
                let Some(channel) = analytics.channel() else {
                    return Err(ShipError::NoAnalytics);
                };
                let span = tracing::info_span!("content.ship_usage", events = due.len());
                span.in_scope(|| {
                    for traceparent in due.iter().filter_map(|d| d.traceparent.as_deref()) {
                        link_to(traceparent);
                    }
                });
                let mut request = tonic::Request::new(pb::RecordUsageRequest {
                    events: due.iter().map(Due::event).collect(),
                });
                request.set_timeout(CALL_TIMEOUT);
                if let Ok(value) = format!("Bearer {}", key.expose()).parse() {
                    request.metadata_mut().insert("authorization", value);
                }
                let answer =
                    AnalyticsServiceClient::with_interceptor(channel, TraceContextInterceptor)
                        .record_usage(request)
                        .instrument(span)
                        .await;
                let ids: Vec<Uuid> = due.iter().map(|d| d.id).collect();
                match answer {
                    Ok(_) => {
                        sql_query("DELETE FROM content.usage_outbox WHERE id = ANY($1)")
                            .bind::<Array<SqlUuid>, _>(&ids)
                            .execute(conn)
                            .await?;
                        Ok(Batch::Done(ids.len()))
                    }
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        let refused = refused_events(&status, &ids);
                        if refused.is_empty() {
                            return Ok(Batch::Failed(status.code()));
                        }
                        let (ids, reasons): (Vec<Uuid>, Vec<String>) = refused.into_iter().unzip();
                        tracing::error!(
                            events = ids.len(),
                            "analytics refused usage events as invalid; kept in content.usage_outbox, marked refused"
                        );
                        sql_query(
                            "UPDATE content.usage_outbox o SET refused_at = now(), refusal = r.reason \
                             FROM unnest($1::uuid[], $2::text[]) AS r(id, reason) WHERE o.id = r.id",
                        )
                        .bind::<Array<SqlUuid>, _>(&ids)
                        .bind::<Array<Text>, _>(&reasons)
                        .execute(conn)
                        .await?;
                        Ok(Batch::Done(ids.len()))
                    }
                    Err(status) => Ok(Batch::Failed(status.code())),
                }
            })
            .await?;
        Ok(outcome)
    }
}

/// The rows an INVALID_ARGUMENT names (`events[i].field`), with the reasons given.
fn refused_events(status: &tonic::Status, ids: &[Uuid]) -> Vec<(Uuid, String)> {
    use tonic_types::StatusExt as _;
    let mut refused: Vec<(Uuid, String)> = Vec::new();
    let Some(bad) = status.get_details_bad_request() else {
        return refused;
    };
    for violation in bad.field_violations {
        let index = violation
            .field
            .strip_prefix("events[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok());
        let Some(id) = index.and_then(|i| ids.get(i)) else {
            continue;
        };
        let reason = format!("{}: {}", violation.field, violation.description);
        match refused.iter_mut().find(|(r, _)| r == id) {
            Some((_, reasons)) => {
                reasons.push_str("; ");
                reasons.push_str(&reason);
            }
            None => refused.push((*id, reason)),
        }
    }
    refused
}
