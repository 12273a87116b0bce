//! `ExplainQuery`: plans (and with ANALYZE, runs) one SELECT an operator wrote, without it
//! becoming a way to read the database.
//!
//! - [`check_select`] admits exactly one `SELECT` (or `WITH … SELECT`).
//! - The statement runs on a connection of its own, opened for the call and closed after
//!   it, so nothing it does (session advisory locks, settings, prepared statements)
//!   outlives the call or reaches a pooled connection. A call cancelled midway cancels the
//!   statement on the server too.
//! - Inside a `READ ONLY` transaction with a `SET LOCAL statement_timeout`, the service
//!   switches to the `strata_explain` role (`SET LOCAL ROLE`), which may read only
//!   non-secret columns (migration `…_create_explain_role`), and the statement runs inside
//!   `explain.plan`, a function owned by that role and running as it (SECURITY DEFINER):
//!   there PostgreSQL refuses `set_config('role', …)`, the one way back to the service's
//!   own role. The transaction always rolls back.
//! - It runs exactly once, in the format asked for; the cost and times are read off that
//!   output.
//! - A statement that fails is described by its SQLSTATE, its position in the caller's
//!   text and a phrase of a fixed vocabulary ([`describe`]): never PostgreSQL's message,
//!   which can quote values from the database (`invalid input syntax for type integer:
//!   "<a secret>"`).

use std::time::Instant;

use tokio_postgres::NoTls;
use tokio_postgres::error::ErrorPosition;

use crate::config::DbConfig;
use crate::error::Error;

/// The role statements run as.
pub const EXPLAIN_ROLE: &str = "strata_explain";
/// Longest statement accepted, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;
/// Longest dollar-quote tag recognised (PostgreSQL's identifier length).
const MAX_TAG_CHARS: usize = 63;

/// Why a statement was refused by [`explain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainRefusal {
    /// Nothing but whitespace and comments.
    #[error("is empty")]
    Empty,
    /// More than one statement.
    #[error("must be a single statement")]
    MultipleStatements,
    /// Not a SELECT.
    #[error("must be a SELECT (or WITH … SELECT) statement")]
    NotSelect,
    /// An unterminated quote or comment.
    #[error("has an unterminated quote or comment")]
    Unterminated,
    /// Longer than [`MAX_STATEMENT_BYTES`].
    #[error("must be at most 65536 bytes")]
    TooLong,
}

/// Checks that `sql` is exactly one `SELECT` (or `WITH … SELECT`) and returns it trimmed,
/// without a trailing `;`.
///
/// This is the first of several guards: the statement then runs as one statement of a
/// PL/pgSQL `EXECUTE` (which refuses several commands in one), inside a `READ ONLY`
/// transaction (so `WITH … DELETE`, `SELECT … INTO` or `FOR UPDATE` fail even if they got
/// past the lexer), as the `strata_explain` role (which reads no secret column).
pub fn check_select(sql: &str) -> Result<&str, ExplainRefusal> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(ExplainRefusal::TooLong);
    }
    let tokens = significant_text(sql)?;
    let trimmed = tokens.trim_end();
    let body = trimmed.strip_suffix(';').unwrap_or(trimmed);
    if body.trim().is_empty() {
        return Err(ExplainRefusal::Empty);
    }
    if body.contains(';') {
        return Err(ExplainRefusal::MultipleStatements);
    }
    let first = body
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches('(');
    if !(first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with")) {
        return Err(ExplainRefusal::NotSelect);
    }
    // Cut the original at the position of the trailing ';', if any, keeping everything else.
    let original = sql.trim();
    Ok(if trimmed.ends_with(';') {
        original.strip_suffix(';').unwrap_or(original).trim_end()
    } else {
        original
    })
}

