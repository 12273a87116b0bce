//! The plans of the statements code really runs: [`plans_of`] records the SQL a piece of
//! store code sends (through diesel's instrumentation, so hand-written copies cannot drift
//! from it), then asks PostgreSQL for the generic plan of each, the plan a prepared
//! statement settles on whatever its parameters ([`custom_plans_of`]: the plan for given
//! values, for statements planned at each execution).

use std::sync::{Arc, Mutex};

use diesel::QueryableByName;
use diesel::connection::InstrumentationEvent;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// One statement the code sent, and its plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The SQL text, with `$n` placeholders.
    pub sql: String,
    /// `EXPLAIN`'s output.
    pub plan: String,
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// Runs `work` on `conn`, then returns the generic plan of every statement it sent
/// (transaction control left out).
pub async fn plans_of<T>(
    conn: &mut AsyncPgConnection,
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> T,
) -> Vec<Plan> {
    plans(conn, None, work).await
}

/// Runs `work` on `conn`, then returns the plan of every statement it sent planned with
/// `values` (SQL literals for `$1`, `$2` …): the plan of a statement PostgreSQL plans at
/// each execution with the values it is sent (diesel never caches a raw `sql_query`), whose
/// plan may rightly depend on them, as a search's does on how common its words are.
pub async fn custom_plans_of<T>(
    conn: &mut AsyncPgConnection,
    values: &[String],
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> T,
) -> Vec<Plan> {
    plans(conn, Some(values), work).await
}

async fn plans<T>(
    conn: &mut AsyncPgConnection,
    values: Option<&[String]>,
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> T,
) -> Vec<Plan> {
    let sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = Arc::clone(&sent);
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            let sql = text.split(" -- binds: ").next().unwrap_or_default().trim();
            if let Ok(mut sent) = record.lock() {
                sent.push(sql.to_owned());
            }
        }
    });
    work(conn).await;
    conn.set_instrumentation(|_: InstrumentationEvent<'_>| {});
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let mode = if values.is_some() {
        "force_custom_plan"
    } else {
        "force_generic_plan"
    };
    conn.batch_execute(&format!("SET plan_cache_mode = {mode}"))
        .await
        .unwrap_or_else(|e| panic!("plan_cache_mode: {e}"));
    let mut plans = Vec::new();
    for sql in sent {
        let control = [
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT",
            "RELEASE",
            "SET ",
        ];
        if control.iter().any(|c| sql.to_uppercase().starts_with(c)) {
            continue;
        }
        let params = (1..=32).filter(|n| sql.contains(&format!("${n}"))).count();
        conn.batch_execute(&format!("PREPARE strata_plan AS {sql}"))
            .await
            .unwrap_or_else(|e| panic!("PREPARE {sql}: {e}"));
        let args = match values {
            Some(values) => {
                assert_eq!(values.len(), params, "values for {sql}");
                values.join(", ")
            }
            None => vec!["NULL"; params].join(", "),
        };
        let execute = if params == 0 {
            "EXPLAIN EXECUTE strata_plan".to_owned()
        } else {
            format!("EXPLAIN EXECUTE strata_plan({args})")
        };
        let lines: Vec<PlanLine> = diesel::sql_query(execute)
            .load(conn)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
        conn.batch_execute("DEALLOCATE strata_plan")
            .await
            .unwrap_or_else(|e| panic!("DEALLOCATE: {e}"));
        let plan = lines
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n");
        plans.push(Plan { sql, plan });
    }
    conn.batch_execute("RESET plan_cache_mode")
        .await
        .unwrap_or_else(|e| panic!("plan_cache_mode: {e}"));
    plans
}
