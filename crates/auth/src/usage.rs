//! `last_used_at` of API keys, recorded in batches: each authenticated call notes the time
//! in memory, and a background task writes all noted uses in one statement every 30 s
//! (and once more when the server stops), instead of one write per call.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use strata_storage::Db;
use uuid::Uuid;

use crate::store;

/// Pending last-use times by key.
#[derive(Debug)]
pub struct KeyUsage {
    db: Db,
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl KeyUsage {
    /// A recorder; the auth service's `auth.key_usage` task flushes it periodically and
    /// at shutdown.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that `key` was used at `at`.
    pub fn note(&self, key: Uuid, at: DateTime<Utc>) {
        if let Ok(mut pending) = self.pending.lock() {
            let entry = pending.entry(key).or_insert(at);
            *entry = (*entry).max(at);
        }
    }

    /// Writes every noted use now; on failure they are kept for the next flush.
    pub async fn flush(&self) -> Result<usize, strata_storage::Error> {
        let batch: Vec<(Uuid, DateTime<Utc>)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let result = async {
            let mut conn = self.db.get().await?;
            Ok::<_, strata_storage::Error>(store::touch_api_keys(&mut conn, &batch).await?)
        }
        .await;
        if result.is_err() {
            for (key, at) in batch {
                self.note(key, at);
            }
        }
        result
    }
}
