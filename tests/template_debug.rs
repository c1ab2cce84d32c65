//! `{{ debug() }}` is not available to templates (security audit, issue 10). Guards against an
//! agent's template dumping the template engine's state, whose per-thread cache holds the
//! template sources of every other agent run on that thread.

mod common;

use common::Server;
use serde_json::json;

fn agent(s: &Server, name: &str, output: &str) -> String {
    let spec = json!({
        "name": name, "description": format!("{name} test agent"),
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "flow": {"start": "say", "nodes": [
            {"id": "say", "type": "transform", "output": {"text": output}, "next": "done"},
            {"id": "done", "type": "end", "output": {"text": "{{ nodes.say.text }}"}}
        ]}
    });
    let id = s.create(&spec);
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
    id
}

#[test]
fn debug_fails_the_node_and_shows_no_other_agents_template() {
    let s = Server::start();
    let private = "Private {{ input.name }}: the discount code is TEMPLATE-SECRET-9931";
    let other = agent(&s, "Other", private);
    let prying = agent(&s, "Prying", "state: {{ debug() }}");
    // Run the other agent a few times, so its template sits in every worker thread's cache.
    for _ in 0..8 {
        let r = s.post(
            &format!("/v1/agents/{other}/invoke"),
            &json!({"input": {"name": "x"}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for _ in 0..8 {
        let r = s.post(&format!("/v1/agents/{prying}/invoke"), &json!({}));
        assert_eq!((r.status, r.code()), (502, "run_failed"), "{}", r.body);
        assert_eq!(
            r.body["error"]["details"]["error"]["code"],
            "template_error"
        );
        assert!(
            !r.body.to_string().contains("TEMPLATE-SECRET-9931"),
            "{}",
            r.body
        );
    }
}
