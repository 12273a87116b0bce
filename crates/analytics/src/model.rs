//! The ledger's vocabulary: stored spellings of the proto enums, and the validation of
//! incoming usage events into rows ready to insert.

use chrono::{DateTime, Duration, Utc};
use strata_proto::analytics as pb;
use strata_runtime::time::from_timestamp;
pub use strata_runtime::usage::{
    MAX_COST_DOLLARS, MAX_COST_SCALE, MAX_MODEL_CHARS, MAX_PROVIDER_LEN, MAX_TOKENS, check_cost,
};
use strata_runtime::usage::{check_model, check_provider, check_tokens};
use uuid::Uuid;

use strata_errors::Violations;

use crate::error::Violation;

/// Most events in one `RecordUsage` call.
pub const MAX_BATCH: usize = 1000;
/// Longest idempotency key, in bytes (printable ASCII only).
pub const MAX_KEY_LEN: usize = 128;
/// Largest latency accepted, in milliseconds (one day).
pub const MAX_LATENCY_MS: i64 = 86_400_000;
/// How far ahead of the server's clock an event may be (clock skew).
pub const MAX_FUTURE_SKEW: Duration = Duration::days(1);
/// How old an event may be.
pub const MAX_EVENT_AGE: Duration = Duration::days(366);

/// Stored spelling of an operation.
pub fn operation_name(operation: pb::Operation) -> Option<&'static str> {
    Some(match operation {
        pb::Operation::Unspecified => return None,
        pb::Operation::Chat => "chat",
        pb::Operation::Completion => "completion",
        pb::Operation::Embedding => "embedding",
        pb::Operation::Image => "image",
        pb::Operation::Audio => "audio",
        pb::Operation::Moderation => "moderation",
        pb::Operation::Rerank => "rerank",
    })
}

/// The operation of a stored spelling.
pub fn operation_of(stored: &str) -> pb::Operation {
    match stored {
        "chat" => pb::Operation::Chat,
        "completion" => pb::Operation::Completion,
        "embedding" => pb::Operation::Embedding,
        "image" => pb::Operation::Image,
        "audio" => pb::Operation::Audio,
        "moderation" => pb::Operation::Moderation,
        "rerank" => pb::Operation::Rerank,
        _ => pb::Operation::Unspecified,
    }
}

/// Stored spelling of a call status.
pub fn status_name(status: pb::CallStatus) -> Option<&'static str> {
    Some(match status {
        pb::CallStatus::Unspecified => return None,
        pb::CallStatus::Succeeded => "succeeded",
        pb::CallStatus::Failed => "failed",
        pb::CallStatus::Cancelled => "cancelled",
    })
}

/// The call status of a stored spelling.
pub fn status_of(stored: &str) -> pb::CallStatus {
    match stored {
        "succeeded" => pb::CallStatus::Succeeded,
        "failed" => pb::CallStatus::Failed,
        "cancelled" => pb::CallStatus::Cancelled,
        _ => pb::CallStatus::Unspecified,
    }
}

/// A validated event, ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUsage {
    /// Server-assigned id (UUIDv7).
    pub id: Uuid,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Billed user.
    pub user_id: Uuid,
    /// Project, if any.
    pub project_id: Option<Uuid>,
    /// Conversation, if any.
    pub conversation_id: Option<Uuid>,
    /// Agent and its version (0: not known), if any.
    pub agent: Option<(Uuid, i32)>,
    /// Model.
    pub model: String,
    /// Provider.
    pub provider: String,
    /// Stored operation spelling.
    pub operation: &'static str,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost in US dollars, as validated decimal text.
    pub cost: String,
    /// Latency in milliseconds.
    pub latency_ms: i32,
    /// Stored status spelling.
    pub status: &'static str,
    /// When the call was made.
    pub occurred_at: DateTime<Utc>,
}

/// Parses a required UUID field.
pub fn parse_uuid(value: &str) -> Result<Uuid, &'static str> {
    if value.is_empty() {
        return Err("is required");
    }
    Uuid::try_parse(value).map_err(|_| "must be a UUID")
}

/// Parses an optional UUID field (empty means none).
fn parse_optional_uuid(value: &str) -> Result<Option<Uuid>, &'static str> {
    if value.is_empty() {
        Ok(None)
    } else {
        Uuid::try_parse(value)
            .map(Some)
            .map_err(|_| "must be a UUID")
    }
}

