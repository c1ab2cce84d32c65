//! Runs that wait for a person: a tool call that needs approval (granted, refused), an `input`
//! node answered after a `kill -9` and a restart, 409 for a run that is not waiting, and the
//! push of the paused Run.

mod common;

use std::time::{Duration, Instant};

use common::fake_http::{FakeServer, Reply};
use common::scripted_model::{Say, ScriptedModel};
use common::Server;
use serde_json::{json, Value};

/// An agent whose model may call `refund`, which needs a person's approval.
fn refund_agent(s: &Server, model_url: &str, tool_url: &str) -> String {
    let spec = json!({
        "name": "Refunds", "description": "Refunds with approval",
        "model": {"provider": "openai", "name": "scripted", "base_url": model_url, "timeout_s": 30},
        "instructions": "Refund when asked.",
        "tools": [{"name": "refund", "connection": "shop", "security": "bearer", "method": "POST",
                   "path": "/refunds", "body": {"order": "{{ args.order }}"}, "approval": true,
                   "description": "Refunds an order", "parameters": {"type": "object", "properties": {"order": {"type": "string"}}}}],
        "flow": {"start": "ask", "nodes": [
            {"id": "ask", "type": "model", "prompt": "{{ input.q }}", "tools": ["refund"], "next": "done"},
            {"id": "done", "type": "end", "output": {"answer": "{{ nodes.ask.text }}", "calls": "{{ nodes.ask.tool_calls }}"}}]}
    });
    let id = s.create(&spec);
    let r = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "shop", "server": tool_url, "auth": {"type": "bearer", "token": "shop-token"}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
    id
}

/// Polls `rid` until it is neither queued nor running (20 s at most).
fn settled(s: &Server, id: &str, rid: &str) -> Value {
    let start = Instant::now();
    loop {
        let r = s.get(&format!("/v1/agents/{id}/requests/{rid}?wait=5"));
        assert_eq!(r.status, 200, "{}", r.body);
        let status = r["status"].as_str().unwrap_or_default().to_owned();
        if !["queued", "running"].contains(&status.as_str())
            || start.elapsed() > Duration::from_secs(20)
        {
            return r.body;
        }
    }
}

/// Reads `rid` with plain GETs (no long-poll, whose wake-up comes only once a change is
/// durable) until it is neither queued nor running (20 s at most): the first read that sees the
/// pause may come the moment sled applied it, before its group commit.
fn first_seen_settled(s: &Server, id: &str, rid: &str) -> Value {
    let start = Instant::now();
    loop {
        let r = s.get(&format!("/v1/agents/{id}/requests/{rid}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let status = r["status"].as_str().unwrap_or_default().to_owned();
        if !["queued", "running"].contains(&status.as_str())
            || start.elapsed() > Duration::from_secs(20)
        {
            return r.body;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn answer(s: &Server, id: &str, rid: &str, body: Value) -> common::Resp {
    s.post(&format!("/v1/agents/{id}/requests/{rid}/input"), &body)
}

#[test]
fn an_approved_call_runs_only_after_the_approval() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::call("refund", json!({"order": "A-17"})),
        Say::text("Refunded A-17."),
    ]);
    let shop = FakeServer::start(|_| Reply::json(200, json!({"refunded": true})));
    let id = refund_agent(&s, model.url(), &shop.url);

    // A sync call whose run pauses answers 200 with the paused Run.
    let r = s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {"q": "Refund A-17"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["status"], "input_required");
    assert_eq!(
        r["pending"],
        json!({"kind": "approval", "node": "ask", "tool": "refund", "args": {"order": "A-17"}})
    );
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    assert!(shop.requests().is_empty(), "nothing called before approval");
    assert_eq!(
        s.get(&format!("/v1/agents/{id}/requests/{rid}"))["status"],
        "input_required"
    );

    // The wrong kind of answer is refused, and nothing resumes.
    let r = answer(&s, &id, &rid, json!({"input": {"x": 1}}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["details"]["field"], "approve");

    let r = answer(&s, &id, &rid, json!({"approve": true}));
    assert_eq!(r.status, 202, "{}", r.body);
    let run = settled(&s, &id, &rid);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["answer"], "Refunded A-17.");
    assert_eq!(run["output"]["calls"][0]["status"], "ok");
    let calls = shop.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].headers["authorization"], "Bearer shop-token");
    assert!(calls[0].body.contains("A-17"));

    // Not waiting any more: 409.
    let r = answer(&s, &id, &rid, json!({"approve": true}));
    assert_eq!((r.status, r.code()), (409, "not_waiting"), "{}", r.body);
}

#[test]
fn a_refused_call_is_not_made_and_the_model_is_told() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::call("refund", json!({"order": "B-2"})),
        Say::text("I was not allowed to refund B-2."),
    ]);
    let shop = FakeServer::start(|_| Reply::json(200, json!({})));
    let id = refund_agent(&s, model.url(), &shop.url);
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"q": "Refund B-2"}}),
    );
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    let paused = settled(&s, &id, &rid);
    assert_eq!(paused["status"], "input_required", "{paused}");

    let r = answer(&s, &id, &rid, json!({"approve": false}));
    assert_eq!(r.status, 202, "{}", r.body);
    let run = settled(&s, &id, &rid);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["calls"][0]["status"], "not_approved");
    assert!(
        shop.requests().is_empty(),
        "the refused call was never made"
    );
    let told = model.sent()[1]["messages"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .expect("a tool message");
    assert_eq!(told["role"], "tool");
    assert!(told["content"]
        .as_str()
        .unwrap()
        .contains("tool_not_approved"));
}

