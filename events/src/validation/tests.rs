//! The rules' tests, each on the contract's example after one edit.

use std::collections::HashMap;

use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::secret::Cipher;

const ME: Uuid = Uuid::from_u128(1);
const LIVE: Uuid = Uuid::from_u128(2);
const DRAFT: Uuid = Uuid::from_u128(3);

/// A directory of two other agents: one live, one still a draft.
struct Agents(HashMap<Uuid, Collaborator>);

impl Directory for Agents {
    fn collaborator(&self, id: Uuid) -> Option<Collaborator> {
        self.0.get(&id).cloned()
    }
}

fn agents() -> Agents {
    let agent = |name: &str, live| Collaborator {
        name: name.into(),
        live,
    };
    Agents(HashMap::from([
        (LIVE, agent("Translator", true)),
        (DRAFT, agent("Summarizer", false)),
    ]))
}

fn connection(id: &str, auth: Value) -> Connection<Sealed> {
    let plain: Connection<String> = serde_json::from_value(
        json!({"id": id, "server": "https://api.example.com", "auth": auth}),
    )
    .expect("connection parses");
    plain
        .admit(Uuid::nil(), &Cipher::from_key(&[0; 32]))
        .expect("connection admitted")
}

fn weather() -> Connection<Sealed> {
    connection(
        "weather",
        json!({"type": "api_key", "header": "X-Api-Key", "key": "k"}),
    )
}

/// The contract's example, with a tool node so that its tool is used.
fn example() -> Value {
    json!({
      "name": "Weather helper", "description": "Answers weather questions",
      "model": {"provider": "echo", "name": "echo-1", "timeout_s": 30},
      "voice": null,
      "instructions": "You answer briefly.",
      "knowledge": [{"name": "faq.md", "content": "..."}],
      "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                 "method": "GET", "path": "/forecast?city={{ args.city }}"}],
      "collaborators": [],
      "flow": {"start": "greet", "nodes": [
        {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.name }}"}, "next": "sky"},
        {"id": "sky", "type": "tool", "tool": "forecast", "args": {"city": "{{ input.city }}"}, "next": "done"},
        {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.greet.text }}"}}
      ]}
    })
}

fn check_with(spec: Value, connections: &[Connection<Sealed>]) -> Report {
    let spec: AgentSpec = serde_json::from_value(spec).expect("spec parses");
    validate(ME, &spec, connections, &agents())
}

fn check(spec: Value) -> Report {
    check_with(spec, &[weather()])
}

/// The example after `edit`.
fn edited(edit: impl FnOnce(&mut Value)) -> Report {
    let mut spec = example();
    edit(&mut spec);
    check(spec)
}

fn has(problems: &[Problem], code: &str, path: &str) -> bool {
    problems
        .iter()
        .any(|p| p.code == code && p.path == path && !p.message.is_empty())
}

#[track_caller]
fn assert_error(report: &Report, code: &str, path: &str) {
    assert!(
        has(&report.errors, code, path),
        "expected error {code} at {path}, got {report:#?}"
    );
    assert!(!report.ok());
}

#[track_caller]
fn assert_warning(report: &Report, code: &str, path: &str) {
    assert!(
        has(&report.warnings, code, path),
        "expected warning {code} at {path}, got {report:#?}"
    );
    assert!(!report.ok());
}

#[track_caller]
fn assert_only_error(report: &Report, code: &str, path: &str) {
    assert_error(report, code, path);
    assert_eq!(report.errors.len(), 1, "{report:#?}");
    assert!(report.warnings.is_empty(), "{report:#?}");
}

#[test]
fn contract_example_is_ok() {
    let report = check(example());
    assert!(report.ok(), "{report:#?}");
}