/// Validates one event; problems are added to `violations` under `events[index]`.
fn check_event(
    index: usize,
    event: &pb::UsageEvent,
    now: DateTime<Utc>,
    violations: &mut Violations,
) -> Option<NewUsage> {
    let before = violations.len();
    let field = |name: &str| format!("events[{index}].{name}");

    let key = event.idempotency_key.as_str();
    if key.is_empty() {
        violations.add(field("idempotency_key"), "is required");
    } else if key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        violations.add(
            field("idempotency_key"),
            format!("must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
        );
    }
    let user_id = parse_uuid(&event.user_id)
        .map_err(|e| violations.add(field("user_id"), e))
        .ok();
    let project_id = parse_optional_uuid(&event.project_id)
        .map_err(|e| violations.add(field("project_id"), e))
        .ok();
    let conversation_id = parse_optional_uuid(&event.conversation_id)
        .map_err(|e| violations.add(field("conversation_id"), e))
        .ok();
    let agent_id = parse_optional_uuid(&event.agent_id)
        .map_err(|e| violations.add(field("agent_id"), e))
        .ok();
    if event.agent_version < 0 {
        violations.add(field("agent_version"), "must not be negative");
    } else if event.agent_version > 0 && matches!(agent_id, Some(None)) {
        violations.add(field("agent_version"), "needs agent_id");
    }
    let model = check_model(&event.model)
        .map_err(|e| violations.add(field("model"), e))
        .ok();
    let provider = check_provider(&event.provider)
        .map_err(|e| violations.add(field("provider"), e))
        .ok();
    let operation = match pb::Operation::try_from(event.operation) {
        Ok(op) => operation_name(op).or_else(|| {
            violations.add(field("operation"), "is required");
            None
        }),
        Err(_) => {
            violations.add(
                field("operation"),
                format!("unknown value {}", event.operation),
            );
            None
        }
    };
    let status = match pb::CallStatus::try_from(event.status) {
        Ok(status) => status_name(status).or_else(|| {
            violations.add(field("status"), "is required");
            None
        }),
        Err(_) => {
            violations.add(field("status"), format!("unknown value {}", event.status));
            None
        }
    };
    for (name, value) in [
        ("prompt_tokens", event.prompt_tokens),
        ("completion_tokens", event.completion_tokens),
    ] {
        if let Err(e) = check_tokens(value) {
            violations.add(field(name), e);
        }
    }
    // Stored in whole milliseconds, rounded to the nearest.
    let latency_ms = match event.latency {
        None => 0,
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            violations.add(field("latency"), "must not be negative");
            0
        }
        Some(d) => {
            let ms = d.seconds.saturating_mul(1000) + (i64::from(d.nanos) + 500_000) / 1_000_000;
            if ms > MAX_LATENCY_MS {
                violations.add(field("latency"), "must be at most 24 hours");
                0
            } else {
                i32::try_from(ms).unwrap_or(0)
            }
        }
    };
    let cost = match &event.cost {
        None => {
            violations.add(field("cost"), "is required");
            None
        }
        Some(cost) => check_cost(&cost.value)
            .map_err(|e| violations.add(field("cost.value"), e))
            .ok(),
    };
    let occurred_at = match event.occur_time.as_ref().map(from_timestamp) {
        None => {
            violations.add(field("occur_time"), "is required");
            None
        }
        Some(None) => {
            violations.add(field("occur_time"), "is not a valid timestamp");
            None
        }
        Some(Some(t)) if t > now + MAX_FUTURE_SKEW => {
            violations.add(
                field("occur_time"),
                "must not be more than 1 day in the future",
            );
            None
        }
        Some(Some(t)) if t < now - MAX_EVENT_AGE => {
            violations.add(
                field("occur_time"),
                "must not be more than 366 days in the past",
            );
            None
        }
        Some(Some(t)) => Some(t),
    };

    if violations.len() != before {
        return None;
    }
    Some(NewUsage {
        id: Uuid::now_v7(),
        idempotency_key: key.to_owned(),
        user_id: user_id?,
        project_id: project_id?,
        conversation_id: conversation_id?,
        agent: agent_id?.map(|agent| (agent, event.agent_version)),
        model: model?.to_owned(),
        provider: provider?.to_owned(),
        operation: operation?,
        prompt_tokens: event.prompt_tokens,
        completion_tokens: event.completion_tokens,
        cost: cost?,
        latency_ms,
        status: status?,
        occurred_at: occurred_at?,
    })
}