#[test]
fn an_input_node_waits_across_a_crash_and_resumes_after_the_restart() {
    let s = Server::start();
    let id = s.create(&json!({
        "name": "Asker", "description": "Asks first",
        "model": {"provider": "echo", "name": "e"},
        "flow": {"start": "hello", "nodes": [
            {"id": "hello", "type": "transform", "output": {"greeting": "Hello {{ input.name }}"}, "next": "ask"},
            {"id": "ask", "type": "input", "prompt": "Which city, {{ input.name }}?", "next": "done"},
            {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.hello.greeting }}", "city": "{{ nodes.ask.city }}"}}]}
    }));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"name": "Ada"}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    let paused = first_seen_settled(&s, &id, &rid);
    assert_eq!(paused["status"], "input_required", "{paused}");
    assert_eq!(
        paused["pending"],
        json!({"kind": "input", "node": "ask", "prompt": "Which city, Ada?"})
    );

    // At once: what a client has seen survives a crash (`docs/storage.md`).
    let s = s.restart();
    let after = s.get(&format!("/v1/agents/{id}/requests/{rid}"));
    assert_eq!(
        after["status"], "input_required",
        "still waiting: {}",
        after.body
    );
    let r = answer(&s, &id, &rid, json!({"approve": true}));
    assert_eq!(r.status, 422, "an input node takes input: {}", r.body);
    let r = answer(&s, &id, &rid, json!({"input": {"city": "Oslo"}}));
    assert_eq!(r.status, 202, "{}", r.body);
    let run = settled(&s, &id, &rid);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"],
        json!({"greeting": "Hello Ada", "city": "Oslo"})
    );
    let r = answer(&s, &id, &rid, json!({"input": {"city": "Rome"}}));
    assert_eq!((r.status, r.code()), (409, "not_waiting"));
    // A paused run can be cancelled too.
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"name": "Bo"}}),
    );
    let other = r["request_id"].as_str().expect("rid").to_owned();
    assert_eq!(settled(&s, &id, &other)["status"], "input_required");
    let r = s.delete(&format!("/v1/agents/{id}/requests/{other}"));
    assert_eq!(
        (r.status, &r["status"]),
        (200, &json!("cancelled")),
        "{}",
        r.body
    );
    let r = answer(&s, &id, &other, json!({"input": {"city": "Rome"}}));
    assert_eq!((r.status, r.code()), (409, "not_waiting"));
    let unknown = answer(
        &s,
        &id,
        "0190a8c4-0000-7000-8000-000000000000",
        json!({"input": {}}),
    );
    assert_eq!(unknown.status, 404);
}

/// A webhook consumer learns that a run waits: the paused Run is pushed, then the final one.
#[test]
fn the_paused_run_is_pushed_then_the_final_one() {
    let s = Server::start_with(
        tempfile::tempdir().expect("dir"),
        &[("HANGAR_PUSH_SCHEDULE", "1,1,1")],
    );
    let receiver = FakeServer::start(|_| Reply::json(200, json!({})));
    let id = s.create(&json!({
        "name": "Asker", "description": "Asks first",
        "model": {"provider": "echo", "name": "e"},
        "flow": {"start": "ask", "nodes": [
            {"id": "ask", "type": "input", "prompt": "Your name?", "next": "done"},
            {"id": "done", "type": "end", "output": {"name": "{{ nodes.ask.name }}"}}]}
    }));
    let r = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"async": {"push_enabled": true, "url": format!("{}/hook", receiver.url), "token": "hook-token"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {}}),
    );
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    let pushed = receiver.wait_requests(1, Duration::from_secs(10));
    let first: Value = serde_json::from_str(&pushed[0].body).expect("json");
    assert_eq!(first["status"], "input_required", "{first}");
    assert_eq!(first["pending"]["kind"], "input");
    // Its own delivery id: a receiver dropping repeats still gets the final Run.
    let paused_id = &pushed[0].headers["webhook-id"];
    assert!(
        paused_id.starts_with(&format!("{rid}.input_required.")),
        "{paused_id}"
    );

    let r = answer(&s, &id, &rid, json!({"input": {"name": "Ada"}}));
    assert_eq!(r.status, 202, "{}", r.body);
    let pushed = receiver.wait_requests(2, Duration::from_secs(10));
    assert_eq!(pushed.len(), 2, "the final Run is pushed too");
    let last: Value = serde_json::from_str(&pushed[1].body).expect("json");
    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(last["output"], json!({"name": "Ada"}));
    assert_eq!(pushed[1].headers["webhook-id"], rid);
}

/// Undeploy stops every run, the ones waiting for a person too: they end `cancelled`
/// (`undeployed`) without anyone answering them.
#[test]
fn undeploy_cancels_the_runs_that_wait_for_a_person() {
    let s = Server::start();
    let id = s.create(&json!({
        "name": "Waiter", "description": "Asks first",
        "model": {"provider": "echo", "name": "e"},
        "flow": {"start": "ask", "nodes": [
            {"id": "ask", "type": "input", "prompt": "Which city?", "next": "done"},
            {"id": "done", "type": "end", "output": "{{ nodes.ask.city }}"}]}
    }));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    let mut paused = Vec::new();
    for _ in 0..3 {
        let r = s.post(
            &format!("/v1/agents/{id}/invoke/async"),
            &json!({"input": {}}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        let rid = r["request_id"].as_str().expect("rid").to_owned();
        assert_eq!(settled(&s, &id, &rid)["status"], "input_required");
        paused.push(rid);
    }
    let r = s.post(&format!("/v1/agents/{id}/undeploy"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    for rid in &paused {
        let mut run = settled(&s, &id, rid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while run["status"] == "input_required" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            run = s.get(&format!("/v1/agents/{id}/requests/{rid}")).body;
        }
        assert_eq!(run["status"], "cancelled", "{run}");
        assert_eq!(run["error"]["details"]["reason"], "undeployed", "{run}");
    }
}
