//! Connection checks and draft/live credentials (issue 15), from outside: a check proves that a
//! connection's credentials authenticate (recorded in the log without the secret), a rejected
//! one blocks deploy until a check passes, previews send the draft credentials and live runs
//! the live ones (members' too), and a check obeys the egress policy like any tool call.
//!
//! Guards against a summary that says "ready" for credentials the server refuses, against
//! production secrets reaching a preview, and against a check that sends credentials where the
//! egress policy forbids.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::fake_http::{FakeServer, Recorded, Reply};
use common::{dir_contains, Resp, Server, TOKEN};
use serde_json::{json, Value};

/// A server that accepts `Authorization: Bearer <token>` for one of `tokens` (401 otherwise,
/// 403 for `forbidden-token`). It never echoes the token: runs store the tool's answer, and the
/// tests look for the tokens on disk.
fn auth_server(tokens: &'static [&'static str]) -> FakeServer {
    FakeServer::start(move |r: &Recorded| {
        let sent = r.headers.get("authorization").cloned().unwrap_or_default();
        let token = sent.strip_prefix("Bearer ").unwrap_or("");
        match token {
            t if tokens.contains(&t) => Reply::json(200, json!({"ok": true})),
            "forbidden-token" => Reply::json(403, json!({"error": "forbidden"})),
            _ => Reply::json(401, json!({"error": "who are you?"})),
        }
    })
}

/// An agent whose flow calls tool `t` (bearer) on connection `svc` and answers the tool's body.
fn tool_agent(s: &Server) -> String {
    s.create(&json!({
        "name": "Checked", "description": "Calls a tool",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "tools": [{"name": "t", "connection": "svc", "security": "bearer", "method": "GET",
                   "path": "/data"}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "args": {}, "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}",
                                                      "body": "{{ nodes.call.body }}"}}
        ]}
    }))
}

fn add_connection(s: &Server, id: &str, connection: Value) -> Resp {
    s.post(&format!("/v1/agents/{id}/connections"), &connection)
}

fn check(s: &Server, id: &str, cid: &str, body: Option<Value>) -> Resp {
    s.call(
        "POST",
        &format!("/v1/agents/{id}/connections/{cid}/check"),
        Some(TOKEN),
        &[],
        body.map(|b| b.to_string()).as_deref(),
    )
}

