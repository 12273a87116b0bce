//! Settings written once. Each environment variable is one [`Setting`]: its name, its
//! default as a user reads it, and what it means. Each crate lists its settings in a
//! `SETTINGS` slice; the loader's list of variables it reads and the documentation table
//! (`strata settings`, and README's, which a test keeps equal to it) are derived from those
//! slices. The typed value is read into the crate's settings struct, whose field is the
//! lower-cased name (the key the optional TOML file uses too).

/// One environment variable. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable's name, e.g. `STRATA_LISTEN_ADDR`.
    pub name: &'static str,
    /// The default, as documented (`unset`, `required`, a value, or a sentence).
    pub default: &'static str,
    /// What it sets, one line of Markdown.
    pub doc: &'static str,
}

impl Setting {
    /// A setting.
    pub const fn new(name: &'static str, default: &'static str, doc: &'static str) -> Self {
        Self { name, default, doc }
    }
}

/// The Markdown table of `settings`: variable, default, meaning.
pub fn table<'a>(settings: impl IntoIterator<Item = &'a Setting>) -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for s in settings {
        out.push_str(&format!("| `{}` | {} | {} |\n", s.name, s.default, s.doc));
    }
    out
}