#[test]
fn every_node_kind_and_openai_model_can_be_ok() {
    let spec = json!({
      "name": "All kinds", "description": "Uses every node type",
      "model": {"provider": "openai", "name": "gpt", "base_url": "https://api.example.com/v1",
                "connection": "llm", "timeout_s": 600},
      "knowledge": [{"name": "faq.md", "content": "..."}],
      "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                 "path": "/f", "body": {"q": ["{{ args.q }}", 1, null]}}],
      "collaborators": [LIVE.to_string()],
      "flow": {"start": "ask", "nodes": [
        {"id": "ask", "type": "model", "prompt": "{{ input.q }}", "timeout_s": 1, "next": "look"},
        {"id": "look", "type": "knowledge", "query": "{{ nodes.ask.text }}", "top_k": 50, "next": "pick"},
        {"id": "pick", "type": "condition",
         "branches": [{"when": "input.n > 1", "next": "call"}], "else": "other"},
        {"id": "call", "type": "tool", "tool": "forecast", "args": {"q": "x"}, "next": "done"},
        {"id": "other", "type": "agent", "agent": LIVE.to_string(), "input": {"t": "{{ input }}"}, "next": "done"},
        {"id": "done", "type": "end", "output": "{{ nodes }}"}
      ]}
    });
    let llm = connection("llm", json!({"type": "bearer", "token": "t"}));
    let report = check_with(spec, &[weather(), llm]);
    assert!(report.ok(), "{report:#?}");
}

#[test]
fn missing_name_and_description() {
    let report = edited(|s| {
        s["name"] = json!("  ");
        s["description"] = json!("");
    });
    assert_error(&report, "missing_name", "name");
    assert_error(&report, "missing_description", "description");
    assert_eq!(report.errors.len(), 2);
}

#[test]
fn no_flow_without_flow_or_nodes() {
    let report = edited(|s| s["flow"] = Value::Null);
    assert_error(&report, "no_flow", "flow");
    let report = edited(|s| s["flow"]["nodes"] = json!([]));
    assert_error(&report, "no_flow", "flow.nodes");
}

#[test]
fn duplicate_node_names_the_second() {
    let report = edited(|s| s["flow"]["nodes"][1]["id"] = json!("greet"));
    assert_error(&report, "duplicate_node", "flow.nodes[1].id");
}

#[test]
fn unknown_start() {
    let report = edited(|s| s["flow"]["start"] = json!("hello"));
    assert_only_error(&report, "unknown_start", "flow.start");
}

#[test]
fn unknown_next_of_a_node() {
    let report = edited(|s| s["flow"]["nodes"][1]["next"] = json!("nowhere"));
    assert_error(&report, "unknown_next", "flow.nodes[1].next");
    assert_error(&report, "no_reachable_end", "flow.start");
    assert_warning(&report, "unreachable_node", "flow.nodes[2]");
}

#[test]
fn unknown_next_of_a_branch_and_unknown_else() {
    let report = edited(|s| {
        s["flow"]["nodes"][0] = json!({"id": "greet", "type": "condition",
            "branches": [{"when": "true", "next": "sky"}, {"when": "false", "next": "nope"}],
            "else": "gone"});
    });
    assert_error(&report, "unknown_next", "flow.nodes[0].branches[1].next");
    assert_error(&report, "unknown_else", "flow.nodes[0].else");
    assert_eq!(report.errors.len(), 2, "{report:#?}");
}

#[test]
fn missing_next_on_a_plain_node_and_an_empty_condition() {
    let report = edited(|s| {
        s["flow"]["nodes"][1]
            .as_object_mut()
            .expect("node")
            .remove("next");
    });
    assert_error(&report, "missing_next", "flow.nodes[1].next");
    let report = edited(|s| {
        s["flow"]["nodes"][0] = json!({"id": "greet", "type": "condition", "branches": []});
    });
    assert_error(&report, "missing_next", "flow.nodes[0].branches");
}

#[test]
fn no_reachable_end() {
    let report = edited(|s| {
        s["flow"]["nodes"][2] =
            json!({"id": "done", "type": "transform", "output": "x", "next": "greet"});
    });
    assert_error(&report, "no_reachable_end", "flow.start");
}

#[test]
fn cycle_is_reported_once_with_its_closing_edge_and_nodes() {
    let report = edited(|s| {
        s["flow"]["nodes"][1] = json!({"id": "sky", "type": "condition",
            "branches": [{"when": "input.again", "next": "greet"},
                         {"when": "input.twice", "next": "greet"}],
            "else": "done"});
    });
    let cycles: Vec<&Problem> = report.errors.iter().filter(|p| p.code == "cycle").collect();
    assert_eq!(cycles.len(), 1, "{report:#?}");
    assert_eq!(cycles[0].path, "flow.nodes[1].branches[0].next");
    assert!(
        cycles[0].message.contains("'greet' → 'sky' → 'greet'"),
        "{}",
        cycles[0].message
    );
}

#[test]
fn self_loop_is_a_cycle() {
    let report = edited(|s| s["flow"]["nodes"][2]["next"] = json!("done"));
    assert_only_error(&report, "cycle", "flow.nodes[2].next");
}

