//! The task queue's moving parts besides the RPCs: its settings, the wake-ups of
//! long-polling claims ([`Wakeups`]), the completions committed together ([`Completer`]),
//! and the two scheduled rounds (expired leases back to the queue, finished workflows
//! deleted after their retention).
//!
//! Wake-ups are only hints, as for conversation watchers: a statement that makes tasks
//! ready notifies [`TASKS_CHANNEL`] with `<owner>/<queue>` at commit; one connection per
//! replica listens and wakes the claims waiting on that queue, which then claim from the
//! table. A lost notification costs latency, never a task: a waiting claim looks again at
//! least every [`RECHECK`] (every [`POLL_WITHOUT_LISTENER`] while the listener is away),
//! which also finds retries whose backoff ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::RunQueryDsl as _;
use futures_util::StreamExt as _;
use strata_runtime::clock::Clock;
use strata_storage::DbConfig;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::store::workflows::{self as store, Completion, TASKS_CHANNEL, TaskRow};

/// Intervals and retention of the task queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How often expired leases are swept.
    pub sweep: Duration,
    /// How long finished workflows are kept.
    pub keep: Duration,
    /// How often finished workflows past `keep` are deleted.
    pub cleanup: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sweep: Duration::from_secs(1),
            keep: Duration::from_secs(30 * 86_400),
            cleanup: Duration::from_secs(600),
        }
    }
}

/// How often a waiting claim looks at the table anyway.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How often waiting claims look while the listener is not connected.
pub const POLL_WITHOUT_LISTENER: Duration = Duration::from_millis(200);
/// Expired leases ended per transaction of the sweeper.
pub const SWEEP_BATCH: i64 = 500;
/// Finished workflows deleted per statement of the cleanup.
pub const CLEANUP_BATCH: i64 = 100;

/// The claims waiting for work on this replica, by `<owner>/<queue>`, and the listener
/// that wakes them.
#[derive(Debug, Default)]
pub struct Wakeups {
    queues: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    listening: watch::Sender<bool>,
    started: OnceLock<()>,
}

/// A claim's place among the waiters of its queue; leaves on drop.
pub struct Waiter {
    wakeups: Arc<Wakeups>,
    key: String,
    /// Woken when the queue may have work.
    pub notify: Arc<Notify>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Ok(mut queues) = self.wakeups.queues.lock()
            && let Some((_, count)) = queues.get_mut(&self.key)
        {
            *count -= 1;
            if *count == 0 {
                queues.remove(&self.key);
            }
        }
    }
}

impl Wakeups {
    /// Registers a claim waiting on `key` (`<owner>/<queue>`), starting the listener on
    /// first use.
    pub fn wait_on(
        self: &Arc<Self>,
        key: String,
        db: &DbConfig,
        stopping: watch::Receiver<bool>,
    ) -> Waiter {
        self.start(db.clone(), stopping);
        let notify = match self.queues.lock() {
            Ok(mut queues) => {
                let entry = queues
                    .entry(key.clone())
                    .or_insert_with(|| (Arc::new(Notify::new()), 0));
                entry.1 += 1;
                Arc::clone(&entry.0)
            }
            // Poisoned: a claim that only polls is still correct.
            Err(_) => Arc::new(Notify::new()),
        };
        Waiter {
            wakeups: Arc::clone(self),
            key,
            notify,
        }
    }

    /// How long a waiting claim may sleep before looking again.
    pub fn recheck(&self) -> Duration {
        if *self.listening.borrow() {
            RECHECK
        } else {
            POLL_WITHOUT_LISTENER
        }
    }

