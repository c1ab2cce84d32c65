//! Model nodes that call tools, driven by a scripted OpenAI-compatible server: a two-step loop,
//! a failing tool, `max_steps`, a collaborator and the knowledge search as tools, the model
//! deadline inside the loop, cancellation mid-call, and validation of the new fields.

mod common;

use std::time::Duration;

use common::fake_http::{FakeServer, Reply};
use common::scripted_model::{Say, ScriptedModel};
use common::Server;
use serde_json::{json, Value};

/// An agent whose model node `ask` may call `tools`; `forecast` goes to `tool_url` with a bearer
/// token, the model to `model_url` with another.
fn agentic_spec(model_url: &str, tools: Value, extra: Value) -> Value {
    let mut ask = json!({"id": "ask", "type": "model", "prompt": "{{ input.q }}", "tools": tools, "next": "done"});
    if let (Some(ask), Value::Object(extra)) = (ask.as_object_mut(), extra) {
        ask.extend(extra);
    }
    json!({
        "name": "Weather agent", "description": "Answers with tools",
        "model": {"provider": "openai", "name": "scripted", "base_url": model_url, "connection": "llm", "timeout_s": 30},
        "instructions": "Use the tools.",
        "knowledge": [{"name": "faq.md", "content": "Refunds take 14 days.\n\nWe open at 9."}],
        "tools": [{"name": "forecast", "connection": "weather", "security": "bearer", "method": "GET",
                   "path": "/forecast?city={{ args.city }}", "description": "The forecast for a city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "flow": {"start": "ask", "nodes": [ask,
            {"id": "done", "type": "end", "output": {"answer": "{{ nodes.ask.text }}", "calls": "{{ nodes.ask.tool_calls }}"}}]}
    })
}

/// Creates `spec` with its two connections and deploys it.
fn deployed(s: &Server, spec: &Value, model_url: &str, tool_url: &str) -> String {
    let id = s.create(spec);
    for (cid, server, token) in [
        ("llm", model_url, "sk-model"),
        ("weather", tool_url, "w-token"),
    ] {
        let r = s.post(
            &format!("/v1/agents/{id}/connections"),
            &json!({"id": cid, "server": server, "auth": {"type": "bearer", "token": token}}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
    id
}

fn weather() -> FakeServer {
    FakeServer::start(|req| Reply::json(200, json!({"sky": "sunny", "path": req.path})))
}

fn invoke(s: &Server, id: &str, q: &str) -> common::Resp {
    s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {"q": q}}),
    )
}

/// The `tool` messages of a chat request, by their content.
fn tool_results(sent: &Value) -> Vec<String> {
    sent["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().expect("content").to_owned())
        .collect()
}

#[test]
fn a_two_step_tool_loop_calls_the_tool_and_answers() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::call("forecast", json!({"city": "Oslo"})),
        Say::text("Sunny in Oslo."),
    ]);
    let tool = weather();
    let id = deployed(
        &s,
        &agentic_spec(model.url(), json!(["forecast"]), json!({})),
        model.url(),
        &tool.url,
    );

    let r = invoke(&s, &id, "Weather in Oslo?");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["output"]["answer"], "Sunny in Oslo.");
    assert_eq!(
        r["output"]["calls"],
        json!([{"name": "forecast", "args": {"city": "Oslo"}, "status": "ok"}])
    );
    // The tool got the call the model asked for, with the tool's own credentials.
    let calls = tool.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/forecast?city=Oslo");
    assert_eq!(calls[0].headers["authorization"], "Bearer w-token");
    // The model was offered the tool, then sent its result back.
    let sent = model.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0]["tools"],
        json!([{"type": "function", "function": {"name": "forecast", "description": "The forecast for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
    assert_eq!(
        sent[0]["messages"],
        json!([{"role": "system", "content": "Use the tools."}, {"role": "user", "content": "Weather in Oslo?"}])
    );
    let second = &sent[1]["messages"];
    assert_eq!(second[2]["role"], "assistant");
    assert_eq!(second[2]["tool_calls"][0]["function"]["name"], "forecast");
    assert_eq!(second[3]["tool_call_id"], second[2]["tool_calls"][0]["id"]);
    assert!(tool_results(&sent[1])[0].contains("sunny"), "{}", sent[1]);
    for req in model.server.requests() {
        assert_eq!(req.headers["authorization"], "Bearer sk-model");
        assert_eq!(req.path, "/chat/completions");
    }
}

#[test]
fn a_failing_tool_is_told_to_the_model_which_answers_anyway() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::call("forecast", json!({"city": "Atlantis"})),
        Say::text("I could not get the forecast."),
    ]);
    let tool = FakeServer::start(|_| Reply::json(503, json!({"error": "down"})));
    let id = deployed(
        &s,
        &agentic_spec(model.url(), json!(["forecast"]), json!({})),
        model.url(),
        &tool.url,
    );
    let r = invoke(&s, &id, "Weather?");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["output"]["calls"][0]["status"], "failed");
    let told = &tool_results(&model.sent()[1])[0];
    assert!(
        told.contains("tool_failed") && told.contains("503"),
        "{told}"
    );
}

