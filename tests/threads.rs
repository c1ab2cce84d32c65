//! Conversation threads: history reaching the model in order, runs of one thread serialized
//! (also across a crash), `multitask: reject`, thread ids checked, and deletion that leaves
//! nothing of a turn's text in the data directory.

mod common;

use std::time::{Duration, Instant};

use common::scripted_model::{Say, ScriptedModel};
use common::{dir_contains, Server};
use serde_json::{json, Value};

/// An agent whose model node sends the thread's history; the output also shows what the
/// template saw of the thread.
fn chat_agent(s: &Server, model_url: &str) -> String {
    let spec = json!({
        "name": "Chat", "description": "Remembers",
        "model": {"provider": "openai", "name": "scripted", "base_url": model_url, "timeout_s": 60},
        "instructions": "Be kind.",
        "memory": {"turns": 10},
        "flow": {"start": "talk", "nodes": [
            {"id": "talk", "type": "model", "prompt": "{{ input.message }}", "history": true, "next": "done"},
            {"id": "done", "type": "end", "output": {"text": "{{ nodes.talk.text }}", "seen": "{{ thread.turns | length }}", "thread": "{{ thread.id }}"}}
        ]}
    });
    let id = s.create(&spec);
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
    id
}

fn say(s: &Server, id: &str, thread: &str, message: &str) -> common::Resp {
    s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {"message": message}, "thread_id": thread}),
    )
}

/// `(role, content)` of each message of a chat request.
fn conversation(sent: &Value) -> Vec<(String, String)> {
    sent["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().expect("role").to_owned(),
                m["content"].as_str().expect("content").to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn thread_history_reaches_the_model_in_order() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::text("Hi Ada."),
        Say::text("Who?"),
        Say::text("Blue."),
    ]);
    let id = chat_agent(&s, model.url());
    let r = say(&s, &id, "chat-1", "I am Ada.");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["thread_id"], "chat-1");
    assert_eq!(r["output"]["seen"], 0);
    // Another thread knows nothing of it; the header names a thread as the body does.
    let r = s.call(
        "POST",
        &format!("/v1/agents/{id}/invoke"),
        Some(common::TOKEN),
        &[("X-Hangar-Thread", "chat-2")],
        Some(r#"{"input": {"message": "Who am I?"}}"#),
    );
    assert_eq!((r.status, &r["output"]["thread"]), (200, &json!("chat-2")));
    let r = say(&s, &id, "chat-1", "What colour is the sky?");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["output"]["seen"], 1);

    let sent = model.sent();
    assert_eq!(
        conversation(&sent[1]),
        pairs(&[("system", "Be kind."), ("user", "Who am I?")])
    );
    assert_eq!(
        conversation(&sent[2]),
        pairs(&[
            ("system", "Be kind."),
            ("user", "I am Ada."),
            ("assistant", "Hi Ada."),
            ("user", "What colour is the sky?"),
        ])
    );
    let thread = s.get(&format!("/v1/agents/{id}/threads/chat-1"));
    assert_eq!(thread.status, 200, "{}", thread.body);
    let turns = thread["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0]["input"], json!({"message": "I am Ada."}));
    assert_eq!(turns[1]["output"]["text"], "Blue.");
    let empty = s.get(&format!("/v1/agents/{id}/threads/never-used"));
    assert_eq!((empty.status, &empty["turns"]), (200, &json!([])));
}

#[test]
fn two_concurrent_calls_on_one_thread_run_one_after_the_other() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::Slowly(Duration::from_millis(1500), Box::new(Say::text("first"))),
        Say::text("second"),
    ]);
    let id = chat_agent(&s, model.url());
    std::thread::scope(|scope| {
        let first = scope.spawn(|| say(&s, &id, "t", "one"));
        model.wait_sent(1, Duration::from_secs(5));
        let second = scope.spawn(|| say(&s, &id, "t", "two"));
        // While the first runs, the second has not reached the model.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(model.sent().len(), 1, "the second call waited");
        let (first, second) = (first.join().expect("first"), second.join().expect("second"));
        assert_eq!(first["output"]["text"], "first", "{}", first.body);
        assert_eq!(second["output"]["text"], "second", "{}", second.body);
        assert_eq!(
            second["output"]["seen"], 1,
            "the second saw the first's turn"
        );
    });
    let sent = model.sent();
    assert_eq!(conversation(&sent[1])[1], ("user".into(), "one".into()));
}

