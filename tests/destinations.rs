//! Credentials go only to their own server: a stored secret never follows a destination someone
//! chose after it was given. Guards against a draft editor pointing a model's `base_url` at their
//! own host while naming a connection (validation and the runtime both refuse), and against
//! changing the push `url` or a connection's `server` while the stored secrets stay behind to be
//! sent there.

mod common;

use std::time::Duration;

use common::fake_http::{FakeServer, Reply};
use common::Server;
use serde_json::{json, Value};

const LLM_TOKEN: &str = "sk-llm-stays-home-4e1d";

/// A server that answers every request as an OpenAI-compatible model would.
fn model_server() -> FakeServer {
    FakeServer::start(|_| {
        Reply::json(
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}),
        )
    })
}

/// An agent whose model node calls an `openai` model at `base_url` with connection `llm`.
fn model_agent(base_url: &str) -> Value {
    json!({
        "name": "Modelled", "description": "asks a model",
        "model": {"provider": "openai", "name": "gpt-test", "base_url": base_url, "connection": "llm"},
        "flow": {"start": "think", "nodes": [
            {"id": "think", "type": "model", "prompt": "{{ input.q }}", "next": "done"},
            {"id": "done", "type": "end", "output": {"text": "{{ nodes.think.text }}"}}
        ]}
    })
}

fn codes_at(report: &Value, path: &str) -> Vec<String> {
    report["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["path"] == path)
        .filter_map(|p| p["code"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_model_gets_a_connections_credentials_only_on_that_connections_server() {
    let s = Server::start();
    let home = model_server();
    let elsewhere = model_server();
    let id = s.create(&model_agent(&format!("{}/v1", elsewhere.url)));
    let added = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "llm", "server": home.url, "auth": {"type": "bearer", "token": LLM_TOKEN}}),
    );
    assert_eq!(added.status, 201, "{}", added.body);

    // Validation names the field; deploy is refused.
    let report = s.get(&format!("/v1/agents/{id}/validation"));
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(
        codes_at(&report.body, "model.base_url"),
        ["connection_origin_mismatch"],
        "{}",
        report.body
    );
    let deploy = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(deploy.status, 422, "{}", deploy.body);
    assert_eq!(deploy.code(), "validation_failed");

    // A preview of a draft that cannot run is refused before it runs (the runtime refuses such
    // a call too: actors/src/flow/http_effects.rs tests it, as a deployed version predating the
    // rule would reach it).
    let preview = s.post(
        &format!("/v1/agents/{id}/preview"),
        &json!({"input": {"q": "hello"}}),
    );
    assert_eq!(preview.status, 422, "{}", preview.body);
    assert_eq!(preview.code(), "validation_failed");
    assert_eq!(
        codes_at(&preview.body["error"]["details"], "model.base_url"),
        ["connection_origin_mismatch"],
        "{}",
        preview.body
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        elsewhere.requests().is_empty(),
        "nothing reached the other host: {:?}",
        elsewhere.requests()
    );

    // On the connection's own server (any path) the credentials go as before.
    let edited = s.put(
        &format!("/v1/agents/{id}/draft"),
        &model_agent(&format!("{}/v1/", home.url)),
    );
    assert_eq!(edited.status, 200, "{}", edited.body);
    let report = s.get(&format!("/v1/agents/{id}/validation"));
    assert_eq!(report["errors"], json!([]), "{}", report.body);
    let preview = s.post(
        &format!("/v1/agents/{id}/preview"),
        &json!({"input": {"q": "hello"}}),
    );
    assert_eq!(preview.status, 200, "{}", preview.body);
    let seen = home.wait_requests(1, Duration::from_secs(5));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {LLM_TOKEN}").as_str())
    );
}

