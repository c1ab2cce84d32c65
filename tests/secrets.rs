//! Secrets go in and never come out: not in a response, not in the event log, not in any file of
//! the data directory, not in the server's log.

mod common;

use std::time::Duration;

use common::fake_http::{FakeServer, Reply};
use common::{dir_contains, valid_spec, Server};
use serde_json::json;

const SECRETS: [&str; 9] = [
    "apikey-SECRET-7f3a9",
    "basic-PASSWORD-2b81",
    "bearer-TOKEN-c0ffee",
    "kv-VALUE-one-91d2",
    "kv-VALUE-two-44e0",
    "member-KEY-alice-5150",
    "member-TOKEN-bob-8086",
    "push-TOKEN-webhook-77aa",
    // A Basic-auth username: sealed and redacted like the password.
    "basic-USERNAME-5e11",
];

#[test]
fn no_plaintext_secret_anywhere() {
    let s = Server::start();
    let id = s.create(&valid_spec("Vault"));
    let conns = format!("/v1/agents/{id}/connections");
    let bodies = [
        json!({"id": "a", "server": "https://a.example", "auth": {"type": "api_key", "header": "X-Api-Key", "key": SECRETS[0]}}),
        json!({"id": "b", "server": "https://b.example", "auth": {"type": "basic", "username": SECRETS[8], "password": SECRETS[1]}}),
        json!({"id": "c", "server": "https://c.example", "auth": {"type": "bearer", "token": "initial-token-to-be-rotated"}}),
        json!({"id": "d", "server": "https://d.example", "auth": {"type": "key_value", "pairs": {"X-One": SECRETS[3], "X-Two": SECRETS[4]}}}),
        json!({"id": "m", "server": "https://m.example", "credentials": "member", "auth": {"type": "api_key", "header": "X-Member-Key"}}),
        json!({"id": "n", "server": "https://n.example", "credentials": "member", "auth": {"type": "bearer"}}),
    ];
    let mut responses = Vec::new();
    for body in &bodies {
        let r = s.post(&conns, body);
        assert_eq!(r.status, 201, "{}", r.body);
        responses.push(r.body);
    }
    assert_eq!(responses[0]["auth"]["key"], "***");
    assert_eq!(
        responses[1]["auth"],
        json!({"type": "basic", "username": "***", "password": "***"})
    );
    assert_eq!(
        responses[3]["auth"]["pairs"],
        json!({"X-One": "***", "X-Two": "***"})
    );
    assert_eq!(responses[4]["status"], "needs_member_credentials");
    let upd = s.put(
        &format!("{conns}/c"),
        &json!({"server": "https://c.example", "auth": {"type": "bearer", "token": SECRETS[2]}}),
    );
    assert_eq!(upd.status, 200, "{}", upd.body);
    assert_eq!(upd["auth"]["token"], "***");
    let alice = s.put(
        &format!("{conns}/m/members/alice"),
        &json!({"type": "api_key", "key": SECRETS[5]}),
    );
    assert_eq!(alice.status, 200, "{}", alice.body);
    assert_eq!(
        alice["auth"],
        json!({"type": "api_key", "header": "X-Member-Key", "key": "***"})
    );
    let bob = s.put(
        &format!("{conns}/n/members/bob"),
        &json!({"type": "bearer", "token": SECRETS[6]}),
    );
    assert_eq!(bob.status, 200);
    let wrong_type = s.put(
        &format!("{conns}/n/members/carol"),
        &json!({"type": "basic", "username": "c", "password": "p"}),
    );
    assert_eq!(
        (
            wrong_type.status,
            wrong_type.body["error"]["details"]["field"].as_str()
        ),
        (422, Some("type"))
    );
    let team_member = s.put(
        &format!("{conns}/a/members/dave"),
        &json!({"type": "api_key", "key": "k"}),
    );
    assert_eq!(team_member.status, 422);

    // Push: the token is never shown; the signing secret is shown in full once.
    let ep = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"async": {"push_enabled": true, "url": "http://127.0.0.1:9/hook", "token": SECRETS[7]}}),
    );
    assert_eq!(ep.status, 200, "{}", ep.body);
    assert_eq!(ep["async"]["token"], "***");
    let signing = ep["signing_secret"]
        .as_str()
        .expect("signing secret")
        .to_owned();
    assert!(
        signing.starts_with("whsec_") && signing.len() > 40,
        "{signing}"
    );
    let ep2 = s.get(&format!("/v1/agents/{id}/endpoint"));
    assert_eq!(ep2["signing_secret"], "whsec_***");
    assert_eq!(ep2["async"]["token"], "***");
    let rotated = s.post(
        &format!("/v1/agents/{id}/endpoint/rotate-secret"),
        &json!({}),
    );
    assert_eq!(rotated.status, 200);
    let signing2 = rotated["signing_secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    assert!(signing2.starts_with("whsec_") && signing2 != signing);

    let listed = s.get(&conns);
    let members = listed["connections"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["id"] == "m")
        .expect("m")["members"]
        .clone();
    assert_eq!(members, json!(["alice"]));

    // Everything a client can read, the data directory, and the server's log.
    let mut readable = vec![
        listed.body.to_string(),
        s.get(&format!("/v1/agents/{id}/events?limit=1000"))
            .body
            .to_string(),
    ];
    readable.push(s.get(&format!("/v1/agents/{id}")).body.to_string());
    readable.push(s.get(&format!("/v1/agents/{id}/summary")).body.to_string());
    readable.push(
        s.get(&format!("/v1/agents/{id}/history?at=5"))
            .body
            .to_string(),
    );
    let events = s.get(&format!("/v1/agents/{id}/events?limit=1000"));
    assert!(
        events.body.to_string().contains("\"***\""),
        "sealed values are shown redacted"
    );
    let s = s.restart(); // and the state after a crash, rebuilt from the sealed log
    readable.push(
        s.get(&format!("/v1/agents/{id}/connections"))
            .body
            .to_string(),
    );
    let log = s.server_log();
    for secret in SECRETS.iter().copied().chain([
        signing.as_str(),
        signing2.as_str(),
        "initial-token-to-be-rotated",
    ]) {
        for text in &readable {
            assert!(!text.contains(secret), "a response shows {secret}");
        }
        assert_eq!(
            dir_contains(s.data(), secret),
            None,
            "the data dir holds {secret} in plain text"
        );
        assert!(!log.contains(secret), "the server log shows {secret}");
    }
}