#[test]
fn max_steps_ends_a_model_that_keeps_calling_tools() {
    let s = Server::start();
    let model = ScriptedModel::start(
        (0..5)
            .map(|_| Say::call("forecast", json!({"city": "Oslo"})))
            .collect(),
    );
    let tool = weather();
    let spec = agentic_spec(model.url(), json!(["forecast"]), json!({"max_steps": 2}));
    let id = deployed(&s, &spec, model.url(), &tool.url);
    let r = invoke(&s, &id, "Loop");
    assert_eq!((r.status, r.code()), (502, "run_failed"), "{}", r.body);
    assert_eq!(
        r.body["error"]["details"]["error"]["code"],
        "max_steps_exceeded"
    );
    assert_eq!(model.sent().len(), 2, "two model calls, no third");
    assert_eq!(tool.requests().len(), 2);
}

#[test]
fn a_collaborator_and_the_knowledge_search_are_tools_too() {
    let s = Server::start();
    let helper = s.create(&json!({
        "name": "Shouter", "description": "Shouts", "model": {"provider": "echo", "name": "e"},
        "flow": {"start": "h", "nodes": [{"id": "h", "type": "end", "output": {"shout": "{{ input.word | upper }}"}}]}
    }));
    let r = s.post(&format!("/v1/agents/{helper}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let model = ScriptedModel::start(vec![
        Say::Calls(vec![
            (helper.clone(), json!({"word": "hello"})),
            ("knowledge".into(), json!({"query": "refunds"})),
        ]),
        Say::text("HELLO; refunds take 14 days."),
    ]);
    let tool = weather();
    let mut spec = agentic_spec(
        model.url(),
        json!(["forecast", "knowledge", helper]),
        json!({}),
    );
    spec["collaborators"] = json!([helper]);
    let id = deployed(&s, &spec, model.url(), &tool.url);

    let summary = s.get(&format!("/v1/agents/{id}/summary"));
    let kinds: Vec<&str> = summary["model_tools"][0]["tools"]
        .as_array()
        .expect("model tools")
        .iter()
        .map(|t| t["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        ["tool", "knowledge", "collaborator"],
        "{}",
        summary.body
    );

    let r = invoke(&s, &id, "Shout and look up");
    assert_eq!(r.status, 200, "{}", r.body);
    let results = tool_results(&model.sent()[1]);
    assert!(results[0].contains("HELLO"), "{results:?}");
    assert!(results[1].contains("Refunds take 14 days."), "{results:?}");
    let sent = model.sent();
    let names: Vec<&str> = sent[0]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["forecast", "knowledge", helper.as_str()]);
}

#[test]
fn the_model_deadline_fires_inside_the_loop_and_drops_the_call() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::call("knowledge", json!({"query": "hours"})),
        Say::Slowly(Duration::from_secs(10), Box::new(Say::text("too late"))),
    ]);
    let tool = weather();
    let mut spec = agentic_spec(model.url(), json!(["forecast", "knowledge"]), json!({}));
    spec["model"]["timeout_s"] = json!(1);
    let id = deployed(&s, &spec, model.url(), &tool.url);
    let r = invoke(&s, &id, "When do you open?");
    assert_eq!((r.status, r.code()), (504, "timeout"), "{}", r.body);
    assert_eq!(r.body["error"]["details"]["limit"], "model");
    assert_eq!(r.body["error"]["details"]["node"], "ask");
    assert_eq!(
        model.server.wait_dropped(1, Duration::from_secs(5)).len(),
        1
    );
}

