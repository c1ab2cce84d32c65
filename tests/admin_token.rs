//! A short admin token stops `hangar serve` at start, from either source (security audit,
//! issue 10). Guards against a server that opens every management route to a guessable token —
//! or, with an empty `admin-token` file, to an empty `Authorization: Bearer`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `hangar serve` on `dir` and returns its exit code and stderr, or panics if it is
/// still running after 20 s (it started).
fn start(dir: &std::path::Path, env_token: Option<&str>) -> (Option<i32>, String) {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut cmd = Command::new(common::bin());
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(dir)
        .env_remove("HANGAR_ADMIN_TOKEN")
        .env_remove("HANGAR_SECRET_KEY")
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"));
    if let Some(t) = env_token {
        cmd.env("HANGAR_ADMIN_TOKEN", t);
    }
    let mut child = cmd.spawn().expect("starts hangar");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
            return (status.code(), stderr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("hangar started with a short admin token");
}

#[test]
fn a_short_admin_token_is_refused_at_start() {
    for file in ["", "   \n", "short-token", "fifteen-chars-x"] {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("admin-token"), file).expect("token file");
        let (code, stderr) = start(dir.path(), None);
        assert_eq!(code, Some(2), "{file:?}: {stderr}");
        assert!(
            stderr.contains("admin-token") && stderr.contains("at least 16"),
            "{file:?}: {stderr}"
        );
        assert!(
            !stderr.contains(file.trim()) || file.trim().is_empty(),
            "the token is not echoed"
        );
    }
    for env in ["", "short", "ünïcödé-twelve"] {
        let dir = tempfile::tempdir().expect("dir");
        let (code, stderr) = start(dir.path(), Some(env));
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains("HANGAR_ADMIN_TOKEN") && stderr.contains("at least 16"),
            "{env:?}: {stderr}"
        );
    }
}
