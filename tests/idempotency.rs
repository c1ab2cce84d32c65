//! Idempotency keys and the runs they name, as a careful client relies on them: scoped to the
//! caller, bound to the body, durable before a keyed sync run starts, answered even when the agent
//! is saturated; and the slots and memory that polling and previews may take.

mod common;

use std::time::Duration;

use common::fake_http::{FakeServer, Reply};
use common::{Server, TOKEN};
use serde_json::{json, Value};

fn deploy(s: &Server, id: &str) {
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
}

fn key(s: &Server, id: &str) -> String {
    let r = s.post(&format!("/v1/agents/{id}/keys"), &json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    r["key"].as_str().expect("key").to_owned()
}

fn post_as(
    s: &Server,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> common::Resp {
    s.call("POST", path, Some(token), headers, Some(&body.to_string()))
}

/// An agent whose one node calls a tool on `server`: each call reaches the fake server, so the
/// tests can count runs by requests.
fn tool_agent(s: &Server, server: &str, max_concurrency: u32) -> String {
    let spec = json!({
        "name": "Counted", "description": "Calls a tool once per run",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "tools": [{"name": "t", "connection": "svc", "security": "bearer", "method": "POST",
                   "path": "/do", "body": {"n": "{{ args.n }}"}}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "args": {"n": "{{ input.n }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}
        ]}
    });
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": server, "credentials": "team", "auth": {"type": "bearer", "token": "tok"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let e = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"max_concurrency": max_concurrency}),
    );
    assert_eq!(e.status, 200, "{}", e.body);
    deploy(s, &id);
    id
}

/// A tool server that answers after `delay` when the request body says "slow", at once otherwise.
fn slow_when_asked(delay: Duration) -> FakeServer {
    FakeServer::start(move |r| {
        let reply = Reply::json(200, json!({}));
        if r.body.contains("slow") {
            reply.slow(delay)
        } else {
            reply
        }
    })
}

/// POSTs `body` to `path` with the admin token on a thread of its own; joins to its status.
fn post_in_background(
    base: &str,
    path: String,
    body: Value,
) -> std::thread::JoinHandle<Result<u16, String>> {
    let url = format!("{base}{path}");
    std::thread::spawn(move || {
        ureq::post(&url)
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .send_json(body)
            .map(|r| r.status())
            .map_err(|e| e.to_string())
    })
}

/// Guards against a keyed sync call running twice when the server dies right after answering:
/// the request must be on disk before its run starts, and its answer before the 200.
#[test]
fn a_keyed_sync_call_answered_before_kill_9_is_found_again_not_rerun() {
    let tool = FakeServer::start(|_| Reply::json(200, json!({"ok": true})));
    let mut s = Server::start();
    let id = tool_agent(&s, &tool.url, 4);
    let path = format!("/v1/agents/{id}/invoke");
    let first = post_as(
        &s,
        TOKEN,
        &path,
        &[("Idempotency-Key", "K")],
        json!({"input": {"n": 1}}),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    s.kill();
    let s = s.start_again();
    let again = post_as(
        &s,
        TOKEN,
        &path,
        &[("Idempotency-Key", "K")],
        json!({"input": {"n": 1}}),
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again["request_id"], first["request_id"], "the same request");
    assert_eq!(again["output"], first["output"]);
    assert_eq!(tool.requests().len(), 1, "the tool was called once");
}

/// Two callers using the same key string get two requests; one caller reusing a key for another
/// body is refused, and nothing runs.
#[test]
fn keys_belong_to_their_caller_and_their_body() {
    let tool = FakeServer::start(|_| Reply::json(200, json!({"ok": true})));
    let s = Server::start();
    let id = tool_agent(&s, &tool.url, 4);
    let (a, b) = (key(&s, &id), key(&s, &id));
    let path = format!("/v1/agents/{id}/invoke/async");
    let h = [("Idempotency-Key", "order-123")];
    let ra = post_as(&s, &a, &path, &h, json!({"input": {"n": 1}}));
    let rb = post_as(&s, &b, &path, &h, json!({"input": {"n": 1}}));
    let radmin = post_as(&s, TOKEN, &path, &h, json!({"input": {"n": 1}}));
    for r in [&ra, &rb, &radmin] {
        assert_eq!(r.status, 202, "{}", r.body);
    }
    assert_ne!(
        ra["request_id"], rb["request_id"],
        "two callers, two requests"
    );
    assert_ne!(ra["request_id"], radmin["request_id"]);
    let repeat = post_as(&s, &a, &path, &h, json!({"input": {"n": 1}}));
    assert_eq!(
        repeat["request_id"], ra["request_id"],
        "a repeat finds its request"
    );

    let other_body = post_as(&s, &a, &path, &h, json!({"input": {"n": 2}}));
    assert_eq!(other_body.status, 422, "{}", other_body.body);
    assert_eq!(other_body.code(), "idempotency_key_reused");
    let sync = post_as(
        &s,
        &a,
        &format!("/v1/agents/{id}/invoke"),
        &[("Idempotency-Key", "sync-1")],
        json!({"input": {"n": 5}}),
    );
    assert_eq!(sync.status, 200, "{}", sync.body);
    let reused = post_as(
        &s,
        &a,
        &format!("/v1/agents/{id}/invoke"),
        &[("Idempotency-Key", "sync-1")],
        json!({"input": {"n": 6}}),
    );
    assert_eq!(reused.status, 422, "{}", reused.body);
    assert_eq!(reused.code(), "idempotency_key_reused");
    let runs = tool.wait_requests(4, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        tool.requests().len(),
        4,
        "three async runs and one sync run: {runs:?}"
    );
}

/// A repeat of a keyed request is answered with that request even while the agent is at its
/// limit: the limit is for new work.
#[test]
fn a_repeat_is_answered_even_when_the_agent_is_saturated() {
    let tool = slow_when_asked(Duration::from_secs(3));
    let s = Server::start();
    let id = tool_agent(&s, &tool.url, 1);
    let path = format!("/v1/agents/{id}/invoke");
    let first = post_as(
        &s,
        TOKEN,
        &path,
        &[("Idempotency-Key", "K")],
        json!({"input": {"n": 1}}),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let slow = post_in_background(
        &s.base,
        format!("/v1/agents/{id}/invoke"),
        json!({"input": {"n": "slow"}}),
    );
    tool.wait_requests(2, Duration::from_secs(10));
    let fresh = post_as(&s, TOKEN, &path, &[], json!({"input": {"n": 2}}));
    assert_eq!(fresh.status, 429, "new work is refused: {}", fresh.body);
    let repeat = post_as(
        &s,
        TOKEN,
        &path,
        &[("Idempotency-Key", "K")],
        json!({"input": {"n": 1}}),
    );
    assert_eq!(repeat.status, 200, "{}", repeat.body);
    assert_eq!(repeat["request_id"], first["request_id"]);
    assert_eq!(slow.join().expect("joins").expect("answered"), 200);
}

/// Guards against the preview of a draft taking the live endpoint's only slot.
#[test]
fn a_running_preview_takes_no_live_slot() {
    let tool = slow_when_asked(Duration::from_secs(3));
    let s = Server::start();
    let id = tool_agent(&s, &tool.url, 1);
    let preview = post_in_background(
        &s.base,
        format!("/v1/agents/{id}/preview"),
        json!({"input": {"n": "slow"}}),
    );
    tool.wait_requests(1, Duration::from_secs(10));
    let live = post_as(
        &s,
        TOKEN,
        &format!("/v1/agents/{id}/invoke"),
        &[],
        json!({"input": {"n": 1}}),
    );
    assert_eq!(
        live.status, 200,
        "the live call is not refused: {}",
        live.body
    );
    assert_eq!(preview.join().expect("joins").expect("answered"), 200);
}

/// Guards against every poll leaving a waiter behind: polls of unknown and finished requests, and
/// long-polls that time out, leave nothing waiting.
#[test]
fn polling_leaves_no_waiters_behind() {
    let tool = slow_when_asked(Duration::from_secs(4));
    let s = Server::start();
    let id = tool_agent(&s, &tool.url, 4);
    let done = post_as(
        &s,
        TOKEN,
        &format!("/v1/agents/{id}/invoke"),
        &[],
        json!({"input": {"n": 1}}),
    );
    assert_eq!(done.status, 200);
    let rid = done["request_id"].as_str().expect("rid").to_owned();
    for _ in 0..50 {
        let unknown = uuid::Uuid::now_v7();
        let r = s.get(&format!("/v1/agents/{id}/requests/{unknown}?wait=1"));
        assert_eq!(r.status, 404);
        let r = s.get(&format!("/v1/agents/{id}/requests/{rid}?wait=1"));
        assert_eq!(r.status, 200);
    }
    let slow = post_as(
        &s,
        TOKEN,
        &format!("/v1/agents/{id}/invoke/async"),
        &[],
        json!({"input": {"n": "slow"}}),
    );
    let slow_rid = slow["request_id"].as_str().expect("rid").to_owned();
    let r = s.get(&format!("/v1/agents/{id}/requests/{slow_rid}?wait=1"));
    assert_eq!(r.status, 200);
    assert_ne!(
        r["status"], "succeeded",
        "still running after a 1 s long-poll"
    );
    let metrics = s.call("GET", "/metrics", None, &[], None);
    let text = metrics.body.as_str().expect("text").to_owned();
    assert!(
        text.contains("hangar_long_polls_waiting 0"),
        "no waiter left behind: {}",
        text.lines()
            .filter(|l| l.contains("long_polls"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Guards against a short run retention shortening the idempotency window: with runs kept 2 s,
/// a keyed request repeated after several purges still finds its request, and does not run again.
#[test]
fn a_key_outlives_a_short_run_retention() {
    let tool = FakeServer::start(|_| Reply::json(200, json!({"ok": true})));
    let s = Server::start_with(
        tempfile::tempdir().expect("temp dir"),
        &[("HANGAR_RUN_RETENTION", "2s")],
    );
    let id = tool_agent(&s, &tool.url, 4);
    let path = format!("/v1/agents/{id}/invoke");
    let first = post_as(
        &s,
        TOKEN,
        &path,
        &[("Idempotency-Key", "K")],
        json!({"input": {"n": 1}}),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let plain = post_as(&s, TOKEN, &path, &[], json!({"input": {"n": 2}}));
    assert_eq!(plain.status, 200, "{}", plain.body);
    let plain_rid = plain["request_id"].as_str().expect("rid").to_owned();
    // Purges run every second; wait until the unkeyed run has been purged.
    let mut purged = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if s.get(&format!("/v1/agents/{id}/requests/{plain_rid}"))
            .status
            == 404
        {
            purged = true;
            break;
        }
    }
    assert!(purged, "the retention purges unkeyed runs");
    let again = post_as(
        &s,
        TOKEN,
        &path,
        &[("Idempotency-Key", "K")],
        json!({"input": {"n": 1}}),
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again["request_id"], first["request_id"],
        "the key still names its request"
    );
    assert_eq!(tool.requests().len(), 2, "the keyed request ran once");
}
