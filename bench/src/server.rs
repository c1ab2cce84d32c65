//! The system under test: `target/release/hangar`, built by the bench itself, started on
//! `127.0.0.1:0` with a temporary data directory, stopped (and killed if need be) by the bench.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// Runs `cargo build --release --bin hangar` and returns the binary's path.
pub fn build() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits in the workspace")
        .to_path_buf();
    eprintln!("building: {cargo} build --release --bin hangar");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--bin", "hangar"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build --release --bin hangar failed: {status}"
        ));
    }
    // The bench's own binary sits in the same target/release directory.
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| root.join("target/release"));
    let bin = dir.join("hangar");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} not found after the build", bin.display()))
    }
}

pub struct Hangar {
    bin: PathBuf,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Hangar {
    /// Starts `hangar serve` on `data`, its log in `log`.
    pub fn start(
        bin: &Path,
        data: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Hangar, String> {
        let mut h = Hangar {
            bin: bin.to_path_buf(),
            child: None,
            addr: "127.0.0.1:1".parse().expect("addr"),
            data: data.to_path_buf(),
            log: log.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        h.spawn()?;
        Ok(h)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(&self.data)
            .env("HANGAR_ADMIN_TOKEN", TOKEN)
            .env_remove("HANGAR_SECRET_KEY")
            .env_remove("HANGAR_ADDR")
            .env_remove("HANGAR_DATA")
            .env_remove("HANGAR_PUBLIC_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(stderr);
        // If the bench dies, so does the server it started.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start hangar: {e}"))?;
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.strip_prefix("hangar listening on http://") {
                        let _ = tx.send(addr.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => {
                self.addr = addr
                    .parse()
                    .map_err(|e| format!("bad address {addr}: {e}"))?;
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "hangar did not start within 60 s; its log:\n{}",
                    tail(&self.log)
                ))
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL: no chance to flush, deregister or hand anything over.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server and starts a new one on the same data directory.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }

    /// The server's resident set size (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    /// The server's log (its stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The `hangar` binary (for the offline tools).
    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

impl Drop for Hangar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
