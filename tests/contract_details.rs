//! Small places where the server and what it says about itself disagreed: the body of a pushed
//! Run (it showed `attempts: 0` on the attempt delivering it), a valid invocation key on a
//! management route (401, as if it were no credential at all), and where `already_finished`
//! keeps the Run (`details.run`, while the docs said the details were the Run).

mod common;

use std::time::{Duration, Instant};

use common::fake_http::{FakeServer, Reply};
use common::{valid_spec, Server, TOKEN};
use serde_json::{json, Value};

fn deployed(s: &Server, name: &str) -> String {
    let id = s.create(&valid_spec(name));
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);
    id
}

/// Polls `poll_url` until `done` holds of the Run, or `max` passes; the last Run seen.
fn poll_until(s: &Server, poll_url: &str, max: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let run = s.get(poll_url).body;
        if done(&run) || start.elapsed() > max {
            return run;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pushed_run_counts_the_attempt_that_delivers_it() {
    let s = Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[("HANGAR_PUSH_SCHEDULE", "1")],
    );
    // The first attempt fails, the retry is delivered.
    let receiver = FakeServer::start({
        let calls = std::sync::atomic::AtomicUsize::new(0);
        move |_| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Reply::json(if n == 0 { 500 } else { 204 }, json!({}))
        }
    });
    let id = s.create(&valid_spec("Pusher"));
    let ep = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"async": {"push_enabled": true, "url": format!("{}/hook", receiver.url), "token": "hook-token"}}),
    );
    assert_eq!(ep.status, 200, "{}", ep.body);
    let d = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(d.status, 200, "{}", d.body);
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"name": "Ada"}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);

    let seen = receiver.wait_requests(2, Duration::from_secs(20));
    assert_eq!(seen.len(), 2, "{seen:?}");
    let pushes: Vec<Value> = seen
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).expect("a JSON Run")["push"].clone())
        .collect();
    assert_eq!(pushes[0]["attempts"], 1, "{}", pushes[0]);
    assert_eq!(pushes[0]["status"], "pending");
    assert_eq!(pushes[0]["last_status"], Value::Null);
    assert_eq!(pushes[1]["attempts"], 2, "{}", pushes[1]);
    assert_eq!(pushes[1]["status"], "pending");
    assert_eq!(pushes[1]["last_status"], 500);

    let poll_url = r["poll_url"].as_str().expect("poll url");
    let run = poll_until(&s, poll_url, Duration::from_secs(10), |run| {
        run["push"]["status"] == "delivered"
    });
    assert_eq!(run["push"]["status"], "delivered", "{run}");
    assert_eq!(
        run["push"]["attempts"], 2,
        "the same count as the receiver saw"
    );
}

#[test]
fn an_invocation_key_on_a_management_route_is_forbidden_not_unknown() {
    let s = Server::start();
    let id = deployed(&s, "Keyed");
    let issued = s.post(&format!("/v1/agents/{id}/keys"), &json!({}));
    assert_eq!(issued.status, 201, "{}", issued.body);
    let key = issued["key"].as_str().expect("key").to_owned();
    let kid = issued["id"].as_str().expect("key id").to_owned();

    let routes: [(&str, String, Option<&str>); 5] = [
        ("GET", "/v1/agents".into(), None),
        ("GET", format!("/v1/agents/{id}"), None),
        ("PUT", format!("/v1/agents/{id}/draft"), Some("{}")),
        ("POST", format!("/v1/agents/{id}/preview"), Some("{}")),
        ("GET", format!("/v1/agents/{id}/events"), None),
    ];
    for (method, path, body) in &routes {
        let r = s.call(method, path, Some(&key), &[], *body);
        assert_eq!(
            (r.status, r.code()),
            (403, "forbidden"),
            "{method} {path}: {}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("invocation key") && message.contains("admin token"),
            "{message}"
        );
    }
    // The key still does what it is for.
    let ok = s.call(
        "POST",
        &format!("/v1/agents/{id}/invoke"),
        Some(&key),
        &[],
        Some(r#"{"input": {"name": "Ada"}}"#),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);

    // What is no credential stays 401: nothing, a wrong token, a forged or revoked key.
    let forged = format!("{}x", &key[..key.len() - 1]);
    for token in [None, Some("wrong"), Some(forged.as_str())] {
        let r = s.call("GET", &format!("/v1/agents/{id}"), token, &[], None);
        assert_eq!((r.status, r.code()), (401, "unauthorized"), "{token:?}");
    }
    assert_eq!(s.delete(&format!("/v1/agents/{id}/keys/{kid}")).status, 204);
    let r = s.call("GET", &format!("/v1/agents/{id}"), Some(&key), &[], None);
    assert_eq!(r.status, 401, "revoked: {}", r.body);
}

/// Every authenticated route documents the 403 it may answer, and `already_finished` keeps the
/// Run where the document and `docs/api.md` say: `details.run`.
#[test]
fn the_documents_say_what_the_server_answers() {
    let s = Server::start();
    let doc = s.call("GET", "/openapi.json", None, &[], None).body;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if op["security"] == json!([{}]) {
                continue;
            }
            assert!(
                op["responses"]["403"].is_object(),
                "{method} {path} does not document 403"
            );
        }
    }
    let cancel_409 = doc["paths"]["/v1/agents/{id}/requests/{rid}"]["delete"]["responses"]["409"]
        ["description"]
        .as_str()
        .unwrap_or("");
    assert!(cancel_409.contains("details.run"), "{cancel_409}");

    let id = deployed(&s, "Finished");
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"name": "Ada"}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let poll_url = r["poll_url"].as_str().expect("poll url");
    let run = poll_until(&s, poll_url, Duration::from_secs(10), |run| {
        run["status"] == "succeeded"
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    let cancel = s.call("DELETE", poll_url, Some(TOKEN), &[], None);
    assert_eq!((cancel.status, cancel.code()), (409, "already_finished"));
    assert_eq!(
        cancel.body["error"]["details"]["run"], run,
        "{}",
        cancel.body
    );

    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("docs/api.md");
    let line = api
        .lines()
        .skip_while(|l| !l.contains("**Async**"))
        .take(5)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        line.contains("`already_finished`") && line.contains("`details.run`"),
        "docs/api.md: {line}"
    );
}