/// Someone who can write the store and re-hash it, but does not hold the secret key, copies a
/// connection's sealed token into a connection whose server they control. The chain cannot tell
/// (`hangar verify` passes); the sealed value's place can: the runtime does not open it there,
/// and nothing is sent. Guards the associated data of the sealed format (docs/security.md).
#[test]
fn a_secret_moved_in_the_log_to_another_server_does_not_open() {
    const VICTIM_TOKEN: &str = "victim-TOKEN-stays-home-31c7";
    let trap = FakeServer::start(|_| Reply::json(200, json!({})));
    let mut s = Server::start();
    let id = s.create(&json!({
        "name": "Moved", "description": "Calls the trap",
        "model": {"provider": "echo", "name": "echo-1"},
        "tools": [{"name": "t", "connection": "trap", "security": "bearer", "method": "GET",
                   "path": "/collect"}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}
        ]}
    }));
    let conns = format!("/v1/agents/{id}/connections");
    for body in [
        json!({"id": "victim", "server": "https://victim.example", "auth": {"type": "bearer", "token": VICTIM_TOKEN}}),
        json!({"id": "trap", "server": trap.url, "auth": {"type": "bearer", "token": "attacker-own-token"}}),
    ] {
        let r = s.post(&conns, &body);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    s.kill();

    common::forge_last_event(s.data(), &id, |events| {
        let (last, earlier) = events.split_last_mut().expect("events");
        let victim = earlier
            .iter()
            .find(|e| e["type"] == "ConnectionAdded" && e["data"]["connection"]["id"] == "victim")
            .expect("the victim connection");
        let sealed = victim["data"]["connection"]["auth"]["token"].clone();
        assert!(
            sealed.as_str().is_some_and(|t| t.starts_with("enc:v2:")),
            "{sealed}"
        );
        assert_eq!(last["data"]["connection"]["id"], "trap");
        last["data"]["connection"]["auth"]["token"] = sealed;
    });
    let data = s.data().to_str().expect("utf8").to_owned();
    let verify = s.cli(&["verify", "--data", &data]);
    assert!(
        verify.status.success(),
        "the re-hashed log verifies: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // A preview runs the draft as it stands (a deploy would refuse the unused victim connection).
    let s = s.start_again();
    let r = s.post(&format!("/v1/agents/{id}/preview"), &json!({"input": {}}));
    assert_eq!((r.status, r.code()), (502, "run_failed"), "{}", r.body);
    assert_eq!(
        r.body["error"]["details"]["error"]["code"], "credentials_unreadable",
        "{}",
        r.body
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        trap.requests().is_empty(),
        "nothing reached the trap: {:?}",
        trap.requests()
    );
    assert!(!s.server_log().contains(VICTIM_TOKEN));
}
