//! SIGTERM drains: no new connections, sync runs in flight finish, queued async runs stay
//! durable and run after the next start.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fake_http::{FakeServer, Reply};
use common::Server;
use serde_json::json;

#[test]
fn sigterm_lets_sync_runs_finish_and_keeps_the_queue_for_the_next_start() {
    let s = Server::start();
    let slow = FakeServer::start(|_| {
        Reply::json(200, json!({"ok": true})).slow(Duration::from_millis(1500))
    });
    let spec = json!({
        "name": "Drained", "description": "slow tool agent", "model": {"provider": "echo", "name": "e"},
        "tools": [{"name": "t", "connection": "svc", "security": "bearer", "method": "GET", "path": "/x"}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "args": {}, "next": "done"},
            {"id": "done", "type": "end", "output": {"body": "{{ nodes.call.body }}"}}
        ]}
    });
    let id = s.create(&spec);
    s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": slow.url, "auth": {"type": "bearer", "token": "t"}}),
    );
    s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"max_concurrency": 1}),
    );
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );

    let s = Arc::new(Mutex::new(s));
    // A sync run occupies the only slot; async requests queue behind it.
    let sync_caller = {
        let s = s.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            let server = s.lock().expect("lock").base.clone();
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build();
            let r = agent
                .post(&format!("{server}/v1/agents/{id}/invoke"))
                .set("Authorization", &format!("Bearer {}", common::TOKEN))
                .send_string(r#"{"input": {}}"#);
            r.map(|r| r.status()).unwrap_or_else(|e| match e {
                ureq::Error::Status(code, _) => code,
                _ => 0,
            })
        })
    };
    slow.wait_requests(1, Duration::from_secs(10));
    let queued: Vec<String> = {
        let s = s.lock().expect("lock");
        (0..3)
            .map(|_| {
                let r = s.post(
                    &format!("/v1/agents/{id}/invoke/async"),
                    &json!({"input": {}}),
                );
                assert_eq!(r.status, 202);
                r["poll_url"].as_str().expect("url").to_owned()
            })
            .collect()
    };
    let status = s.lock().expect("lock").terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|st| st.success()),
        "the server exits cleanly on SIGTERM: {status:?}"
    );
    assert_eq!(
        sync_caller.join().expect("thread"),
        200,
        "the sync run in flight finished"
    );
    assert_eq!(
        slow.requests().len(),
        1,
        "no queued run started while draining"
    );

    let s = Arc::try_unwrap(s)
        .ok()
        .expect("one owner")
        .into_inner()
        .expect("lock");
    let wal = s.data().join("store").join("hangar.wal");
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).ok(),
        Some(0),
        "a clean stop checkpoints: the next start has no write-ahead log to replay"
    );
    let s = s.start_again();
    for url in &queued {
        let r = s.get(&format!("{url}?wait=25"));
        assert_eq!(r["status"], "succeeded", "{}", r.body);
    }
}