#[test]
fn unreachable_node_warning() {
    let report = edited(|s| {
        let nodes = s["flow"]["nodes"].as_array_mut().expect("nodes");
        nodes.push(json!({"id": "lost", "type": "end", "output": {}}));
    });
    assert!(report.errors.is_empty(), "{report:#?}");
    assert_warning(&report, "unreachable_node", "flow.nodes[3]");
}

#[test]
fn bad_template_points_into_the_json() {
    let report = edited(|s| {
        s["flow"]["nodes"][0]["output"]["text"] = json!("Hello {{ input.name");
        s["flow"]["nodes"][1]["args"] = json!({"list": ["ok", "{% if %}"]});
        s["flow"]["nodes"][2]["output"] = json!("{{ }}");
        s["tools"][0]["path"] = json!("/f?{{ args.city");
        s["tools"][0]["body"] = json!({"a": [{"b": "{% for %}"}]});
    });
    assert_error(&report, "bad_template", "tools[0].path");
    assert_error(&report, "bad_template", "tools[0].body.a[0].b");
    assert_error(&report, "bad_template", "flow.nodes[0].output.text");
    assert_error(&report, "bad_template", "flow.nodes[1].args.list[1]");
    assert_error(&report, "bad_template", "flow.nodes[2].output");
    assert_eq!(report.errors.len(), 5, "{report:#?}");
}

#[test]
fn bad_template_in_prompt_query_and_agent_input() {
    let report = edited(|s| {
        s["collaborators"] = json!([LIVE.to_string()]);
        s["flow"]["nodes"] = json!([
            {"id": "greet", "type": "model", "prompt": "{{", "next": "look"},
            {"id": "look", "type": "knowledge", "query": "{% endif %}", "next": "ask"},
            {"id": "ask", "type": "agent", "agent": LIVE.to_string(), "input": {"q": "{{ x ) }}"}, "next": "sky"},
            {"id": "sky", "type": "tool", "tool": "forecast", "next": "done"},
            {"id": "done", "type": "end"}
        ]);
    });
    assert_error(&report, "bad_template", "flow.nodes[0].prompt");
    assert_error(&report, "bad_template", "flow.nodes[1].query");
    assert_error(&report, "bad_template", "flow.nodes[2].input.q");
    assert_eq!(report.errors.len(), 3, "{report:#?}");
}

#[test]
fn bad_expression() {
    let report = edited(|s| {
        s["flow"]["nodes"][0] = json!({"id": "greet", "type": "condition",
            "branches": [{"when": "input.x >", "next": "sky"}, {"when": "", "next": "sky"}],
            "else": "sky"});
    });
    assert_error(&report, "bad_expression", "flow.nodes[0].branches[0].when");
    assert_error(&report, "bad_expression", "flow.nodes[0].branches[1].when");
    assert_eq!(report.errors.len(), 2, "{report:#?}");
}

#[test]
fn unknown_tool() {
    let report = edited(|s| s["flow"]["nodes"][1]["tool"] = json!("radar"));
    assert_error(&report, "unknown_tool", "flow.nodes[1].tool");
    assert_warning(&report, "unused_tool", "tools[0]");
}

#[test]
fn duplicate_tool() {
    let report = edited(|s| {
        let again = s["tools"][0].clone();
        s["tools"].as_array_mut().expect("tools").push(again);
    });
    assert_only_error(&report, "duplicate_tool", "tools[1].name");
}

#[test]
fn unknown_connection_of_a_tool_and_of_the_model() {
    let report = edited(|s| {
        s["tools"][0]["connection"] = json!("rain");
        s["model"]["connection"] = json!("llm");
    });
    assert_error(&report, "unknown_connection", "model.connection");
    assert_error(&report, "unknown_connection", "tools[0].connection");
    assert_warning(&report, "unused_connection", "connections.weather");
}

#[test]
fn security_mismatch() {
    let report = edited(|s| s["tools"][0]["security"] = json!("bearer"));
    assert_only_error(&report, "security_mismatch", "tools[0].security");
    let report = edited(|s| s["tools"][0]["security"] = json!("oauth"));
    assert_only_error(&report, "security_mismatch", "tools[0].security");
}

