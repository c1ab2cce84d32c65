//! Push delivery, checked by an independent receiver: `tests/support/webhook_receiver.py`
//! verifies every delivery with the `standardwebhooks` package from PyPI. It runs with the
//! `python3` on PATH: `./x test` puts `target/test-venv` (tests/requirements.txt) first; to run
//! these tests alone, activate it (`. target/test-venv/bin/activate`) after one `./x test`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

const HOOK_TOKEN: &str = "hook-token-5e3f";

struct Receiver {
    child: Child,
    url: String,
    out: PathBuf,
    secret_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start(script: &str) -> Receiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("deliveries.jsonl");
        let secret_file = dir.path().join("secret");
        let script_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(script_path)
            .args([
                "--port", "0", "--token", HOOK_TOKEN, "--script", script, "--out",
            ])
            .arg(&out)
            .arg("--secret-file")
            .arg(&secret_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (./x test sets up target/test-venv; activate it)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("receiver prints its address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!("receiver did not start: {line:?} (standardwebhooks missing? run ./x test, or activate target/test-venv)")
            })
            .to_owned();
        Receiver {
            child,
            url,
            out,
            secret_file,
            _dir: dir,
        }
    }

    fn deliveries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn wait_for(&self, n: usize, max: Duration) -> Vec<Value> {
        let start = Instant::now();
        while self.deliveries().len() < n && start.elapsed() < max {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.deliveries()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deployed transform → end agent pushing to `receiver`; returns its id.
fn pushing_agent(s: &Server, receiver: &Receiver) -> String {
    let id = s.create(&json!({
        "name": "Pusher", "description": "pushes results",
        "model": {"provider": "echo", "name": "echo-1"},
        "flow": {"start": "done", "nodes": [{"id": "done", "type": "end", "output": {"echo": "{{ input.msg }}"}}]}
    }));
    let ep = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"async": {"push_enabled": true, "url": format!("{}/hook", receiver.url), "token": HOOK_TOKEN}}),
    );
    assert_eq!(ep.status, 200, "{}", ep.body);
    let secret = ep["signing_secret"].as_str().expect("secret shown once");
    std::fs::write(&receiver.secret_file, secret).expect("secret file");
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d["endpoints"]["async_push"], d["endpoints"]["async_poll"]);
    id
}

fn submit(s: &Server, id: &str, msg: &str) -> String {
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"msg": msg}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    r["poll_url"].as_str().expect("poll url").to_owned()
}

/// Polls until the run's push is no longer pending.
fn push_settled(s: &Server, poll_url: &str, max: Duration) -> Value {
    let start = Instant::now();
    loop {
        let run = s.get(poll_url).body;
        let pending = run["push"]["status"] == "pending" || run["push"].is_null();
        if !pending || start.elapsed() > max {
            return run;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server() -> Server {
    Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[("HANGAR_PUSH_SCHEDULE", "1,1,1")],
    )
}

#[test]
fn a_push_is_signed_verifiable_and_retried_after_500s() {
    let s = server();
    let receiver = Receiver::start("500,500,200");
    let id = pushing_agent(&s, &receiver);
    let poll = submit(&s, &id, "hello");
    let got = receiver.wait_for(3, Duration::from_secs(20));
    assert_eq!(got.len(), 3, "two 500s, then delivered: {got:?}");
    for d in &got {
        assert_eq!(
            d["verified"], true,
            "the standardwebhooks library verifies it: {d}"
        );
        assert_eq!(d["token_ok"], true);
        assert_eq!(d["path"], "/hook");
        assert_eq!(d["webhook_id"], poll.rsplit('/').next().expect("rid"));
        assert_eq!(d["body"]["output"], json!({"echo": "hello"}));
        assert_eq!(d["body"]["status"], "succeeded");
    }
    let run = push_settled(&s, &poll, Duration::from_secs(10));
    assert_eq!(run["push"]["status"], "delivered", "{run}");
    assert_eq!(run["push"]["attempts"], 3);
    assert_eq!(run["push"]["last_status"], 200);
    assert!(run["push"]["delivered_at"].is_string());
    let metrics = s.call("GET", "/metrics", None, &[], None);
    assert!(
        metrics
            .body
            .as_str()
            .is_some_and(|m| m.contains("hangar_push_attempts_total 3")),
        "{}",
        metrics.body
    );
}

#[test]
fn gone_stops_deliveries_at_once() {
    let s = server();
    let receiver = Receiver::start("410");
    let id = pushing_agent(&s, &receiver);
    let poll = submit(&s, &id, "bye");
    let run = push_settled(&s, &poll, Duration::from_secs(10));
    assert_eq!(run["push"]["status"], "failed", "{run}");
    assert_eq!(run["push"]["attempts"], 1);
    assert_eq!(run["push"]["last_status"], 410);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(receiver.deliveries().len(), 1, "no retry after 410");
}

/// Guards against losing a pending delivery in a crash: the outbox is durable.
#[test]
fn a_pending_push_is_delivered_after_kill_9_and_restart() {
    let s = Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[("HANGAR_PUSH_SCHEDULE", "3,1")],
    );
    let receiver = Receiver::start("500,200");
    let id = pushing_agent(&s, &receiver);
    let poll = submit(&s, &id, "survive");
    assert_eq!(
        receiver.wait_for(1, Duration::from_secs(10)).len(),
        1,
        "the first attempt failed with 500"
    );
    // Killed while the retry is scheduled (3 s away).
    let s = s.restart();
    let got = receiver.wait_for(2, Duration::from_secs(20));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["status_answered"], 200);
    assert_eq!(got[1]["verified"], true);
    let run = push_settled(&s, &poll, Duration::from_secs(10));
    assert_eq!(run["push"]["status"], "delivered", "{run}");
}
