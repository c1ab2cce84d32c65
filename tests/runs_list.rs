//! `GET /v1/agents/{id}/requests`: an agent's runs, newest first, a page at a time, each caller
//! seeing only what it may see.

mod common;

use common::{valid_spec, Resp, Server};
use serde_json::json;

fn ids(page: &Resp) -> Vec<String> {
    page.body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["request_id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn runs_are_listed_newest_first_page_by_page_and_filtered() {
    let s = Server::start();
    let id = s.create(&valid_spec("Listed"));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    let mut made = Vec::new();
    for i in 0..5 {
        let r = s.post(
            &format!("/v1/agents/{id}/invoke"),
            &json!({"input": {"name": i}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        made.push(r["request_id"].as_str().expect("id").to_owned());
    }
    made.reverse();

    let first = s.get(&format!("/v1/agents/{id}/requests?limit=3"));
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(ids(&first), made[..3]);
    assert_eq!(first["runs"][0]["status"], "succeeded");
    let next = first["next"].as_str().expect("a next page").to_owned();
    assert_eq!(next, made[2]);
    let rest = s.get(&format!("/v1/agents/{id}/requests?limit=3&before={next}"));
    assert_eq!(ids(&rest), made[3..]);
    assert!(rest.body.get("next").is_none(), "{}", rest.body);

    assert!(ids(&s.get(&format!("/v1/agents/{id}/requests?status=failed"))).is_empty());
    assert_eq!(
        ids(&s.get(&format!("/v1/agents/{id}/requests?status=succeeded"))),
        made
    );

    for bad in ["limit=0", "limit=201", "before=nope", "status=finished"] {
        let r = s.get(&format!("/v1/agents/{id}/requests?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let unknown = s.get("/v1/agents/0194f000-0000-7000-8000-000000000000/requests");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

#[test]
fn a_members_key_lists_only_that_members_runs() {
    let s = Server::start();
    let id = s.create(&valid_spec("Members"));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    let key = |member: &str| {
        let r = s.post(
            &format!("/v1/agents/{id}/keys"),
            &json!({ "member": member }),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r["key"].as_str().expect("key").to_owned()
    };
    let (alice, bob) = (key("alice"), key("bob"));
    let invoke = |token: &str| {
        let r = s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke"),
            Some(token),
            &[],
            Some(r#"{"input": {}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r["request_id"].as_str().expect("id").to_owned()
    };
    let mine = invoke(&alice);
    let theirs = invoke(&bob);
    let list = |token: &str| {
        let r = s.call(
            "GET",
            &format!("/v1/agents/{id}/requests"),
            Some(token),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        ids(&r)
    };
    assert_eq!(list(&alice), vec![mine.clone()]);
    assert_eq!(list(&bob), vec![theirs.clone()]);
    assert_eq!(list(common::TOKEN), [theirs, mine]);
    let anonymous = s.call("GET", &format!("/v1/agents/{id}/requests"), None, &[], None);
    assert_eq!(anonymous.status, 401);
}
