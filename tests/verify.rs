//! `GET /v1/agents/{id}/verify`: the online audit of one agent's hash chain. Guards against an
//! edit of the stored log going unnoticed by an operator who cannot stop the server to run
//! `hangar verify`.

mod common;

use common::{valid_spec, Server};
use serde_json::json;

/// The agent's log: created, then edited twice.
fn agent_with_three_events(s: &Server, name: &str) -> String {
    let id = s.create(&valid_spec(name));
    for i in 0..2 {
        let mut spec = valid_spec(name);
        spec["description"] = json!(format!("version {i}"));
        let r = s.put(&format!("/v1/agents/{id}/draft"), &spec);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    id
}

#[test]
fn a_fresh_agent_verifies_with_its_event_count() {
    let s = Server::start();
    let id = agent_with_three_events(&s, "Audited");
    let r = s.get(&format!("/v1/agents/{id}/verify"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"ok": true, "events": 3, "first_bad": null, "reason": null})
    );

    // A deploy appends; the next check counts it.
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);
    let r = s.get(&format!("/v1/agents/{id}/verify"));
    assert_eq!(
        (r["ok"].clone(), r["events"].clone()),
        (json!(true), json!(4))
    );
}

#[test]
fn an_unknown_agent_is_404_and_the_admin_token_is_required() {
    let s = Server::start();
    let id = s.create(&valid_spec("Guarded"));
    let unknown = s.get("/v1/agents/0190a6a2-6d4e-7c3a-9d51-4b6f0e2a1c3d/verify");
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    let not_a_uuid = s.get("/v1/agents/nope/verify");
    assert_eq!((not_a_uuid.status, not_a_uuid.code()), (404, "not_found"));

    let path = format!("/v1/agents/{id}/verify");
    let anonymous = s.call("GET", &path, None, &[], None);
    assert_eq!((anonymous.status, anonymous.code()), (401, "unauthorized"));
    let wrong = s.call("GET", &path, Some("not-the-token"), &[], None);
    assert_eq!((wrong.status, wrong.code()), (401, "unauthorized"));
    let key = s.post(&format!("/v1/agents/{id}/keys"), &json!({}));
    assert_eq!(key.status, 201, "{}", key.body);
    let invocation_key = key["key"].as_str().expect("key");
    let with_key = s.call("GET", &path, Some(invocation_key), &[], None);
    assert_eq!(
        (with_key.status, with_key.code()),
        (403, "forbidden"),
        "an invocation key cannot manage: {}",
        with_key.body
    );
}

/// The server is stopped to edit its store (sled locks the directory), then started again.
#[test]
fn an_edited_event_is_named_and_other_agents_stay_ok() {
    let mut s = Server::start();
    let id = agent_with_three_events(&s, "Tampered");
    let other = agent_with_three_events(&s, "Untouched");
    assert!(s.terminate(std::time::Duration::from_secs(30)).is_some());
    common::tamper_event(s.data(), &id, 2, "version 0", "version X");
    let s = s.start_again();

    let r = s.get(&format!("/v1/agents/{id}/verify"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["ok"], json!(false), "{}", r.body);
    assert_eq!(r["events"], json!(1), "{}", r.body);
    assert_eq!(r["first_bad"], json!(format!("{id}#2")), "{}", r.body);
    assert!(r["reason"].as_str().is_some_and(|why| !why.is_empty()));

    let r = s.get(&format!("/v1/agents/{other}/verify"));
    assert_eq!(
        r.body,
        json!({"ok": true, "events": 3, "first_bad": null, "reason": null})
    );
}
