//! Per-request query accounting and the slow-query log, through diesel's
//! [`Instrumentation`] hook.
//!
//! Every pooled connection carries a [`QueryInstrumentation`]. diesel-async raises its
//! start/finish events inside the future that runs the query, i.e. on the task of the
//! request that issued it, so a task-local [`QueryStats`] installed by [`scope`] collects
//! the count and time of exactly that request's queries, whichever connection ran them.
//! The slow-query log prints the SQL text (with `$n` placeholders) and never bind values:
//! it reads the statement from the finish event, which diesel-async builds from the SQL
//! alone. The same text goes into one `db.query` span per statement.

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

    fn add(&self, queries: u64, elapsed: Duration) {
        self.count.fetch_add(queries, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Counts `queries` statements that took `elapsed` in all toward the current scope: for
/// work on a connection outside the pool, which has no instrumentation of its own.
pub fn record(elapsed: Duration, queries: u64) {
    let _ = SCOPE.try_with(|scope| {
        if let Some(stats) = scope {
            stats.add(queries, elapsed);
        }
    });
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

/// Most queries one connection tracks as started but not finished: the calls pipelining
/// on a shared connection, plus queries whose future was dropped mid-flight (a cancelled
/// call), which never finish; beyond this many, the oldest is closed as abandoned.
const MAX_IN_FLIGHT: usize = 1024;

/// A query that started on a connection and has not finished yet.
#[derive(Debug)]
struct InFlight {
    /// The task that runs it (none outside a runtime task).
    task: Option<tokio::task::Id>,
    started: Instant,
    // Closed as soon as the query turns out abandoned: an open child span would keep its
    // request's span from closing, and so from being exported.
    span: Option<tracing::Span>,
}

/// The instrumentation installed on every pooled connection.
///
/// Start and finish events come from the task that runs the query, and a task runs one
/// query at a time, so a finish closes the latest start of its own task, also on a shared
/// connection where many calls' queries are in flight at once (see [`crate::Db::shared`]).
/// A query whose future was dropped between start and finish (the call was cancelled by
/// its deadline) is found when its task starts another, or evicted as the oldest, and can
/// never be mistaken for a later query's.
///
/// Each query gets a `db.query` span (OpenTelemetry database conventions: `db.system`,
/// `db.operation`, `db.statement` as SQL text with `$n` placeholders, never values), a
/// child of whatever span is current when the query starts, i.e. the request's.
#[derive(Debug)]
pub struct QueryInstrumentation {
    in_flight: Vec<InFlight>,
    thresholds: SlowQueryThresholds,
    /// When the last query finished without error: the pool trusts a connection that
    /// worked this recently without a validation query.
    last_success: Option<Instant>,
}

impl QueryInstrumentation {
    /// Instrumentation logging queries slower than `thresholds`.
    pub fn new(thresholds: SlowQueryThresholds) -> Self {
        Self {
            in_flight: Vec::new(),
            thresholds,
            last_success: None,
        }
    }

    /// Whether the connection's last query succeeded less than `window` ago.
    pub fn succeeded_within(&self, window: Duration) -> bool {
        self.last_success.is_some_and(|t| t.elapsed() < window)
    }

    fn start(&mut self) {
        let task = tokio::task::try_id();
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            abandon(self.in_flight.remove(0));
        }
        // A task runs one query at a time, so its query still in flight when it starts the
        // next was abandoned (its call was cancelled): close its span now.
        for leftover in self.in_flight.extract_if(.., |q| q.task == task) {
            abandon(leftover);
        }
        let span = tracing::info_span!(
            target: "strata_storage::query",
            "db.query",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system = "postgresql",
            db.operation = tracing::field::Empty,
            db.statement = tracing::field::Empty,
            db.abandoned = tracing::field::Empty,
        );
        self.in_flight.push(InFlight {
            task,
            started: Instant::now(),
            span: Some(span),
        });
    }

    fn finish(&mut self, sql: &str, failed: bool) {
        let task = tokio::task::try_id();
        let Some(at) = self.in_flight.iter().rposition(|q| q.task == task) else {
            return;
        };
        let InFlight { started, span, .. } = self.in_flight.remove(at);
        let span = span.unwrap_or_else(tracing::Span::none);
        let elapsed = started.elapsed();
        if !failed {
            self.last_success = Some(Instant::now());
        }
        let operation = operation_of(sql);
        span.record("otel.name", operation);
        span.record("db.operation", operation);
        span.record("db.statement", sql);
        if failed {
            span.record("otel.status_code", "ERROR");
        }
        let _ = SCOPE.try_with(|scope| {
            if let Some(stats) = scope {
                stats.add(1, elapsed);
            }
        });
        if elapsed >= self.thresholds.warn {
            let _entered = span.enter();
            let ms = elapsed.as_secs_f64() * 1e3;
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
}

/// Closes the span of a query that will never finish.
fn abandon(query: InFlight) {
    if let Some(span) = query.span {
        span.record("db.abandoned", true);
        span.record("otel.status_code", "ERROR");
    }
}

impl Instrumentation for QueryInstrumentation {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { .. } => self.start(),
            InstrumentationEvent::FinishQuery { query, error, .. } => {
                let rendered = query.to_string();
                self.finish(statement_text(&rendered), error.is_some());
            }
            _ => {}
        }
    }
}

/// The operation of a statement, for span names: its first keyword, upper-cased
/// (`SELECT`, `INSERT`, `WITH`, `BEGIN`, …), or `SQL` when there is none.
pub fn operation_of(sql: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "WITH",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SET",
        "LOCK",
        "REFRESH",
        "CREATE",
        "ALTER",
        "DROP",
        "EXPLAIN",
        "SAVEPOINT",
        "RELEASE",
        "SHOW",
        "VALUES",
        "CALL",
        "DO",
    ];
    let first = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(first))
        .copied()
        .unwrap_or("SQL")
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

    #[tokio::test]
    async fn a_start_left_by_a_dropped_query_never_times_a_later_one() {
        let stats = Arc::new(QueryStats::default());
        let mut inst = QueryInstrumentation::new(SlowQueryThresholds {
            warn: Duration::from_secs(10),
            error: Duration::from_secs(20),
        });
        let q = diesel::connection::StrQueryHelper::new("SELECT 1");
        // A query starts and its future is dropped: no finish ever comes.
        inst.on_connection_event(InstrumentationEvent::start_query(&q));
        std::thread::sleep(Duration::from_millis(200));
        scope(stats.clone(), async {
            inst.on_connection_event(InstrumentationEvent::start_query(&q));
            inst.on_connection_event(InstrumentationEvent::finish_query(&q, None));
        })
        .await;
        assert_eq!(stats.count(), 1);
        assert!(
            stats.total() < Duration::from_millis(100),
            "{:?}",
            stats.total()
        );
        // A task's leftover is closed when the task starts its next query.
        for _ in 0..100 {
            inst.on_connection_event(InstrumentationEvent::start_query(&q));
        }
        assert_eq!(inst.in_flight.len(), 1);
        // The leftovers of many tasks are bounded.
        let inst = Arc::new(std::sync::Mutex::new(inst));
        for _ in 0..MAX_IN_FLIGHT + 10 {
            let inst = Arc::clone(&inst);
            // A task that failed would leave the count below short.
            let _ = tokio::spawn(async move {
                let q = diesel::connection::StrQueryHelper::new("SELECT 1");
                if let Ok(mut inst) = inst.lock() {
                    inst.on_connection_event(InstrumentationEvent::start_query(&q));
                }
            })
            .await;
        }
        let tracked = inst.lock().map(|i| i.in_flight.len()).unwrap_or_default();
        assert_eq!(tracked, MAX_IN_FLIGHT);
    }

    #[test]
    fn operations_are_first_keywords() {
        assert_eq!(operation_of("SELECT 1"), "SELECT");
        assert_eq!(operation_of("  (select 1)"), "SELECT");
        assert_eq!(operation_of("with x as (select 1) select * from x"), "WITH");
        assert_eq!(operation_of("INSERT INTO t VALUES ($1)"), "INSERT");
        assert_eq!(operation_of("\nUPDATE t"), "UPDATE");
        assert_eq!(operation_of(""), "SQL");
        assert_eq!(operation_of("frobnicate"), "SQL");
    }
}
