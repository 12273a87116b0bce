//! The SQL of each content resource, one module per resource (labels, their history and
//! version deletion, shared by every versioned resource: [`crate::versions`]). Plain async
//! functions over a connection, so callers choose the transaction.

pub mod agents;
pub mod conversations;
pub mod files;
pub mod projects;
pub mod prompts;
pub mod workflows;

/// Escapes `%`, `_` and `\` for a LIKE pattern.
pub fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