#[test]
fn a_new_push_url_needs_the_token_again() {
    let s = Server::start();
    let id = s.create(&common::valid_spec("Pusher"));
    let endpoint = format!("/v1/agents/{id}/endpoint");
    let first = s.put(
        &endpoint,
        &json!({"async": {"push_enabled": true, "url": "https://hooks.example.com/h", "token": "push-token-1"}}),
    );
    assert_eq!(first.status, 200, "{}", first.body);

    for token in [None, Some("***")] {
        let mut body =
            json!({"async": {"push_enabled": true, "url": "https://attacker.example.net/h"}});
        if let Some(t) = token {
            body["async"]["token"] = json!(t);
        }
        let r = s.put(&endpoint, &body);
        assert_eq!(r.status, 422, "token {token:?}: {}", r.body);
        assert_eq!(r.code(), "secret_required", "{}", r.body);
        assert_eq!(r.body["error"]["details"]["field"], "async.token");
    }
    let now = s.get(&endpoint);
    assert_eq!(
        now["async"]["url"], "https://hooks.example.com/h",
        "unchanged"
    );

    // Other settings still change without the token, and a new url with it.
    let same = s.put(
        &endpoint,
        &json!({"max_concurrency": 3, "async": {"push_enabled": true, "url": "https://hooks.example.com/h"}}),
    );
    assert_eq!(same.status, 200, "{}", same.body);
    let moved = s.put(
        &endpoint,
        &json!({"async": {"push_enabled": true, "url": "https://hooks.example.com/v2", "token": "push-token-2"}}),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved["async"]["token"], "***");
}

#[test]
fn a_new_connection_server_needs_the_secrets_again() {
    let s = Server::start();
    let id = s.create(&common::valid_spec("Tools"));
    let conns = format!("/v1/agents/{id}/connections");
    let added = s.post(
        &conns,
        &json!({"id": "w", "server": "https://api.example.com", "auth": {"type": "bearer", "token": "team-token-1"}}),
    );
    assert_eq!(added.status, 201, "{}", added.body);

    for auth in [
        json!({"type": "bearer"}),
        json!({"type": "bearer", "token": "***"}),
    ] {
        let r = s.put(
            &format!("{conns}/w"),
            &json!({"server": "https://attacker.example.net", "auth": auth}),
        );
        assert_eq!(r.status, 422, "{auth}: {}", r.body);
        assert_eq!(r.code(), "secret_required", "{}", r.body);
        assert_eq!(r.body["error"]["details"]["field"], "auth.token");
    }
    assert_eq!(
        s.get(&format!("{conns}/w"))["server"],
        "https://api.example.com"
    );

    let moved = s.put(
        &format!("{conns}/w"),
        &json!({"server": "https://api2.example.com", "auth": {"type": "bearer", "token": "team-token-2"}}),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved["server"], "https://api2.example.com");
}

#[test]
fn a_connection_whose_members_hold_credentials_cannot_move() {
    let s = Server::start();
    let id = s.create(&common::valid_spec("Members"));
    let conns = format!("/v1/agents/{id}/connections");
    let crm = json!({"id": "crm", "server": "https://crm.example.com", "credentials": "member",
                     "auth": {"type": "bearer"}});
    assert_eq!(s.post(&conns, &crm).status, 201);
    let alice = s.put(
        &format!("{conns}/crm/members/alice"),
        &json!({"type": "bearer", "token": "alice-token"}),
    );
    assert_eq!(alice.status, 200, "{}", alice.body);

    let r = s.put(
        &format!("{conns}/crm"),
        &json!({"server": "https://attacker.example.net", "credentials": "member", "auth": {"type": "bearer"}}),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "member_credentials_stored", "{}", r.body);
    assert_eq!(r.body["error"]["details"]["members"], json!(["alice"]));
    assert_eq!(
        s.get(&format!("{conns}/crm"))["server"],
        "https://crm.example.com"
    );

    // The same server keeps them (a display name changes, say).
    let renamed = s.put(
        &format!("{conns}/crm"),
        &json!({"server": "https://crm.example.com/", "display_name": "CRM", "credentials": "member",
                "auth": {"type": "bearer"}}),
    );
    assert_eq!(renamed.status, 200, "{}", renamed.body);

    // Removing the connection drops them; it may then come back elsewhere, with no member.
    assert_eq!(s.delete(&format!("{conns}/crm")).status, 204);
    let mut elsewhere = crm.clone();
    elsewhere["server"] = json!("https://crm2.example.com");
    let back = s.post(&conns, &elsewhere);
    assert_eq!(back.status, 201, "{}", back.body);
    assert_eq!(back["status"], "needs_member_credentials", "{}", back.body);
}
