//! `strata seed conversations`: conversations and their messages, generated inside
//! PostgreSQL a batch at a time, one writer per core, with the skew real chat stores have:
//! a few conversations of up to 100,000 messages, a long tail of short ones, owners on a
//! power law (the known owners take the heaviest places).
//!
//! Every message is a real row with every index (search included): a linear branch of
//! alternating user and assistant messages, each a dozen words of the seeding vocabulary,
//! thirty seconds apart. The conversations' counters, active leaves and activity times
//! agree with their messages.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use strata_storage::config::DbConfig;
use strata_storage::pool::dedicated_connection;
use uuid::Uuid;

use crate::seed::{VOCABULARY, seed_owner};
use strata_storage::pool::run_workers;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSeed {
    /// Conversations to insert.
    pub conversations: u64,
    /// Messages over all of them.
    pub messages: u64,
    /// The largest conversation's messages: one such conversation per million messages
    /// (at least one when there are twice as many messages), owned by the heaviest owner.
    pub largest: u64,
    /// Distinct owners (power law).
    pub owners: u32,
    /// Ids that take the heaviest owners' places (owner 0 first).
    pub known_owners: Vec<Uuid>,
}

impl Default for ConversationSeed {
    fn default() -> Self {
        Self {
            conversations: 10_000,
            messages: 1_000_000,
            largest: 100_000,
            owners: 1_000,
            known_owners: Vec::new(),
        }
    }
}

/// What was inserted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeededConversations {
    /// Conversations.
    pub conversations: u64,
    /// Messages.
    pub messages: u64,
    /// Messages of the largest conversation.
    pub largest: u64,
}

/// Messages per statement.
const BATCH_MESSAGES: u64 = 20_000;

/// One conversation to generate.
#[derive(Debug, Clone)]
struct Plan {
    id: Uuid,
    owner: Uuid,
    messages: u64,
    created_at: DateTime<Utc>,
}

/// A statement's worth: conversations (inserted with their counters when `first` is 1)
/// and their messages numbered `first..=last` (capped at each one's size).
#[derive(Debug, Clone)]
struct Work {
    plans: Vec<Plan>,
    first: u64,
    last: u64,
}

/// A small deterministic generator (xorshift), so sizes and owners need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The sizes and owners of every conversation.
fn plan(options: &ConversationSeed, now: DateTime<Utc>, run: Uuid) -> Vec<Plan> {
    let conversations = options.conversations.max(1);
    let largest = options.largest.max(1);
    let whales = if options.messages >= 2 * largest {
        (options.messages / 1_000_000).max(1).min(conversations)
    } else {
        0
    };
    let rest = options.messages.saturating_sub(whales * largest);
    let tail = conversations - whales;
    // The tail's sizes follow 1/(i+1)^0.7, scaled to the messages left (at least 1 each).
    let weights: Vec<f64> = (0..tail)
        .map(|i| 1.0 / ((i + 1) as f64).powf(0.7))
        .collect();
    let total: f64 = weights.iter().sum::<f64>().max(f64::EPSILON);
    let mut sizes: Vec<u64> = (0..whales).map(|_| largest).collect();
    sizes.extend(
        weights
            .iter()
            .map(|w| ((w / total) * rest as f64).round().max(1.0) as u64),
    );
    let mut rng = Rng(u64::from_le_bytes(run.as_bytes()[..8].try_into().unwrap_or([7; 8])) | 1);
    let owners = options.owners.max(1);
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, messages)| {
            // Whales are the heaviest owner's; the others' owners follow a power law.
            let rank = if (i as u64) < whales {
                0
            } else {
                ((rng.next().powi(3)) * f64::from(owners)) as u32
            };
            let owner = options
                .known_owners
                .get(rank as usize)
                .copied()
                .unwrap_or_else(|| seed_owner(rank));
            // Spread over the last year; a conversation's messages come 30 s apart.
            let age = chrono::Duration::seconds((rng.next() * 31_536_000.0) as i64);
            Plan {
                id: Uuid::now_v7(),
                owner,
                messages,
                created_at: now - age - chrono::Duration::seconds(30 * messages as i64),
            }
        })
        .collect()
}

/// Groups the plans into statements of about [`BATCH_MESSAGES`] messages; a conversation
/// larger than that becomes consecutive statements, which one worker runs in order (a
/// message's parent must be committed first).
fn work(plans: Vec<Plan>) -> Vec<Vec<Work>> {
    let mut items: Vec<Vec<Work>> = Vec::new();
    let mut group: Vec<Plan> = Vec::new();
    let mut size = 0;
    for plan in plans {
        if plan.messages > BATCH_MESSAGES {
            let mut steps = Vec::new();
            let mut first = 1;
            while first <= plan.messages {
                let last = (first + BATCH_MESSAGES - 1).min(plan.messages);
                steps.push(Work {
                    plans: vec![plan.clone()],
                    first,
                    last,
                });
                first = last + 1;
            }
            items.push(steps);
            continue;
        }
        size += plan.messages;
        group.push(plan);
        if size >= BATCH_MESSAGES {
            items.push(vec![Work {
                plans: std::mem::take(&mut group),
                first: 1,
                last: BATCH_MESSAGES,
            }]);
            size = 0;
        }
    }
    if !group.is_empty() {
        items.push(vec![Work {
            plans: group,
            first: 1,
            last: BATCH_MESSAGES,
        }]);
    }
    items
}

/// The id of message `s` of conversation `c` made at `t`: a UUIDv7 of that time, unique
/// per conversation and number.
const MESSAGE_ID: &str = "CREATE FUNCTION pg_temp.seed_message_id(c uuid, s bigint, t timestamptz) \
     RETURNS uuid LANGUAGE sql IMMUTABLE AS $$ \
     SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7' \
       || substr(md5(c::text || ':' || s), 1, 3) || '8' || substr(md5(c::text || ':' || s), 4, 15))::uuid $$";

