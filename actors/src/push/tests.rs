//! The pusher against a loopback receiver: retries on the schedule, the Standard Webhooks headers
//! and signature, 410 and redirects, and runs whose target is gone.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use events::command::Command;
use events::secret::Cipher;
use events::store::{EventStore, SledStore};
use serde_json::json;
use uuid::Uuid;

use super::{sign, PushMetrics, Pusher, Schedule, Wake};
use crate::Registry;
use events::run::{Mode, PushState, PushStatus, Run, RunStatus, StoredRun};
use events::store::{RunStores, SledRuns};

/// One request as the receiver saw it.
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A one-connection-at-a-time HTTP server on 127.0.0.1 answering each request with the next
/// `(status, extra header)` of `script` (the last one repeats).
fn receiver(script: Vec<(u16, Option<(&'static str, String)>)>) -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().expect("clones"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let (status, extra) = script[i.min(script.len() - 1)].clone();
            let extra = extra.map_or(String::new(), |(k, v)| format!("{k}: {v}\r\n"));
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = tx.send(Seen {
                path,
                headers,
                body,
            });
        }
    });
    (port, rx)
}

#[derive(Default)]
struct Counts {
    attempts: AtomicUsize,
    failures: AtomicUsize,
}

impl PushMetrics for Counts {
    fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::SeqCst);
    }
    fn failure(&self) {
        self.failures.fetch_add(1, Ordering::SeqCst);
    }
}

struct World {
    _dir: tempfile::TempDir,
    runs: Arc<dyn RunStores>,
    registry: Registry,
    cipher: Arc<Cipher>,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = Arc::new(SledStore::open(&dir.path().join("store")).expect("opens"));
    let cipher = Arc::new(Cipher::from_key(&[4; 32]));
    let store: Arc<dyn EventStore> = sled.clone();
    World {
        runs: Arc::new(SledRuns::open(sled).expect("run store")),
        registry: Registry::new(store, cipher.clone(), 1),
        cipher,
        _dir: dir,
    }
}

/// A live agent pushing to `url` with token `TOKEN`; returns its id and signing secret.
async fn pushing_agent(w: &World, url: &str) -> (Uuid, String) {
    let spec = serde_json::from_value(json!({
      "name": "Pusher test", "description": "Pushes",
      "model": {"provider": "echo", "name": "echo-1", "timeout_s": 30},
      "instructions": "You answer briefly.",
      "flow": {"start": "done", "nodes": [{"id": "done", "type": "end", "output": {"ok": true}}]}
    }))
    .expect("spec");
    let id = w.registry.create(spec).await.expect("created").state.id;
    let input = serde_json::from_value(json!({
        "async": {"push_enabled": true, "url": url, "token": "TOKEN"}
    }))
    .expect("endpoint input");
    let out = w
        .registry
        .execute(id, Command::ConfigureEndpoint { input }, None)
        .await
        .expect("configured");
    let secret = out.revealed_secret.expect("a signing secret is revealed");
    w.registry
        .execute(id, Command::Deploy { version: None }, None)
        .await
        .expect("deployed");
    (id, secret)
}

/// A final async run of `agent` version 1 with its push due now, as the runtime stores it.
async fn finished_run(w: &World, agent: Uuid) -> Uuid {
    let rid = Uuid::now_v7();
    let now = Utc::now();
    let run = StoredRun {
        run: Run {
            request_id: rid,
            agent_id: agent,
            version: 1,
            status: RunStatus::Succeeded,
            output: Some(json!({"ok": true})),
            error: None,
            created_at: now,
            started_at: Some(now),
            finished_at: Some(now),
            push: Some(PushState {
                status: PushStatus::Pending,
                attempts: 0,
                last_status: None,
                delivered_at: None,
                next_attempt_at: None,
            }),
            pending: None,
            parent: None,
            thread_id: None,
        },
        mode: Mode::Async,
        input: json!({}),
        member: None,
        idempotency_key: None,
        caller: None,
        fingerprint: None,
        push_enabled: true,
        checkpoint: None,
        a2a_push: None,
    };
    w.runs.finish(run, Some(now)).await.expect("finished");
    rid
}

fn start(w: &World, schedule: &str, metrics: Arc<Counts>) -> Addr<Pusher> {
    Pusher::new(
        w.runs.clone() as Arc<dyn events::store::RunStore>,
        w.registry.clone(),
        w.cipher.clone(),
        schedule.parse::<Schedule>().expect("schedule"),
        metrics,
    )
    .start()
}

