//! The server under test: built with cargo, started on 127.0.0.1:0 with a data directory,
//! killed with SIGKILL and started again on the same directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "crashtest-admin-token-0123456789abcdef";
/// The push retry schedule, in seconds: short, so retries happen within the test.
pub const PUSH_SCHEDULE: &str = "1,1,2,2,3";

/// `$CARGO build --release --bin hangar` in this workspace; returns the binary's path.
pub fn build() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?;
    let mut cmd = Command::new(&cargo);
    // `cargo run` gives this program the variables of its own package; build scripts (ring's,
    // cc's) watch some of them, so passing them on would rebuild those crates every time.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let out = cmd
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--bin",
            "hangar",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cargo} build --release --bin hangar failed"));
    }
    // The artifact message names the executable, wherever the target directory is.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "hangar")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo built no hangar executable".to_owned())
}

pub struct Server {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Extra environment (a cluster node's store URL, secret key and node id).
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// How the figures name it ("the server", "node-a").
    pub name: String,
    pub base: String,
    /// How long each start took until the listening line (the first, then each restart).
    pub start_times: Vec<Duration>,
}

impl Server {
    pub fn start(bin: &Path, data: &Path, log: &Path) -> Result<Server, String> {
        Server::start_with(bin, data, log, Vec::new())
    }

    /// Like [`Server::start`], with `env` added to the server's environment on every start.
    pub fn start_with(
        bin: &Path,
        data: &Path,
        log: &Path,
        env: Vec<(String, String)>,
    ) -> Result<Server, String> {
        let mut s = Server {
            bin: bin.to_owned(),
            data: data.to_owned(),
            log: log.to_owned(),
            env,
            child: None,
            name: "the server".to_owned(),
            base: String::new(),
            start_times: Vec::new(),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let began = Instant::now();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("log file: {e}"))?;
        let mut child = Command::new(&self.bin)
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(&self.data)
            .env("HANGAR_ADMIN_TOKEN", TOKEN)
            .env("HANGAR_PUSH_SCHEDULE", PUSH_SCHEDULE)
            .env("RUST_LOG", "info")
            // The tool and the webhook receiver are on loopback (allowed by default; explicit in
            // case the default changes).
            .env("HANGAR_EGRESS_ALLOW_LOOPBACK", "true")
            .env_remove("HANGAR_SECRET_KEY")
            .env_remove("HANGAR_DATA")
            .env_remove("HANGAR_ADDR")
            .env_remove("HANGAR_PUBLIC_URL")
            .env_remove("HANGAR_STORE")
            .env_remove("HANGAR_NODE_ID")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout so the server never blocks on a full pipe.
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.strip_prefix("hangar listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => {
                self.child = Some(child);
                self.base = base;
                self.start_times.push(began.elapsed());
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(format!(
                    "hangar did not print its address within 30 s (exit: {status:?}); log: {}",
                    self.log.display()
                ))
            }
        }
    }

    /// SIGKILL (`Child::kill`): no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill, then start again on the same data directory (on a new port).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// `hangar verify --data DIR` on the stopped server's directory.
    pub fn verify(&self) -> Result<(bool, String), String> {
        self.verify_args(&["--data".as_ref(), self.data.as_os_str()])
    }

    /// `hangar verify --store URL`: every chain in a PostgreSQL store.
    pub fn verify_store(&self, url: &str) -> Result<(bool, String), String> {
        self.verify_args(&["--store".as_ref(), url.as_ref()])
    }

    fn verify_args(&self, args: &[&std::ffi::OsStr]) -> Result<(bool, String), String> {
        let out = Command::new(&self.bin)
            .arg("verify")
            .args(args)
            .output()
            .map_err(|e| format!("running hangar verify: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text.trim().to_owned()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