#[test]
fn multitask_reject_answers_409_while_the_thread_is_busy() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![Say::Slowly(
        Duration::from_millis(1500),
        Box::new(Say::text("slow")),
    )]);
    let id = chat_agent(&s, model.url());
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| say(&s, &id, "t", "one"));
        model.wait_sent(1, Duration::from_secs(5));
        for path in ["invoke", "invoke/async"] {
            let r = s.post(
                &format!("/v1/agents/{id}/{path}"),
                &json!({"input": {"message": "two"}, "thread_id": "t", "multitask": "reject"}),
            );
            assert_eq!(
                (r.status, r.code()),
                (409, "thread_busy"),
                "{path}: {}",
                r.body
            );
        }
        model.then(Say::text("free"));
        let other = s.post(
            &format!("/v1/agents/{id}/invoke"),
            &json!({"input": {"message": "x"}, "thread_id": "u", "multitask": "reject"}),
        );
        assert_eq!(other.status, 200, "another thread is free: {}", other.body);
        assert_eq!(busy.join().expect("busy").status, 200);
    });
    assert_eq!(model.sent().len(), 2, "nothing refused reached the model");
}

#[test]
fn thread_ids_are_checked() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![]);
    let id = chat_agent(&s, model.url());
    for bad in ["", "has space", "slash/y", &"x".repeat(129)] {
        let r = say(&s, &id, bad, "hi");
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{bad:?}: {}",
            r.body
        );
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thread_id"));
    }
    let r = s.call(
        "POST",
        &format!("/v1/agents/{id}/invoke"),
        Some(common::TOKEN),
        &[("X-Hangar-Thread", "b")],
        Some(r#"{"input": {}, "thread_id": "a"}"#),
    );
    assert_eq!(r.status, 400, "two different threads: {}", r.body);
    let r = s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {}, "thread_id": "a", "multitask": "sometimes"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(model.sent().is_empty());
}

