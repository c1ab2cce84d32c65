//! Deployed agents answering: every node type, tools reaching loopback servers with the right
//! credentials, the sync and async endpoints, timeouts, cancellation, redeploy and undeploy with
//! runs in flight, and crash recovery of queued requests.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_http::{FakeServer, Reply};
use common::{Server, TOKEN};
use serde_json::{json, Value};

fn agent(name: &str, nodes: Value) -> Value {
    json!({
        "name": name, "description": format!("{name} test agent"),
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "flow": {"start": nodes[0]["id"], "nodes": nodes}
    })
}

fn deploy(s: &Server, id: &str) {
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
}

fn invoke(s: &Server, id: &str, input: Value) -> common::Resp {
    s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({ "input": input }),
    )
}

/// An agent whose flow calls tool `t` on connection `svc` and returns the tool's answer.
fn tool_agent(
    s: &Server,
    server_url: &str,
    auth: Value,
    security: &str,
    credentials: &str,
    node_timeout: Option<u64>,
) -> String {
    let mut call = json!({"id": "call", "type": "tool", "tool": "t", "args": {"q": "{{ input.q }}"}, "next": "done"});
    if let Some(t) = node_timeout {
        call["timeout_s"] = json!(t);
    }
    let mut spec = agent(
        "Tooled",
        json!([call, {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}", "body": "{{ nodes.call.body }}"}}]),
    );
    spec["tools"] = json!([{"name": "t", "connection": "svc", "security": security, "method": "POST", "path": "/lookup?q={{ args.q }}", "body": {"query": "{{ args.q }}"}}]);
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": server_url, "credentials": credentials, "auth": auth}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    deploy(s, &id);
    id
}

#[test]
fn every_node_type_and_branches_run() {
    let s = Server::start();
    let helper = s.create(&agent(
        "Helper",
        json!([{"id": "h", "type": "end", "output": {"shout": "{{ input.word | upper }}"}}]),
    ));
    deploy(&s, &helper);
    let mut spec = agent(
        "All nodes",
        json!([
            {"id": "shape", "type": "transform", "output": {"n": "{{ input.n }}", "word": "{{ input.word }}"}, "next": "ask"},
            {"id": "ask", "type": "model", "prompt": "Say {{ nodes.shape.word }}", "next": "look"},
            {"id": "look", "type": "knowledge", "query": "{{ input.topic }}", "top_k": 1, "next": "call"},
            {"id": "call", "type": "agent", "agent": helper, "input": {"word": "{{ nodes.shape.word }}"}, "next": "branch"},
            {"id": "branch", "type": "condition", "branches": [{"when": "nodes.shape.n > 10", "next": "big"}], "else": "small"},
            {"id": "big", "type": "end", "output": {"size": "big", "n": "{{ nodes.shape.n }}", "model": "{{ nodes.ask.text }}", "passage": "{{ nodes.look.passages[0].source }}", "helper": "{{ nodes.call.shout }}"}},
            {"id": "small", "type": "end", "output": {"size": "small", "n": "{{ nodes.shape.n }}"}}
        ]),
    );
    spec["collaborators"] = json!([helper]);
    spec["knowledge"] = json!([
        {"name": "cats.md", "content": "Cats sleep most of the day and purr."},
        {"name": "rockets.md", "content": "Rockets need fuel and oxidiser to reach orbit."}
    ]);
    let id = s.create(&spec);
    deploy(&s, &id);

    let r = invoke(
        &s,
        &id,
        json!({"n": 42, "word": "hi", "topic": "how do rockets reach orbit"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["version"], 1);
    assert_eq!(
        r["output"],
        json!({"size": "big", "n": 42, "model": "Say hi", "passage": "rockets.md", "helper": "HI"})
    );
    assert!(r["request_id"].is_string() && r["finished_at"].is_string());
    let r = invoke(&s, &id, json!({"n": 3, "word": "yo", "topic": "cats"}));
    assert_eq!(
        r["output"],
        json!({"size": "small", "n": 3}),
        "the else branch"
    );

    // Preview runs the draft, not the live version.
    let mut draft = spec.clone();
    draft["flow"]["nodes"][5]["output"] = json!({"size": "draft-big"});
    s.put(&format!("/v1/agents/{id}/draft"), &draft);
    let p = s.post(
        &format!("/v1/agents/{id}/preview"),
        &json!({"input": {"n": 99, "word": "x", "topic": "cats"}}),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p["output"], json!({"size": "draft-big"}));
    assert_eq!(
        invoke(&s, &id, json!({"n": 99, "word": "x", "topic": "cats"}))["output"]["size"],
        "big"
    );
}

#[test]
fn tools_get_each_auth_type_and_member_credentials() {
    let s = Server::start();
    let tool = FakeServer::start(|req| Reply::json(200, json!({"echo": req.path})));
    let cases = [
        (
            json!({"type": "api_key", "header": "X-Api-Key", "key": "k-111"}),
            "api_key",
            vec![("x-api-key", "k-111")],
        ),
        (
            json!({"type": "bearer", "token": "b-222"}),
            "bearer",
            vec![("authorization", "Bearer b-222")],
        ),
        // base64("svc:p-333")
        (
            json!({"type": "basic", "username": "svc", "password": "p-333"}),
            "basic",
            vec![("authorization", "Basic c3ZjOnAtMzMz")],
        ),
        (
            json!({"type": "key_value", "pairs": {"X-One": "v1", "X-Two": "v2"}}),
            "key_value",
            vec![("x-one", "v1"), ("x-two", "v2")],
        ),
    ];
    for (i, (auth, security, expected)) in cases.iter().enumerate() {
        let id = tool_agent(&s, &tool.url, auth.clone(), security, "team", None);
        let r = invoke(&s, &id, json!({"q": "rain"}));
        assert_eq!(r.status, 200, "{security}: {}", r.body);
        assert_eq!(r["output"]["status"], 200);
        assert_eq!(r["output"]["body"], json!({"echo": "/lookup?q=rain"}));
        let req = &tool.wait_requests(i + 1, Duration::from_secs(5))[i];
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/lookup?q=rain")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&req.body).ok(),
            Some(json!({"query": "rain"}))
        );
        for (h, v) in expected {
            assert_eq!(
                req.headers.get(*h).map(String::as_str),
                Some(*v),
                "{security}: header {h}"
            );
        }
    }

    // Member credentials: each caller's own key; none stored → a clear failure.
    let id = tool_agent(
        &s,
        &tool.url,
        json!({"type": "api_key", "header": "X-Member-Key"}),
        "api_key",
        "member",
        None,
    );
    for (member, key) in [("alice", "alice-key-1"), ("bob", "bob-key-2")] {
        let r = s.put(
            &format!("/v1/agents/{id}/connections/svc/members/{member}"),
            &json!({"type": "api_key", "key": key}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let before = tool.requests().len();
    for (member, key) in [("alice", "alice-key-1"), ("bob", "bob-key-2")] {
        let r = s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke"),
            Some(TOKEN),
            &[("X-Hangar-Member", member)],
            Some(r#"{"input": {"q": "x"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let last = tool.requests().last().cloned().expect("a request");
        assert_eq!(
            last.headers.get("x-member-key").map(String::as_str),
            Some(key)
        );
    }
    for member in [Some("carol"), None] {
        let headers: Vec<(&str, &str)> =
            member.map(|m| ("X-Hangar-Member", m)).into_iter().collect();
        let r = s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke"),
            Some(TOKEN),
            &headers,
            Some(r#"{"input": {"q": "x"}}"#),
        );
        assert_eq!((r.status, r.code()), (502, "run_failed"), "{}", r.body);
        assert_eq!(
            r.body["error"]["details"]["error"]["code"],
            "missing_member_credentials"
        );
        assert!(r.body["error"]["details"]["request_id"].is_string());
    }
    assert_eq!(
        tool.requests().len(),
        before + 2,
        "no call went out without credentials"
    );
}

#[test]
fn failing_tool_is_502_and_timeouts_name_their_limit() {
    let s = Server::start();
    let failing = FakeServer::start(|_| Reply::json(500, json!({"error": "boom"})));
    let id = tool_agent(
        &s,
        &failing.url,
        json!({"type": "bearer", "token": "t"}),
        "bearer",
        "team",
        None,
    );
    let r = invoke(&s, &id, json!({"q": "x"}));
    assert_eq!((r.status, r.code()), (502, "run_failed"), "{}", r.body);
    assert_eq!(r.body["error"]["details"]["error"]["code"], "tool_failed");
    assert_eq!(
        r.body["error"]["details"]["error"]["details"]["node"],
        "call"
    );
    let rid = r.body["error"]["details"]["request_id"]
        .as_str()
        .expect("request id")
        .to_owned();
    let stored = s.get(&format!("/v1/agents/{id}/requests/{rid}"));
    assert_eq!(stored["status"], "failed");

    // Node timeout: a tool slower than its node's limit.
    let slow = FakeServer::start(|_| Reply::json(200, json!({})).slow(Duration::from_secs(5)));
    let id = tool_agent(
        &s,
        &slow.url,
        json!({"type": "bearer", "token": "t"}),
        "bearer",
        "team",
        Some(1),
    );
    let started = Instant::now();
    let r = invoke(&s, &id, json!({"q": "x"}));
    assert_eq!((r.status, r.code()), (504, "timeout"), "{}", r.body);
    assert_eq!(r.body["error"]["details"]["limit"], "node");
    assert_eq!(r.body["error"]["details"]["node"], "call");
    assert!(started.elapsed() < Duration::from_secs(4));

    // Model timeout: an OpenAI-compatible server slower than the model's limit.
    let model = FakeServer::start(|req| {
        let reply = Reply::json(
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": "fine"}}]}),
        );
        if req.body.contains("slow") {
            reply.slow(Duration::from_secs(5))
        } else {
            reply
        }
    });
    let mut spec = agent(
        "Modelled",
        json!([{"id": "think", "type": "model", "prompt": "{{ input.say }}", "timeout_s": 10, "next": "done"},
               {"id": "done", "type": "end", "output": {"text": "{{ nodes.think.text }}"}}]),
    );
    spec["model"] = json!({"provider": "openai", "name": "gpt-test", "base_url": model.url, "connection": "llm", "timeout_s": 1});
    let id = s.create(&spec);
    s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "llm", "server": model.url, "auth": {"type": "bearer", "token": "sk-test"}}),
    );
    deploy(&s, &id);
    let r = invoke(&s, &id, json!({"say": "quick"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["output"]["text"], "fine");
    let req = &model.requests()[0];
    assert_eq!(req.path, "/chat/completions");
    assert_eq!(
        req.headers.get("authorization").map(String::as_str),
        Some("Bearer sk-test")
    );
    let sent: Value = serde_json::from_str(&req.body).expect("json");
    assert_eq!(sent["model"], "gpt-test");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    let r = invoke(&s, &id, json!({"say": "slow"}));
    assert_eq!((r.status, r.code()), (504, "timeout"), "{}", r.body);
    assert_eq!(r.body["error"]["details"]["limit"], "model");
}

#[test]
fn async_submit_poll_long_poll_and_idempotency() {
    let s = Server::start();
    let tool = FakeServer::start(|_| {
        Reply::json(200, json!({"ok": true})).slow(Duration::from_millis(600))
    });
    let id = tool_agent(
        &s,
        &tool.url,
        json!({"type": "bearer", "token": "t"}),
        "bearer",
        "team",
        None,
    );
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"q": "a"}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r["status"], "queued");
    let poll_url = r["poll_url"].as_str().expect("poll url").to_owned();
    assert_eq!(r.location.as_deref(), Some(poll_url.as_str()));
    assert!(r.retry_after.is_some());
    // Long-poll: returns as soon as the run ends, well before the wait.
    let started = Instant::now();
    let done = s.get(&format!("{poll_url}?wait=20"));
    assert_eq!(done.status, 200);
    assert_eq!(done["status"], "succeeded", "{}", done.body);
    assert_eq!(done["output"]["body"], json!({"ok": true}));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(s.get(&format!("{poll_url}?wait=31")).status, 400);
    assert_eq!(
        s.get(&format!(
            "/v1/agents/{id}/requests/0190b5c4-0000-7000-8000-000000000000"
        ))
        .status,
        404
    );

    // The same Idempotency-Key: the same request, no second run.
    let calls = tool.requests().len();
    let submit = |key: &str| {
        s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke/async"),
            Some(TOKEN),
            &[("Idempotency-Key", key)],
            Some(r#"{"input": {"q": "b"}}"#),
        )
    };
    let first = submit("order-17");
    let second = submit("order-17");
    assert_eq!(first.status, 202);
    assert_eq!(second["request_id"], first["request_id"]);
    let other = submit("order-18");
    assert_ne!(other["request_id"], first["request_id"]);
    for r in [&first, &other] {
        let done = s.get(&format!("{}?wait=20", r["poll_url"].as_str().expect("url")));
        assert_eq!(done["status"], "succeeded");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tool.requests().len(), calls + 2, "one run per key");
    // Sync invoke honours the key too.
    let a = s.call(
        "POST",
        &format!("/v1/agents/{id}/invoke"),
        Some(TOKEN),
        &[("Idempotency-Key", "sync-1")],
        Some(r#"{"input": {"q": "c"}}"#),
    );
    let b = s.call(
        "POST",
        &format!("/v1/agents/{id}/invoke"),
        Some(TOKEN),
        &[("Idempotency-Key", "sync-1")],
        Some(r#"{"input": {"q": "c"}}"#),
    );
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a["request_id"], b["request_id"]);
    assert_eq!(tool.requests().len(), calls + 3);
}

#[test]
fn cancel_stops_the_outbound_call() {
    let s = Server::start();
    let slow = FakeServer::start(|_| Reply::json(200, json!({})).slow(Duration::from_secs(30)));
    let id = tool_agent(
        &s,
        &slow.url,
        json!({"type": "bearer", "token": "t"}),
        "bearer",
        "team",
        None,
    );
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"q": "x"}}),
    );
    let poll_url = r["poll_url"].as_str().expect("url").to_owned();
    slow.wait_requests(1, Duration::from_secs(10));
    assert_eq!(s.get(&poll_url)["status"], "running");
    let c = s.delete(&poll_url);
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["error"]["details"]["reason"], "requested");
    assert_eq!(
        slow.wait_dropped(1, Duration::from_secs(5)).len(),
        1,
        "the tool saw its connection dropped"
    );
    let again = s.delete(&poll_url);
    assert_eq!((again.status, again.code()), (409, "already_finished"));
    assert_eq!(s.get(&poll_url)["status"], "cancelled");
}

