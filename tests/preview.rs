//! `POST /v1/agents/{id}/preview` of a draft that cannot run: the caller's problem (422
//! `validation_failed` with the problems, as deploy answers), not a failed run (502). Warnings
//! block a deploy but not a preview.

mod common;

use common::{valid_spec, Server};
use serde_json::{json, Value};

fn paths(problems: &Value) -> Vec<(&str, &str)> {
    problems
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["code"].as_str().expect("code"),
                p["path"].as_str().expect("path"),
            )
        })
        .collect()
}

#[test]
fn a_draft_without_flow_is_422_naming_flow() {
    let s = Server::start();
    let mut spec = valid_spec("Flowless");
    spec.as_object_mut().expect("object").remove("flow");
    let id = s.create(&spec);
    let seq = s.seq(&id);

    let r = s.post(
        &format!("/v1/agents/{id}/preview"),
        &json!({"input": {"name": "Ada"}}),
    );
    assert_eq!(
        (r.status, r.code()),
        (422, "validation_failed"),
        "{}",
        r.body
    );
    let details = &r.body["error"]["details"];
    assert_eq!(
        paths(&details["errors"]),
        [("no_flow", "flow")],
        "{details}"
    );
    assert_eq!(details["warnings"], json!([]));
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot run")),
        "{}",
        r.body
    );
    assert_eq!(s.seq(&id), seq, "a refused preview writes nothing");

    // Deploy refuses the same draft with the same code and shape.
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!((d.status, d.code()), (422, "validation_failed"));
    assert!(paths(&d.body["error"]["details"]["errors"]).contains(&("no_flow", "flow")));
}

#[test]
fn an_unknown_start_is_422_naming_flow_start() {
    let s = Server::start();
    let mut spec = valid_spec("Lost");
    spec["flow"]["start"] = json!("nowhere");
    let id = s.create(&spec);
    let r = s.post(&format!("/v1/agents/{id}/preview"), &json!({}));
    assert_eq!(
        (r.status, r.code()),
        (422, "validation_failed"),
        "{}",
        r.body
    );
    assert!(
        paths(&r.body["error"]["details"]["errors"]).contains(&("unknown_start", "flow.start")),
        "{}",
        r.body
    );
}

/// An unreachable node is a warning: it blocks deploy, and the draft still previews.
#[test]
fn a_draft_with_only_a_warning_previews() {
    let s = Server::start();
    let mut spec = valid_spec("Spare node");
    spec["flow"]["nodes"]
        .as_array_mut()
        .expect("nodes")
        .push(json!({"id": "spare", "type": "end", "output": {"unused": true}}));
    let id = s.create(&spec);

    let v = s.get(&format!("/v1/agents/{id}/validation"));
    assert_eq!(v["errors"], json!([]), "{}", v.body);
    assert_eq!(
        paths(&v["warnings"]),
        [("unreachable_node", "flow.nodes[2]")]
    );
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!((d.status, d.code()), (422, "validation_failed"));

    let r = s.post(
        &format!("/v1/agents/{id}/preview"),
        &json!({"input": {"name": "Ada"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["output"], json!({"greeting": "Hello Ada"}));
}

/// A missing description is an error of the profile's text, which no run reads.
#[test]
fn a_draft_without_description_previews() {
    let s = Server::start();
    let mut spec = valid_spec("Terse");
    spec["description"] = json!("");
    let id = s.create(&spec);
    let r = s.post(
        &format!("/v1/agents/{id}/preview"),
        &json!({"input": {"name": "Bo"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["output"], json!({"greeting": "Hello Bo"}));
}

#[test]
fn an_unknown_agent_is_404_and_the_admin_token_is_required() {
    let s = Server::start();
    let r = s.post(
        "/v1/agents/0190a6a2-6d4e-7c3a-9d51-4b6f0e2a1c3d/preview",
        &json!({}),
    );
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let id = s.create(&valid_spec("Guarded"));
    let r = s.call(
        "POST",
        &format!("/v1/agents/{id}/preview"),
        None,
        &[],
        Some("{}"),
    );
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
}
