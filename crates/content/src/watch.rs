//! `WatchConversation`: a conversation's messages as they are committed, on any replica,
//! in sequence order, each exactly once, resumable from any sequence.
//!
//! The table is the only source of what is sent. Sequences are gap-free and committed in
//! order (each append holds the conversation's row lock until it commits), so a watcher
//! that reads `sequence > last` from the primary key, in order, after every wake-up, can
//! neither skip nor repeat a message, and resuming is the same read from the client's
//! last sequence.
//!
//! Wake-ups are only hints. Every append and deletion notifies the PostgreSQL channel
//! [`MESSAGES_CHANNEL`] at commit; one connection per replica ([`Hub`]) listens and wakes
//! the watchers of that conversation. A lost notification costs latency, never a message:
//! each watcher reads again at least every [`IDLE_RECHECK`] (every [`POLL_WITHOUT_LISTENER`]
//! while the listener is reconnecting), and every watcher is woken when it reconnects.
//!
//! Memory is bounded: a watcher reads [`READ_BATCH`] messages at a time and hands them to a
//! channel of [`Limits::buffer`]; a client that leaves it full for [`Limits::slow`] gets the
//! buffered messages and then ABORTED, telling it to resume from its last sequence.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use diesel_async::RunQueryDsl as _;
use futures_util::{Stream, StreamExt as _};
use strata_proto::content as pb;
use strata_runtime::AppContext;
use strata_storage::DbConfig;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;
use uuid::Uuid;

use strata_errors::ApiError;

use crate::ContentError;
use crate::handlers::conversations::message_proto;
use crate::store::conversations::{self as store, MESSAGES_CHANNEL};

/// Messages read per query.
const READ_BATCH: i64 = 100;
/// How much a watcher holds for its client, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages held for one client.
    pub buffer: usize,
    /// How long a client may leave its buffer full before it is told to resume.
    pub slow: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            buffer: 32,
            slow: Duration::from_secs(10),
        }
    }
}
/// How often an idle watcher reads anyway (and checks the conversation still exists).
const IDLE_RECHECK: Duration = Duration::from_secs(5);
/// How often watchers read while the listener is not connected.
const POLL_WITHOUT_LISTENER: Duration = Duration::from_millis(500);
/// Streams one user may hold open on one replica.
pub const MAX_STREAMS_PER_USER: usize = 100;
/// Streams one replica holds open.
pub const MAX_STREAMS: usize = 10_000;
/// Pause between the listener's connection attempts.
const RECONNECT: Duration = Duration::from_secs(1);

/// Runs `listen` (one LISTEN connection's life, which says it is down when it ends) again
/// [`RECONNECT`] after each end, logging `lost` when it failed, until the server stops: the
/// life of the conversation hub's listener and of the task queue's.
pub(crate) async fn keep_listening(
    mut stopping: watch::Receiver<bool>,
    mut listen: impl AsyncFnMut(&mut watch::Receiver<bool>) -> Result<(), strata_storage::Error>,
    lost: &'static str,
) {
    loop {
        if *stopping.borrow() {
            return;
        }
        if let Err(e) = listen(&mut stopping).await {
            tracing::warn!(error = %e, "{lost}");
        }
        tokio::select! {
            _ = stopping.changed() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

/// The stream WatchConversation answers with.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchConversationResponse, Status>> + Send>>;

/// The watchers of one replica and the connection that wakes them.
#[derive(Debug, Default)]
pub struct Hub {
    /// Per watched conversation, the last sequence notified (every watcher holds a
    /// receiver; the entry goes with the last one).
    conversations: Mutex<HashMap<Uuid, watch::Sender<i64>>>,
    /// Whether the listener is connected (watchers poll faster while it is not).
    listening: watch::Sender<bool>,
    started: OnceLock<()>,
    /// Tells the listener which conversations start and stop being watched here.
    commands: OnceLock<mpsc::UnboundedSender<Watching>>,
    /// Open streams per user.
    streams: Mutex<HashMap<Uuid, usize>>,
    /// What each watcher holds for its client.
    limits: Limits,
}

/// A conversation starts or stops being watched on this replica.
#[derive(Debug, Clone, Copy)]
enum Watching {
    Start(Uuid),
    Stop(Uuid),
}

/// The advisory-lock class of watched conversations: the listener holds a shared lock on
/// `(WATCH_LOCK_CLASS, hashtext(conversation))` while the conversation has watchers here;
/// an append notifies only when it cannot take that lock exclusively (someone watches).
pub const WATCH_LOCK_CLASS: i32 = 0x434e_5654;

/// A watcher's registration; unregisters on drop.
struct Subscription {
    hub: Arc<Hub>,
    id: Uuid,
    user: Uuid,
    notified: watch::Receiver<i64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut streams) = self.hub.streams.lock()
            && let Some(n) = streams.get_mut(&self.user)
        {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.user);
            }
        }
        if let Ok(mut conversations) = self.hub.conversations.lock()
            && let Some(sender) = conversations.get(&self.id)
            && sender.receiver_count() <= 1
        {
            conversations.remove(&self.id);
            self.hub.command(Watching::Stop(self.id));
        }
    }
}

