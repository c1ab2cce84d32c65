//! A2A helpers shared by the A2A test files.

use serde_json::{json, Value};

use super::{Server, TOKEN};

/// An agent whose flow calls a tool at `tool_url` and answers with an echo model.
pub fn tool_agent(s: &Server, tool_url: &str, max_concurrency: u32) -> String {
    let id = s.create(&json!({
        "name": "Tasks", "description": "answers after asking a tool",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "tools": [{"name": "t", "connection": "svc", "security": "bearer", "method": "GET", "path": "/x"}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "args": {}, "next": "m"},
            {"id": "m", "type": "model", "prompt": "You said: {{ input.message }}", "next": "done"},
            {"id": "done", "type": "end", "output": {"text": "{{ nodes.m.text }}"}}
        ]}
    }));
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": tool_url, "auth": {"type": "bearer", "token": "t"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let e = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"max_concurrency": max_concurrency}),
    );
    assert_eq!(e.status, 200, "{}", e.body);
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "deploy: {}", d.body);
    id
}

/// A JSON-RPC call; `v1` adds `A2A-Version: 1.0` (without it the call is 0.3).
pub fn rpc_as(
    s: &Server,
    token: &str,
    agent: &str,
    v1: bool,
    method: &str,
    params: Value,
) -> Value {
    let headers: &[(&str, &str)] = if v1 { &[("A2A-Version", "1.0")] } else { &[] };
    let r = s.call(
        "POST",
        &format!("/a2a/{agent}"),
        Some(token),
        headers,
        Some(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

pub fn rpc(s: &Server, agent: &str, method: &str, params: Value) -> Value {
    rpc_as(s, TOKEN, agent, true, method, params)
}

pub fn message(text: &str) -> Value {
    json!({"messageId": format!("m-{text}"), "role": "ROLE_USER", "parts": [{"text": text}]})
}
