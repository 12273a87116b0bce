//! Embeds every `migrations/<version>_<name>/{up,down}.sql` of the workspace into the
//! binary, so a deployed service needs no files beside it.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../migrations");
    let dir = dir.canonicalize()?;
    // A directory path makes cargo rerun when any file below it changes.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("up.sql").is_file())
        .collect();
    folders.sort();
    let mut code = String::from(
        "/// `(folder name, up.sql, down.sql)` of every embedded migration, in order.\npub(crate) static EMBEDDED: &[(&str, &str, Option<&str>)] = &[\n",
    );
    for folder in folders {
        let name = folder
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("non-UTF-8 migration folder")?;
        let down = folder.join("down.sql");
        let down = if down.is_file() {
            format!("Some(include_str!({:?}))", down.display().to_string())
        } else {
            "None".to_owned()
        };
        writeln!(
            code,
            "    ({name:?}, include_str!({:?}), {down}),",
            folder.join("up.sql").display().to_string()
        )?;
    }
    code.push_str("];\n");
    std::fs::write(
        PathBuf::from(std::env::var("OUT_DIR")?).join("embedded_migrations.rs"),
        code,
    )?;
    Ok(())
}
