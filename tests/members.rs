//! Members are authenticated, not named (security audit, issue 10): an invocation key issued for a
//! member acts as that member — its runs use that member's credentials and it sees only that
//! member's runs — and `X-Hangar-Member` cannot make a key act as anyone else. Guards against the
//! v1 hole where any key could send `X-Hangar-Member: bob`, have bob's secret sent to the tool,
//! and read or cancel bob's runs.

mod common;

use std::time::Duration;

use common::fake_http::{FakeServer, Reply};
use common::{Resp, Server, TOKEN};
use serde_json::{json, Value};

/// A live agent whose flow calls tool `t` on the `member` connection `svc` (api_key in
/// `X-Member-Key`), with alice's and bob's own keys stored.
fn member_agent(s: &Server, tool_url: &str) -> String {
    let spec = json!({
        "name": "Members", "description": "Calls a tool with the caller's own credentials",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "tools": [{"name": "t", "connection": "svc", "security": "api_key", "method": "GET",
                   "path": "/lookup?q={{ args.q }}"}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "args": {"q": "{{ input.q }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}
        ]}
    });
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": tool_url, "credentials": "member",
                "auth": {"type": "api_key", "header": "X-Member-Key"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    for (member, key) in [("alice", "alice-secret-1"), ("bob", "bob-secret-2")] {
        let r = s.put(
            &format!("/v1/agents/{id}/connections/svc/members/{member}"),
            &json!({"type": "api_key", "key": key}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
    id
}

/// Issues a key, for `member` if given; the key itself.
fn issue(s: &Server, id: &str, member: Option<&str>) -> String {
    let body = member.map_or(json!({}), |m| json!({ "member": m }));
    let r = s.post(&format!("/v1/agents/{id}/keys"), &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r["member"], json!(member));
    r["key"].as_str().expect("key").to_owned()
}

fn invoke(s: &Server, id: &str, token: &str, headers: &[(&str, &str)], q: &str) -> Resp {
    s.call(
        "POST",
        &format!("/v1/agents/{id}/invoke"),
        Some(token),
        headers,
        Some(&json!({"input": {"q": q}}).to_string()),
    )
}

/// The member key the tool received for the request with `?q=<q>`.
fn secret_sent(tool: &FakeServer, q: &str) -> Option<String> {
    let path = format!("/lookup?q={q}");
    tool.wait_requests(1, Duration::from_secs(5))
        .into_iter()
        .rev()
        .find(|r| r.path == path)
        .and_then(|r| r.headers.get("x-member-key").cloned())
}

#[test]
fn a_member_key_uses_its_own_members_credentials_and_no_one_elses() {
    let s = Server::start();
    let tool = FakeServer::start(|_| Reply::json(200, json!({"ok": true})));
    let id = member_agent(&s, &tool.url);
    let alice = issue(&s, &id, Some("alice"));
    let bob = issue(&s, &id, Some("bob"));
    let team = issue(&s, &id, None);

    for (key, q, secret) in [
        (&alice, "a1", "alice-secret-1"),
        (&bob, "b1", "bob-secret-2"),
    ] {
        let r = invoke(&s, &id, key, &[], q);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(secret_sent(&tool, q).as_deref(), Some(secret));
    }
    // Naming its own member is allowed; naming anyone else is refused before anything runs.
    let r = invoke(&s, &id, &alice, &[("X-Hangar-Member", "alice")], "a2");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(secret_sent(&tool, "a2").as_deref(), Some("alice-secret-1"));
    let before = tool.requests().len();
    for (key, named) in [(&alice, "bob"), (&bob, "alice"), (&team, "alice")] {
        let r = invoke(&s, &id, key, &[("X-Hangar-Member", named)], "steal");
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.body);
        let async_r = s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke/async"),
            Some(key),
            &[("X-Hangar-Member", named)],
            Some(r#"{"input": {"q": "steal"}}"#),
        );
        assert_eq!(async_r.status, 403, "{}", async_r.body);
    }
    // A key without a member has no member credentials to use.
    let r = invoke(&s, &id, &team, &[], "t1");
    assert_eq!((r.status, r.code()), (502, "run_failed"), "{}", r.body);
    assert_eq!(
        r.body["error"]["details"]["error"]["code"],
        "missing_member_credentials"
    );
    assert_eq!(tool.requests().len(), before, "no secret went out");

    // The admin token still acts for any member through the header (an operator's tool).
    let r = invoke(&s, &id, TOKEN, &[("X-Hangar-Member", "bob")], "admin-b");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        secret_sent(&tool, "admin-b").as_deref(),
        Some("bob-secret-2")
    );

    // The same Idempotency-Key from two members names two requests: bob is never handed
    // alice's run (nor its output).
    let keyed = |key: &str, q: &str| {
        s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke"),
            Some(key),
            &[("Idempotency-Key", "same-key")],
            Some(&json!({"input": {"q": q}}).to_string()),
        )
    };
    let a = keyed(&alice, "idem-a");
    let b = keyed(&bob, "idem-b");
    assert_eq!((a.status, b.status), (200, 200), "{} {}", a.body, b.body);
    assert_ne!(a["request_id"], b["request_id"]);
    assert_eq!(
        secret_sent(&tool, "idem-b").as_deref(),
        Some("bob-secret-2")
    );
    assert_eq!(keyed(&alice, "idem-a")["request_id"], a["request_id"]);

    // Keys and the log say which member a key acts as; the log never holds a key.
    let listed = s.get(&format!("/v1/agents/{id}/keys"));
    let mut members: Vec<Value> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["member"].clone())
        .collect();
    members.sort_by_key(Value::to_string);
    assert_eq!(members, [json!("alice"), json!("bob"), Value::Null]);
    let log = s.get(&format!("/v1/agents/{id}/events?limit=1000"));
    let issued: Vec<&Value> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "KeyIssued")
        .collect();
    assert_eq!(issued.len(), 3);
    assert!(issued.iter().any(|e| e["data"]["member"] == "alice"));
    assert!(!log.body.to_string().contains(&alice));
}