/// `sql` with comments removed and the contents of string literals, quoted identifiers
/// and dollar-quoted strings blanked out, so `;` and keywords inside them do not count.
fn significant_text(sql: &str) -> Result<String, ExplainRefusal> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match (c, next) {
            ('-', Some('-')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                out.push(' ');
            }
            ('/', Some('*')) => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0;
                loop {
                    match (chars.get(i), chars.get(i + 1)) {
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return Err(ExplainRefusal::Unterminated),
                    }
                }
                out.push(' ');
            }
            ('\'', _) | ('"', _) => {
                i += 1;
                loop {
                    match chars.get(i) {
                        Some(&q) if q == c && chars.get(i + 1) == Some(&c) => i += 2,
                        Some(&q) if q == c => break,
                        Some(_) => i += 1,
                        None => return Err(ExplainRefusal::Unterminated),
                    }
                }
                i += 1;
                out.push_str(" x ");
            }
            ('$', _) => {
                // $tag$ … $tag$ (tag may be empty, at most an identifier's length); a lone
                // $n is a parameter. Linear: the closing tag is searched in place.
                let tag_end = chars[i + 1..]
                    .iter()
                    .take(MAX_TAG_CHARS + 1)
                    .position(|ch| !(ch.is_alphanumeric() || *ch == '_'));
                match tag_end.map(|n| i + 1 + n) {
                    Some(end)
                        if chars[end] == '$'
                            && !chars[i + 1..end].first().is_some_and(char::is_ascii_digit) =>
                    {
                        let tag = &chars[i..=end];
                        let close = chars[end + 1..]
                            .windows(tag.len())
                            .position(|w| w == tag)
                            .ok_or(ExplainRefusal::Unterminated)?;
                        i = end + 1 + close + tag.len();
                        out.push_str(" x ");
                        continue;
                    }
                    _ => {
                        out.push(c);
                        i += 1;
                    }
                }
                continue;
            }
            _ => {
                out.push(c);
                i += 1;
                continue;
            }
        }
        if i < chars.len() && !matches!(chars.get(i), Some('\n')) {
            continue;
        }
        i += 1;
    }
    Ok(out)
}

/// Options of [`explain`].
#[derive(Debug, Clone, Copy)]
pub struct ExplainOptions {
    /// Execute the statement (`ANALYZE, BUFFERS`).
    pub analyze: bool,
    /// JSON instead of text output.
    pub json: bool,
    /// `statement_timeout` inside the read-only transaction.
    pub timeout_ms: u64,
}

/// A plan and the numbers read off it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The plan text or JSON.
    pub text: String,
    /// Planner total cost of the top node.
    pub total_cost: f64,
    /// Execution time (ANALYZE only).
    pub execution_time_ms: f64,
    /// Planning time (ANALYZE only).
    pub planning_time_ms: f64,
}

/// What kind of mistake a failed statement made, as the caller is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The statement is wrong (syntax, names, types, data): the caller's to fix.
    Invalid,
    /// It touched something the explain role may not read.
    PermissionDenied,
    /// It ran out of time (`statement_timeout`).
    Timeout,
    /// It tried to write.
    ReadOnly,
    /// The server lacked resources or could not go on; retrying may work.
    Unavailable,
}

/// A statement that PostgreSQL refused, described without anything PostgreSQL said about
/// it: the SQLSTATE, a phrase from a fixed vocabulary, and where in the caller's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementError {
    /// The five-character SQLSTATE.
    pub sqlstate: String,
    /// What kind of failure it is.
    pub failure: Failure,
    /// A fixed phrase for the SQLSTATE (see [`describe`]).
    pub description: &'static str,
    /// 1-based character position in the caller's statement, when PostgreSQL gave one.
    pub position: Option<u32>,
}

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.description, self.sqlstate)?;
        if let Some(position) = self.position {
            write!(f, " at character {position}")?;
        }
        Ok(())
    }
}

