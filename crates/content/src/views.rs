//! Project views without a hot row: each view adds the viewer to the day's HyperLogLog of
//! the project in Redis (unique viewers per day, 12 KiB at most per project and day); a
//! project whose count moved is marked in a sorted set, and a background task folds the
//! marked counts into PostgreSQL in batches ([`crate::store::projects::fold_views`]), so a
//! viral project's viewers never queue on its row.
//!
//! Counts are absolute (the day's count so far), so a fold repeated after a crash changes
//! nothing; a mark is removed only if no view moved it since it was read. Without Redis a
//! view is refused (UNAVAILABLE), never acknowledged and dropped.

use chrono::{DateTime, NaiveDate, Utc};
use strata_cache::RedisHandle;
use strata_storage::Db;
use uuid::Uuid;

use crate::ContentError;
use crate::store::projects::{self, DayCount};

/// Adds the viewer; marks the project (scored by Redis' clock) if its count moved.
const RECORD: &str = r"
if redis.call('PFADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[2])
end
return 1
";

/// Removes the marks whose score is still the one read (no view since).
const UNMARK: &str = r"
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
";

/// How long a day's counter outlives its day (folds finish well before).
const COUNTER_TTL_SECS: u64 = 3 * 24 * 3600;
/// Most projects folded per round trip.
const FOLD_BATCH: isize = 1000;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Views {
    redis: Option<RedisHandle>,
    db: Db,
    record: redis::Script,
    unmark: redis::Script,
}

impl Views {
    /// Views counted in `redis`, folded into `db`.
    pub fn new(redis: Option<RedisHandle>, db: Db) -> Self {
        Self {
            redis,
            db,
            record: redis::Script::new(RECORD),
            unmark: redis::Script::new(UNMARK),
        }
    }

    fn dirty_key(redis: &RedisHandle) -> String {
        redis.key("content:views:dirty")
    }

    fn counter_key(redis: &RedisHandle, member: &str) -> String {
        redis.key(&format!("content:views:{member}"))
    }

    /// Counts `viewer` as a viewer of `project` today.
    pub async fn record(
        &self,
        project: Uuid,
        viewer: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), ContentError> {
        let Some(redis) = &self.redis else {
            return Err(unavailable());
        };
        let member = format!("{}/{project}", now.date_naive());
        let mut invocation = self.record.prepare_invoke();
        invocation
            .key(Self::counter_key(redis, &member))
            .key(Self::dirty_key(redis))
            .arg(viewer.as_bytes().as_slice())
            .arg(&member)
            .arg(COUNTER_TTL_SECS);
        redis
            .invoke::<i64>("content.views", &invocation)
            .await
            .map_err(|_| unavailable())?;
        Ok(())
    }

    /// Folds a batch of marked counts (the oldest marks first) into PostgreSQL; the
    /// projects whose `view_count` changed, and whether marks may remain.
    pub async fn fold_batch(&self, now: DateTime<Utc>) -> Result<(Vec<Uuid>, bool), ContentError> {
        let Some(redis) = &self.redis else {
            return Ok((Vec::new(), false));
        };
        let dirty = Self::dirty_key(redis);
        let marks: Vec<(String, f64)> = redis
            .query(
                "content.views",
                redis::cmd("ZRANGE")
                    .arg(&dirty)
                    .arg(0)
                    .arg(FOLD_BATCH - 1)
                    .arg("WITHSCORES"),
            )
            .await
            .map_err(|_| unavailable())?;
        if marks.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut pipeline = redis::pipe();
        for (member, _) in &marks {
            pipeline
                .cmd("PFCOUNT")
                .arg(Self::counter_key(redis, member));
        }
        let counts: Vec<i64> = redis
            .query_pipeline("content.views", &pipeline)
            .await
            .map_err(|_| unavailable())?;
        let parsed: Vec<DayCount> = marks
            .iter()
            .zip(&counts)
            .filter_map(|((member, _), &count)| {
                let (day, project) = member.split_once('/')?;
                let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
                Some((Uuid::parse_str(project).ok()?, day, count))
            })
            .collect();
        let mut conn = self.db.get().await?;
        let changed = projects::fold_views(&mut conn, &parsed, now).await?;
        drop(conn);
        let mut invocation = self.unmark.prepare_invoke();
        invocation.key(&dirty);
        for (member, score) in &marks {
            invocation.arg(member).arg(*score);
        }
        let _: i64 = redis
            .invoke("content.views", &invocation)
            .await
            .map_err(|_| unavailable())?;
        Ok((changed, marks.len() == FOLD_BATCH as usize))
    }
}

fn unavailable() -> ContentError {
    ContentError::Api(strata_errors::ApiError::unavailable(
        "views cannot be counted right now; retry later",
    ))
}
