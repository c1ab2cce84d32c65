//! `GET /openapi.json`: guards against a route the server serves but the document omits (or
//! the reverse), an undocumented status or parameter, and a document that is not OpenAPI 3.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{valid_spec, Server};
use serde_json::{json, Value};

/// Every route the server serves, with its methods. A route added to `src/http` must be added
/// here and to the document.
const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
    ("/v1/cluster", &["get"]),
    ("/v1/agents", &["get", "post"]),
    ("/v1/agents/{id}", &["get"]),
    ("/v1/agents/{id}/draft", &["put"]),
    ("/v1/agents/{id}/endpoint", &["get", "put"]),
    ("/v1/agents/{id}/endpoint/rotate-secret", &["post"]),
    ("/v1/agents/{id}/validation", &["get"]),
    ("/v1/agents/{id}/summary", &["get"]),
    ("/v1/agents/{id}/preview", &["post"]),
    ("/v1/agents/{id}/deploy", &["post"]),
    ("/v1/agents/{id}/undeploy", &["post"]),
    ("/v1/agents/{id}/deployment", &["get"]),
    ("/v1/agents/{id}/versions", &["get"]),
    ("/v1/agents/{id}/connections", &["get", "post"]),
    (
        "/v1/agents/{id}/connections/{cid}",
        &["get", "put", "delete"],
    ),
    (
        "/v1/agents/{id}/connections/{cid}/members/{member}",
        &["put"],
    ),
    ("/v1/agents/{id}/connections/{cid}/check", &["post"]),
    ("/v1/agents/{id}/keys", &["get", "post"]),
    ("/v1/agents/{id}/keys/{kid}", &["delete"]),
    ("/v1/agents/{id}/events", &["get"]),
    ("/v1/agents/{id}/history", &["get"]),
    ("/v1/agents/{id}/verify", &["get"]),
    ("/v1/agents/{id}/invoke", &["post"]),
    ("/v1/agents/{id}/invoke/async", &["post"]),
    ("/v1/agents/{id}/requests/{rid}", &["get", "delete"]),
    ("/v1/agents/{id}/requests", &["get"]),
    ("/console", &["get"]),
    ("/console/{asset}", &["get"]),
    ("/v1/agents/{id}/invoke/stream", &["post"]),
    ("/v1/agents/{id}/requests/{rid}/events", &["get"]),
    ("/v1/agents/{id}/chat/completions", &["post"]),
    ("/v1/agents/{id}/models", &["get"]),
    ("/a2a/{id}/.well-known/agent-card.json", &["get"]),
    ("/a2a/{id}", &["post"]),
    ("/a2a/{id}/message:send", &["post"]),
    ("/a2a/{id}/message:stream", &["post"]),
    ("/a2a/{id}/tasks/{tid}", &["get"]),
    ("/a2a/{id}/tasks", &["get"]),
    ("/a2a/{id}/tasks/{tid}:cancel", &["post"]),
    ("/a2a/{id}/tasks/{tid}:subscribe", &["get", "post"]),
    (
        "/a2a/{id}/tasks/{tid}/pushNotificationConfigs",
        &["get", "post"],
    ),
    (
        "/a2a/{id}/tasks/{tid}/pushNotificationConfigs/{cid}",
        &["get", "delete"],
    ),
    ("/v1/agents/{id}/requests/{rid}/input", &["post"]),
    ("/v1/agents/{id}/threads/{tid}", &["get", "delete"]),
];

/// Routes anyone may call.
const PUBLIC: &[&str] = &[
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/console",
    "/console/{asset}",
    "/a2a/{id}/.well-known/agent-card.json",
];

fn document(server: &Server) -> Value {
    let r = server.call("GET", "/openapi.json", None, &[], None);
    assert_eq!(r.status, 200, "no auth needed: {}", r.body);
    assert!(r.body.is_object(), "JSON: {}", r.body);
    r.body
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn the_document_lists_every_route_with_its_methods_and_nothing_else() {
    let server = Server::start();
    let doc = document(&server);
    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(p, item)| {
            let methods = item.as_object().expect("item").keys().cloned().collect();
            (p.clone(), methods)
        })
        .collect();
    let served: BTreeMap<String, BTreeSet<String>> = ROUTES
        .iter()
        .map(|(p, ms)| (p.to_string(), ms.iter().map(|m| m.to_string()).collect()))
        .collect();
    assert_eq!(documented, served);
}

/// Each listed route is really served: none falls to the catch-all 404 of unknown routes.
#[test]
fn every_listed_route_is_served() {
    let server = Server::start();
    let id = server.create(&valid_spec("Routes"));
    let run = server.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(run.status, 200, "{}", run.body);
    let rid = unknown_id();
    for (path, methods) in ROUTES {
        let concrete = path
            .replace("{id}", &id)
            .replace("{cid}", "none")
            .replace("{member}", "alice")
            .replace("{kid}", "key_none")
            .replace("{rid}", &rid)
            .replace("{asset}", "app.js")
            .replace("{tid}", "thread-1");
        for method in *methods {
            let body = matches!(*method, "post" | "put").then_some("{}");
            let r = server.call(
                &method.to_uppercase(),
                &concrete,
                Some(common::TOKEN),
                &[],
                body,
            );
            let message = r.body["error"]["message"].as_str().unwrap_or("");
            assert!(
                !message.starts_with("route "),
                "{method} {path} is not served: {}",
                r.body
            );
        }
    }
}