/// Guards against "deleted" meaning hidden: after DELETE, no file of the data directory holds
/// the turn's text, even after a crash and a restart, and the runs of the thread forget it.
#[test]
fn a_deleted_thread_is_gone_from_storage() {
    let s = Server::start();
    let id = s.create(&json!({
        "name": "Echo chat", "description": "Echoes",
        "model": {"provider": "echo", "name": "e"},
        "flow": {"start": "talk", "nodes": [
            {"id": "talk", "type": "model", "prompt": "{{ input.message }}", "next": "done"},
            {"id": "done", "type": "end", "output": {"text": "{{ nodes.talk.text }}"}}]}
    }));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    let secret = format!("zebra-{}", uuid::Uuid::now_v7().simple());
    let r = say(&s, &id, "private", &format!("my secret is {secret}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let rid = r["request_id"].as_str().expect("rid").to_owned();
    let kept = say(&s, &id, "kept", "keep me");
    assert_eq!(kept.status, 200);
    let thread = s.get(&format!("/v1/agents/{id}/threads/private"));
    assert!(
        thread.body.to_string().contains(&secret),
        "stored: {}",
        thread.body
    );

    let r = s.delete(&format!("/v1/agents/{id}/threads/private"));
    assert_eq!(r.status, 204, "{}", r.body);
    let thread = s.get(&format!("/v1/agents/{id}/threads/private"));
    assert_eq!(thread["turns"], json!([]));
    let run = s.get(&format!("/v1/agents/{id}/requests/{rid}"));
    assert_eq!(run.status, 200);
    assert!(!run.body.to_string().contains(&secret), "{}", run.body);

    let s = s.restart();
    assert_eq!(dir_contains(s.data(), &secret), None);
    assert_eq!(
        s.get(&format!("/v1/agents/{id}/threads/private"))["turns"],
        json!([])
    );
    let kept = s.get(&format!("/v1/agents/{id}/threads/kept"));
    assert_eq!(
        kept["turns"].as_array().map(Vec::len),
        Some(1),
        "{}",
        kept.body
    );
}

/// Async runs of one thread run in the order accepted, and a crash does not lose or reorder
/// the ones that waited: the one in flight ends interrupted, the others run after the restart.
#[test]
fn queued_runs_of_a_thread_keep_their_order_across_a_crash() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start_in(dir);
    let model = ScriptedModel::start(vec![Say::Slowly(
        Duration::from_secs(30),
        Box::new(Say::text("never")),
    )]);
    let id = chat_agent(&s, model.url());
    let submit = |s: &Server, message: &str| -> String {
        let r = s.post(
            &format!("/v1/agents/{id}/invoke/async"),
            &json!({"input": {"message": message}, "thread_id": "q"}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        r["request_id"].as_str().expect("rid").to_owned()
    };
    let first = submit(&s, "one");
    model.wait_sent(1, Duration::from_secs(5));
    let second = submit(&s, "two");
    let third = submit(&s, "three");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(model.sent().len(), 1, "the others wait for the thread");

    model.then(Say::text("two done"));
    model.then(Say::text("three done"));
    let s = s.restart();
    let poll = |rid: &str| -> Value {
        let start = Instant::now();
        loop {
            let r = s.get(&format!("/v1/agents/{id}/requests/{rid}?wait=10"));
            let status = r["status"].as_str().unwrap_or_default().to_owned();
            if !["queued", "running"].contains(&status.as_str())
                || start.elapsed() > Duration::from_secs(20)
            {
                return r.body;
            }
        }
    };
    assert_eq!(poll(&first)["error"]["code"], "interrupted");
    let two = poll(&second);
    let three = poll(&third);
    assert_eq!(two["output"]["text"], "two done", "{two}");
    assert_eq!(three["output"]["text"], "three done", "{three}");
    let sent = model.sent();
    let last = conversation(sent.last().expect("sent"));
    assert_eq!(last[last.len() - 1], ("user".into(), "three".into()));
    assert!(
        last.contains(&("assistant".into(), "two done".into())),
        "{last:?}"
    );
}

/// A keyed call waits for its thread like any other, its repeat finds it, and the same key for
/// another thread is another body.
#[test]
fn keyed_calls_on_a_busy_thread_wait_and_their_keys_cover_the_thread() {
    let s = Server::start();
    let model = ScriptedModel::start(vec![
        Say::Slowly(Duration::from_millis(1200), Box::new(Say::text("first"))),
        Say::text("second"),
    ]);
    let id = chat_agent(&s, model.url());
    let keyed = |key: &str, thread: &str, message: &str| {
        s.call(
            "POST",
            &format!("/v1/agents/{id}/invoke"),
            Some(common::TOKEN),
            &[("Idempotency-Key", key)],
            Some(&json!({"input": {"message": message}, "thread_id": thread}).to_string()),
        )
    };
    std::thread::scope(|scope| {
        let first = scope.spawn(|| keyed("k1", "t", "one"));
        model.wait_sent(1, Duration::from_secs(5));
        let second = keyed("k2", "t", "two");
        assert_eq!(second["output"]["text"], "second", "{}", second.body);
        assert_eq!(second["output"]["seen"], 1, "it ran after the first's turn");
        assert_eq!(first.join().expect("first")["output"]["text"], "first");
        let again = keyed("k2", "t", "two");
        assert_eq!(again["request_id"], second["request_id"], "{}", again.body);
    });
    let other = keyed("k2", "elsewhere", "two");
    assert_eq!(
        (other.status, other.code()),
        (422, "idempotency_key_reused")
    );
    assert_eq!(model.sent().len(), 2);
}