/// The summary's entry for connection `cid`.
fn summary_entry(summary: &Value, cid: &str) -> Value {
    summary["connections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == cid))
        .cloned()
        .unwrap_or_else(|| panic!("no {cid} in {summary}"))
}

fn warning_codes(body: &Value) -> Vec<String> {
    body["warnings"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(|w| w["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `Authorization` header of the last request the server received.
fn last_token(server: &FakeServer) -> String {
    server
        .wait_requests(1, Duration::from_secs(5))
        .last()
        .and_then(|r| r.headers.get("authorization").cloned())
        .unwrap_or_default()
}

#[test]
fn each_outcome_is_answered_and_logged_without_the_secret() {
    let s = Server::start();
    let server = auth_server(&["good-secret-4711"]);
    let id = tool_agent(&s);
    let c = add_connection(
        &s,
        &id,
        json!({"id": "svc", "server": server.url, "check_path": "/v1/me",
               "auth": {"type": "bearer", "token": "good-secret-4711"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(c.body["check_path"], "/v1/me");

    // Unchecked until checked.
    let summary = s.get(&format!("/v1/agents/{id}/summary"));
    let entry = summary_entry(&summary.body, "svc");
    assert_eq!(entry["status"], "unchecked", "{entry}");
    assert_eq!(entry["checked_at"], Value::Null);

    // authenticated: an empty body is the team's draft credentials.
    let r = check(&s, &id, "svc", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "authenticated", "{}", r.body);
    assert_eq!(r.body["http_status"], 200);
    assert_eq!(r.body["environment"], "draft");
    assert_eq!(r.body["member"], Value::Null);
    assert!(r.body["latency_ms"].is_u64(), "{}", r.body);
    assert!(r.body["checked_at"].is_string(), "{}", r.body);
    let seen = server.wait_requests(1, Duration::from_secs(5));
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/v1/me")
    );
    assert_eq!(seen[0].headers["authorization"], "Bearer good-secret-4711");
    let entry = summary_entry(&s.get(&format!("/v1/agents/{id}/summary")).body, "svc");
    assert_eq!(entry["status"], "authenticated", "{entry}");
    assert_eq!(entry["checked_at"], r.body["checked_at"]);

    // rejected: 401 and 403 alike.
    for (token, http_status) in [("wrong-secret-0815", 401), ("forbidden-token", 403)] {
        let u = s.put(
            &format!("/v1/agents/{id}/connections/svc"),
            &json!({"server": server.url, "check_path": "/v1/me",
                    "auth": {"type": "bearer", "token": token}}),
        );
        assert_eq!(u.status, 200, "{}", u.body);
        // New credentials are unchecked again.
        let entry = summary_entry(&s.get(&format!("/v1/agents/{id}/summary")).body, "svc");
        assert_eq!(entry["status"], "unchecked", "{entry}");
        let r = check(&s, &id, "svc", Some(json!({})));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["status"], "rejected", "{}", r.body);
        assert_eq!(r.body["http_status"], http_status);
    }

    // unreachable: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let c = add_connection(
        &s,
        &id,
        json!({"id": "down", "server": format!("http://127.0.0.1:{port}"),
               "auth": {"type": "bearer", "token": "down-secret-0042"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let r = check(&s, &id, "down", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "unreachable", "{}", r.body);
    assert_eq!(r.body["http_status"], Value::Null);
    assert!(r.body["detail"].is_string(), "{}", r.body);

    // Each check is an event, with what was found and nothing secret.
    let log = s.get(&format!("/v1/agents/{id}/events"));
    let checks: Vec<&Value> = log.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "ConnectionChecked")
        .collect();
    let statuses: Vec<&str> = checks
        .iter()
        .filter_map(|e| e["data"]["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["authenticated", "rejected", "rejected", "unreachable"]
    );
    assert_eq!(checks[0]["data"]["connection"], "svc");
    assert_eq!(checks[0]["data"]["environment"], "draft");
    assert_eq!(checks[1]["data"]["http_status"], 401);
    let text = log.body.to_string();
    for secret in ["good-secret-4711", "wrong-secret-0815", "down-secret-0042"] {
        assert!(!text.contains(secret), "the log shows {secret}");
        assert_eq!(dir_contains(s.data(), secret), None, "{secret} on disk");
    }
    // The connection shows its latest checks.
    let shown = s.get(&format!("/v1/agents/{id}/connections/svc"));
    assert_eq!(
        shown.body["checks"][0]["status"], "rejected",
        "{}",
        shown.body
    );
    assert_eq!(shown.body["checks"][0]["http_status"], 403);
}

#[test]
fn a_rejected_connection_blocks_deploy_until_a_check_passes() {
    let s = Server::start();
    // The server accepts the token only once `accepting` is set: the team fixes its side.
    let accepting = Arc::new(AtomicBool::new(false));
    let flag = accepting.clone();
    let server = FakeServer::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::json(200, json!({"ok": true}))
        } else {
            Reply::json(401, json!({"error": "expired"}))
        }
    });
    let id = tool_agent(&s);
    let c = add_connection(
        &s,
        &id,
        json!({"id": "svc", "server": server.url, "auth": {"type": "bearer", "token": "tok-1"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);

    // ?check=true runs the check first and answers with what it found.
    let summary = s.get(&format!("/v1/agents/{id}/summary?check=true"));
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(
        server.requests().len(),
        1,
        "one check of the one connection"
    );
    assert_eq!(server.requests()[0].path, "/", "check_path defaults to /");
    let entry = summary_entry(&summary.body, "svc");
    assert_eq!(entry["status"], "rejected", "{entry}");
    assert!(entry["checked_at"].is_string(), "{entry}");
    assert_eq!(summary.body["can_deploy"], false);
    assert!(
        warning_codes(&summary.body).contains(&"connection_rejected".to_owned()),
        "{}",
        summary.body
    );
    let v = s.get(&format!("/v1/agents/{id}/validation"));
    assert_eq!(v.body["ok"], false, "{}", v.body);
    let problem = v.body["warnings"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["code"] == "connection_rejected"))
        .cloned()
        .unwrap_or_else(|| panic!("no connection_rejected in {}", v.body));
    assert_eq!(problem["path"], "connections.svc");

    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(
        (d.status, d.code()),
        (422, "validation_failed"),
        "{}",
        d.body
    );
    assert!(
        d.body.to_string().contains("connection_rejected"),
        "{}",
        d.body
    );
    assert_eq!(s.get(&format!("/v1/agents/{id}")).body["status"], "draft");

    // The server now accepts: a passing check unblocks the deploy.
    accepting.store(true, Ordering::SeqCst);
    let r = check(&s, &id, "svc", None);
    assert_eq!(r.body["status"], "authenticated", "{}", r.body);
    let summary = s.get(&format!("/v1/agents/{id}/summary"));
    assert_eq!(
        summary_entry(&summary.body, "svc")["status"],
        "authenticated"
    );
    assert_eq!(summary.body["can_deploy"], true, "{}", summary.body);
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);
}

#[test]
fn previews_use_draft_credentials_and_live_runs_the_live_ones() {
    let s = Server::start();
    let server = auth_server(&["draft-tok-1", "live-tok-1", "live-tok-2"]);
    let id = tool_agent(&s);
    let connection = |live: &str| {
        json!({"id": "svc", "server": server.url,
               "auth": {"type": "bearer", "token": "draft-tok-1"},
               "environments": {"live": {"auth": {"type": "bearer", "token": live}}}})
    };
    let c = add_connection(&s, &id, connection("live-tok-1"));
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(c.body["auth"]["token"], "***", "{}", c.body);
    assert_eq!(
        c.body["environments"]["live"]["auth"]["token"], "***",
        "{}",
        c.body
    );
    assert!(!c.body.to_string().contains("tok-1"), "{}", c.body);
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);

    let preview = s.post(&format!("/v1/agents/{id}/preview"), &json!({"input": {}}));
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert_eq!(last_token(&server), "Bearer draft-tok-1");
    let live = s.post(&format!("/v1/agents/{id}/invoke"), &json!({"input": {}}));
    assert_eq!(live.status, 200, "{}", live.body);
    assert_eq!(live.body["output"]["status"], 200, "{}", live.body);
    assert_eq!(last_token(&server), "Bearer live-tok-1");

    // Checks: draft by default, live on request.
    let r = check(&s, &id, "svc", Some(json!({"environment": "live"})));
    assert_eq!(
        (r.body["status"].as_str(), r.body["environment"].as_str()),
        (Some("authenticated"), Some("live"))
    );
    assert_eq!(last_token(&server), "Bearer live-tok-1");
    let r = check(&s, &id, "svc", None);
    assert_eq!(r.body["environment"], "draft");
    assert_eq!(last_token(&server), "Bearer draft-tok-1");

    // New live credentials serve the live version at once, and a rollback keeps them.
    let u = s.put(
        &format!("/v1/agents/{id}/connections/svc"),
        &connection("live-tok-2"),
    );
    assert_eq!(u.status, 200, "{}", u.body);
    let live = s.post(&format!("/v1/agents/{id}/invoke"), &json!({"input": {}}));
    assert_eq!(live.status, 200, "{}", live.body);
    assert_eq!(last_token(&server), "Bearer live-tok-2");
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({"version": 1}));
    assert_eq!(d.status, 200, "rollback: {}", d.body);
    let live = s.post(&format!("/v1/agents/{id}/invoke"), &json!({"input": {}}));
    assert_eq!(live.status, 200, "{}", live.body);
    assert_eq!(live.body["version"], 3);
    assert_eq!(last_token(&server), "Bearer live-tok-2");
    let preview = s.post(&format!("/v1/agents/{id}/preview"), &json!({"input": {}}));
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert_eq!(last_token(&server), "Bearer draft-tok-1");

    // An edit that sends the connection back as it was read (secrets `***`) keeps them.
    let mut read = s.get(&format!("/v1/agents/{id}/connections/svc")).body;
    read["display_name"] = json!("Renamed");
    let u = s.put(&format!("/v1/agents/{id}/connections/svc"), &read);
    assert_eq!(u.status, 200, "{}", u.body);
    let live = s.post(&format!("/v1/agents/{id}/invoke"), &json!({"input": {}}));
    assert_eq!(live.body["output"]["status"], 200, "{}", live.body);
    assert_eq!(last_token(&server), "Bearer live-tok-2");
    let preview = s.post(&format!("/v1/agents/{id}/preview"), &json!({"input": {}}));
    assert_eq!(preview.body["output"]["status"], 200, "{}", preview.body);
    assert_eq!(last_token(&server), "Bearer draft-tok-1");

    // Sealed like every secret: neither the log nor the disk holds them in plaintext.
    let log = s.get(&format!("/v1/agents/{id}/events")).body.to_string();
    for secret in ["draft-tok-1", "live-tok-1", "live-tok-2"] {
        assert!(!log.contains(secret), "the log shows {secret}");
        assert_eq!(dir_contains(s.data(), secret), None, "{secret} on disk");
    }
    // History shows the connection as it was, redacted.
    let first = s.get(&format!("/v1/agents/{id}/history?at=3"));
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.body.to_string().contains("tok-1"), "{}", first.body);
}

#[test]
fn members_have_live_credentials_of_their_own() {
    let s = Server::start();
    let server = auth_server(&["alice-draft", "alice-live", "bob-draft"]);
    let id = s.create(&json!({
        "name": "Members", "description": "Calls a tool as the caller",
        "model": {"provider": "echo", "name": "echo-1"},
        "tools": [{"name": "t", "connection": "crm", "security": "bearer", "method": "GET",
                   "path": "/data"}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "args": {}, "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}
        ]}
    }));
    let c = add_connection(
        &s,
        &id,
        json!({"id": "crm", "server": server.url, "credentials": "member",
               "auth": {"type": "bearer"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let entry = summary_entry(&s.get(&format!("/v1/agents/{id}/summary")).body, "crm");
    assert_eq!(entry["status"], "needs_member_credentials", "{entry}");

    for (member, query, token) in [
        ("alice", "", "alice-draft"),
        ("alice", "?environment=live", "alice-live"),
        ("bob", "?environment=draft", "bob-draft"),
    ] {
        let r = s.put(
            &format!("/v1/agents/{id}/connections/crm/members/{member}{query}"),
            &json!({"type": "bearer", "token": token}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["auth"]["token"], "***");
        let environment = if query.contains("live") {
            "live"
        } else {
            "draft"
        };
        assert_eq!(r.body["environment"], environment, "{}", r.body);
    }
    let r = s.put(
        &format!("/v1/agents/{id}/connections/crm/members/alice?environment=staging"),
        &json!({"type": "bearer", "token": "x"}),
    );
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    let shown = s.get(&format!("/v1/agents/{id}/connections/crm"));
    assert_eq!(shown.body["members"], json!(["alice", "bob"]));
    assert_eq!(shown.body["live_members"], json!(["alice"]));

    // A member connection is checked as a member.
    let r = check(&s, &id, "crm", None);
    assert_eq!((r.status, r.code()), (422, "invalid_request"), "{}", r.body);
    assert_eq!(r.body["error"]["details"]["field"], "member");
    let r = check(&s, &id, "crm", Some(json!({"member": "carol"})));
    assert_eq!((r.status, r.code()), (422, "invalid_request"), "{}", r.body);
    for (environment, token) in [("live", "alice-live"), ("draft", "alice-draft")] {
        let r = check(
            &s,
            &id,
            "crm",
            Some(json!({"member": "alice", "environment": environment})),
        );
        assert_eq!(r.body["status"], "authenticated", "{}", r.body);
        assert_eq!(r.body["member"], "alice");
        assert_eq!(last_token(&server), format!("Bearer {token}"));
    }

    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);
    let key = |member: &str| {
        let r = s.post(
            &format!("/v1/agents/{id}/keys"),
            &json!({ "member": member }),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["key"].as_str().expect("key").to_owned()
    };
    let invoke = |key: &str| {
        s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke"),
            Some(key),
            &[],
            Some(r#"{"input": {}}"#),
        )
    };
    // Alice's live runs use her live credentials; bob has none, so his draft ones serve.
    let r = invoke(&key("alice"));
    assert_eq!(r.body["output"]["status"], 200, "{}", r.body);
    assert_eq!(last_token(&server), "Bearer alice-live");
    let r = invoke(&key("bob"));
    assert_eq!(r.body["output"]["status"], 200, "{}", r.body);
    assert_eq!(last_token(&server), "Bearer bob-draft");
    // A preview acting for alice sends her draft credentials.
    let r = s.call(
        "POST",
        &format!("/v1/agents/{id}/preview"),
        Some(TOKEN),
        &[("X-Hangar-Member", "alice")],
        Some(r#"{"input": {}}"#),
    );
    assert_eq!(r.body["output"]["status"], 200, "{}", r.body);
    assert_eq!(last_token(&server), "Bearer alice-draft");

    let log = s.get(&format!("/v1/agents/{id}/events")).body.to_string();
    for secret in ["alice-draft", "alice-live", "bob-draft"] {
        assert!(!log.contains(secret), "the log shows {secret}");
        assert_eq!(dir_contains(s.data(), secret), None, "{secret} on disk");
    }
}

#[test]
fn a_check_obeys_the_egress_policy_and_sends_nothing_where_it_refuses() {
    let s = Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[("HANGAR_EGRESS_ALLOW_LOOPBACK", "false")],
    );
    let server = auth_server(&["egress-secret-1"]);
    let id = tool_agent(&s);
    let c = add_connection(
        &s,
        &id,
        json!({"id": "svc", "server": server.url,
               "auth": {"type": "bearer", "token": "egress-secret-1"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let r = check(&s, &id, "svc", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "unreachable", "{}", r.body);
    assert_eq!(r.body["http_status"], Value::Null);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("HANGAR_EGRESS_ALLOW_LOOPBACK=false"),
        "the policy is named: {detail}"
    );
    // The summary's checks go the same way.
    let summary = s.get(&format!("/v1/agents/{id}/summary?check=true"));
    assert_eq!(summary_entry(&summary.body, "svc")["status"], "unreachable");
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.requests().is_empty(), "no request was made");
}

#[test]
fn bad_check_requests_and_bad_live_credentials_are_refused_with_their_field() {
    let s = Server::start();
    let id = tool_agent(&s);
    let server = "http://127.0.0.1:9";
    let c = add_connection(
        &s,
        &id,
        json!({"id": "svc", "server": server, "auth": {"type": "bearer", "token": "t"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);

    let r = check(&s, &id, "nope", None);
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
    let r = check(&s, &id, "svc", Some(json!({"member": "alice"})));
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["details"]["field"], "member");
    let r = check(&s, &id, "svc", Some(json!({"environment": "staging"})));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    let r = check(&s, &id, "svc", Some(json!({"surprise": true})));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);

    for (body, field) in [
        (
            json!({"id": "a", "server": server, "check_path": "me",
                   "auth": {"type": "bearer", "token": "t"}}),
            "check_path",
        ),
        (
            json!({"id": "b", "server": server, "check_path": "/../admin",
                   "auth": {"type": "bearer", "token": "t"}}),
            "check_path",
        ),
        (
            json!({"id": "c", "server": server, "auth": {"type": "bearer", "token": "t"},
                   "environments": {"live": {"auth": {"type": "api_key", "header": "X", "key": "k"}}}}),
            "environments.live.auth.type",
        ),
        (
            json!({"id": "d", "server": server, "auth": {"type": "bearer", "token": "t"},
                   "environments": {"live": {"auth": {"type": "bearer"}}}}),
            "environments.live.auth.token",
        ),
        (
            json!({"id": "e", "server": server, "credentials": "member", "auth": {"type": "bearer"},
                   "environments": {"live": {"auth": {"type": "bearer", "token": "t"}}}}),
            "environments.live",
        ),
    ] {
        let r = add_connection(&s, &id, body.clone());
        assert_eq!(
            (r.status, r.code()),
            (422, "invalid_request"),
            "{body}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.body);
    }
    // A move to another server needs the live secret again too.
    let r = s.put(
        &format!("/v1/agents/{id}/connections/svc"),
        &json!({"server": "http://127.0.0.1:10", "auth": {"type": "bearer", "token": "t2"},
                "environments": {"live": {"auth": {"type": "bearer", "token": "***"}}}}),
    );
    assert_eq!((r.status, r.code()), (422, "secret_required"), "{}", r.body);
    assert_eq!(
        r.body["error"]["details"]["field"],
        "environments.live.auth.token"
    );
    let conns = s.get(&format!("/v1/agents/{id}/connections"));
    assert_eq!(conns.body["connections"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_check_gives_up_after_10_s_and_the_summary_checks_in_parallel() {
    let s = Server::start();
    // Answers only after the checks have given up.
    let server = FakeServer::start(|_| Reply::json(200, json!({})).slow(Duration::from_secs(15)));
    let id = s.create(&json!({
        "name": "Slow", "description": "Two tools on two slow connections",
        "model": {"provider": "echo", "name": "echo-1"},
        "tools": [{"name": "a", "connection": "one", "security": "bearer", "path": "/a"},
                  {"name": "b", "connection": "two", "security": "bearer", "path": "/b"}],
        "flow": {"start": "a", "nodes": [
            {"id": "a", "type": "tool", "tool": "a", "args": {}, "next": "b"},
            {"id": "b", "type": "tool", "tool": "b", "args": {}, "next": "done"},
            {"id": "done", "type": "end", "output": {}}
        ]}
    }));
    for cid in ["one", "two"] {
        let c = add_connection(
            &s,
            &id,
            json!({"id": cid, "server": server.url, "auth": {"type": "bearer", "token": "t"}}),
        );
        assert_eq!(c.status, 201, "{}", c.body);
    }
    let started = std::time::Instant::now();
    let summary = s.get(&format!("/v1/agents/{id}/summary?check=true"));
    let took = started.elapsed();
    assert_eq!(summary.status, 200, "{}", summary.body);
    for cid in ["one", "two"] {
        assert_eq!(summary_entry(&summary.body, cid)["status"], "unreachable");
    }
    // 10 s in all, not 10 s each (generous: the machine may be busy).
    assert!(took < Duration::from_secs(18), "took {took:?}");
    let shown = s.get(&format!("/v1/agents/{id}/connections/one"));
    let detail = shown.body["checks"][0]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("within 10 s"), "{}", shown.body);
    assert_eq!(
        server.wait_dropped(2, Duration::from_secs(5)).len(),
        2,
        "both hung up"
    );
    let bad = s.get(&format!("/v1/agents/{id}/summary?check=maybe"));
    assert_eq!(
        (bad.status, bad.code()),
        (400, "invalid_request"),
        "{}",
        bad.body
    );
}