/// The run's push once it is no longer pending.
async fn settled(w: &World, rid: Uuid, within: Duration) -> PushState {
    let deadline = Instant::now() + within;
    loop {
        let push = w
            .runs
            .get(rid)
            .await
            .expect("reads")
            .expect("stored")
            .run
            .push;
        let push = push.expect("push state");
        if push.status != PushStatus::Pending {
            return push;
        }
        assert!(Instant::now() < deadline, "still pending: {push:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn retries_on_the_schedule_until_delivered_with_verifiable_signatures() {
    let w = world();
    let (port, seen) = receiver(vec![(500, None), (500, None), (200, None)]);
    let (agent, secret) = pushing_agent(&w, &format!("http://127.0.0.1:{port}/hook")).await;
    let rid = finished_run(&w, agent).await;
    let metrics = Arc::new(Counts::default());
    let pusher = start(&w, "1,1,1", metrics.clone());
    pusher.do_send(Wake);

    let push = settled(&w, rid, Duration::from_secs(8)).await;
    assert_eq!(push.status, PushStatus::Delivered);
    assert_eq!(push.attempts, 3);
    assert_eq!(push.last_status, Some(200));
    assert!(push.delivered_at.is_some());
    assert_eq!(push.next_attempt_at, None);
    assert_eq!(
        w.runs.next_push_due().await.expect("outbox"),
        None,
        "the entry is gone"
    );
    assert_eq!(metrics.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(metrics.failures.load(Ordering::SeqCst), 2);

    let requests: Vec<Seen> = seen.try_iter().collect();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.path, "/hook");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["authorization"], "Bearer TOKEN");
        assert_eq!(r.headers["webhook-id"], rid.to_string());
        let ts: i64 = r.headers["webhook-timestamp"]
            .parse()
            .expect("unix seconds");
        assert!((Utc::now().timestamp() - ts).abs() < 30);
        let expected = sign(&secret, &rid.to_string(), ts, &r.body).expect("signs");
        assert_eq!(
            r.headers["webhook-signature"], expected,
            "the signature verifies"
        );
        let body: Run = serde_json::from_slice(&r.body).expect("the body is a Run");
        assert_eq!(body.request_id, rid);
        assert_eq!(body.status, RunStatus::Succeeded);
        assert_eq!(body.output, Some(json!({"ok": true})));
    }
}

#[actix_rt::test]
async fn redirects_are_not_followed_and_410_stops_at_once() {
    let w = world();
    let (port, seen) = receiver(vec![
        (302, Some(("location", "/elsewhere".to_owned()))),
        (410, None),
        (200, None),
    ]);
    let (agent, _secret) = pushing_agent(&w, &format!("http://127.0.0.1:{port}/hook")).await;
    let rid = finished_run(&w, agent).await;
    let metrics = Arc::new(Counts::default());
    let _pusher = start(&w, "0.2,0.2,0.2", metrics.clone());

    let push = settled(&w, rid, Duration::from_secs(5)).await;
    assert_eq!(push.status, PushStatus::Failed);
    assert_eq!(push.attempts, 2);
    assert_eq!(push.last_status, Some(410));
    assert_eq!(push.delivered_at, None);
    let paths: Vec<String> = seen.try_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook", "/hook"], "the redirect was not followed");
    assert_eq!(metrics.failures.load(Ordering::SeqCst), 2);
}

#[actix_rt::test]
async fn retry_after_postpones_and_the_last_failure_gives_up() {
    let w = world();
    let (port, seen) = receiver(vec![
        (503, Some(("retry-after", "1".to_owned()))),
        (500, None),
    ]);
    let (agent, _secret) = pushing_agent(&w, &format!("http://127.0.0.1:{port}/hook")).await;
    let rid = finished_run(&w, agent).await;
    let _pusher = start(&w, "0", Arc::new(Counts::default()));

    let begun = Instant::now();
    let push = settled(&w, rid, Duration::from_secs(5)).await;
    assert!(
        begun.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(push.status, PushStatus::Failed);
    assert_eq!(push.attempts, 2, "one retry on a one-delay schedule");
    assert_eq!(push.last_status, Some(500));
    assert_eq!(seen.try_iter().count(), 2);
    assert_eq!(w.runs.next_push_due().await.expect("outbox"), None);
}

#[actix_rt::test]
async fn no_answer_counts_as_a_failed_attempt_without_status() {
    let w = world();
    // A port nobody listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("addr")
        .port();
    let (agent, _secret) = pushing_agent(&w, &format!("http://127.0.0.1:{port}/hook")).await;
    let rid = finished_run(&w, agent).await;
    let _pusher = start(&w, "0.1", Arc::new(Counts::default()));

    let push = settled(&w, rid, Duration::from_secs(5)).await;
    assert_eq!(push.status, PushStatus::Failed);
    assert_eq!(push.attempts, 2);
    assert_eq!(push.last_status, None);
}

#[actix_rt::test]
async fn a_push_whose_agent_is_gone_fails_without_an_attempt() {
    let w = world();
    let rid = finished_run(&w, Uuid::now_v7()).await;
    let metrics = Arc::new(Counts::default());
    let _pusher = start(&w, "1", metrics.clone());

    let push = settled(&w, rid, Duration::from_secs(3)).await;
    assert_eq!(push.status, PushStatus::Failed);
    assert_eq!(push.attempts, 0);
    assert_eq!(metrics.attempts.load(Ordering::SeqCst), 0);
    assert_eq!(w.runs.next_push_due().await.expect("outbox"), None);
}
