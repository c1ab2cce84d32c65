//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `pg_ctl` on a
//! free loopback port with its socket in that directory. When the tests run as root (initdb
//! refuses root) the server runs as the `postgres` user through `runuser`.
//!
//! [`TempPostgres::start`] returns `None` only when no PostgreSQL binaries are installed; the
//! caller then skips loudly. `./x test` installs them, so CI never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The user the server runs as, when the tests run as root.
    run_as: Option<String>,
    /// fsync on (a benchmark comparing stores); off for tests of Hangar's logic.
    durable: bool,
}

/// Where the server binaries are: `HANGAR_PG_BIN`, else Debian's newest
/// `/usr/lib/postgresql/N/bin`, else `pg_ctl` on the PATH.
pub fn find_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("HANGAR_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((n, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let found = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&found.stdout).trim());
    dir.join("initdb").exists().then_some(dir)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TempPostgres {
    /// Starts a fresh server, or `None` when PostgreSQL is not installed. Panics if it is
    /// installed but does not start (that is a failure, not a skip).
    pub fn start() -> Option<TempPostgres> {
        TempPostgres::start_with(false)
    }

    /// [`TempPostgres::start`] with fsync on, as a production server runs: for figures that
    /// compare a store's durable writes with sled's.
    pub fn start_durable() -> Option<TempPostgres> {
        TempPostgres::start_with(true)
    }

    fn start_with(durable: bool) -> Option<TempPostgres> {
        let pg = TempPostgres::empty(durable)?;
        let data = pg.data();
        let out = pg.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "hangar",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        pg.start_again();
        Some(pg)
    }

    /// A new, empty temporary directory (owned by the server's user) and a free port.
    fn empty(durable: bool) -> Option<TempPostgres> {
        let bin = find_bin()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("hangar-pg-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temporary PostgreSQL directory");
        let run_as = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            let chown = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(
                chown.success(),
                "chown of {} to {user} failed",
                dir.display()
            );
        }
        Some(TempPostgres {
            dir,
            bin,
            port: free_port(),
            run_as,
            durable,
        })
    }

    /// A streaming-replication standby of this server (`pg_basebackup -R -X stream
    /// --checkpoint=fast`), started on a port of its own. Make it synchronous afterwards with
    /// [`TempPostgres::sql`] on this server (`ALTER SYSTEM SET synchronous_standby_names`): set
    /// before the backup, the standby would inherit it and, once promoted, wait for a standby of
    /// its own on every commit.
    pub fn standby(&self) -> TempPostgres {
        let standby = TempPostgres::empty(self.durable).expect("the binaries this one runs");
        let data = standby.data();
        let out = standby.run(
            "pg_basebackup",
            &[
                "-D",
                path(&data),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "hangar",
            ],
        );
        assert!(out.status.success(), "pg_basebackup failed: {}", text(&out));
        standby.start_again();
        standby
    }

    /// Promotes a standby to primary (`pg_ctl promote`), waiting until it accepts writes.
    pub fn promote(&self) {
        let data = self.data();
        let out = self.run("pg_ctl", &["-D", path(&data), "-w", "-t", "60", "promote"]);
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            text(&out)
        );
    }

    /// Runs `sql` on the `postgres` database with psql; panics if it fails.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "hangar",
                "-d",
                "postgres",
                "-XAtc",
                sql,
            ],
        );
        assert!(out.status.success(), "psql {sql:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
    }

    /// Starts the server (again, after [`TempPostgres::stop`]) on the same port, and waits until
    /// it accepts connections.
    pub fn start_again(&self) {
        // fsync off: these servers hold test data only, and the tests check Hangar's logic,
        // not the disk's; it keeps a suite's thousands of commits fast on a shared machine.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=200",
            self.port,
            self.dir.display(),
            if self.durable { "on" } else { "off" }
        );
        let log = self.dir.join("server.log");
        let data = self.data();
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-o",
                &options,
                "-l",
                path(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server at once (`-m immediate`: as if it crashed).
    pub fn stop(&self) {
        let data = self.data();
        let out = self.run(
            "pg_ctl",
            &["-D", path(&data), "-m", "immediate", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop failed: {}", text(&out));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL to a database of its own (created here), so tests sharing one server never see
    /// each other's data.
    pub fn database(&self, name: &str) -> String {
        self.sql(&format!("CREATE DATABASE \"{name}\""));
        format!("postgres://hangar@127.0.0.1:{}/{name}", self.port)
    }

    /// The URL of the server's default database.
    pub fn url(&self) -> String {
        format!("postgres://hangar@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run(
            "pg_ctl",
            &["-D", path(&data), "-m", "immediate", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