#[test]
fn collaborators_unknown_not_live_and_self() {
    let report = edited(|s| {
        s["collaborators"] = json!([
            "not-a-uuid",
            Uuid::from_u128(99).to_string(),
            DRAFT.to_string(),
            ME.to_string(),
            LIVE.to_string()
        ]);
    });
    assert_error(&report, "unknown_collaborator", "collaborators[0]");
    assert_error(&report, "unknown_collaborator", "collaborators[1]");
    assert_error(&report, "collaborator_not_live", "collaborators[2]");
    assert_error(&report, "self_collaborator", "collaborators[3]");
    assert_eq!(report.errors.len(), 4, "{report:#?}");
}

#[test]
fn agent_node_must_call_a_listed_collaborator_other_than_itself() {
    let agent_node = |agent: Uuid| {
        move |s: &mut Value| {
            s["flow"]["nodes"][0] = json!({"id": "greet", "type": "agent",
                "agent": agent.to_string(), "next": "sky"});
        }
    };
    assert_only_error(
        &edited(agent_node(LIVE)),
        "unknown_collaborator",
        "flow.nodes[0].agent",
    );
    assert_only_error(
        &edited(agent_node(ME)),
        "self_collaborator",
        "flow.nodes[0].agent",
    );
}

#[test]
fn unsupported_model() {
    assert_only_error(
        &edited(|s| s["model"] = Value::Null),
        "unsupported_model",
        "model",
    );
    assert_only_error(
        &edited(|s| s["model"]["provider"] = json!("claude")),
        "unsupported_model",
        "model.provider",
    );
    assert_only_error(
        &edited(|s| s["model"]["provider"] = json!("openai")),
        "unsupported_model",
        "model.base_url",
    );
    assert_only_error(
        &edited(|s| {
            s["model"]["provider"] = json!("openai");
            s["model"]["base_url"] = json!("ftp://llm.example.com");
        }),
        "unsupported_model",
        "model.base_url",
    );
}

#[test]
fn model_base_url_at_a_metadata_address_is_refused() {
    for url in [
        "http://169.254.169.254/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://metadata.google.internal/v1",
    ] {
        assert_only_error(
            &edited(|s| {
                s["model"]["provider"] = json!("openai");
                s["model"]["base_url"] = json!(url);
            }),
            "egress_denied",
            "model.base_url",
        );
    }
    // A model server on this host or the LAN is the operator's call, made at connect time.
    let report = edited(|s| {
        s["model"]["provider"] = json!("openai");
        s["model"]["base_url"] = json!("http://127.0.0.1:11434/v1");
    });
    assert!(report.errors.is_empty(), "{report:#?}");
}

/// A draft editor must not be able to send a connection's credentials to a host of their own
/// choosing: `base_url` must share the connection server's origin (scheme, host and port).
#[test]
fn model_connection_needs_base_url_on_its_server() {
    let llm = connection("llm", json!({"type": "bearer", "token": "t"}));
    let with = |url: &str| {
        let mut spec = example();
        spec["model"] =
            json!({"provider": "openai", "name": "gpt", "base_url": url, "connection": "llm"});
        check_with(spec, &[weather(), llm.clone()])
    };
    for url in [
        "https://attacker.example.net/v1",
        "http://api.example.com/v1",
        "https://api.example.com:8443/v1",
        "https://api.example.com.attacker.net/v1",
    ] {
        assert_only_error(&with(url), "connection_origin_mismatch", "model.base_url");
    }
    for url in ["https://api.example.com/v1", "https://API.example.com:443"] {
        let report = with(url);
        assert!(report.ok(), "{url}: {report:#?}");
    }
    // Without a connection no credential is sent: any server will do.
    let mut spec = example();
    spec["model"] = json!({"provider": "openai", "name": "gpt",
                           "base_url": "https://attacker.example.net/v1"});
    let report = check_with(spec, &[weather()]);
    assert!(report.errors.is_empty(), "{report:#?}");
}

/// Thousands of `not`s in one tag overflowed MiniJinja's parser (found by
/// tests/fuzz_validator.rs): such a tag is reported, never compiled.
#[test]
fn operator_chains_too_deep_to_compile_are_problems_not_crashes() {
    let deep = "not ".repeat(20_000);
    assert_only_error(
        &edited(|s| s["flow"]["nodes"][0]["output"]["text"] = json!(format!("{{{{ {deep}1 }}}}"))),
        "bad_template",
        "flow.nodes[0].output.text",
    );
    let report = edited(|s| {
        s["flow"]["nodes"][0] = json!({"id": "greet", "type": "condition",
            "branches": [{"when": format!("{deep}true"), "next": "sky"}]});
    });
    assert_error(&report, "bad_expression", "flow.nodes[0].branches[0].when");
}