impl Hub {
    /// A hub whose watchers hold what `limits` allow.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Registers a stream of `user` on conversation `id`, within the limits.
    fn subscribe(self: &Arc<Self>, user: Uuid, id: Uuid) -> Result<Subscription, ApiError> {
        {
            let mut streams = self
                .streams
                .lock()
                .map_err(|_| ApiError::Unavailable("the watchers' registry failed".into()))?;
            let total: usize = streams.values().sum();
            let mine = streams.entry(user).or_insert(0);
            if *mine >= MAX_STREAMS_PER_USER || total >= MAX_STREAMS {
                let message = if *mine >= MAX_STREAMS_PER_USER {
                    format!(
                        "at most {MAX_STREAMS_PER_USER} open WatchConversation streams per user"
                    )
                } else {
                    format!("this server holds {MAX_STREAMS} WatchConversation streams")
                };
                if *mine == 0 {
                    streams.remove(&user);
                }
                return Err(ApiError::ResourceExhausted {
                    message: message.into(),
                    retry_after: Duration::from_secs(1),
                    quota: Vec::new(),
                });
            }
            *mine += 1;
        }
        let notified = match self.conversations.lock() {
            Ok(mut conversations) => conversations
                .entry(id)
                .or_insert_with(|| {
                    self.command(Watching::Start(id));
                    watch::Sender::new(0)
                })
                .subscribe(),
            // Poisoned: a watcher that only polls is still correct.
            Err(_) => watch::Sender::new(0).subscribe(),
        };
        Ok(Subscription {
            hub: Arc::clone(self),
            id,
            user,
            notified,
        })
    }

    fn command(&self, command: Watching) {
        if let Some(commands) = self.commands.get() {
            let _ = commands.send(command);
        }
    }

    fn wake(&self, id: Uuid) {
        if let Ok(conversations) = self.conversations.lock()
            && let Some(sender) = conversations.get(&id)
        {
            sender.send_modify(|_| {});
        }
    }

    fn watched(&self) -> Vec<Uuid> {
        self.conversations
            .lock()
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default()
    }

    fn notify(&self, id: Uuid, sequence: i64) {
        if let Ok(conversations) = self.conversations.lock()
            && let Some(sender) = conversations.get(&id)
        {
            sender.send_replace(sequence);
        }
    }

    fn wake_all(&self) {
        if let Ok(conversations) = self.conversations.lock() {
            for sender in conversations.values() {
                sender.send_modify(|_| {});
            }
        }
    }

    /// Starts the listener on first use; it runs until the server stops.
    fn start(self: &Arc<Self>, db: DbConfig, stopping: watch::Receiver<bool>) {
        if self.started.set(()).is_err() {
            return;
        }
        let (commands, mut received) = mpsc::unbounded_channel();
        let _ = self.commands.set(commands);
        let hub = Arc::clone(self);
        tokio::spawn(keep_listening(
            stopping,
            async move |stopping: &mut watch::Receiver<bool>| {
                let lost = hub.listen(&db, stopping, &mut received).await;
                hub.listening.send_replace(false);
                lost
            },
            "conversation listener lost its connection; watchers poll until it is back",
        ));
    }

    /// One connection's life: LISTEN, take the watch locks of every conversation watched
    /// here, wake their watchers (notifications may have been missed while it was away),
    /// then take and release watch locks as conversations start and stop being watched,
    /// and dispatch notifications, until the connection fails or the server stops.
    async fn listen(
        &self,
        db: &DbConfig,
        stopping: &mut watch::Receiver<bool>,
        commands: &mut mpsc::UnboundedReceiver<Watching>,
    ) -> Result<(), strata_storage::Error> {
        enum Event {
            Command(Option<Watching>),
            Notification(Option<diesel::QueryResult<diesel::pg::PgNotification>>),
        }
        let mut conn = strata_storage::pool::dedicated_connection(db).await?;
        diesel::sql_query(format!("LISTEN {MESSAGES_CHANNEL}"))
            .execute(&mut conn)
            .await?;
        // What is watched now is the truth; earlier commands are stale.
        while commands.try_recv().is_ok() {}
        let mut locked = HashSet::new();
        for id in self.watched() {
            watch_lock(&mut conn, "pg_advisory_lock_shared", id).await?;
            locked.insert(id);
        }
        self.listening.send_replace(true);
        self.wake_all();
        loop {
            let event = {
                let mut notifications = std::pin::pin!(conn.notifications_stream());
                tokio::select! {
                    _ = stopping.changed() => return Ok(()),
                    command = commands.recv() => Event::Command(command),
                    notification = notifications.next() => Event::Notification(notification),
                }
            };
            match event {
                Event::Command(None) | Event::Notification(None) => return Ok(()),
                Event::Command(Some(Watching::Start(id))) => {
                    if locked.insert(id) {
                        watch_lock(&mut conn, "pg_advisory_lock_shared", id).await?;
                        // Appends committed before the lock did not notify: read again.
                        self.wake(id);
                    }
                }
                Event::Command(Some(Watching::Stop(id))) => {
                    if locked.remove(&id) {
                        watch_lock(&mut conn, "pg_advisory_unlock_shared", id).await?;
                    }
                }
                Event::Notification(Some(notification)) => {
                    let notification = notification?;
                    if let Some((id, sequence)) = notification.payload.split_once(':')
                        && let (Ok(id), Ok(sequence)) =
                            (Uuid::try_parse(id), sequence.parse::<i64>())
                    {
                        self.notify(id, sequence);
                    }
                }
            }
        }
    }
}