/// Inserts what `options` asks over `workers` connections made with `db`, calling
/// `progress(done, total)` (messages) about twice a second and at the end; then analyzes
/// the tables.
pub async fn seed_conversations(
    db: &DbConfig,
    options: &ConversationSeed,
    workers: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<SeededConversations, strata_storage::Error> {
    let now = Utc::now();
    let mut config = db.clone();
    config.statement_timeout = std::time::Duration::ZERO;
    let plans = plan(options, now, Uuid::new_v4());
    let seeded = SeededConversations {
        conversations: plans.len() as u64,
        messages: plans.iter().map(|p| p.messages).sum(),
        largest: plans.iter().map(|p| p.messages).max().unwrap_or(0),
    };
    let items = work(plans);
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let worker = async || -> Result<(), strata_storage::Error> {
        let mut conn = dedicated_connection(&config).await?;
        conn.batch_execute("SET synchronous_commit = off").await?;
        conn.batch_execute(MESSAGE_ID).await?;
        loop {
            let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(usize::MAX);
            let Some(steps) = items.get(i) else {
                return Ok(());
            };
            for step in steps {
                let made = insert(&mut conn, step).await?;
                done.fetch_add(made, Ordering::Relaxed);
            }
        }
    };
    run_workers(workers, worker, &done, seeded.messages, &mut progress).await?;
    let mut conn = dedicated_connection(&config).await?;
    conn.batch_execute("ANALYZE content.conversations, content.messages")
        .await?;
    Ok(seeded)
}

/// One statement: the step's conversations (when it starts them) and its messages.
async fn insert(conn: &mut AsyncPgConnection, step: &Work) -> Result<u64, strata_storage::Error> {
    #[derive(diesel::QueryableByName)]
    struct Made {
        #[diesel(sql_type = BigInt)]
        messages: i64,
    }
    let ids: Vec<Uuid> = step.plans.iter().map(|p| p.id).collect();
    let owners: Vec<Uuid> = step.plans.iter().map(|p| p.owner).collect();
    let sizes: Vec<i64> = step
        .plans
        .iter()
        .map(|p| i64::try_from(p.messages).unwrap_or(i64::MAX))
        .collect();
    let created: Vec<DateTime<Utc>> = step.plans.iter().map(|p| p.created_at).collect();
    let made: Made = diesel::sql_query(
        "WITH c AS ( \
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[]) \
             AS c(id, owner_id, n, created_at) \
         ), conversation AS ( \
           INSERT INTO content.conversations (id, owner_id, title, message_count, \
             last_sequence, active_leaf, last_message_at, active_at, created_at, updated_at) \
           SELECT c.id, c.owner_id, \
             initcap(($7::text[])[1 + (abs(hashtext(c.id::text)) % cardinality($7::text[]))]) \
               || ' ' || ($7::text[])[1 + (abs(hashtext(c.id::text || 't')) % cardinality($7::text[]))], \
             c.n, c.n, pg_temp.seed_message_id(c.id, c.n, c.created_at + c.n * interval '30 seconds'), \
             c.created_at + c.n * interval '30 seconds', c.created_at + c.n * interval '30 seconds', \
             c.created_at, c.created_at + c.n * interval '30 seconds' \
           FROM c WHERE $8 \
         ), inserted AS ( \
           INSERT INTO content.messages (conversation_id, sequence, id, parent_id, role, parts, \
             created_at, owner_id) \
           SELECT c.id, s, pg_temp.seed_message_id(c.id, s, c.created_at + s * interval '30 seconds'), \
             CASE WHEN s > 1 THEN \
               pg_temp.seed_message_id(c.id, s - 1, c.created_at + (s - 1) * interval '30 seconds') END, \
             CASE WHEN s % 2 = 1 THEN 1 ELSE 2 END, \
             jsonb_build_array(jsonb_build_object('text', array_to_string(ARRAY( \
               SELECT ($7::text[])[1 + floor(pow(random(), 2) * cardinality($7::text[]))::int] \
               FROM generate_series(1, 6 + (s % 19)::int)), ' '))), \
             c.created_at + s * interval '30 seconds', c.owner_id \
           FROM c CROSS JOIN LATERAL generate_series($5::bigint, least(c.n, $6::bigint)) AS s \
           RETURNING 1 \
         ) \
         SELECT count(*) AS messages FROM inserted",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<SqlUuid>, _>(&owners)
    .bind::<Array<BigInt>, _>(&sizes)
    .bind::<Array<Timestamptz>, _>(&created)
    .bind::<BigInt, _>(i64::try_from(step.first).unwrap_or(i64::MAX))
    .bind::<BigInt, _>(i64::try_from(step.last).unwrap_or(i64::MAX))
    .bind::<Array<Text>, _>(VOCABULARY)
    .bind::<Bool, _>(step.first == 1)
    .get_result(conn)
    .await?;
    Ok(u64::try_from(made.messages).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_add_up_with_one_large_conversation_per_million() {
        let options = ConversationSeed {
            conversations: 1_000,
            messages: 1_000_000,
            ..ConversationSeed::default()
        };
        let plans = plan(&options, Utc::now(), Uuid::new_v4());
        assert_eq!(plans.len(), 1_000);
        assert_eq!(plans[0].messages, 100_000);
        let total: u64 = plans.iter().map(|p| p.messages).sum();
        assert!(total.abs_diff(1_000_000) < 2_000, "{total}");
        assert!(plans[1].messages > 10 * plans[999].messages);
        let steps: usize = work(plans).iter().map(Vec::len).sum();
        assert!(steps >= 40, "{steps}");
    }
}
