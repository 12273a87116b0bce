//! Background work owned by the server, in the manner of linkerd2-proxy's drain handles.
//!
//! A service registers each periodic job with [`crate::ServerBuilder::add_task`] as a
//! [`Task`]: a name, an interval, one round of work, and optionally a last round to run at
//! shutdown (a flush of what is pending). The server starts every task when it serves; on
//! shutdown, once in-flight calls have drained (no new work arrives), it tells the tasks to
//! stop, lets each finish its current round and run its last one, and waits for them within
//! the grace period. [`TaskBoard`] records when each task last ran, for `GetHealth`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Error of one round of a task: logged with the task's name, never sent to clients.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

type Round = Arc<dyn Fn() -> BoxFuture<'static, Result<(), TaskError>> + Send + Sync>;

fn round<F, Fut, E>(f: F) -> Round
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<TaskError>,
{
    Arc::new(move || {
        let fut = f();
        Box::pin(async move { fut.await.map_err(Into::into) })
    })
}

/// A periodic job of a service.
pub struct Task {
    name: String,
    every: Duration,
    round: Round,
    last: Option<Round>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Task {
    /// Runs `round` now and then every `every` (a late round delays the next rather than
    /// bunching up). `name` is dotted, service first: `auth.key_usage`.
    pub fn every<F, Fut, E>(name: impl Into<String>, every: Duration, round_fn: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<TaskError>,
    {
        Self {
            name: name.into(),
            every,
            round: round(round_fn),
            last: None,
        }
    }

    /// Runs `last` once when the server stops, after the final round, so pending work is
    /// not lost with the process.
    pub fn on_shutdown<F, Fut, E>(mut self, last: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<TaskError>,
    {
        self.last = Some(round(last));
        self
    }
}

/// What is known about one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// The task's name.
    pub name: String,
    /// Its interval.
    pub every: Duration,
    /// When its last round finished.
    pub last_run: Option<SystemTime>,
    /// Whether that round failed.
    pub last_failed: bool,
    /// Rounds run.
    pub runs: u64,
    /// Rounds that failed.
    pub failures: u64,
}

/// The status of every task of a process; shared with the admin RPCs.
#[derive(Debug, Default)]
pub struct TaskBoard {
    tasks: Mutex<Vec<Arc<Mutex<TaskStatus>>>>,
}

impl TaskBoard {
    /// Every task, in registration order.
    pub fn snapshot(&self) -> Vec<TaskStatus> {
        let Ok(tasks) = self.tasks.lock() else {
            return Vec::new();
        };
        tasks
            .iter()
            .filter_map(|t| t.lock().ok().map(|s| s.clone()))
            .collect()
    }

    fn add(&self, name: &str, every: Duration) -> Arc<Mutex<TaskStatus>> {
        let status = Arc::new(Mutex::new(TaskStatus {
            name: name.to_owned(),
            every,
            last_run: None,
            last_failed: false,
            runs: 0,
            failures: 0,
        }));
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(Arc::clone(&status));
        }
        status
    }
}

/// Runs one round and records it. A failure is logged when it follows a success (not at
/// every round while a dependency is down), and the recovery once.
async fn run(name: &str, round: &Round, status: &Mutex<TaskStatus>) {
    let result = round().await;
    let was_failing = status.lock().map(|s| s.last_failed).unwrap_or(false);
    match &result {
        Err(e) if !was_failing => {
            tracing::warn!(task = name, error = %e, "background task failed; retrying every round");
        }
        Ok(()) if was_failing => tracing::info!(task = name, "background task works again"),
        _ => {}
    }
    if let Ok(mut status) = status.lock() {
        status.last_run = Some(SystemTime::now());
        status.last_failed = result.is_err();
        status.runs += 1;
        status.failures += u64::from(result.is_err());
    }
}

/// The running tasks of a server.
#[derive(Debug)]
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts every task, recording them on `board`.
    pub(crate) fn start(tasks: Vec<Task>, board: &TaskBoard) -> Self {
        let (stop, _) = watch::channel(false);
        let handles = tasks
            .into_iter()
            .map(|task| {
                let status = board.add(&task.name, task.every);
                let mut stopped = stop.subscribe();
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(task.every);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            biased;
                            _ = stopped.changed() => break,
                            _ = ticker.tick() => run(&task.name, &task.round, &status).await,
                        }
                    }
                    if let Some(last) = &task.last {
                        run(&task.name, last, &status).await;
                    }
                })
            })
            .collect();
        Self { stop, handles }
    }

    /// Tells every task to stop, and waits for each to finish its round and its last one.
    pub(crate) async fn stop(&mut self) {
        let _ = self.stop.send(true);
        for handle in &mut self.handles {
            let _ = handle.await;
        }
    }

    /// Stops without waiting (the grace period is over).
    pub(crate) fn abort(&self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}
