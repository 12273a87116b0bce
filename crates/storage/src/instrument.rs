//! Per-request query accounting and the slow-query log, through diesel's
//! [`Instrumentation`] hook.
//!
//! Every pooled connection carries a [`QueryInstrumentation`]. diesel-async raises its
//! start/finish events inside the future that runs the query, i.e. on the task of the
//! request that issued it, so a task-local [`QueryStats`] installed by [`scope`] collects
//! the count and time of exactly that request's queries, whichever connection ran them.
//! The slow-query log prints the SQL text (with `$n` placeholders) and never bind values:
//! it reads the statement from the finish event, which diesel-async builds from the SQL
//! alone.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};

use crate::config::SlowQueryThresholds;

tokio::task_local! {
    static SCOPE: Option<Arc<QueryStats>>;
}

/// Queries run by one request: count and summed duration.
#[derive(Debug, Default)]
pub struct QueryStats {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl QueryStats {
    /// Queries finished so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Their summed wall-clock duration.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn record(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Runs `fut` with `stats` collecting every query it runs.
pub async fn scope<F: Future>(stats: Arc<QueryStats>, fut: F) -> F::Output {
    SCOPE.scope(Some(stats), fut).await
}

/// Runs `fut` without counting its queries toward the enclosing scope; for the pool's own
/// housekeeping (connection validation) that a request did not ask for.
pub async fn unscoped<F: Future>(fut: F) -> F::Output {
    SCOPE.scope(None, fut).await
}

/// The instrumentation installed on every pooled connection.
#[derive(Debug)]
pub struct QueryInstrumentation {
    // diesel-async can pipeline several queries on one connection; PostgreSQL answers in
    // order, so start times queue FIFO.
    started: VecDeque<Instant>,
    thresholds: SlowQueryThresholds,
}

impl QueryInstrumentation {
    /// Instrumentation logging queries slower than `thresholds`.
    pub fn new(thresholds: SlowQueryThresholds) -> Self {
        Self {
            started: VecDeque::new(),
            thresholds,
        }
    }
}

impl Instrumentation for QueryInstrumentation {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { .. } => self.started.push_back(Instant::now()),
            InstrumentationEvent::FinishQuery { query, error, .. } => {
                let Some(started) = self.started.pop_front() else {
                    return;
                };
                let elapsed = started.elapsed();
                let _ = SCOPE.try_with(|scope| {
                    if let Some(stats) = scope {
                        stats.record(elapsed);
                    }
                });
                if elapsed >= self.thresholds.warn {
                    let rendered = query.to_string();
                    let sql = statement_text(&rendered);
                    let ms = elapsed.as_secs_f64() * 1e3;
                    let failed = error.is_some();
                    if elapsed >= self.thresholds.error {
                        tracing::error!(
                            db.statement = sql,
                            db.duration_ms = ms,
                            db.failed = failed,
                            "slow query"
                        );
                    } else {
                        tracing::warn!(
                            db.statement = sql,
                            db.duration_ms = ms,
                            db.failed = failed,
                            "slow query"
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// The SQL of a rendered diesel query without its bind values. Finish events already
/// carry bare SQL; this also strips diesel's `-- binds: [...]` suffix should a rendering
/// with binds ever reach it. Bind values only ever appear after the first marker, since
/// the SQL text itself is ours.
pub fn statement_text(rendered: &str) -> &str {
    match rendered.find(" -- binds: ") {
        Some(i) => &rendered[..i],
        None => rendered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_values_are_stripped() {
        assert_eq!(
            statement_text("SELECT * FROM t WHERE a = $1 -- binds: [\"secret\"]"),
            "SELECT * FROM t WHERE a = $1"
        );
        assert_eq!(statement_text("SELECT 1"), "SELECT 1");
    }

    #[tokio::test]
    async fn scope_collects_and_unscoped_hides() {
        let stats = Arc::new(QueryStats::default());
        scope(stats.clone(), async {
            let mut inst = QueryInstrumentation::new(SlowQueryThresholds {
                warn: Duration::from_secs(1),
                error: Duration::from_secs(2),
            });
            let q = diesel::connection::StrQueryHelper::new("SELECT 1");
            inst.on_connection_event(InstrumentationEvent::start_query(&q));
            inst.on_connection_event(InstrumentationEvent::finish_query(&q, None));
            unscoped(async {
                inst.on_connection_event(InstrumentationEvent::start_query(&q));
                inst.on_connection_event(InstrumentationEvent::finish_query(&q, None));
            })
            .await;
        })
        .await;
        assert_eq!(stats.count(), 1);
    }
}
