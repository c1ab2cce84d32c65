//! Who may call what: the admin token for management, the admin token or one of the agent's own
//! invocation keys for invocation routes.

mod common;

use common::{valid_spec, Server, TOKEN};
use serde_json::json;

fn deployed(s: &Server, name: &str) -> String {
    let id = s.create(&valid_spec(name));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    id
}

fn issue(s: &Server, id: &str) -> (String, String) {
    let r = s.post(&format!("/v1/agents/{id}/keys"), &json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    (
        r["id"].as_str().expect("id").to_owned(),
        r["key"].as_str().expect("key").to_owned(),
    )
}

#[test]
fn every_auth_rule_of_the_invocation_routes() {
    let s = Server::start();
    let a = deployed(&s, "A");
    let b = deployed(&s, "B");
    let (kid_a, key_a) = issue(&s, &a);
    let (_, key_b) = issue(&s, &b);
    let body = r#"{"input": {"name": "Ada"}}"#;
    let invoke = |agent: &str, token: Option<&str>| {
        s.call(
            "POST",
            &format!("/v1/agents/{agent}/invoke"),
            token,
            &[],
            Some(body),
        )
    };

    // The agent's own key and the admin token work.
    let ok = invoke(&a, Some(&key_a));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok["output"]["greeting"], "Hello Ada");
    assert_eq!(invoke(&a, Some(TOKEN)).status, 200);
    // None, wrong, or a key of another agent.
    assert_eq!(
        (invoke(&a, None).status, invoke(&a, None).code().to_owned()),
        (401, "unauthorized".to_owned())
    );
    assert_eq!(invoke(&a, Some("hgk_not-a-key")).status, 401);
    let forged = format!("{}x", &key_a[..key_a.len() - 1]);
    assert_eq!(
        invoke(&a, Some(&forged)).status,
        401,
        "a key with one character changed"
    );
    let other = invoke(&a, Some(&key_b));
    assert_eq!((other.status, other.code()), (403, "forbidden"));

    // Async submit, poll and cancel follow the same rules.
    let sub = s.call(
        "POST",
        &format!("/v1/agents/{a}/invoke/async"),
        Some(&key_a),
        &[],
        Some(body),
    );
    assert_eq!(sub.status, 202);
    let poll = sub["poll_url"].as_str().expect("url").to_owned();
    assert_eq!(s.call("GET", &poll, Some(&key_a), &[], None).status, 200);
    assert_eq!(s.call("GET", &poll, Some(&key_b), &[], None).status, 403);
    assert_eq!(s.call("GET", &poll, None, &[], None).status, 401);
    assert_eq!(s.call("DELETE", &poll, Some(&key_b), &[], None).status, 403);

    // A key never opens management routes: 403, since it is a credential, just not for them.
    assert_eq!(
        s.call("GET", &format!("/v1/agents/{a}"), Some(&key_a), &[], None)
            .status,
        403
    );
    assert_eq!(
        s.call(
            "POST",
            &format!("/v1/agents/{a}/keys"),
            Some(&key_a),
            &[],
            Some("{}")
        )
        .status,
        403
    );

    // Revoked: 401 at once.
    let listed = s.get(&format!("/v1/agents/{a}/keys"));
    assert_eq!(listed["keys"][0]["id"], kid_a.as_str());
    assert!(
        listed.body.to_string().find(&key_a).is_none(),
        "a listing never shows the key"
    );
    assert_eq!(
        s.delete(&format!("/v1/agents/{a}/keys/{kid_a}")).status,
        204
    );
    assert_eq!(invoke(&a, Some(&key_a)).status, 401);
    assert_eq!(
        s.delete(&format!("/v1/agents/{a}/keys/{kid_a}")).status,
        404
    );

    // The log records the key events, never the key.
    let log = s.get(&format!("/v1/agents/{a}/events?limit=1000"));
    let types: Vec<&str> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"KeyIssued") && types.contains(&"KeyRevoked"),
        "{types:?}"
    );
    assert!(!log.body.to_string().contains(&key_a));
    assert_eq!(
        common::dir_contains(s.data(), &key_a),
        None,
        "the key is stored only as a hash"
    );
    assert!(!s.server_log().contains(&key_a));
}
