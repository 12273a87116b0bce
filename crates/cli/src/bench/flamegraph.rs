//! Flame graphs of the suite under each scenario (`strata bench --flamegraphs`).
//!
//! `perf record` samples the suite's process while a scenario runs (DWARF call graphs: the
//! release profile keeps debug info, and Rust code has no frame pointers), then inferno
//! folds `perf script`'s stacks into one SVG per scenario, so a reader sees where a
//! scenario's CPU went without setting anything up. Sampling costs the suite some CPU, so
//! a run with flame graphs says so in its report, and its figures are not the ones to
//! compare.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Where the flame graphs go, in the report's folder.
pub const DIR: &str = "flamegraphs";

/// Samples per second and per CPU: enough for a few thousand stacks in a scenario's few
/// seconds, little enough for `perf script` to unwind them in seconds.
const FREQUENCY: &str = "199";

/// Samples the suite, a scenario at a time.
#[derive(Debug)]
pub struct Profiler {
    dir: PathBuf,
}

/// `perf record` running for one scenario.
#[derive(Debug)]
pub struct Recording {
    perf: Child,
    data: PathBuf,
    dir: PathBuf,
    svg: String,
    title: String,
}

impl Profiler {
    /// A profiler writing into [`DIR`] of `out`, once `perf` proved it can sample.
    pub async fn new(out: &Path) -> anyhow::Result<Self> {
        let dir = out.join(DIR);
        let probe = Command::new("perf")
            .args(["record", "-q", "-o", "/dev/null", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await;
        match probe {
            Ok(out) if out.status.success() => {}
            Ok(out) => bail!(
                "--flamegraphs: `perf record` cannot sample here ({}); as root, or with \
                 kernel.perf_event_paranoid <= 1",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(_) => bail!("--flamegraphs needs `perf` (Debian: apt-get install linux-perf)"),
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Starts sampling process `pid` (the suite measured) for `operation`.
    pub fn start(&self, pid: u32, operation: &str) -> anyhow::Result<Recording> {
        let name = file_name(operation);
        let data = self.dir.join(format!("{name}.perf.data"));
        let perf = Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                FREQUENCY,
                "--call-graph",
                "dwarf,16384",
            ])
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting perf record")?;
        Ok(Recording {
            perf,
            data,
            svg: format!("{name}.svg"),
            dir: self.dir.clone(),
            title: operation.to_owned(),
        })
    }
}

impl Recording {
    /// Stops sampling, writes the flame graph and returns its path relative to the report.
    pub async fn finish(mut self) -> anyhow::Result<String> {
        // SIGINT is how perf record is told to write its data and end.
        if let Some(pid) = self.perf.id() {
            Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await
                .context("stopping perf record")?;
        }
        self.perf.wait().await.context("perf record")?;
        let script = Command::new("perf")
            .arg("script")
            .arg("-i")
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .await
            .context("perf script")?;
        // The samples are large (a stack copy each) and the SVG holds what they said.
        let _ = std::fs::remove_file(&self.data);
        if !script.status.success() {
            bail!("perf script failed for {}", self.title);
        }
        let (path, title) = (self.dir.join(&self.svg), self.title);
        tokio::task::spawn_blocking(move || {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            render(&script.stdout, &title, &mut file)?;
            std::io::Write::flush(&mut file).context("writing the flame graph")
        })
        .await??;
        Ok(format!("{DIR}/{}", self.svg))
    }
}

/// The flame graph (SVG) of `perf script` output, titled `title`.
pub fn render(
    perf_script: &[u8],
    title: &str,
    svg: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use inferno::collapse::Collapse;
    let mut folded = Vec::new();
    inferno::collapse::perf::Folder::from(inferno::collapse::perf::Options::default())
        .collapse(perf_script, &mut folded)
        .context("folding perf stacks")?;
    if folded.is_empty() {
        bail!("no samples of the suite for {title}");
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    inferno::flamegraph::from_reader(&mut options, &folded[..], svg).context("drawing")?;
    Ok(())
}

/// `operation` as a file name: lowercase letters and digits, words joined by `-`.
pub fn file_name(operation: &str) -> String {
    let mut name = String::new();
    for c in operation.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    name.trim_end_matches('-').chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples as `perf script` prints them (DWARF call graphs, innermost first).
    const SCRIPT: &str = "\
strata 4242 [001] 100.000001:    5025125 cpu-clock:pppH: 
\t    55d0c0a0b0c0 argon2::Argon2::compress+0x10 (/work/target/release/strata)
\t    55d0c0a0b0d0 argon2::Argon2::fill_blocks+0x20 (/work/target/release/strata)
\t    55d0c0a0b0e0 strata_auth::password::hash_blocking+0x30 (/work/target/release/strata)

strata 4242 [000] 100.005001:    5025125 cpu-clock:pppH: 
\t    55d0c0a0c0c0 h2::hpack::huffman::decode::decode+0x11 (/work/target/release/strata)
\t    55d0c0a0c0d0 h2::proto::connection::Connection::poll+0x22 (/work/target/release/strata)

";

    #[test]
    fn perf_stacks_become_a_titled_flame_graph_of_their_functions() -> anyhow::Result<()> {
        let mut svg = Vec::new();
        render(SCRIPT.as_bytes(), "Login, one at a time", &mut svg)?;
        let svg = String::from_utf8(svg)?;
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.contains("Login, one at a time"));
        for function in [
            "argon2::Argon2::compress",
            "strata_auth::password::hash_blocking",
            "h2::hpack::huffman::decode::decode",
        ] {
            assert!(svg.contains(function), "{function}");
        }
        Ok(())
    }

    #[test]
    fn a_recording_without_samples_is_an_error_not_an_empty_graph() {
        let Err(err) = render(b"", "GetProfile", &mut Vec::new()) else {
            panic!("a flame graph of nothing");
        };
        assert!(err.to_string().contains("GetProfile"), "{err}");
    }

    #[test]
    fn file_names_are_lowercase_words_joined_by_dashes() {
        assert_eq!(
            file_name("GetUsageSummary (from the view), open loop at 1/4"),
            "getusagesummary-from-the-view-open-loop-at-1-4"
        );
        assert_eq!(file_name("5 concurrent logins"), "5-concurrent-logins");
    }
}
