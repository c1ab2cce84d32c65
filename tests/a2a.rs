//! A2A tasks are runs: one created over A2A is the request the native API polls, streams and
//! cancels, and its push notifications go through the durable outbox, so a `kill -9` while the
//! task waits in the queue loses neither the task nor its notification.

mod common;

use std::time::Duration;

use common::a2a::{message, rpc, tool_agent};
use common::fake_http::{FakeServer, Reply};
use common::Server;
use serde_json::{json, Value};

fn deploy(s: &Server, id: &str) {
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
}

#[test]
fn a_task_created_over_a2a_is_the_run_the_native_api_shows() {
    let s = Server::start();
    let tool = FakeServer::start(|_| Reply::json(200, json!({"ok": true})));
    let agent = tool_agent(&s, &tool.url, 4);
    let sent = rpc(
        &s,
        &agent,
        "SendMessage",
        json!({"message": message("hello"), "configuration": {"returnImmediately": true}}),
    );
    let task = &sent["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_SUBMITTED", "{sent}");
    let tid = task["id"].as_str().expect("task id");
    let context = task["contextId"].as_str().expect("a context is made");

    // Polled natively: the same run, with the A2A specifics in its input.
    let run = s.get(&format!("/v1/agents/{agent}/requests/{tid}?wait=10"));
    assert_eq!(run.body["status"], "succeeded", "{}", run.body);
    assert_eq!(run.body["output"]["text"], "You said: hello");
    let events = s.call(
        "GET",
        &format!("/v1/agents/{agent}/requests/{tid}/events"),
        Some(common::TOKEN),
        &[],
        None,
    );
    let text = events.body.as_str().expect("an event stream");
    assert!(text.starts_with("id: 1\nevent: run.queued\n"), "{text}");
    assert!(text.contains("event: run.finished"));

    // And back over A2A: completed, with its output as the artifact.
    let got = rpc(&s, &agent, "GetTask", json!({ "id": tid }));
    let task = &got["result"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(task["contextId"], context);
    assert_eq!(
        task["artifacts"][0]["parts"][0],
        json!({"text": "You said: hello"})
    );
    // A run made natively is a task too, and the HTTP+JSON binding sees it.
    let native = s.post(
        &format!("/v1/agents/{agent}/invoke"),
        &json!({"input": {"message": "native"}}),
    );
    let rid = native.body["request_id"].as_str().expect("rid");
    let rest = s.get(&format!("/a2a/{agent}/tasks/{rid}"));
    assert_eq!(rest.status, 200, "{}", rest.body);
    assert_eq!(rest.body["status"]["state"], "TASK_STATE_COMPLETED");
    let missing = s.get(&format!(
        "/a2a/{agent}/tasks/{}",
        "0190a8c4-0000-7000-8000-000000000000"
    ));
    assert_eq!(missing.status, 404);
    let unauthorized = s.call("GET", &format!("/a2a/{agent}/tasks/{rid}"), None, &[], None);
    assert_eq!(unauthorized.status, 401);
}

/// Guards against an accepted A2A task, or its push notification, being lost by a crash: the
/// task waits in the queue behind a running one when the process is killed.
#[test]
fn kill_9_while_an_async_a2a_task_with_push_is_queued_loses_neither() {
    let tool = FakeServer::start(|_| {
        Reply::json(200, json!({"ok": true})).slow(Duration::from_millis(1500))
    });
    let receiver = FakeServer::start(|_| Reply::json(200, json!({})));
    let s = Server::start_with(
        tempfile::tempdir().expect("dir"),
        &[("HANGAR_PUSH_SCHEDULE", "1,1,1")],
    );
    let agent = tool_agent(&s, &tool.url, 1);
    let config = |token: &str| {
        json!({"url": format!("{}/hook", receiver.url), "token": token,
               "authentication": {"scheme": "Bearer", "credentials": "a2a-credentials-5c1e9b"}})
    };
    let mut tids = Vec::new();
    for (text, token) in [
        ("first", "a2a-token-one-77d2"),
        ("second", "a2a-token-two-91f0"),
    ] {
        let sent = rpc(
            &s,
            &agent,
            "SendMessage",
            json!({"message": message(text), "configuration": {
                "returnImmediately": true, "taskPushNotificationConfig": config(token)}}),
        );
        tids.push(
            sent["result"]["task"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    // The first runs (its tool call is in flight), the second waits in the queue.
    assert_eq!(tool.wait_requests(1, Duration::from_secs(10)).len(), 1);
    let listed = rpc(
        &s,
        &agent,
        "ListTaskPushNotificationConfigs",
        json!({"taskId": tids[1]}),
    );
    let configs = listed["result"]["configs"].as_array().expect("configs");
    assert_eq!(configs.len(), 1, "{listed}");
    assert_eq!(configs[0]["url"], format!("{}/hook", receiver.url));
    assert!(
        !listed.to_string().contains("a2a-token-two"),
        "secrets are never shown"
    );
    let mut s = s;
    s.kill();
    for secret in [
        "a2a-token-one-77d2",
        "a2a-token-two-91f0",
        "a2a-credentials-5c1e9b",
    ] {
        assert_eq!(
            common::dir_contains(s.data(), secret),
            None,
            "{secret} sealed at rest"
        );
    }
    let s = s.start_again();

    // Both tasks are pushed: the one cut off as failed (interrupted), the queued one completed.
    let pushes = receiver.wait_requests(2, Duration::from_secs(30));
    assert!(pushes.len() >= 2, "both pushed: {pushes:?}");
    let mut states = std::collections::BTreeMap::new();
    for push in &pushes {
        let body: Value = serde_json::from_str(&push.body).expect("json");
        let task = &body["task"];
        states.insert(
            task["id"].as_str().expect("id").to_owned(),
            task["status"]["state"].as_str().expect("state").to_owned(),
        );
        assert_eq!(
            push.headers.get("authorization").map(String::as_str),
            Some("Bearer a2a-credentials-5c1e9b")
        );
        let token = push.headers.get("x-a2a-notification-token").expect("token");
        assert_eq!(push.headers.get("a2a-notification-token"), Some(token));
    }
    assert_eq!(states[&tids[0]], "TASK_STATE_FAILED");
    assert_eq!(states[&tids[1]], "TASK_STATE_COMPLETED");
    let second = s.get(&format!("/v1/agents/{agent}/requests/{}", tids[1]));
    assert_eq!(second.body["status"], "succeeded");
    let first = s.get(&format!("/v1/agents/{agent}/requests/{}", tids[0]));
    assert_eq!(first.body["error"]["code"], "interrupted");
}

/// A context is a thread: two messages in one context run one after the other and the second
/// sees the first's turn; a task waiting for input is continued by a message naming it.
#[test]
fn a_context_is_a_thread_and_a_task_waiting_for_input_is_continued_by_a_message() {
    let s = Server::start();
    let agent = s.create(&json!({
        "name": "Asker", "description": "asks which city",
        "model": {"provider": "echo", "name": "echo-1"},
        "flow": {"start": "ask", "nodes": [
            {"id": "ask", "type": "input", "prompt": "Which city, {{ input.message }}?", "next": "done"},
            {"id": "done", "type": "end", "output": {
                "city": "{{ nodes.ask.city }}", "turns": "{{ thread.turns | length }}"}}
        ]}
    }));
    deploy(&s, &agent);
    let first = rpc(
        &s,
        &agent,
        "SendMessage",
        json!({"message": message("Ada")}),
    );
    let task = &first["result"]["task"];
    assert_eq!(
        task["status"]["state"], "TASK_STATE_INPUT_REQUIRED",
        "{first}"
    );
    let tid = task["id"].as_str().expect("task id").to_owned();
    let context = task["contextId"].as_str().expect("context").to_owned();

    // The answer: a data part, in a message naming the task.
    let answer = json!({"messageId": "m-answer", "role": "ROLE_USER", "taskId": tid,
                        "contextId": context, "parts": [{"data": {"city": "Oslo"}}]});
    let done = rpc(&s, &agent, "SendMessage", json!({"message": answer}));
    let task = &done["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{done}");
    let run = s.get(&format!("/v1/agents/{agent}/requests/{tid}"));
    assert_eq!(run.body["output"]["city"], "Oslo", "{}", run.body);
    assert_eq!(run.body["output"]["turns"], 0, "{}", run.body);
    assert_eq!(run.body["thread_id"], json!(context), "{}", run.body);

    // A completed task takes no more messages.
    let again = rpc(&s, &agent, "SendMessage", json!({"message": answer}));
    assert_eq!(again["error"]["code"], -32004, "{again}");

    // The context's next task sees the first one's turn.
    let mut next = message("Bo");
    next["contextId"] = json!(context);
    let second = rpc(&s, &agent, "SendMessage", json!({"message": next}));
    let tid2 = second["result"]["task"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut reply = answer.clone();
    reply["taskId"] = json!(tid2);
    let done = rpc(&s, &agent, "SendMessage", json!({"message": reply}));
    assert_eq!(
        done["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{done}"
    );
    let run = s.get(&format!("/v1/agents/{agent}/requests/{tid2}"));
    assert_eq!(run.body["output"]["turns"], 1, "{}", run.body);

    // A context id that cannot name a thread is refused, naming the field.
    let mut bad = message("x");
    bad["contextId"] = json!("no spaces allowed");
    let refused = rpc(&s, &agent, "SendMessage", json!({"message": bad}));
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("contextId"),
        "{refused}"
    );
}