/// How [`explain`] can fail.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The statement failed; see [`StatementError`].
    #[error("{0}")]
    Statement(StatementError),
    /// The database could not be reached, or the explain role is missing.
    #[error(transparent)]
    Storage(#[from] Error),
}

/// The fixed phrase and failure kind of a SQLSTATE: by exact code where it matters, else
/// by class. Nothing in it comes from the server's message.
pub fn describe(sqlstate: &str) -> (Failure, &'static str) {
    use Failure::{Invalid, PermissionDenied, ReadOnly, Timeout, Unavailable};
    match sqlstate {
        "42601" => (Invalid, "syntax error"),
        "42P01" => (Invalid, "unknown relation"),
        "42703" => (Invalid, "unknown column"),
        "42883" => (Invalid, "unknown function or operator"),
        "42704" => (Invalid, "unknown object"),
        "3F000" => (Invalid, "unknown schema"),
        "42702" => (Invalid, "ambiguous column"),
        "42725" => (Invalid, "ambiguous function"),
        "42P09" => (Invalid, "ambiguous alias"),
        "42804" | "42846" | "42P18" => (Invalid, "type mismatch"),
        "42803" => (Invalid, "grouping error"),
        "42P10" => (Invalid, "invalid column reference"),
        "42P20" => (Invalid, "window function misuse"),
        "42501" => (PermissionDenied, "permission denied"),
        "57014" => (Timeout, "statement timed out or was cancelled"),
        "25006" => (ReadOnly, "must not modify data"),
        "0A000" => (Invalid, "feature not supported"),
        "22012" => (Invalid, "division by zero"),
        "22P02" => (Invalid, "invalid input value for a type"),
        "22003" => (Invalid, "numeric value out of range"),
        "22007" | "22008" => (Invalid, "invalid date or time"),
        "55P03" => (Timeout, "lock not available"),
        "P0001" => (Invalid, "error raised by a function"),
        code => match code.get(..2).unwrap_or_default() {
            "42" => (Invalid, "invalid statement"),
            "22" => (Invalid, "data exception"),
            "2B" | "40" => (Unavailable, "transaction aborted; retry"),
            "53" => (Unavailable, "insufficient resources"),
            "54" => (Invalid, "statement too complex"),
            "08" | "57" | "58" | "XX" => (Unavailable, "the server could not complete it"),
            _ => (Invalid, "statement failed"),
        },
    }
}

/// Cancels the running statement unless disarmed: dropped with the call's future (a
/// deadline, a client gone), it stops the server's work too.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = token.cancel_query(NoTls).await;
            });
        }
    }
}

/// EXPLAINs `select`, one statement checked with [`check_select`], as described in the
/// module documentation. `original` is the caller's text `select` was cut from, so that
/// error positions point into it.
pub async fn explain(
    config: &DbConfig,
    original: &str,
    select: &str,
    options: ExplainOptions,
) -> Result<Plan, ExplainError> {
    let started = Instant::now();
    let unreachable = |e: tokio_postgres::Error| {
        Error::Connect(diesel::ConnectionError::BadConnection(e.to_string()))
    };
    let mut connect = config
        .url
        .expose()
        .parse::<tokio_postgres::Config>()
        .map_err(unreachable)?;
    connect.connect_timeout(config.checkout_timeout);
    let (client, connection) = connect.connect(NoTls).await.map_err(unreachable)?;
    // The connection task ends when the client is dropped, closing the session and
    // everything it held.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut cancel = CancelOnDrop(Some(client.cancel_token()));
    let flags = if options.analyze {
        "ANALYZE, BUFFERS, "
    } else {
        ""
    };
    let format = if options.json { "JSON" } else { "TEXT" };
    let prefix = format!("EXPLAIN ({flags}FORMAT {format}) ");
    let statement = format!("{prefix}{select}");
    client
        .batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {}; \
             SET LOCAL application_name = '{}-explain'; SET LOCAL ROLE {EXPLAIN_ROLE}",
            options.timeout_ms, config.application_name
        ))
        .await
        .map_err(|e| setup_error(&e))?;
    let rows = client.query("SELECT explain.plan($1)", &[&statement]).await;
    cancel.0 = None;
    crate::instrument::record(started.elapsed(), 3);
    let rows = rows.map_err(|e| statement_error(&e, &prefix, original, select))?;
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|row| row.try_get::<_, String>(0).ok())
        .collect();
    Ok(if options.json {
        plan_from_json(lines.concat())
    } else {
        plan_from_text(&lines)
    })
}

