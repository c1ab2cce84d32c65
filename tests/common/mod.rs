//! The one harness of the black-box tests: it starts the real `hangar` binary on a free loopback
//! port (`--addr 127.0.0.1:0`, reading back the port it printed) with a temporary data directory,
//! and speaks HTTP to it.
#![allow(dead_code)]

pub mod a2a;
pub mod cluster;
pub mod fake_http;
pub mod scripted_model;
pub mod sse;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

pub const TOKEN: &str = "test-admin-token-0123456789abcdef";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hangar")
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// The data directory; owned here so it outlives restarts and is removed at the end.
    pub dir: tempfile::TempDir,
    /// Where the server's stderr (its log) goes: outside the data directory.
    pub log: tempfile::NamedTempFile,
    env: Vec<(String, String)>,
    agent: ureq::Agent,
}

pub struct Resp {
    pub status: u16,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Resp {
    /// The error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp data dir");
        Server::start_in(dir)
    }

    pub fn start_in(dir: tempfile::TempDir) -> Server {
        Server::start_with(dir, &[])
    }

    /// Starts with extra environment variables (e.g. a short push schedule).
    pub fn start_with(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Server {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, base) = spawn(dir.path(), log.path(), &env);
        Server {
            child: Some(child),
            base,
            env,
            dir,
            log,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .redirects(0)
                .build(),
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reaped");
        }
    }

    /// `kill -TERM`, then waits (up to `max`) for the server to exit; its exit status.
    pub fn terminate(&mut self, max: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        let start = std::time::Instant::now();
        while start.elapsed() < max {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts the server again on the same data directory after it stopped.
    pub fn start_again(mut self) -> Server {
        self.kill();
        let (child, base) = spawn(self.dir.path(), self.log.path(), &self.env);
        self.child = Some(child);
        self.base = base;
        self
    }

    /// Kills the server (`kill -9`) and starts a new one on the same data directory.
    pub fn restart(mut self) -> Server {
        self.kill();
        let (child, base) = spawn(self.dir.path(), self.log.path(), &self.env);
        self.child = Some(child);
        self.base = base;
        self
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let mut req = self
            .agent
            .request(method, &format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: transport error {e}"),
        };
        let status = resp.status();
        let header = |name: &str| resp.header(name).map(str::to_owned);
        let (etag, location, retry_after) =
            (header("ETag"), header("Location"), header("Retry-After"));
        let mut text = String::new();
        resp.into_reader()
            .take(64 << 20)
            .read_to_string(&mut text)
            .expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            // Non-JSON bodies (the /metrics text) come back as a string.
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            etag,
            location,
            retry_after,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, Some(TOKEN), &[], None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.call("POST", path, Some(TOKEN), &[], Some(&body.to_string()))
    }
    pub fn put(&self, path: &str, body: &Value) -> Resp {
        self.call("PUT", path, Some(TOKEN), &[], Some(&body.to_string()))
    }
    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, Some(TOKEN), &[], None)
    }

    /// Creates an agent from `spec` and returns its id.
    pub fn create(&self, spec: &Value) -> String {
        let r = self.post("/v1/agents", spec);
        assert_eq!(r.status, 201, "create: {}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    pub fn seq(&self, id: &str) -> u64 {
        self.get(&format!("/v1/agents/{id}"))["seq"]
            .as_u64()
            .expect("seq")
    }

    /// Runs the `hangar` CLI against this server's data directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .output()
            .expect("runs hangar")
    }
}

impl std::ops::Index<&str> for Resp {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        &self.body[key]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(data: &Path, log: &Path, env: &[(String, String)]) -> (Child, String) {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = Command::new(bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("HANGAR_ADMIN_TOKEN", TOKEN)
        .env_remove("HANGAR_SECRET_KEY")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("starts hangar");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
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
        Ok(base) => (child, base),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "hangar did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// A deployable spec: transform → end, like the contract's example.
pub fn valid_spec(name: &str) -> Value {
    json!({
        "name": name,
        "description": format!("{name} answers greetings"),
        "model": {"provider": "echo", "name": "echo-1", "timeout_s": 30},
        "instructions": "You answer briefly.",
        "flow": {"start": "greet", "nodes": [
            {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.name }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.greet.text }}"}}
        ]}
    })
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether `needle` occurs in any file under `dir`.
pub fn dir_contains(dir: &Path, needle: &str) -> Option<PathBuf> {
    files_under(dir).into_iter().find(|p| {
        std::fs::read(p)
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

/// A stopped server's sled database, opened underneath the store, as someone with disk access
/// might. The store is opened once first, so that its write-ahead log is replayed into sled and
/// emptied.
fn raw_sled(data: &Path) -> sled::Db {
    let path = data.join("store");
    let store = events::store::SledStore::open(&path).expect("opens");
    store.checkpoint_blocking().expect("checkpoints");
    drop(store);
    sled::open(&path).expect("sled opens")
}

/// Edits event `seq` of `agent` in a stopped server's store in place, replacing `from` by `to` in
/// its stored bytes, as someone with disk access might ([`raw_sled`]).
pub fn tamper_event(data: &Path, agent: &str, seq: u64, from: &str, to: &str) {
    let db = raw_sled(data);
    let tree = db.open_tree("events").expect("tree");
    let uuid: uuid::Uuid = agent.parse().expect("uuid");
    let mut key = uuid.as_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    let old = tree.get(&key).expect("reads").expect("the event exists");
    let text = String::from_utf8(old.to_vec())
        .expect("utf8")
        .replace(from, to);
    assert_ne!(text.as_bytes(), &old[..], "the edit changed something");
    tree.insert(key, text.as_bytes()).expect("writes");
    db.flush().expect("flushes");
}

/// Rewrites the last event of `agent` in a stopped server's store as someone who can write the
/// store and knows the hash rule, but not the secret key, might: `edit` gets the stream's stored
/// envelopes (JSON, oldest first) and changes the last one's `data`; that event is then hashed
/// again and the stream's head moved to it, so `hangar verify` finds nothing wrong.
pub fn forge_last_event(data: &Path, agent: &str, edit: impl FnOnce(&mut [Value])) {
    let db = raw_sled(data);
    let tree = db.open_tree("events").expect("tree");
    let uuid: uuid::Uuid = agent.parse().expect("uuid");
    let mut docs: Vec<Value> = tree
        .scan_prefix(uuid.as_bytes())
        .map(|kv| serde_json::from_slice(&kv.expect("reads").1).expect("json"))
        .collect();
    edit(&mut docs);
    let last = docs.last().expect("the stream has events");
    let env = events::Envelope::decode(&serde_json::to_vec(last).expect("serializes"))
        .expect("the edited event decodes");
    let new = events::NewEvent {
        id: env.id,
        at: env.at,
        event: env.event,
    };
    let (forged, bytes) =
        events::Envelope::seal(uuid, env.seq, &env.prev_hash, &new).expect("seals");
    let mut key = uuid.as_bytes().to_vec();
    key.extend_from_slice(&env.seq.to_be_bytes());
    tree.insert(key, bytes).expect("writes");
    let mut head = env.seq.to_be_bytes().to_vec();
    head.extend_from_slice(forged.hash.as_bytes());
    db.open_tree("heads")
        .expect("tree")
        .insert(uuid.as_bytes(), head)
        .expect("writes");
    db.flush().expect("flushes");
}