/// `x }} y` made MiniJinja's expression lexer panic (found by tests/fuzz_validator.rs).
#[test]
fn an_expression_that_panics_the_compiler_is_a_problem() {
    for when in ["}}>", "x }} y", "-}}x", "}} "] {
        let report = edited(|s| {
            s["flow"]["nodes"][0] = json!({"id": "greet", "type": "condition",
                "branches": [{"when": when, "next": "sky"}]});
        });
        assert_error(&report, "bad_expression", "flow.nodes[0].branches[0].when");
    }
}

#[test]
fn timeouts_and_top_k_out_of_range() {
    let report = edited(|s| {
        s["model"]["timeout_s"] = json!(601);
        s["flow"]["nodes"][1]["timeout_s"] = json!(0);
    });
    assert_error(&report, "timeout_out_of_range", "model.timeout_s");
    assert_error(&report, "timeout_out_of_range", "flow.nodes[1].timeout_s");
    assert_eq!(report.errors.len(), 2, "{report:#?}");
    let report = edited(|s| {
        s["flow"]["nodes"][0] =
            json!({"id": "greet", "type": "knowledge", "query": "q", "top_k": 51, "next": "sky"});
    });
    assert_only_error(&report, "top_k_out_of_range", "flow.nodes[0].top_k");
}

#[test]
fn unused_tool_and_unused_connection() {
    let report = edited(|s| {
        let tools = s["tools"].as_array_mut().expect("tools");
        tools.push(json!({"name": "radar", "connection": "weather",
                          "security": "api_key", "path": "/radar"}));
    });
    assert!(report.errors.is_empty(), "{report:#?}");
    assert_warning(&report, "unused_tool", "tools[1]");
    let extra = connection("maps", json!({"type": "bearer", "token": "t"}));
    let report = check_with(example(), &[weather(), extra]);
    assert!(report.errors.is_empty(), "{report:#?}");
    assert_warning(&report, "unused_connection", "connections.maps");
    assert_eq!(report.warnings.len(), 1);
}

#[test]
fn knowledge_node_without_knowledge_files() {
    let report = edited(|s| {
        s["knowledge"] = json!([]);
        s["flow"]["nodes"][0] =
            json!({"id": "greet", "type": "knowledge", "query": "q", "next": "sky"});
    });
    assert!(report.errors.is_empty(), "{report:#?}");
    assert_warning(&report, "no_knowledge_files", "flow.nodes[0]");
}

#[test]
fn problems_come_in_spec_order_every_time() {
    let edit = |s: &mut Value| {
        s["name"] = json!("");
        s["tools"][0]["security"] = json!("basic");
        s["flow"]["nodes"][0]["next"] = json!("x");
        s["flow"]["nodes"][2]["output"] = json!("{{");
    };
    let report = edited(edit);
    let paths: Vec<&str> = report.errors.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "name",
            "tools[0].security",
            "flow.nodes[0].next",
            "flow.nodes[2].output",
            "flow.start"
        ]
    );
    assert_eq!(report, edited(edit));
}

#[test]
fn odd_drafts_do_not_panic() {
    let spec = json!({
      "flow": {"start": "", "nodes": [
        {"id": "", "type": "condition", "branches": [{"when": "{{", "next": ""}], "else": ""},
        {"id": "", "type": "end", "next": ""},
        {"id": "a", "type": "tool", "tool": "", "args": [[[{"": ""}]]], "next": "a", "timeout_s": 0}
      ]},
      "tools": [{"name": "", "connection": "", "security": "", "path": ""}],
      "collaborators": [""],
      "model": {"provider": "", "base_url": "https://"}
    });
    let report = check_with(spec, &[]);
    assert!(!report.errors.is_empty());
    assert!(has(
        &report.errors,
        "cycle",
        "flow.nodes[0].branches[0].next"
    ));
    assert!(has(&report.errors, "duplicate_node", "flow.nodes[1].id"));
}

// ---- what blocks a run of the draft (a preview) ----------------------------------------------

fn runnable(spec: Value) -> Result<(), Report> {
    let spec: AgentSpec = serde_json::from_value(spec).expect("spec parses");
    check_runnable(ME, &spec, &[weather()], &agents())
}

