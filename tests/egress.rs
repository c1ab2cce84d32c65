//! The egress (SSRF) policy from outside: a metadata address is refused when it is written, and
//! with `HANGAR_EGRESS_ALLOW_LOOPBACK=false` a tool call or a webhook push to 127.0.0.1 is
//! refused when it connects, without a byte reaching the listening server.
//!
//! Nothing here sends traffic anywhere but loopback: the refused addresses are refused before
//! any connection is made.

mod common;

use std::time::{Duration, Instant};

use common::fake_http::{FakeServer, Reply};
use common::Server;
use serde_json::{json, Value};

fn strict_server() -> Server {
    Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[
            ("HANGAR_EGRESS_ALLOW_LOOPBACK", "false"),
            ("HANGAR_PUSH_SCHEDULE", "1,1,1"),
        ],
    )
}

fn agent(nodes: Value) -> Value {
    json!({
        "name": "Egress", "description": "calls out",
        "model": {"provider": "echo", "name": "echo-1"},
        "flow": {"start": nodes[0]["id"], "nodes": nodes}
    })
}

#[test]
fn metadata_addresses_are_refused_at_admission() {
    let s = Server::start();
    let id = s.create(&agent(json!([{"id": "done", "type": "end", "output": {}}])));
    for server in [
        "http://169.254.169.254",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]",
        "http://metadata.google.internal",
    ] {
        let r = s.post(
            &format!("/v1/agents/{id}/connections"),
            &json!({"id": "meta", "server": server, "auth": {"type": "bearer", "token": "t"}}),
        );
        assert_eq!(r.status, 422, "{server}: {}", r.body);
        assert_eq!(r.body["error"]["details"]["field"], "server", "{}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("never sends requests there"), "{message}");
    }
    let r = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"async": {"push_enabled": true, "url": "http://169.254.169.254/hook", "token": "t"}}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["details"]["field"], "async.url");
    let r = s.get(&format!("/v1/agents/{id}/connections"));
    assert_eq!(
        r.body["connections"],
        json!([]),
        "nothing written: {}",
        r.body
    );
}

#[test]
fn with_loopback_off_a_tool_call_to_127_0_0_1_is_egress_denied() {
    let s = strict_server();
    let tool = FakeServer::start(|_| Reply::json(200, json!({"ok": true})));
    let mut spec = agent(json!([
        {"id": "call", "type": "tool", "tool": "t", "args": {}, "next": "done"},
        {"id": "done", "type": "end", "output": {"body": "{{ nodes.call.body }}"}}
    ]));
    spec["tools"] = json!([{"name": "t", "connection": "svc", "security": "bearer", "path": "/x"}]);
    let id = s.create(&spec);
    // Admitted: loopback is the operator's call, judged when connecting.
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": tool.url, "auth": {"type": "bearer", "token": "t"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);

    let r = s.post(&format!("/v1/agents/{id}/invoke"), &json!({"input": {}}));
    assert_eq!((r.status, r.code()), (502, "run_failed"), "{}", r.body);
    let error = &r.body["error"]["details"]["error"];
    assert_eq!(error["code"], "egress_denied", "{}", r.body);
    let message = error["message"].as_str().unwrap_or("");
    assert!(
        message.contains("127.0.0.1") && message.contains("HANGAR_EGRESS_ALLOW_LOOPBACK"),
        "{message}"
    );
    assert!(tool.requests().is_empty(), "no request reached the tool");
}

#[test]
fn with_loopback_off_a_push_to_127_0_0_1_fails_at_once() {
    let s = strict_server();
    let hook = FakeServer::start(|_| Reply::json(200, json!({})));
    let id = s.create(&agent(
        json!([{"id": "done", "type": "end", "output": {"ok": true}}]),
    ));
    let ep = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"async": {"push_enabled": true, "url": format!("{}/hook", hook.url), "token": "t"}}),
    );
    assert_eq!(ep.status, 200, "{}", ep.body);
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let poll = r.body["poll_url"].as_str().expect("poll url").to_owned();
    let start = Instant::now();
    let run = loop {
        let run = s.get(&poll).body;
        if run["push"]["status"] != "pending" && !run["push"].is_null() {
            break run;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "push still pending: {run}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(run["push"]["status"], "failed", "{run}");
    assert_eq!(run["push"]["attempts"], 1, "not retried: {run}");
    assert!(run["push"]["last_status"].is_null(), "{run}");
    // The schedule (1 s) would have retried by now; the refusal is final.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(s.get(&poll).body["push"]["attempts"], 1);
    assert!(
        hook.requests().is_empty(),
        "no request reached the receiver"
    );
    assert!(
        s.server_log().contains("egress to 127.0.0.1 refused"),
        "the reason is logged"
    );
}
