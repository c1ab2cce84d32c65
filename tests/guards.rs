//! What the API refuses, and that a refusal changes nothing: auth, bad input, unknown ids,
//! out-of-range settings, and concurrent writers with `If-Match`.

mod common;

use std::sync::{Arc, Barrier};

use common::{valid_spec, Server, TOKEN};
use serde_json::json;

#[test]
fn admin_token_is_required_except_for_healthz() {
    let s = Server::start();
    assert_eq!(s.call("GET", "/healthz", None, &[], None).status, 200);
    let none = s.call("GET", "/v1/agents", None, &[], None);
    assert_eq!((none.status, none.code()), (401, "unauthorized"));
    let wrong = s.call("GET", "/v1/agents", Some("not-the-token"), &[], None);
    assert_eq!((wrong.status, wrong.code()), (401, "unauthorized"));
    let prefix = s.call("GET", "/v1/agents", Some(&TOKEN[..10]), &[], None);
    assert_eq!(prefix.status, 401);
    let create = s.call(
        "POST",
        "/v1/agents",
        None,
        &[],
        Some(&valid_spec("x").to_string()),
    );
    assert_eq!(create.status, 401);
    assert_eq!(
        s.get("/v1/agents")["agents"],
        json!([]),
        "nothing was created"
    );
    assert_eq!(
        s.call("GET", "/v1/agents", Some(TOKEN), &[], None).status,
        200
    );
}

#[test]
fn bad_input_gets_a_4xx_naming_the_field_and_changes_nothing() {
    let s = Server::start();
    let id = s.create(&valid_spec("Guarded"));
    let agent = |s: &Server| s.get(&format!("/v1/agents/{id}")).body;
    let before = agent(&s);
    let draft = format!("/v1/agents/{id}/draft");

    // Malformed JSON.
    let r = s.call("PUT", &draft, Some(TOKEN), &[], Some("{\"name\": "));
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    // Trailing garbage.
    let r = s.call(
        "PUT",
        &draft,
        Some(TOKEN),
        &[],
        Some("{\"name\": \"x\"} extra"),
    );
    assert_eq!(r.status, 400);
    // Wrong types, with the path of the field.
    let r = s.put(&draft, &json!({"name": 42}));
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (400, Some("name"))
    );
    let r = s.put(&draft, &json!({"name": "x", "flow": {"start": "a", "nodes": [{"id": "a", "type": "end", "timeout_s": "soon"}]}}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error"]["details"]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("flow.nodes[0]")),
        "{}",
        r.body
    );
    let r = s.put(
        &draft,
        &json!({"name": "x", "flow": {"start": "a", "nodes": [{"id": "a", "type": "teleport"}]}}),
    );
    assert_eq!(r.status, 400);
    // Deeply nested JSON is refused cleanly.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(
        s.call("PUT", &draft, Some(TOKEN), &[], Some(&deep)).status,
        400
    );
    // Out-of-range timeouts and concurrency.
    let endpoint = format!("/v1/agents/{id}/endpoint");
    for (body, field) in [
        (json!({"sync_timeout_s": 59}), "sync_timeout_s"),
        (json!({"sync_timeout_s": 301}), "sync_timeout_s"),
        (json!({"async": {"timeout_s": 30}}), "async.timeout_s"),
        (json!({"async": {"timeout_s": 601}}), "async.timeout_s"),
        (json!({"max_concurrency": 0}), "max_concurrency"),
        (
            json!({"async": {"push_enabled": true, "token": "t"}}),
            "async.url",
        ),
    ] {
        let r = s.put(&endpoint, &body);
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.body["error"]["details"]["field"], field);
    }
    let r = s.put(&endpoint, &json!({"sync_timeout_s": -5}));
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (400, Some("sync_timeout_s"))
    );
    // Create needs a name.
    let r = s.post("/v1/agents", &json!({"description": "nameless"}));
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (422, Some("name"))
    );
    // Connections: key_value is team-only; duplicates are refused; bad servers named.
    let conns = format!("/v1/agents/{id}/connections");
    let r = s.post(&conns, &json!({"id": "kv", "server": "https://x.example", "credentials": "member", "auth": {"type": "key_value", "pairs": {"a": "b"}}}));
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (422, Some("auth.type"))
    );
    let r = s.post(
        &conns,
        &json!({"id": "c", "server": "ftp://x", "auth": {"type": "bearer", "token": "t"}}),
    );
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (422, Some("server"))
    );
    assert_eq!(agent(&s), before, "no refused request changed the agent");

    assert_eq!(s.post(&conns, &json!({"id": "c", "server": "https://x.example", "auth": {"type": "bearer", "token": "t"}})).status, 201);
    let r = s.post(&conns, &json!({"id": "c", "server": "https://x.example", "auth": {"type": "bearer", "token": "t"}}));
    assert_eq!((r.status, r.code()), (409, "duplicate"));
    assert_eq!(s.seq(&id), 2);
}

#[test]
fn unknown_agents_and_routes_are_404_in_the_error_shape() {
    let s = Server::start();
    for path in [
        "/v1/agents/0190b5c4-0000-7000-8000-000000000000",
        "/v1/agents/not-a-uuid",
        "/v1/agents/0190b5c4-0000-7000-8000-000000000000/events",
        "/v1/agents/0190b5c4-0000-7000-8000-000000000000/history?at=1",
        "/v1/nothing-here",
    ] {
        let r = s.get(path);
        assert_eq!((r.status, r.code()), (404, "not_found"), "{path}");
    }
    let r = s.put(
        "/v1/agents/0190b5c4-0000-7000-8000-000000000000/draft",
        &valid_spec("x"),
    );
    assert_eq!(r.status, 404);
    let r = s.post(
        "/v1/agents/0190b5c4-0000-7000-8000-000000000000/deploy",
        &json!({}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        s.get("/v1/agents")["agents"],
        json!([]),
        "probing unknown ids creates nothing"
    );
}

/// Guards against lost updates: two clients that read the same version both try to write.
#[test]
fn two_writers_with_the_same_if_match_one_wins_one_gets_412() {
    let s = Arc::new(Server::start());
    let id = s.create(&valid_spec("Contended"));
    let etag = s.get(&format!("/v1/agents/{id}")).etag.expect("etag");
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let (s, id, etag, barrier) = (s.clone(), id.clone(), etag.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut spec = valid_spec("Contended");
                spec["description"] = json!(format!("writer {i}"));
                barrier.wait();
                s.call(
                    "PUT",
                    &format!("/v1/agents/{id}/draft"),
                    Some(TOKEN),
                    &[("If-Match", &etag)],
                    Some(&spec.to_string()),
                )
            })
        })
        .collect();
    let mut statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("thread").status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 412]);
    assert_eq!(s.seq(&id), 2, "exactly one write landed");
    // A stale If-Match after the fact is refused too, with the current seq.
    let r = s.call(
        "PUT",
        &format!("/v1/agents/{id}/draft"),
        Some(TOKEN),
        &[("If-Match", "\"1\"")],
        Some(&valid_spec("x").to_string()),
    );
    assert_eq!((r.status, r.code()), (412, "conflict"));
    assert_eq!(r.body["error"]["details"]["actual"], 2);
    let r = s.call(
        "PUT",
        &format!("/v1/agents/{id}/draft"),
        Some(TOKEN),
        &[("If-Match", "\"2\"")],
        Some(&valid_spec("x").to_string()),
    );
    assert_eq!(r.status, 200);
}
