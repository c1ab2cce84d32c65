//! Cluster mode over a replicated PostgreSQL: a synchronous standby (`pg_basebackup -R`,
//! `synchronous_standby_names`) is promoted after the primary is killed, and nodes started with
//! a multi-host URL and `target_session_attrs=read-write` lose no acknowledged write, answer 503
//! with `Retry-After` while no primary is up, and serve again by themselves (docs/cluster.md,
//! "Failure cases"). Without PostgreSQL's binaries the test says so loudly and passes (`./x
//! test` installs them).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{postgres, SECRET_KEY};
use common::{bin, valid_spec, Resp, Server, TOKEN};
use serde_json::{json, Value};

fn write(s: &Server, id: &str, description: &str) -> Resp {
    let mut spec = valid_spec("Failover");
    spec["description"] = json!(description);
    s.call(
        "PUT",
        &format!("/v1/agents/{id}/draft"),
        Some(TOKEN),
        &[],
        Some(&spec.to_string()),
    )
}

/// Polls `ok` every 100 ms; panics with `what` after `max`.
fn until(what: &str, max: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < max, "{what}: not after {max:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's whole log, read through `s`: seq → event.
fn log(s: &Server, id: &str) -> HashMap<u64, Value> {
    let mut events = HashMap::new();
    let mut after = 0;
    loop {
        let r = s.get(&format!("/v1/agents/{id}/events?after={after}&limit=1000"));
        assert_eq!(r.status, 200, "events: {}", r.body);
        let page = r["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return events;
        }
        for e in page {
            after = e["seq"].as_u64().expect("seq");
            events.insert(after, e);
        }
    }
}

#[derive(Default)]
struct Seen {
    /// (seq, description) of every 200.
    acks: Vec<(u64, String)>,
    unavailable: u64,
    /// 503s without a Retry-After header.
    without_retry_after: u64,
    /// Any other answer: none is allowed.
    unexpected: Vec<String>,
}

#[test]
fn a_promoted_synchronous_standby_keeps_every_acknowledged_write_and_nodes_come_back() {
    let Some(primary) = postgres() else { return };
    let standby = primary.standby();
    // Synchronous only now: the standby must not inherit the setting (see `standby`).
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'");
    primary.sql("SELECT pg_reload_conf()");
    until(
        "the standby is synchronous",
        Duration::from_secs(30),
        || primary.sql("SELECT sync_state FROM pg_stat_replication") == "sync",
    );
    let url = format!(
        "postgres://hangar@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let env = [
        ("HANGAR_STORE", url.as_str()),
        ("HANGAR_SECRET_KEY", SECRET_KEY),
    ];
    let nodes = [
        Server::start_with(tempfile::tempdir().expect("dir"), &env),
        Server::start_with(tempfile::tempdir().expect("dir"), &env),
    ];
    let id = nodes[0].create(&valid_spec("Failover"));

    // One writer, alternating nodes, from before the kill until after the promotion.
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let description = format!("write {i}");
                let r = write(&nodes[(i % 2) as usize], &id, &description);
                let mut seen = seen.lock().expect("seen");
                match r.status {
                    200 => {
                        assert_eq!(r["description"], description.as_str(), "{}", r.body);
                        let seq = r["seq"].as_u64().expect("a write's seq");
                        seen.acks.push((seq, description));
                    }
                    503 => {
                        seen.unavailable += 1;
                        seen.without_retry_after += u64::from(r.retry_after.is_none());
                        drop(seen);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    s => seen.unexpected.push(format!("{s}: {}", r.body)),
                }
            }
        });
        until(
            "acknowledged writes before the kill",
            Duration::from_secs(30),
            || seen.lock().expect("seen").acks.len() >= 20,
        );
        primary.stop();
        let acked_before = seen.lock().expect("seen").acks.len();
        // Away: no primary at all for a while; every node answers 503 with Retry-After.
        until(
            "503 while no primary is up",
            Duration::from_secs(30),
            || seen.lock().expect("seen").unavailable >= 3,
        );
        for n in &nodes {
            let r = n.get(&format!("/v1/agents/{id}"));
            let h = n.call("GET", "/healthz", None, &[], None);
            assert_eq!(h.status, 503, "healthz while away: {}", h.body);
            assert!(h.retry_after.is_some(), "healthz 503 without Retry-After");
            assert!(
                r.status == 503 || r.status == 200,
                "a read while away answers from the cache or 503: {} {}",
                r.status,
                r.body
            );
        }
        standby.promote();
        // Back by themselves: the writer's writes succeed again, through both nodes.
        until(
            "writes acknowledged after the promotion",
            Duration::from_secs(60),
            || seen.lock().expect("seen").acks.len() >= acked_before + 10,
        );
        stop.store(true, Ordering::Relaxed);
    });
    let seen = seen.into_inner().expect("seen");
    eprintln!(
        "failover: {} writes acknowledged, {} answered 503 while no primary was up",
        seen.acks.len(),
        seen.unavailable
    );
    assert!(seen.unexpected.is_empty(), "{:?}", seen.unexpected);
    assert_eq!(seen.without_retry_after, 0, "503 without Retry-After");
    for n in &nodes {
        assert_eq!(n.call("GET", "/healthz", None, &[], None).status, 200);
    }

    // No acknowledged write lost: each is in the promoted standby's log at its seq, read
    // through either node.
    for n in &nodes {
        let events = log(n, &id);
        for (seq, description) in &seen.acks {
            let e = events
                .get(seq)
                .unwrap_or_else(|| panic!("acknowledged write {description} at seq {seq} lost"));
            assert_eq!(
                e["data"]["spec"]["description"],
                description.as_str(),
                "{e}"
            );
        }
    }
    // And the chains still verify, read from the new primary.
    let out = std::process::Command::new(bin())
        .args(["verify", "--store", &url])
        .output()
        .expect("hangar verify");
    assert!(
        out.status.success(),
        "hangar verify --store: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
