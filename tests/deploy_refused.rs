//! Deploy is refused with 422 `validation_failed` and the problems listed, for every kind of
//! broken draft and for a mere warning; nothing is deployed and no event is written.

mod common;

use common::{valid_spec, Server};
use serde_json::{json, Value};

/// Deploys `spec` (with `connections` added first) and asserts refusal naming `code` at `path`.
fn refused(s: &Server, spec: Value, connections: &[Value], code: &str, path: &str, warning: bool) {
    let id = s.create(&spec);
    for c in connections {
        let r = s.post(&format!("/v1/agents/{id}/connections"), c);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let before = s.seq(&id);
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(
        (r.status, r.code()),
        (422, "validation_failed"),
        "{code}: {}",
        r.body
    );
    let list = if warning { "warnings" } else { "errors" };
    let problems = r.body["error"]["details"][list]
        .as_array()
        .expect("problems");
    assert!(
        problems.iter().any(|p| p["code"] == code
            && p["path"] == path
            && p["message"].as_str().is_some_and(|m| !m.is_empty())),
        "expected {code} at {path} in {list}: {}",
        r.body
    );
    assert_eq!(s.seq(&id), before, "a refused deploy writes no event");
    let agent = s.get(&format!("/v1/agents/{id}"));
    assert_eq!(agent["status"], "draft");
    assert!(s.get(&format!("/v1/agents/{id}/versions"))["versions"]
        .as_array()
        .is_some_and(Vec::is_empty));
    // The validation route reports the same problem.
    let v = s.get(&format!("/v1/agents/{id}/validation"));
    assert_eq!(v["ok"], false);
    assert!(v[list]
        .as_array()
        .expect("list")
        .iter()
        .any(|p| p["code"] == code));
}

fn with_nodes(nodes: Value) -> Value {
    let mut spec = valid_spec("Broken");
    spec["flow"]["nodes"] = nodes;
    spec
}

fn weather_connection(auth: Value) -> Value {
    json!({"id": "weather", "server": "https://api.example.com", "credentials": "team", "auth": auth})
}

#[test]
fn broken_flows_are_refused_with_their_problems() {
    let s = Server::start();
    // Unknown next.
    refused(
        &s,
        with_nodes(json!([
            {"id": "greet", "type": "transform", "output": {}, "next": "nowhere"},
            {"id": "done", "type": "end", "output": {}}
        ])),
        &[],
        "unknown_next",
        "flow.nodes[0].next",
        false,
    );
    // A cycle.
    refused(
        &s,
        with_nodes(json!([
            {"id": "greet", "type": "transform", "output": {}, "next": "check"},
            {"id": "check", "type": "condition", "branches": [{"when": "input.again", "next": "greet"}], "else": "done"},
            {"id": "done", "type": "end", "output": {}}
        ])),
        &[],
        "cycle",
        "flow.nodes[1].branches[0].next",
        false,
    );
    // No end.
    refused(
        &s,
        with_nodes(
            json!([{"id": "greet", "type": "transform", "output": {}, "next": "other"},
                          {"id": "other", "type": "transform", "output": {}, "next": "greet"}]),
        ),
        &[],
        "no_reachable_end",
        "flow.start",
        false,
    );
    // Unknown tool.
    refused(
        &s,
        with_nodes(json!([
            {"id": "greet", "type": "tool", "tool": "forecast", "args": {}, "next": "done"},
            {"id": "done", "type": "end", "output": {}}
        ])),
        &[],
        "unknown_tool",
        "flow.nodes[0].tool",
        false,
    );
    // Tool security does not match the connection's auth type.
    let mut spec = with_nodes(json!([
        {"id": "greet", "type": "tool", "tool": "forecast", "args": {"city": "{{ input.city }}"}, "next": "done"},
        {"id": "done", "type": "end", "output": {"body": "{{ nodes.greet.body }}"}}
    ]));
    spec["tools"] = json!([{"name": "forecast", "connection": "weather", "security": "api_key", "method": "GET", "path": "/f"}]);
    refused(
        &s,
        spec,
        &[weather_connection(
            json!({"type": "bearer", "token": "t-1"}),
        )],
        "security_mismatch",
        "tools[0].security",
        false,
    );
    // Unsupported model.
    let mut spec = valid_spec("Broken");
    spec["model"] = json!({"provider": "skynet", "name": "t-800"});
    refused(&s, spec, &[], "unsupported_model", "model.provider", false);
    // Bad template syntax.
    refused(
        &s,
        with_nodes(json!([
            {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.name "}, "next": "done"},
            {"id": "done", "type": "end", "output": {}}
        ])),
        &[],
        "bad_template",
        "flow.nodes[0].output.text",
        false,
    );
    // Missing description.
    let mut spec = valid_spec("Broken");
    spec["description"] = json!("");
    refused(&s, spec, &[], "missing_description", "description", false);
}

#[test]
fn a_warning_alone_blocks_deploy() {
    let s = Server::start();
    // An unreachable node is only a warning; it still blocks.
    refused(
        &s,
        with_nodes(json!([
            {"id": "greet", "type": "transform", "output": {}, "next": "done"},
            {"id": "orphan", "type": "transform", "output": {}, "next": "done"},
            {"id": "done", "type": "end", "output": {}}
        ])),
        &[],
        "unreachable_node",
        "flow.nodes[1]",
        true,
    );
    // An unused connection, too.
    refused(
        &s,
        valid_spec("Unused"),
        &[weather_connection(
            json!({"type": "bearer", "token": "t-2"}),
        )],
        "unused_connection",
        "connections.weather",
        true,
    );
}

#[test]
fn collaborators_must_exist_and_be_live() {
    let s = Server::start();
    let helper = s.create(&valid_spec("Helper"));
    let mut spec = with_nodes(json!([
        {"id": "greet", "type": "agent", "agent": helper, "input": {"name": "{{ input.name }}"}, "next": "done"},
        {"id": "done", "type": "end", "output": {"answer": "{{ nodes.greet }}"}}
    ]));
    spec["collaborators"] = json!([helper]);
    let boss = s.create(&spec);
    let r = s.post(&format!("/v1/agents/{boss}/deploy"), &json!({}));
    assert_eq!(r.status, 422);
    assert!(r.body["error"]["details"]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .any(|p| p["code"] == "collaborator_not_live"));
    let sum = s.get(&format!("/v1/agents/{boss}/summary"));
    assert_eq!(
        sum["collaborators"][0],
        json!({"id": helper, "name": "Helper", "live": false})
    );
    assert_eq!(
        s.post(&format!("/v1/agents/{helper}/deploy"), &json!({}))
            .status,
        200
    );
    let r = s.post(&format!("/v1/agents/{boss}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.get(&format!("/v1/agents/{boss}/summary"))["collaborators"][0]["live"],
        true
    );
}
