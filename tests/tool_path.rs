//! Caller input cannot steer a tool's URL (security audit, issue 10). Guards against a caller
//! whose input, interpolated into a tool's `path`, climbs out of it (`../../admin/...`), adds
//! or overrides query parameters (`&account=team-b`), or cuts the rest off with `#` — each of
//! which sent the connection's credentials to a request the agent's author never wrote.

mod common;

use std::time::Duration;

use common::fake_http::{FakeServer, Reply};
use common::Server;
use serde_json::{json, Value};

const TEMPLATE: &str = "/v1/cities/{{ input.city }}/forecast?units=metric&account=team-a";

/// A live agent whose flow calls tool `forecast` (path [`TEMPLATE`]) on `server`.
fn forecast_agent(s: &Server, server: &str) -> String {
    let spec = json!({
        "name": "Forecast", "description": "Looks up a city's forecast",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                   "method": "GET", "path": TEMPLATE}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "forecast", "next": "done"},
            {"id": "done", "type": "end", "output": {"body": "{{ nodes.call.body }}"}}
        ]}
    });
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "weather", "server": server, "credentials": "team",
                "auth": {"type": "api_key", "header": "X-Api-Key", "key": "team-a-key"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
    id
}

fn invoke(s: &Server, id: &str, city: &str) -> common::Resp {
    s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {"city": city}}),
    )
}

/// The query parameters of a request target, raw (not decoded).
fn query(path: &str) -> Vec<(String, String)> {
    let Some((_, q)) = path.split_once('?') else {
        return Vec::new();
    };
    q.split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn interpolated_input_is_one_encoded_segment_and_cannot_climb_or_add_parameters() {
    let s = Server::start();
    let tool = FakeServer::start(|req| Reply::json(200, json!({"path": req.path})));
    let id = forecast_agent(&s, &tool.url);

    let r = invoke(&s, &id, "Oslo");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r["output"]["body"]["path"],
        "/v1/cities/Oslo/forecast?units=metric&account=team-a"
    );

    // Slashes, `?`, `&`, `=` and `#` in the input are data inside one segment: the tool sees the
    // template's own query, account=team-a, and nothing the caller added.
    let r = invoke(&s, &id, "Oslo/forecast?units=metric&account=team-b#");
    assert_eq!(r.status, 200, "{}", r.body);
    let got = tool.wait_requests(2, Duration::from_secs(5));
    let path = got.last().expect("a request").path.clone();
    assert_eq!(
        path,
        "/v1/cities/Oslo%2Fforecast%3Funits%3Dmetric%26account%3Dteam-b%23/forecast\
         ?units=metric&account=team-a"
    );
    assert_eq!(
        query(&path),
        [
            ("units".to_owned(), "metric".to_owned()),
            ("account".to_owned(), "team-a".to_owned())
        ]
    );

    // A traversal fails the node before anything is sent: even encoded as one segment, a
    // server or proxy that decodes %2F before normalizing would climb to /admin/users/delete.
    let before = tool.requests().len();
    let r = invoke(&s, &id, "../../../admin/users/delete?confirm=yes#");
    assert_eq!((r.status, r.code()), (502, "run_failed"), "{}", r.body);
    let error = &r.body["error"]["details"]["error"];
    assert_eq!(error["code"], "invalid_tool_path", "{}", r.body);
    assert_eq!(error["details"]["node"], "call");
    for city in ["..", "a/../../admin"] {
        let r = invoke(&s, &id, city);
        assert_eq!(
            r.body["error"]["details"]["error"]["code"], "invalid_tool_path",
            "{city}: {}",
            r.body
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(tool.requests().len(), before, "no request went out");
}

#[test]
fn a_literal_fragment_in_the_template_fails_the_node() {
    let s = Server::start();
    let tool = FakeServer::start(|_| Reply::json(200, json!({})));
    let id = forecast_agent(&s, &tool.url);
    let mut spec = s.get(&format!("/v1/agents/{id}")).body["draft"].clone();
    spec["tools"][0]["path"] = json!("/v1/cities/{{ input.city }}#/admin");
    assert_eq!(s.put(&format!("/v1/agents/{id}/draft"), &spec).status, 200);
    let r = s.post(
        &format!("/v1/agents/{id}/preview"),
        &json!({"input": {"city": "Oslo"}}),
    );
    assert_eq!(
        r.body["error"]["details"]["error"]["code"], "invalid_tool_path",
        "{}",
        r.body
    );
    assert!(tool.requests().is_empty());
}

#[test]
fn a_server_with_user_info_is_refused_naming_the_field() {
    let s = Server::start();
    let id = s.create(&common::valid_spec("Userinfo"));
    let conns = format!("/v1/agents/{id}/connections");
    let auth = json!({"type": "bearer", "token": "t"});
    for server in [
        "https://user:pass@api.example.com",
        "https://token@api.example.com/v1",
    ] {
        let r = s.post(
            &conns,
            &json!({"id": "c", "server": server, "auth": auth.clone()}),
        );
        assert_eq!((r.status, r.code()), (422, "invalid_request"), "{}", r.body);
        assert_eq!(r.body["error"]["details"]["field"], "server");
        assert!(
            !r.body.to_string().contains("@api.example.com"),
            "{}",
            r.body
        );
    }
    let ok = s.post(
        &conns,
        &json!({"id": "c", "server": "https://api.example.com", "auth": auth.clone()}),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    let r = s.put(
        &format!("{conns}/c"),
        &json!({"server": "https://u:p@api.example.com", "auth": auth}),
    );
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].clone()),
        (422, Value::from("server"))
    );
    assert_eq!(
        s.get(&format!("{conns}/c"))["server"],
        "https://api.example.com",
        "nothing was written"
    );
}