/// A failure before the statement ran: the server is unreachable, or the role is missing
/// (migrations not applied). Described like any storage error, never verbatim.
fn setup_error(e: &tokio_postgres::Error) -> ExplainError {
    let unavailable = e.as_db_error().is_none()
        || e.code().is_some_and(|c| {
            let code = c.code();
            code.starts_with("08") || code.starts_with("57P")
        });
    if unavailable {
        Error::Connect(diesel::ConnectionError::BadConnection(
            "the database is unreachable".into(),
        ))
        .into()
    } else {
        Error::Migration {
            version: "explain".into(),
            problem: format!(
                "the {EXPLAIN_ROLE} role is not usable (SQLSTATE {}); apply the migrations",
                e.code().map(|c| c.code()).unwrap_or("?")
            ),
        }
        .into()
    }
}

fn statement_error(
    e: &tokio_postgres::Error,
    prefix: &str,
    original: &str,
    select: &str,
) -> ExplainError {
    let Some(db) = e.as_db_error() else {
        return Error::Connect(diesel::ConnectionError::BadConnection(
            "the connection was lost".into(),
        ))
        .into();
    };
    let sqlstate = db.code().code().to_owned();
    let (failure, description) = describe(&sqlstate);
    // The statement ran inside explain.plan: its position is relative to the EXPLAIN text
    // that function executed, whose head is `prefix`; then to the caller's untrimmed text.
    let position = match db.position() {
        Some(ErrorPosition::Internal { position, .. }) => {
            let prefix_chars = u32::try_from(prefix.chars().count()).unwrap_or(u32::MAX);
            position.checked_sub(prefix_chars).filter(|p| *p > 0)
        }
        _ => None,
    }
    .map(|p| {
        let lead = original
            .find(select)
            .map_or(0, |i| original[..i].chars().count());
        p + u32::try_from(lead).unwrap_or(0)
    });
    ExplainError::Statement(StatementError {
        sqlstate,
        failure,
        description,
        position,
    })
}

/// Cost and times of a JSON plan: `[{"Plan": {"Total Cost": …}, "Planning Time": …,
/// "Execution Time": …}]`.
fn plan_from_json(text: String) -> Plan {
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let top = &value[0];
    Plan {
        total_cost: top["Plan"]["Total Cost"].as_f64().unwrap_or_default(),
        planning_time_ms: top["Planning Time"].as_f64().unwrap_or_default(),
        execution_time_ms: top["Execution Time"].as_f64().unwrap_or_default(),
        text,
    }
}