/// Runs `function` (`pg_advisory_lock_shared` or `pg_advisory_unlock_shared`) on the watch
/// lock of conversation `id`.
async fn watch_lock(
    conn: &mut diesel_async::AsyncPgConnection,
    function: &str,
    id: Uuid,
) -> Result<(), strata_storage::Error> {
    diesel::sql_query(format!(
        "SELECT {function}({WATCH_LOCK_CLASS}, hashtext($1::text))"
    ))
    .bind::<diesel::sql_types::Uuid, _>(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why a watch ended, told to the client.
fn resume_status(code: tonic::Code, why: &str, last: i64) -> Status {
    Status::new(code, format!("{why}; resume with from_sequence = {last}"))
}

/// The stream of conversation `id`'s messages after `from`, for `user` (who may read it).
pub fn stream(
    ctx: Arc<AppContext>,
    hub: &Arc<Hub>,
    user: Uuid,
    id: Uuid,
    from: i64,
) -> Result<WatchStream, ContentError> {
    let subscription = hub.subscribe(user, id)?;
    hub.start(ctx.config.db.clone(), ctx.stopping.subscribe());
    let (tx, rx) = mpsc::channel::<pb::WatchConversationResponse>(hub.limits.buffer.max(1));
    let (end_tx, end_rx) = oneshot::channel::<Status>();
    let slow = hub.limits.slow;
    tokio::spawn(feed(ctx, subscription, from, tx, end_tx, slow));
    let messages =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|m| (Ok(m), rx)) },
        );
    // After the buffered messages, the reason the feed ended, if it ended early.
    let end = futures_util::stream::once(end_rx).filter_map(|end| async move { end.ok().map(Err) });
    Ok(Box::pin(messages.chain(end)))
}

/// Reads the conversation's messages after `last` and sends them, forever: see the
/// module documentation.
async fn feed(
    ctx: Arc<AppContext>,
    mut subscription: Subscription,
    mut last: i64,
    tx: mpsc::Sender<pb::WatchConversationResponse>,
    end: oneshot::Sender<Status>,
    slow: Duration,
) {
    let id = subscription.id;
    let mut stopping = ctx.stopping.subscribe();
    let listening = subscription.hub.listening.subscribe();
    let finish = |status: Status| {
        let _ = end.send(status);
    };
    loop {
        if *stopping.borrow() {
            return finish(resume_status(
                tonic::Code::Unavailable,
                "the server is shutting down",
                last,
            ));
        }
        // Mark what this read covers before reading: a notification arriving meanwhile
        // wakes the next wait.
        subscription.notified.borrow_and_update();
        let read = async {
            let mut conn = ctx.db.get().await?;
            let rows = store::messages_after(&mut conn, id, last, READ_BATCH).await?;
            let gone = rows.is_empty() && !store::conversation_exists(&mut conn, id).await?;
            Ok::<_, strata_storage::Error>((rows, gone))
        };
        let (rows, gone) = match read.await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "a conversation watcher could not read; retrying");
                tokio::time::sleep(POLL_WITHOUT_LISTENER).await;
                continue;
            }
        };
        if gone {
            return finish(Status::not_found("conversation not found"));
        }
        let full = rows.len() as i64 == READ_BATCH;
        for row in &rows {
            let message = pb::WatchConversationResponse {
                message: Some(message_proto(row)),
            };
            match tokio::time::timeout(slow, tx.send(message)).await {
                Ok(Ok(())) => last = row.sequence,
                // The client went away.
                Ok(Err(_)) => return,
                Err(_) => {
                    return finish(resume_status(
                        tonic::Code::Aborted,
                        "the client read too slowly",
                        last,
                    ));
                }
            }
        }
        if full {
            continue;
        }
        let wait = if *listening.borrow() {
            IDLE_RECHECK
        } else {
            POLL_WITHOUT_LISTENER
        };
        tokio::select! {
            changed = subscription.notified.changed() => {
                // No hub entry (a poisoned registry): poll instead.
                if changed.is_err() {
                    tokio::time::sleep(wait).await;
                }
            }
            _ = stopping.changed() => {}
            () = tx.closed() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