#[test]
fn a_member_key_sees_and_cancels_only_its_members_runs() {
    let s = Server::start();
    // `slow` runs stay in flight long enough to poll and cancel them.
    let tool = FakeServer::start(|req| {
        let reply = Reply::json(200, json!({"ok": true}));
        if req.path.contains("slow") {
            reply.slow(Duration::from_secs(20))
        } else {
            reply
        }
    });
    let id = member_agent(&s, &tool.url);
    let alice = issue(&s, &id, Some("alice"));
    let alice_2 = issue(&s, &id, Some("alice"));
    let bob = issue(&s, &id, Some("bob"));
    let team = issue(&s, &id, None);
    let submit = |key: &str, q: &str| {
        let r = s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke/async"),
            Some(key),
            &[],
            Some(&json!({"input": {"q": q}}).to_string()),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        r["poll_url"].as_str().expect("poll_url").to_owned()
    };
    let call = |method: &str, url: &str, key: &str| s.call(method, url, Some(key), &[], None);

    let alices = submit(&alice, "slow-a");
    tool.wait_requests(1, Duration::from_secs(10));
    for other in [&bob, &team] {
        for method in ["GET", "DELETE"] {
            let r = call(method, &alices, other);
            assert_eq!(
                (r.status, r.code()),
                (404, "not_found"),
                "{method}: {}",
                r.body
            );
        }
        let long = call("GET", &format!("{alices}?wait=2"), other);
        assert_eq!(long.status, 404, "{}", long.body);
    }
    // Bob's cancel did nothing; alice (with any of her keys) and the admin see the run.
    let r = call("GET", &alices, &alice);
    assert_eq!((r.status, r["status"].as_str()), (200, Some("running")));
    assert_eq!(call("GET", &alices, &alice_2).status, 200);
    assert_eq!(call("GET", &alices, TOKEN).status, 200);
    let r = call("DELETE", &alices, &alice);
    assert_eq!((r.status, r["status"].as_str()), (200, Some("cancelled")));

    // A run with no member (the admin's, or a team key's) is not a member key's business, and a
    // member's run is not a team key's.
    let admins = submit(TOKEN, "plain");
    let teams = submit(&team, "plain-team");
    for url in [&admins, &teams] {
        assert_eq!(call("GET", url, &alice).status, 404);
        assert_eq!(call("DELETE", url, &bob).status, 404);
        assert_eq!(call("GET", url, &team).status, 200);
    }
    let bobs = submit(&bob, "b");
    assert_eq!(call("GET", &format!("{bobs}?wait=5"), &bob).status, 200);
    assert_eq!(call("GET", &bobs, &team).status, 404);
    // A finished run of another member is 404 too, not 409: not even its end is shown.
    assert_eq!(call("DELETE", &bobs, &alice).status, 404);
    assert_eq!(call("DELETE", &bobs, &bob).status, 409);
}

#[test]
fn a_member_key_needs_a_valid_member_name() {
    let s = Server::start();
    let id = s.create(&common::valid_spec("Keys"));
    let keys = format!("/v1/agents/{id}/keys");
    for bad in [json!(""), json!("a\u{7}b"), json!("m".repeat(129))] {
        let r = s.post(&keys, &json!({ "member": bad }));
        assert_eq!((r.status, r.code()), (422, "invalid_request"), "{}", r.body);
        assert_eq!(r.body["error"]["details"]["field"], "member");
    }
    // A misspelt field must not issue a key that acts as no member.
    let r = s.post(&keys, &json!({"membr": "alice"}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(s.get(&keys)["keys"], json!([]), "nothing was issued");
}