#[test]
fn redeploy_keeps_runs_on_their_version_and_undeploy_cancels_at_once() {
    let s = Arc::new(Server::start());
    let slow = FakeServer::start(|req| {
        let reply = Reply::json(200, json!({"slow": true}));
        if req.path.contains("slow") {
            reply.slow(Duration::from_millis(1500))
        } else {
            reply
        }
    });
    let id = tool_agent(
        &s,
        &slow.url,
        json!({"type": "bearer", "token": "t"}),
        "bearer",
        "team",
        None,
    );
    // A run in flight on version 1 while version 2 is deployed.
    let (s2, id2) = (s.clone(), id.clone());
    let in_flight = std::thread::spawn(move || invoke(&s2, &id2, json!({"q": "slow"})));
    slow.wait_requests(1, Duration::from_secs(10));
    deploy(&s, &id);
    let r = in_flight.join().expect("thread");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r["version"], 1,
        "a run finishes on the version that accepted it"
    );
    assert_eq!(invoke(&s, &id, json!({"q": "fast"}))["version"], 2);

    // Undeploy with sync and async runs in flight: all cancelled now, calls dropped.
    let hang = FakeServer::start(|_| Reply::json(200, json!({})).slow(Duration::from_secs(30)));
    let id = tool_agent(
        &s,
        &hang.url,
        json!({"type": "bearer", "token": "t"}),
        "bearer",
        "team",
        None,
    );
    let (s2, id2) = (s.clone(), id.clone());
    let sync_caller = std::thread::spawn(move || invoke(&s2, &id2, json!({"q": "x"})));
    let queued = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"q": "y"}}),
    );
    hang.wait_requests(2, Duration::from_secs(10));
    let started = Instant::now();
    let u = s.post(&format!("/v1/agents/{id}/undeploy"), &json!({}));
    assert_eq!(u.status, 200);
    let sync = sync_caller.join().expect("thread");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nobody waited for the slow tool"
    );
    assert_eq!(
        (sync.status, sync.code()),
        (409, "cancelled"),
        "{}",
        sync.body
    );
    assert_eq!(sync.body["error"]["details"]["reason"], "undeployed");
    let a = s.get(queued["poll_url"].as_str().expect("url"));
    assert_eq!(a["status"], "cancelled");
    assert_eq!(a["error"]["details"]["reason"], "undeployed");
    assert_eq!(
        hang.wait_dropped(2, Duration::from_secs(5)).len(),
        2,
        "both tool calls were dropped"
    );
    let r = invoke(&s, &id, json!({"q": "z"}));
    assert_eq!((r.status, r.code()), (409, "not_deployed"));
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {}}),
    );
    assert_eq!((r.status, r.code()), (409, "not_deployed"));
}