/// Cost and times of a text plan: the top node's `(cost=S..T …)` and the `Planning
/// Time: x ms` / `Execution Time: y ms` lines.
fn plan_from_text(lines: &[String]) -> Plan {
    let total_cost = lines
        .first()
        .and_then(|l| l.split("..").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    let time = |label: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.trim().trim_end_matches("ms").trim().parse().ok())
            .unwrap_or_default()
    };
    Plan {
        total_cost,
        planning_time_ms: time("Planning Time:"),
        execution_time_ms: time("Execution Time:"),
        text: lines.join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_selects_pass() {
        let ok = [
            ("SELECT 1", "SELECT 1"),
            ("select 1;", "select 1"),
            (
                "  WITH x AS (SELECT 1) SELECT * FROM x ; ",
                "WITH x AS (SELECT 1) SELECT * FROM x",
            ),
            ("SELECT ';' AS semi", "SELECT ';' AS semi"),
            ("SELECT $$a;b$$", "SELECT $$a;b$$"),
            ("-- comment; here\nSELECT 1", "-- comment; here\nSELECT 1"),
            (
                "/* ; /* nested ; */ */ SELECT \"a;b\" FROM t",
                "/* ; /* nested ; */ */ SELECT \"a;b\" FROM t",
            ),
            ("(SELECT 1)", "(SELECT 1)"),
        ];
        for (input, expected) in ok {
            assert_eq!(check_select(input), Ok(expected), "{input}");
        }
        let refused = [
            ("", ExplainRefusal::Empty),
            (" ; ", ExplainRefusal::Empty),
            ("-- only a comment", ExplainRefusal::Empty),
            ("SELECT 1; SELECT 2", ExplainRefusal::MultipleStatements),
            (
                "SELECT 1; DROP TABLE x;",
                ExplainRefusal::MultipleStatements,
            ),
            ("DELETE FROM t", ExplainRefusal::NotSelect),
            ("UPDATE t SET a = 1", ExplainRefusal::NotSelect),
            ("EXPLAIN SELECT 1", ExplainRefusal::NotSelect),
            (
                "/* SELECT */ INSERT INTO t VALUES (1)",
                ExplainRefusal::NotSelect,
            ),
            ("SELECT 'unterminated", ExplainRefusal::Unterminated),
            ("SELECT $a$ never closed", ExplainRefusal::Unterminated),
            ("SELECT 1 /* open", ExplainRefusal::Unterminated),
        ];
        assert_eq!(
            check_select(&format!("SELECT {}", "1".repeat(MAX_STATEMENT_BYTES))),
            Err(ExplainRefusal::TooLong)
        );
        // Quotes of every kind, at the size limit, are checked in linear time.
        let dollars = format!("SELECT {}", "$a$$a$".repeat(10_000));
        assert_eq!(check_select(&dollars), Ok(dollars.as_str()));
        let open = format!("SELECT {}", "$a$".repeat(20_001));
        assert_eq!(check_select(&open), Err(ExplainRefusal::Unterminated));
        for (input, refusal) in refused {
            assert_eq!(check_select(input), Err(refusal), "{input}");
        }
    }

    #[test]
    fn numbers_are_read_off_either_format() {
        let text = [
            "Seq Scan on users  (cost=0.00..13.30 rows=220 width=4) (actual time=0.002..0.002 rows=0 loops=1)",
            "  Filter: (id IS NOT NULL)",
            "Planning Time: 0.180 ms",
            "Execution Time: 0.029 ms",
        ]
        .map(str::to_owned);
        let plan = plan_from_text(&text);
        assert_eq!(
            (
                plan.total_cost,
                plan.planning_time_ms,
                plan.execution_time_ms
            ),
            (13.30, 0.180, 0.029)
        );
        let json = r#"[{"Plan": {"Node Type": "Result", "Total Cost": 0.01}, "Planning Time": 0.5, "Execution Time": 1.25}]"#;
        let plan = plan_from_json(json.to_owned());
        assert_eq!(
            (
                plan.total_cost,
                plan.planning_time_ms,
                plan.execution_time_ms
            ),
            (0.01, 0.5, 1.25)
        );
    }

    #[test]
    fn every_sqlstate_gets_a_fixed_phrase() {
        assert_eq!(describe("42601"), (Failure::Invalid, "syntax error"));
        assert_eq!(describe("42501").0, Failure::PermissionDenied);
        assert_eq!(describe("57014").0, Failure::Timeout);
        assert_eq!(describe("22023"), (Failure::Invalid, "data exception"));
        assert_eq!(describe("53200").0, Failure::Unavailable);
        assert_eq!(describe("ZZZZZ"), (Failure::Invalid, "statement failed"));
    }
}