    fn wake(&self, key: &str) {
        if let Ok(queues) = self.queues.lock()
            && let Some((notify, _)) = queues.get(key)
        {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        if let Ok(queues) = self.queues.lock() {
            for (notify, _) in queues.values() {
                notify.notify_waiters();
            }
        }
    }

    fn start(self: &Arc<Self>, db: DbConfig, stopping: watch::Receiver<bool>) {
        if self.started.set(()).is_err() {
            return;
        }
        let wakeups = Arc::clone(self);
        tokio::spawn(crate::watch::keep_listening(
            stopping,
            async move |stopping: &mut watch::Receiver<bool>| {
                let lost = wakeups.listen(&db, stopping).await;
                wakeups.listening.send_replace(false);
                lost
            },
            "task queue listener lost its connection; waiting claims poll until it is back",
        ));
    }

    /// One connection's life: LISTEN, wake every waiting claim (notifications may have
    /// been missed while it was away), then dispatch notifications until the connection
    /// fails or the server stops.
    async fn listen(
        &self,
        db: &DbConfig,
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<(), strata_storage::Error> {
        let mut conn = strata_storage::pool::dedicated_connection(db).await?;
        diesel::sql_query(format!("LISTEN {TASKS_CHANNEL}"))
            .execute(&mut conn)
            .await?;
        self.listening.send_replace(true);
        self.wake_all();
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                _ = stopping.changed() => return Ok(()),
                notification = notifications.next() => match notification {
                    None => return Ok(()),
                    Some(notification) => self.wake(&notification?.payload),
                },
            }
        }
    }
}

/// Most completions committed together.
pub const COMPLETION_BATCH: usize = 200;
/// Transactions of completions running at once.
const COMPLETERS: usize = 4;

/// A completion waiting for its commit.
struct Pending {
    task: Completion,
    reply: oneshot::Sender<Result<Option<TaskRow>, Arc<strata_storage::Error>>>,
}

/// Commits concurrent CompleteTask calls together, as a database's group commit does with
/// WAL flushes: each completer takes every completion waiting (up to
/// [`COMPLETION_BATCH`]), completes them in one transaction, and answers each caller after
/// the commit, so an acknowledged completion is durable. Alone, a call waits for nobody; under
/// load, one commit carries many tasks.
#[derive(Debug)]
pub struct Completer {
    sender: mpsc::Sender<Pending>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    started: OnceLock<()>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("task", &self.task.id)
            .finish()
    }
}

impl Default for Completer {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(COMPLETION_BATCH * COMPLETERS * 4);
        Self {
            sender,
            receiver: Arc::new(tokio::sync::Mutex::new(receiver)),
            started: OnceLock::new(),
        }
    }
}

impl Completer {
    /// Completes `task` with the others waiting (see [`store::complete`]): the task as
    /// completed, or `None` when it was not RUNNING under that lease.
    pub async fn complete(
        &self,
        db: &strata_storage::Db,
        clock: &Arc<dyn Clock>,
        task: Completion,
    ) -> Result<Option<TaskRow>, Arc<strata_storage::Error>> {
        self.start(db, clock);
        let (reply, answer) = oneshot::channel();
        let gone = || Arc::new(strata_storage::Error::PoolTimeout);
        self.sender
            .send(Pending { task, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    fn start(&self, db: &strata_storage::Db, clock: &Arc<dyn Clock>) {
        if self.started.set(()).is_err() {
            return;
        }
        for _ in 0..COMPLETERS {
            let (db, clock, receiver) = (db.clone(), Arc::clone(clock), Arc::clone(&self.receiver));
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::new();
                    {
                        let mut receiver = receiver.lock().await;
                        match receiver.recv().await {
                            Some(first) => batch.push(first),
                            None => return,
                        }
                        while batch.len() < COMPLETION_BATCH {
                            match receiver.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                    }
                    commit(&db, clock.as_ref(), batch).await;
                }
            });
        }
    }
}

/// Completes `batch` in one transaction (tasks in id order, the order locks are taken
/// in) and answers each caller.
async fn commit(db: &strata_storage::Db, clock: &dyn Clock, mut batch: Vec<Pending>) {
    batch.sort_by_key(|p| p.task.id);
    let tasks: Vec<Completion> = batch.iter().map(|p| p.task.clone()).collect();
    let now = DateTime::from_timestamp_millis(clock.now_ms()).unwrap_or_else(Utc::now);
    let done = db
        .retrying("complete tasks", || async {
            let mut conn = db.get().await?;
            Ok::<_, strata_storage::Error>(store::complete(&mut conn, &tasks, now).await?)
        })
        .await;
    match done {
        Ok(rows) => {
            let mut rows: HashMap<Uuid, TaskRow> = rows.into_iter().map(|r| (r.id, r)).collect();
            for pending in batch {
                let _ = pending.reply.send(Ok(rows.remove(&pending.task.id)));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for pending in batch {
                let _ = pending.reply.send(Err(Arc::clone(&e)));
            }
        }
    }
}