#[test]
fn beyond_max_concurrency_sync_gets_429() {
    let s = Arc::new(Server::start());
    let slow = FakeServer::start(|_| Reply::json(200, json!({})).slow(Duration::from_millis(1500)));
    let id = tool_agent(
        &s,
        &slow.url,
        json!({"type": "bearer", "token": "t"}),
        "bearer",
        "team",
        None,
    );
    s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"max_concurrency": 1}),
    );
    deploy(&s, &id);
    let (s2, id2) = (s.clone(), id.clone());
    let first = std::thread::spawn(move || invoke(&s2, &id2, json!({"q": "1"})));
    slow.wait_requests(1, Duration::from_secs(10));
    let second = invoke(&s, &id, json!({"q": "2"}));
    assert_eq!((second.status, second.code()), (429, "overloaded"));
    assert!(second.retry_after.is_some());
    assert_eq!(first.join().expect("thread").status, 200);
    assert_eq!(
        invoke(&s, &id, json!({"q": "3"})).status,
        200,
        "a slot is free again"
    );
}

/// Guards against losing accepted requests in a crash: every 202 reaches a final state after a
/// `kill -9` and a restart; the run that was mid-flight ends `interrupted`, not `running` forever.
#[test]
fn kill_9_with_queued_requests_loses_none() {
    let s = Server::start();
    let slow =
        FakeServer::start(|_| Reply::json(200, json!({"ok": 1})).slow(Duration::from_millis(400)));
    let id = tool_agent(
        &s,
        &slow.url,
        json!({"type": "bearer", "token": "t"}),
        "bearer",
        "team",
        None,
    );
    s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"max_concurrency": 1}),
    );
    deploy(&s, &id);
    let accepted: Vec<String> = (0..6)
        .map(|i| {
            let r = s.post(
                &format!("/v1/agents/{id}/invoke/async"),
                &json!({"input": {"q": i}}),
            );
            assert_eq!(r.status, 202);
            r["poll_url"].as_str().expect("url").to_owned()
        })
        .collect();
    slow.wait_requests(1, Duration::from_secs(10));
    let s = s.restart();
    let mut statuses = Vec::new();
    for url in &accepted {
        let r = s.get(&format!("{url}?wait=25"));
        assert_eq!(r.status, 200, "{url} exists after the crash");
        statuses.push(r["status"].as_str().unwrap_or_default().to_owned());
        if r["status"] == "failed" {
            assert_eq!(r["error"]["code"], "interrupted");
        }
    }
    assert!(
        statuses
            .iter()
            .all(|st| st == "succeeded" || st == "failed"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|st| *st == "succeeded").count() >= 5,
        "{statuses:?}"
    );
    let metrics = s.call("GET", "/metrics", None, &[], None);
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("text");
    assert!(
        text.contains("hangar_runs_total{status=\"succeeded\"}"),
        "{text}"
    );
    assert!(text.contains("hangar_queue_depth 0"), "{text}");
}