#[test]
fn a_draft_without_flow_or_start_cannot_run() {
    let mut spec = example();
    spec.as_object_mut().expect("object").remove("flow");
    let blockers = runnable(spec).expect_err("no flow");
    assert_only_error(&blockers, "no_flow", "flow");

    let mut spec = example();
    spec["flow"]["start"] = json!("nowhere");
    let blockers = runnable(spec).expect_err("unknown start");
    assert_error(&blockers, "unknown_start", "flow.start");
    assert!(blockers.warnings.is_empty(), "warnings never block a run");
}

#[test]
fn warnings_and_the_profile_text_do_not_block_a_run() {
    let mut spec = example();
    spec["description"] = json!("");
    spec["flow"]["nodes"]
        .as_array_mut()
        .expect("nodes")
        .push(json!({"id": "spare", "type": "end", "output": {}}));
    let report = check(spec.clone());
    assert_error(&report, "missing_description", "description");
    assert_warning(&report, "unreachable_node", "flow.nodes[3]");
    assert_eq!(runnable(spec), Ok(()));
}

/// The example's greeting node as a model node that offers `tools`.
fn offering(tools: Value, extra: impl FnOnce(&mut Value)) -> Report {
    edited(|s| {
        s["tools"][0]["parameters"] = json!({"type": "object"});
        s["collaborators"] = json!([LIVE.to_string()]);
        s["flow"]["nodes"][0] =
            json!({"id": "greet", "type": "model", "prompt": "hi", "tools": tools, "next": "sky"});
        extra(s);
    })
}

#[test]
fn a_model_node_may_offer_tools_knowledge_and_collaborators() {
    let report = offering(json!(["forecast", "knowledge", LIVE.to_string()]), |_| {});
    assert!(report.ok(), "{report:#?}");
    // A tool only a model node offers is used.
    let report = offering(json!(["forecast"]), |s| {
        s["flow"]["nodes"][1] =
            json!({"id": "sky", "type": "transform", "output": 1, "next": "done"});
    });
    assert!(report.ok(), "{report:#?}");
}

#[test]
fn what_a_model_node_offers_is_checked() {
    let r = offering(json!(["teleport"]), |_| {});
    assert_error(&r, "unknown_tool", "flow.nodes[0].tools[0]");
    let r = offering(json!([DRAFT.to_string()]), |_| {});
    assert_error(&r, "unknown_tool", "flow.nodes[0].tools[0]");
    let r = offering(json!(["forecast"]), |s| {
        s["tools"][0]["parameters"] = Value::Null
    });
    assert_only_error(&r, "missing_parameters", "flow.nodes[0].tools[0]");
    let r = offering(json!(["forecast"]), |s| {
        s["tools"][0]["parameters"] = json!("object")
    });
    assert_only_error(&r, "invalid_parameters", "tools[0].parameters");
    let r = offering(json!(["for cast"]), |s| {
        s["tools"][0]["name"] = json!("for cast");
        s["flow"]["nodes"][1]["tool"] = json!("for cast");
    });
    assert_only_error(&r, "invalid_tool_name", "flow.nodes[0].tools[0]");
    let r = offering(json!(["knowledge"]), |s| s["knowledge"] = json!([]));
    assert_warning(&r, "no_knowledge_files", "flow.nodes[0].tools[0]");
    for (steps, ok) in [(0, false), (1, true), (20, true), (21, false)] {
        let r = offering(json!(["forecast"]), |s| {
            s["flow"]["nodes"][0]["max_steps"] = json!(steps)
        });
        assert_eq!(r.ok(), ok, "max_steps {steps}: {r:#?}");
        if !ok {
            assert_only_error(&r, "max_steps_out_of_range", "flow.nodes[0].max_steps");
        }
    }
    for (turns, ok) in [(0, true), (100, true), (101, false)] {
        let r = edited(|s| s["memory"] = json!({ "turns": turns }));
        assert_eq!(r.ok(), ok, "memory.turns {turns}: {r:#?}");
    }
}

#[test]
fn an_input_node_needs_a_valid_prompt_and_a_next() {
    let r = edited(|s| {
        s["flow"]["nodes"][0] =
            json!({"id": "greet", "type": "input", "prompt": "Your {{ name", "next": "sky"});
    });
    assert_only_error(&r, "bad_template", "flow.nodes[0].prompt");
    let r = edited(|s| {
        s["flow"]["nodes"][0] = json!({"id": "greet", "type": "input", "prompt": "Your name?"});
    });
    assert_error(&r, "missing_next", "flow.nodes[0].next");
}
