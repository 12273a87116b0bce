//! A PostgreSQL cluster of a test's own, in a temporary directory, for tests that crash and
//! restart PostgreSQL without disturbing the shared server every other test uses.
//!
//! The cluster keeps PostgreSQL's defaults (`fsync`, `synchronous_commit` and
//! `full_page_writes` on), so what it acknowledged survives [`TestCluster::crash`]. As root
//! (CI), the server runs as the `postgres` OS user, as `deploy/local/infra.sh` does.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Database created in every cluster.
pub const DATABASE: &str = "strata";
const SUPERUSER: &str = "strata";

/// See the module documentation. Stopped (immediately) and deleted on drop.
pub struct TestCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn newest_bin_dir() -> PathBuf {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no /usr/lib/postgresql/*/bin/initdb: install postgresql (make infra-up does)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl TestCluster {
    /// Initialises a cluster in a new temporary directory and starts it on a free port.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("strata-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let cluster = Self {
            bin: newest_bin_dir(),
            dir,
            port,
            as_postgres: is_root(),
        };
        if cluster.as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&cluster.dir));
        }
        let data = cluster.data();
        cluster.pg("initdb", |c| {
            c.arg("-D").arg(&data).args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
        });
        cluster.restart();
        let psql = cluster.bin.join("psql");
        run(Command::new(psql)
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .args([
                "-d",
                "postgres",
                "-c",
                &format!("CREATE DATABASE {DATABASE}"),
            ]));
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs the PostgreSQL program `program` (as the `postgres` user when root).
    fn pg(&self, program: &str, args: impl FnOnce(&mut Command)) -> Output {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.current_dir("/");
        args(&mut command);
        run(&mut command)
    }

    /// `postgres://strata@127.0.0.1:<port>/strata`.
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Kills the server the way a crash would (`pg_ctl stop -m immediate`: no checkpoint,
    /// no clean shutdown; the next start runs crash recovery from the WAL).
    pub fn crash(&self) {
        let data = self.data();
        self.pg("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
        });
    }

    /// Starts the server (after [`crash`](Self::crash)) and returns once it accepts
    /// connections.
    pub fn restart(&self) {
        let (data, log) = (self.data(), self.dir.join("postgres.log"));
        // TCP only: a socket path under a deep TMPDIR could exceed the 107-byte limit.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=50",
            self.port
        );
        self.pg("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-o", &options, "-w", "-t", "60", "start"]);
        });
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        let _ = command
            .current_dir("/")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