/// `HANGAR_RUN_RETENTION` with a unit: the purge follows a short retention (every half of it),
/// so a finished run is gone within seconds, not at the next hourly pass.
#[test]
fn a_short_retention_purges_finished_runs() {
    let dir = tempfile::tempdir().expect("temp data dir");
    let s = Server::start_with(dir, &[("HANGAR_RUN_RETENTION", "2s")]);
    let id = s.create(&agent(
        "Brief",
        json!([{"id": "done", "type": "end", "output": {"ok": true}}]),
    ));
    deploy(&s, &id);
    let r = invoke(&s, &id, json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let rid = r.body["request_id"]
        .as_str()
        .expect("request id")
        .to_owned();
    let path = format!("/v1/agents/{id}/requests/{rid}");
    assert_eq!(s.get(&path).status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get(&path).status != 404 {
        assert!(
            Instant::now() < deadline,
            "the run outlived its 2 s retention by 13 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A retention the server cannot read stops it at start, with one line naming the variable.
#[test]
fn a_bad_retention_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().expect("temp data dir");
    for (var, value) in [
        ("HANGAR_RUN_RETENTION", "soon"),
        ("HANGAR_RUN_RETENTION", "0s"),
        ("HANGAR_RUN_RETENTION_HOURS", "-3"),
    ] {
        let out = std::process::Command::new(common::bin())
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .env("HANGAR_ADMIN_TOKEN", TOKEN)
            .env_remove("HANGAR_RUN_RETENTION")
            .env_remove("HANGAR_RUN_RETENTION_HOURS")
            .env(var, value)
            .output()
            .expect("run hangar");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("hangar: {var} must")),
            "{stderr}"
        );
    }
}
