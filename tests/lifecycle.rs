//! The management lifecycle as a team lives it: create, edit, deploy, redeploy, roll back,
//! undeploy, and the read-only views in between.

mod common;

use common::{valid_spec, Server, TOKEN};
use serde_json::{json, Value};

#[test]
fn create_deploy_redeploy_rollback_undeploy() {
    let s = Server::start();
    let created = s.post("/v1/agents", &valid_spec("Greeter"));
    assert_eq!(created.status, 201);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.location.as_deref(),
        Some(format!("/v1/agents/{id}").as_str())
    );
    assert_eq!(created["status"], "draft");
    assert_eq!(created["seq"], 1);
    assert_eq!(created["name"], "Greeter");

    let got = s.get(&format!("/v1/agents/{id}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.etag.as_deref(), Some("\"1\""));
    assert_eq!(got["draft"], created["draft"]);

    // Not deployed yet: no deployment view, no versions, undeploy refused.
    let d = s.get(&format!("/v1/agents/{id}/deployment"));
    assert_eq!((d.status, d.code()), (404, "not_deployed"));
    let u = s.post(&format!("/v1/agents/{id}/undeploy"), &json!({}));
    assert_eq!((u.status, u.code()), (409, "not_deployed"));

    let v = s.get(&format!("/v1/agents/{id}/validation"));
    assert_eq!(v.status, 200);
    assert_eq!(v["ok"], true, "{}", v.body);

    // Deploy: version 1, endpoints and snippets with the real URL.
    let dep = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(dep.status, 200, "{}", dep.body);
    assert_eq!(dep["version"], 1);
    assert_eq!(dep["agent_id"], id.as_str());
    let sync_url = dep["endpoints"]["sync"]
        .as_str()
        .expect("sync url")
        .to_owned();
    assert_eq!(sync_url, format!("{}/v1/agents/{id}/invoke", s.base));
    assert_eq!(
        dep["endpoints"]["async_poll"],
        format!("{}/v1/agents/{id}/invoke/async", s.base)
    );
    assert!(dep["endpoints"]["async_push"].is_null());
    for lang in ["curl", "python", "node"] {
        let snippet = dep["snippets"][lang].as_str().expect("snippet");
        assert!(
            snippet.contains(&sync_url),
            "{lang} snippet names the sync URL"
        );
        assert!(!snippet.contains(TOKEN), "no token in snippets");
    }
    let openai = dep["snippets"]["openai"].as_str().expect("openai snippet");
    assert!(openai.contains(&format!("base_url=\"{}/v1/agents/{id}\"", s.base)));
    let card = format!("{}/a2a/{id}/.well-known/agent-card.json", s.base);
    assert_eq!(dep["endpoints"]["agent_card"], card.as_str());
    assert!(openai.contains(&card) && !openai.contains(TOKEN));
    assert!(dep["deployed_at"].as_str().is_some());
    assert_eq!(dep["spec"]["name"], "Greeter");

    let agent = s.get(&format!("/v1/agents/{id}"));
    assert_eq!(agent["status"], "live");
    assert_eq!(agent["live_version"], 1);
    assert_eq!(agent["deployed_at"], dep["deployed_at"]);

    // Edit the draft: the live version is untouched until redeploy.
    let mut v2 = valid_spec("Greeter");
    v2["description"] = json!("Second edition");
    assert_eq!(s.put(&format!("/v1/agents/{id}/draft"), &v2).status, 200);
    assert_eq!(
        s.get(&format!("/v1/agents/{id}/deployment"))["spec"]["description"],
        "Greeter answers greetings"
    );

    let dep2 = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(dep2.status, 200, "{}", dep2.body);
    assert_eq!(dep2["version"], 2);
    assert_eq!(dep2["spec"]["description"], "Second edition");
    assert_eq!(
        dep2["endpoints"], dep["endpoints"],
        "endpoint URLs never change across redeploys"
    );

    // Rollback to version 1: a new version whose snapshot is version 1's.
    let back = s.post(&format!("/v1/agents/{id}/deploy"), &json!({"version": 1}));
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back["version"], 3);
    assert_eq!(back["rollback_of"], 1);
    assert_eq!(back["spec"], dep["spec"]);
    assert_eq!(back["endpoints"], dep["endpoints"]);
    let bad = s.post(&format!("/v1/agents/{id}/deploy"), &json!({"version": 42}));
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["error"]["details"]["field"], "version");

    let versions = s.get(&format!("/v1/agents/{id}/versions"));
    let list = versions["versions"].as_array().expect("versions");
    assert_eq!(
        list.iter()
            .map(|v| v["version"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(list
        .iter()
        .all(|v| v["deployed_at"].is_string() && v["seq"].is_u64()));
    assert_eq!(list[2]["live"], true);

    // Live search finds it; after undeploy it is gone from it, back to draft.
    let live = s.get("/v1/agents?status=live");
    assert!(live["agents"]
        .as_array()
        .expect("list")
        .iter()
        .any(|a| a["id"] == id.as_str()));
    let und = s.post(&format!("/v1/agents/{id}/undeploy"), &json!({}));
    assert_eq!(und.status, 200);
    assert_eq!(und["status"], "draft");
    assert!(und["live_version"].is_null());
    let live = s.get("/v1/agents?status=live");
    assert!(!live["agents"]
        .as_array()
        .expect("list")
        .iter()
        .any(|a| a["id"] == id.as_str()));
    let drafts = s.get("/v1/agents?status=draft");
    assert!(drafts["agents"]
        .as_array()
        .expect("list")
        .iter()
        .any(|a| a["id"] == id.as_str()));
    assert_eq!(s.get(&format!("/v1/agents/{id}/deployment")).status, 404);

    // Versions keep growing after an undeploy.
    let again = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(again["version"], 4);
}

#[test]
fn search_matches_name_and_description() {
    let s = Server::start();
    let a = s.create(&valid_spec("Weather helper"));
    let mut spec = valid_spec("Billing");
    spec["description"] = json!("Explains invoices and the WEATHER of payments");
    let b = s.create(&spec);
    let c = s.create(&valid_spec("Travel"));
    let ids = |q: &str| -> Vec<String> {
        s.get(&format!("/v1/agents?q={q}"))["agents"]
            .as_array()
            .expect("list")
            .iter()
            .map(|x| x["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let found = ids("weather");
    assert!(found.contains(&a) && found.contains(&b) && !found.contains(&c));
    assert_eq!(
        s.get("/v1/agents").body["agents"].as_array().map(Vec::len),
        Some(3)
    );
    let bad = s.get("/v1/agents?status=retired");
    assert_eq!(
        (bad.status, bad.body["error"]["details"]["field"].as_str()),
        (400, Some("status"))
    );
}

#[test]
fn summary_reports_profile_tools_connections_and_blockers() {
    let s = Server::start();
    let mut spec = valid_spec("Weather");
    spec["knowledge"] = json!([{"name": "faq.md", "content": "Rain is wet."}]);
    spec["tools"] = json!([
        {"name": "forecast", "connection": "weather", "security": "api_key", "method": "GET", "path": "/f"},
        {"name": "alerts", "connection": "weather", "security": "bearer", "method": "GET", "path": "/a"}
    ]);
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "weather", "display_name": "Weather API", "server": "https://api.example.com",
                "credentials": "team", "auth": {"type": "api_key", "header": "X-Api-Key", "key": "k-123"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let sum = s.get(&format!("/v1/agents/{id}/summary"));
    assert_eq!(sum.status, 200);
    assert_eq!(sum["profile"]["name"], "Weather");
    assert_eq!(sum["profile"]["model"]["provider"], "echo");
    assert_eq!(sum["knowledge"], json!([{"name": "faq.md", "bytes": 12}]));
    assert_eq!(sum["tools"][0]["security_matches"], true);
    assert_eq!(sum["tools"][1]["security_matches"], false);
    assert_eq!(sum["behavior"]["instructions"], "You answer briefly.");
    let conn = &sum["connections"][0];
    assert_eq!(conn["id"], "weather");
    assert_eq!(conn["associated_tools"], json!(["forecast", "alerts"]));
    assert_eq!(conn["live"], false);
    // v1.1: the status of its credentials' last check; never checked yet.
    assert_eq!(conn["status"], "unchecked");
    assert_eq!(conn["checked_at"], Value::Null);
    assert_eq!(sum["can_deploy"], false);
    let codes: Vec<&str> = sum["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|p| p["code"].as_str())
        .collect();
    assert!(codes.contains(&"security_mismatch"), "{codes:?}");
}