#[test]
fn cancelling_or_undeploying_stops_a_loop_mid_call() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![Say::Slowly(
        Duration::from_secs(20),
        Box::new(Say::text("never")),
    )]);
    let tool = weather();
    let id = deployed(
        &s,
        &agentic_spec(model.url(), json!(["forecast"]), json!({})),
        model.url(),
        &tool.url,
    );
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"q": "slow"}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    model.wait_sent(1, Duration::from_secs(5));
    let r = s.delete(&format!("/v1/agents/{id}/requests/{rid}"));
    assert_eq!(
        (r.status, r["status"].as_str()),
        (200, Some("cancelled")),
        "{}",
        r.body
    );
    assert_eq!(
        model.server.wait_dropped(1, Duration::from_secs(5)).len(),
        1
    );

    // Undeploying does the same to a loop in flight.
    model.then(Say::Slowly(
        Duration::from_secs(20),
        Box::new(Say::text("never")),
    ));
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"q": "slow"}}),
    );
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    model.wait_sent(2, Duration::from_secs(5));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/undeploy"), &json!({}))
            .status,
        200
    );
    assert_eq!(
        model.server.wait_dropped(2, Duration::from_secs(5)).len(),
        2
    );
    let run = s.get(&format!("/v1/agents/{id}/requests/{rid}"));
    assert_eq!(
        run["error"]["details"]["reason"], "undeployed",
        "{}",
        run.body
    );
}

#[test]
fn model_tools_are_validated() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![]);
    let mut spec = agentic_spec(
        model.url(),
        json!(["forecast", "teleport", "bare"]),
        json!({"max_steps": 21}),
    );
    spec["tools"]
        .as_array_mut()
        .expect("tools")
        .push(json!({"name": "bare", "connection": "weather", "security": "bearer", "path": "/x"}));
    let id = s.create(&spec);
    let v = s.get(&format!("/v1/agents/{id}/validation"));
    let problems: Vec<(String, String)> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|p| {
            (
                p["code"].as_str().unwrap().into(),
                p["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    for expected in [
        ("unknown_tool", "flow.nodes[0].tools[1]"),
        ("missing_parameters", "flow.nodes[0].tools[2]"),
        ("max_steps_out_of_range", "flow.nodes[0].max_steps"),
    ] {
        assert!(
            problems.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {problems:?}"
        );
    }
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
}

/// The scripted server streams when asked, as an OpenAI-compatible server does: what a test of
/// streamed model nodes relies on.
#[test]
fn the_scripted_model_streams_when_asked() {
    let model = ScriptedModel::start(vec![Say::text("Hello there")]);
    let resp = ureq::post(&format!("{}/chat/completions", model.url()))
        .send_json(json!({"model": "m", "stream": true, "messages": []}))
        .expect("answers");
    assert_eq!(resp.header("Content-Type"), Some("text/event-stream"));
    let body = resp.into_string().expect("text");
    let chunks: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .take_while(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk"))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello there");
    assert!(body.trim_end().ends_with("data: [DONE]"));
    assert_eq!(model.sent()[0]["stream"], true);
}

/// A tool the model calls on a `member` connection uses the caller's own credentials, as a tool
/// node does; a caller acting as no member gets none, and the model is told.
#[test]
fn calls_in_the_loop_use_the_callers_member_credentials() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::call("forecast", json!({"city": "Oslo"})),
        Say::text("done"),
        Say::call("forecast", json!({"city": "Oslo"})),
        Say::text("no credentials"),
    ]);
    let tool = weather();
    let mut spec = agentic_spec(model.url(), json!(["forecast"]), json!({}));
    spec["tools"][0]["security"] = json!("api_key");
    let id = s.create(&spec);
    let r = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "llm", "server": model.url(), "auth": {"type": "bearer", "token": "sk-model"}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "weather", "server": tool.url, "credentials": "member",
                "auth": {"type": "api_key", "header": "X-Member-Key"}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.put(
        &format!("/v1/agents/{id}/connections/weather/members/alice"),
        &json!({"type": "api_key", "key": "alice-secret"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    let key = |member: Option<&str>| {
        let body = member.map_or(json!({}), |m| json!({ "member": m }));
        let r = s.post(&format!("/v1/agents/{id}/keys"), &body);
        r["key"].as_str().expect("key").to_owned()
    };
    let call = |token: &str| {
        s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke"),
            Some(token),
            &[],
            Some(r#"{"input": {"q": "Weather?"}}"#),
        )
    };
    let r = call(&key(Some("alice")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["output"]["calls"][0]["status"], "ok");
    assert_eq!(tool.requests()[0].headers["x-member-key"], "alice-secret");

    let r = call(&key(None));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["output"]["calls"][0]["status"], "failed");
    assert!(tool_results(&model.sent()[3])[0].contains("missing_member_credentials"));
    assert_eq!(tool.requests().len(), 1, "nothing sent without credentials");
}
