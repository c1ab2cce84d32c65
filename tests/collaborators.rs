//! Collaborator runs are children of the run that called them: cancelling, timing out or
//! undeploying the parent cancels the child at once (its tool call is dropped and its slot
//! freed), and the child's run names its parent.

mod common;

use std::time::Duration;

use common::fake_http::{FakeServer, Reply};
use common::Server;
use serde_json::json;

fn deploy(s: &Server, id: &str) {
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
}

/// A child whose tool answers after 20 s, with one slot, and a parent whose `agent` node calls it.
fn parent_and_child(s: &Server, tool: &FakeServer, node_timeout: Option<u64>) -> (String, String) {
    let child = s.create(&json!({
        "name": "Child", "description": "Slow tool",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "tools": [{"name": "t", "connection": "svc", "security": "bearer", "method": "GET", "path": "/slow"}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "args": {}, "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}
        ]}
    }));
    let c = s.post(
        &format!("/v1/agents/{child}/connections"),
        &json!({"id": "svc", "server": tool.url, "credentials": "team", "auth": {"type": "bearer", "token": "t"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let e = s.put(
        &format!("/v1/agents/{child}/endpoint"),
        &json!({"max_concurrency": 1}),
    );
    assert_eq!(e.status, 200, "{}", e.body);
    deploy(s, &child);
    let mut ask =
        json!({"id": "ask", "type": "agent", "agent": child, "input": {}, "next": "done"});
    if let Some(t) = node_timeout {
        ask["timeout_s"] = json!(t);
    }
    let parent = s.create(&json!({
        "name": "Parent", "description": "Asks the child",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "collaborators": [child],
        "flow": {"start": "ask", "nodes": [ask,
            {"id": "done", "type": "end", "output": {"child": "{{ nodes.ask.status }}"}}]}
    }));
    deploy(s, &parent);
    (parent, child)
}

fn slow_tool() -> FakeServer {
    FakeServer::start(|_| Reply::json(200, json!({})).slow(Duration::from_secs(20)))
}

/// Whether the child's one slot is free: an async run of it starts at once (and is cancelled
/// again), where it would wait on the queue behind a run holding the slot.
fn child_slot_is_free(s: &Server, child: &str) -> bool {
    let r = s.call(
        "POST",
        &format!("/v1/agents/{child}/invoke/async"),
        Some(common::TOKEN),
        &[],
        Some("{}"),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    // Queued behind the child's one slot unless it is free: then it starts at once.
    for _ in 0..40 {
        let p = s.get(&format!("/v1/agents/{child}/requests/{rid}"));
        if p["status"] == "running" {
            s.delete(&format!("/v1/agents/{child}/requests/{rid}"));
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still queued: taken off again, so that it cannot take the slot later.
    let c = s.delete(&format!("/v1/agents/{child}/requests/{rid}"));
    assert_eq!(c.status, 200, "{}", c.body);
    false
}

/// The child's tool call was dropped and its slot is free again.
fn assert_child_cancelled(s: &Server, tool: &FakeServer, child: &str) {
    let dropped = tool.wait_dropped(1, Duration::from_secs(5));
    assert_eq!(dropped.len(), 1, "the child's tool call was dropped");
    assert!(
        child_slot_is_free(s, child),
        "the child's slot is free again"
    );
}

#[test]
fn cancelling_the_parent_cancels_its_collaborator_at_once() {
    let tool = slow_tool();
    let s = Server::start();
    let (parent, child) = parent_and_child(&s, &tool, None);
    let r = s.post(
        &format!("/v1/agents/{parent}/invoke/async"),
        &json!({"input": {}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    tool.wait_requests(1, Duration::from_secs(10));
    assert!(
        !child_slot_is_free(&s, &child),
        "the child holds its slot while it runs"
    );
    let c = s.delete(&format!("/v1/agents/{parent}/requests/{rid}"));
    assert_eq!(c.status, 200, "{}", c.body);
    assert_child_cancelled(&s, &tool, &child);
}

#[test]
fn a_parent_node_timeout_cancels_its_collaborator() {
    let tool = slow_tool();
    let s = Server::start();
    let (parent, child) = parent_and_child(&s, &tool, Some(1));
    let r = s.post(
        &format!("/v1/agents/{parent}/invoke"),
        &json!({"input": {}}),
    );
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body["error"]["details"]["limit"], "node", "{}", r.body);
    assert_child_cancelled(&s, &tool, &child);
}

#[test]
fn undeploying_the_parent_cancels_its_collaborator() {
    let tool = slow_tool();
    let s = Server::start();
    let (parent, child) = parent_and_child(&s, &tool, None);
    let r = s.post(
        &format!("/v1/agents/{parent}/invoke/async"),
        &json!({"input": {}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    tool.wait_requests(1, Duration::from_secs(10));
    let u = s.post(&format!("/v1/agents/{parent}/undeploy"), &json!({}));
    assert_eq!(u.status, 200, "{}", u.body);
    assert_child_cancelled(&s, &tool, &child);
}
