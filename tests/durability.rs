//! What survives a crash, and what operators can prove from the log afterwards.

mod common;

use common::{valid_spec, Server};
use serde_json::{json, Value};

/// Guards against acknowledging a write before it is flushed: every 2xx must survive `kill -9`.
#[test]
fn kill_9_right_after_a_2xx_loses_nothing() {
    let s = Server::start();
    let id = s.create(&valid_spec("Durable"));
    s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"sync_timeout_s": 120}),
    );
    s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "c1", "server": "http://127.0.0.1:9", "credentials": "team", "auth": {"type": "bearer", "token": "tok-durable"}}),
    );
    let removed = s.delete(&format!("/v1/agents/{id}/connections/c1"));
    assert_eq!(removed.status, 204);
    let before = s.get(&format!("/v1/agents/{id}"));
    let events_before = s.get(&format!("/v1/agents/{id}/events"));

    let s = s.restart();
    let after = s.get(&format!("/v1/agents/{id}"));
    assert_eq!(after.status, 200);
    assert_eq!(after.body, before.body);
    assert_eq!(after.etag, before.etag);
    assert_eq!(after["seq"], 4);
    assert_eq!(
        s.get(&format!("/v1/agents/{id}/events")).body,
        events_before.body
    );
}

#[test]
fn every_acknowledged_write_of_a_burst_survives_kill_9() {
    let s = Server::start();
    let id = s.create(&valid_spec("Burst"));
    let mut last = 1;
    for i in 0..40 {
        let mut spec = valid_spec("Burst");
        spec["description"] = json!(format!("edit {i}"));
        let r = s.put(&format!("/v1/agents/{id}/draft"), &spec);
        assert_eq!(r.status, 200);
        last = r["seq"].as_u64().expect("seq");
    }
    let s = s.restart();
    let after = s.get(&format!("/v1/agents/{id}"));
    assert_eq!(after["seq"], last);
    assert_eq!(after["description"], "edit 39");
}

#[test]
fn history_at_seq_equals_a_fresh_replay_and_the_cli_agrees() {
    let mut s = Server::start();
    let id = s.create(&valid_spec("History"));
    let mut states: Vec<Value> = vec![s.get(&format!("/v1/agents/{id}")).body];
    for step in 0..3 {
        let mut spec = valid_spec("History");
        spec["description"] = json!(format!("step {step}"));
        s.put(&format!("/v1/agents/{id}/draft"), &spec);
        states.push(s.get(&format!("/v1/agents/{id}")).body);
    }
    s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    states.push(s.get(&format!("/v1/agents/{id}")).body);
    s.post(&format!("/v1/agents/{id}/undeploy"), &json!({}));
    states.push(s.get(&format!("/v1/agents/{id}")).body);

    for (i, expected) in states.iter().enumerate() {
        let at = i + 1;
        let h = s.get(&format!("/v1/agents/{id}/history?at={at}"));
        assert_eq!(h.status, 200);
        assert_eq!(
            &h.body, expected,
            "history at {at} equals the agent as it was"
        );
    }
    let bad = s.get(&format!("/v1/agents/{id}/history?at=99"));
    assert_eq!(
        (bad.status, bad.body["error"]["details"]["field"].as_str()),
        (400, Some("at"))
    );

    // The offline replay, on the stopped server's data, gives the same states.
    s.kill();
    let data = s.data().to_str().expect("utf8 path").to_owned();
    for (i, expected) in states.iter().enumerate() {
        let at = (i + 1).to_string();
        let out = s.cli(&["replay", "--data", &data, &id, "--at", &at]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replayed: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(&replayed, expected, "replay --at {at}");
    }
    let out = s.cli(&["events", "--data", &data, &id]);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), states.len());
    assert_eq!(
        lines
            .iter()
            .map(|l| l["seq"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(lines[0]["type"], "Created");
    assert_eq!(lines[4]["type"], "Deployed");
    assert_eq!(lines[5]["type"], "Undeployed");
}

#[test]
fn events_listing_pages_and_chains() {
    let s = Server::start();
    let id = s.create(&valid_spec("Log"));
    for _ in 0..4 {
        s.put(&format!("/v1/agents/{id}/draft"), &valid_spec("Log"));
    }
    let all = s.get(&format!("/v1/agents/{id}/events"));
    let events = all["events"].as_array().expect("events");
    assert_eq!(events.len(), 5);
    for pair in events.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "each event links to the previous hash"
        );
        assert_eq!(
            pair[1]["seq"].as_u64(),
            pair[0]["seq"].as_u64().map(|n| n + 1)
        );
    }
    for key in ["seq", "id", "type", "at", "data", "prev_hash", "hash"] {
        assert!(!events[0][key].is_null(), "envelope has {key}");
    }
    let page = s.get(&format!("/v1/agents/{id}/events?after=2&limit=2"));
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(
        s.get(&format!("/v1/agents/{id}/events?limit=0")).status,
        400
    );
    assert_eq!(
        s.get(&format!("/v1/agents/{id}/events?after=-1")).status,
        400
    );
}

/// Guards against an edit of the stored log going unnoticed by operators.
#[test]
fn verify_passes_on_a_good_log_and_names_the_altered_event() {
    let mut s = Server::start();
    let id = s.create(&valid_spec("Audited"));
    for i in 0..3 {
        let mut spec = valid_spec("Audited");
        spec["description"] = json!(format!("version {i}"));
        s.put(&format!("/v1/agents/{id}/draft"), &spec);
    }
    let other = s.create(&valid_spec("Other"));
    let data = s.data().to_str().expect("utf8").to_owned();

    // While the server runs, the directory is locked and the tools say so.
    let locked = s.cli(&["verify", "--data", &data]);
    assert!(!locked.status.success());
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("locked by a running server"),
        "{}",
        String::from_utf8_lossy(&locked.stderr)
    );

    s.kill();
    let ok = s.cli(&["verify", "--data", &data]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("2 agents, 5 events"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // Alter event 3 of the first agent in place, as someone with disk access might.
    common::tamper_event(s.data(), &id, 3, "version 1", "version X");
    let bad = s.cli(&["verify", "--data", &data]);
    assert_eq!(bad.status.code(), Some(1));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains(&id) && out.contains("seq 3"), "{out}");
    let _ = other;
}