/// Validates a whole batch: every violation of every event is reported (up to
/// [`MAX_VIOLATIONS`](strata_errors::MAX_VIOLATIONS)), and a key repeated within the batch is refused, since the batch
/// could not say which of the two it means.
pub fn check_batch(
    events: &[pb::UsageEvent],
    now: DateTime<Utc>,
) -> Result<Vec<NewUsage>, Vec<Violation>> {
    let mut violations = Violations::default();
    if events.is_empty() || events.len() > MAX_BATCH {
        violations.add("events", format!("must hold 1 to {MAX_BATCH} events"));
        return Err(violations.into_vec());
    }
    let mut rows = Vec::with_capacity(events.len());
    let mut seen = std::collections::HashMap::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        if let Some(first) = seen.insert(event.idempotency_key.as_str(), index)
            && !event.idempotency_key.is_empty()
        {
            violations.add(
                format!("events[{index}].idempotency_key"),
                format!("repeats events[{first}].idempotency_key"),
            );
        }
        if let Some(row) = check_event(index, event, now, &mut violations) {
            rows.push(row);
        }
    }
    if violations.is_empty() {
        Ok(rows)
    } else {
        Err(violations.into_vec())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use strata_proto::common::Decimal;

    fn event(key: &str) -> pb::UsageEvent {
        pb::UsageEvent {
            idempotency_key: key.into(),
            user_id: Uuid::now_v7().to_string(),
            project_id: String::new(),
            conversation_id: String::new(),
            agent_id: String::new(),
            agent_version: 0,
            model: "gpt-4o".into(),
            provider: "openai".into(),
            operation: pb::Operation::Chat.into(),
            prompt_tokens: 100,
            completion_tokens: 20,
            cost: Some(Decimal {
                value: "0.00125".into(),
            }),
            latency: Some(prost_types::Duration {
                seconds: 0,
                nanos: 350_000_000,
            }),
            status: pb::CallStatus::Succeeded.into(),
            occur_time: Some(prost_types::Timestamp {
                seconds: Utc::now().timestamp(),
                nanos: 0,
            }),
        }
    }

    fn fields(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn costs_are_exact_decimals_in_range() {
        for ok in [
            "0",
            "0.0000000001",
            "12.5",
            "1000000",
            "1000000.000",
            "007.1",
        ] {
            assert_eq!(check_cost(ok).unwrap(), ok, "{ok}");
        }
        for bad in [
            "",
            "-1",
            "1e-3",
            ".5",
            "5.",
            "1.00000000001",
            "1000000.01",
            "99999999",
            "NaN",
            "1,5",
            " 1",
        ] {
            assert!(check_cost(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_good_batch_passes() {
        let rows = check_batch(&[event("a"), event("b")], Utc::now()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].operation, "chat");
        assert_eq!(rows[1].status, "succeeded");
        assert!(rows[0].id < rows[1].id, "UUIDv7 ids are time-ordered");
    }

    #[test]
    fn every_violation_is_named_by_index_and_field() {
        let mut negative = event("a");
        negative.prompt_tokens = -1;
        let mut unknown_enum = event("b");
        unknown_enum.operation = 99;
        unknown_enum.status = 0;
        let mut keyless = event("");
        keyless.cost = Some(Decimal {
            value: "2000000".into(),
        });
        let mut future = event("d");
        future.occur_time = Some(prost_types::Timestamp {
            seconds: Utc::now().timestamp() + 3 * 86_400,
            nanos: 0,
        });
        future.user_id = "not-a-uuid".into();
        let violations = check_batch(
            &[
                event("ok"),
                negative,
                unknown_enum,
                keyless,
                future,
                event("a"),
            ],
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(
            fields(&violations),
            [
                "events[1].prompt_tokens",
                "events[2].operation",
                "events[2].status",
                "events[3].idempotency_key",
                "events[3].cost.value",
                "events[4].user_id",
                "events[4].occur_time",
                "events[5].idempotency_key",
            ]
        );
        assert_eq!(
            violations[7].description,
            "repeats events[1].idempotency_key"
        );
    }

    #[test]
    fn batch_size_is_bounded() {
        assert!(check_batch(&[], Utc::now()).is_err());
        let many: Vec<_> = (0..=MAX_BATCH).map(|i| event(&i.to_string())).collect();
        assert_eq!(
            fields(&check_batch(&many, Utc::now()).unwrap_err()),
            ["events"]
        );
    }
}