/// A method a route does not have answers 405 `method_not_allowed`, `Allow` naming exactly the
/// methods listed above: so the list holds every method the server serves, not only some.
#[test]
fn other_methods_answer_405_with_allow() {
    let server = Server::start();
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    for (path, methods) in ROUTES {
        let concrete = path
            .replace("{id}", &unknown_id())
            .replace("{cid}", "c")
            .replace("{member}", "m")
            .replace("{kid}", "k")
            .replace("{rid}", &unknown_id())
            .replace("{asset}", "app.js")
            .replace("{tid}", "t");
        let resp = match agent
            .request("PATCH", &format!("{}{concrete}", server.base))
            .call()
        {
            Err(ureq::Error::Status(_, r)) => r,
            other => panic!("PATCH {path}: {other:?}"),
        };
        assert_eq!(resp.status(), 405, "PATCH {path}");
        let mut allow: Vec<String> = resp
            .header("Allow")
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_lowercase())
            .collect();
        allow.sort();
        let mut expected: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        expected.sort();
        assert_eq!(allow, expected, "Allow of {path}");
        let body: Value = resp.into_json().expect("JSON");
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
}

/// A well-formed agent or request id that names nothing.
fn unknown_id() -> String {
    "0190a8c4-0000-7000-8000-000000000000".into()
}

/// OpenAPI 3.x: the version, the required fields, every `$ref` resolves, every operation has
/// an id (unique), responses, and the path parameters its path names.
#[test]
fn the_document_is_openapi_3() {
    let server = Server::start();
    let doc = document(&server);
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, got {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // An independent OpenAPI 3.1 reader (not utoipa, which wrote it) takes it whole.
    let parsed = oas3::from_json(doc.to_string()).expect("parses as OpenAPI 3.1");
    assert_eq!(parsed.paths.map(|p| p.len()), Some(ROUTES.len()));

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').expect("local $ref");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }

    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}: no responses"
        );
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().expect("name"))
                    .collect()
            })
            .unwrap_or_default();
        // `{name}` anywhere in a segment (A2A's `/tasks/{tid}:cancel`).
        let named: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(name, _)| name))
            .collect();
        assert_eq!(declared, named, "{method} {path}: path parameters");
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// Auth, the error shape, the statuses and the headers that matter are all in the document.
#[test]
fn auth_errors_parameters_and_headers_are_documented() {
    let server = Server::start();
    let doc = document(&server);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], json!(["error"]));
    let object = &doc["components"]["schemas"]["ErrorObject"];
    for field in ["code", "message", "details"] {
        assert!(object["properties"][field].is_object(), "error.{field}");
    }

    let status = |path: &str, method: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}"))
            .keys()
            .cloned()
            .collect()
    };
    for (path, method, op) in operations(&doc) {
        let codes = status(&path, &method);
        if PUBLIC.contains(&path.as_str()) {
            assert_eq!(op["security"], json!([{}]), "{path} needs no auth");
            continue;
        }
        assert!(codes.contains("401"), "{method} {path}: 401");
        assert!(codes.contains("503"), "{method} {path}: 503");
        if path.contains("{id}") {
            assert!(codes.contains("404"), "{method} {path}: 404");
        }
        if op.get("requestBody").is_some() {
            for c in ["400", "408", "413", "415"] {
                assert!(codes.contains(c), "{method} {path}: {c}");
            }
        }
        let headers: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "header")
                    .map(|p| p["name"].as_str().expect("name"))
                    .collect()
            })
            .unwrap_or_default();
        let writes_the_log = matches!(method.as_str(), "post" | "put" | "delete")
            && !path.contains("/invoke")
            && !path.contains("/preview")
            && !path.contains("/requests/")
            && !path.contains("/chat/completions")
            && !path.starts_with("/a2a/")
            && !path.contains("/threads/")
            && path != "/v1/agents";
        if writes_the_log {
            assert!(headers.contains("If-Match"), "{method} {path}: If-Match");
            assert!(codes.contains("412"), "{method} {path}: 412");
        }
    }
    for (path, method) in [
        ("/v1/agents/{id}/invoke", "post"),
        ("/v1/agents/{id}/invoke/async", "post"),
    ] {
        let op = &doc["paths"][path][method];
        let headers: Vec<&str> = op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        assert!(headers.contains(&"Idempotency-Key"), "{path}");
        assert!(headers.contains(&"X-Hangar-Member"), "{path}");
        for c in ["403", "409", "429"] {
            assert!(status(path, method).contains(c), "{method} {path}: {c}");
        }
    }
    let invoke = status("/v1/agents/{id}/invoke", "post");
    for c in ["200", "502", "504"] {
        assert!(invoke.contains(c), "invoke: {c}");
    }
    let deploy = &doc["paths"]["/v1/agents/{id}/deploy"]["post"];
    assert!(deploy["responses"]["422"].is_object(), "deploy: 422");
    let query = |path: &str| -> Vec<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(query("/v1/agents"), ["status", "q"]);
    assert_eq!(query("/v1/agents/{id}/events"), ["after", "limit"]);
    assert_eq!(query("/v1/agents/{id}/history"), ["at"]);
    assert_eq!(query("/v1/agents/{id}/requests/{rid}"), ["wait"]);
    let id = &doc["paths"]["/v1/agents/{id}"]["get"]["parameters"][0];
    assert_eq!(id["schema"]["format"], "uuid");
}
