//! A2A push notification configs created and deleted on a task that already exists
//! (`CreateTaskPushNotificationConfig`, `DeleteTaskPushNotificationConfig`, and the HTTP+JSON
//! routes under `/tasks/{tid}/pushNotificationConfigs`): a client that did not ask for pushes
//! when it sent the message can still be told when the task is done, whether it is running,
//! queued or already over; a config deleted in time means nothing arrives; a config created
//! just before a `kill -9` is still honoured after the restart.

mod common;

use std::time::{Duration, Instant};

use common::a2a::{message, rpc, rpc_as, tool_agent};
use common::fake_http::{FakeServer, Recorded, Reply};
use common::{Resp, Server};
use serde_json::{json, Value};

/// The agent's signing secret (made by a rotation), which signs its A2A pushes too.
fn signing_secret(s: &Server, agent: &str) -> String {
    let r = s.post(
        &format!("/v1/agents/{agent}/endpoint/rotate-secret"),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["signing_secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned()
}

fn configs_path(agent: &str, tid: &str) -> String {
    format!("/a2a/{agent}/tasks/{tid}/pushNotificationConfigs")
}

/// The task a push carries.
fn pushed_task(push: &Recorded) -> Value {
    let body: Value = serde_json::from_str(&push.body).expect("a JSON push");
    body["task"].clone()
}

/// Checks the Standard Webhooks signature of `push` with the agent's secret.
fn assert_signed(push: &Recorded, secret: &str) {
    let id = push.headers.get("webhook-id").expect("webhook-id");
    let at: i64 = push
        .headers
        .get("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .expect("a unix time");
    let expected = actors::push::sign(secret, id, at, push.body.as_bytes()).expect("signs");
    assert_eq!(
        push.headers.get("webhook-signature"),
        Some(&expected),
        "signed with the agent's secret"
    );
}

/// The task's state as GetTask answers it, once it is no longer working (up to 30 s).
fn wait_settled(s: &Server, agent: &str, tid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = rpc(s, agent, "GetTask", json!({ "id": tid }));
        let state = got["result"]["status"]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if !matches!(
            state.as_str(),
            "TASK_STATE_SUBMITTED" | "TASK_STATE_WORKING"
        ) || Instant::now() > deadline
        {
            return state;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking `SendMessage` in one request, a config created from another while it runs: the
/// end of the task is pushed to it, signed, with its credentials and token.
#[test]
fn a_config_created_while_a_blocking_task_runs_gets_its_end() {
    let tool = FakeServer::start(|_| {
        Reply::json(200, json!({"ok": true})).slow(Duration::from_millis(1500))
    });
    let receiver = FakeServer::start(|_| Reply::json(200, json!({})));
    let s = Server::start();
    let agent = tool_agent(&s, &tool.url, 4);
    let secret = signing_secret(&s, &agent);

    let blocking = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            s.call(
                "POST",
                &format!("/a2a/{agent}/message:send"),
                Some(common::TOKEN),
                &[("A2A-Version", "1.0"), ("Idempotency-Key", "blocking-1")],
                Some(&json!({"message": message("slow")}).to_string()),
            )
        });
        // The task is found while it runs (its tool call is in flight).
        assert_eq!(tool.wait_requests(1, Duration::from_secs(10)).len(), 1);
        let listed = rpc(&s, &agent, "ListTasks", json!({}));
        let tasks = listed["result"]["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 1, "{listed}");
        assert_eq!(tasks[0]["status"]["state"], "TASK_STATE_WORKING");
        let tid = tasks[0]["id"].as_str().expect("id").to_owned();

        let created = s.post(
            &configs_path(&agent, &tid),
            &json!({"id": "cfg-1", "url": format!("{}/hook", receiver.url),
                    "token": "a2a-token-3e7f",
                    "authentication": {"scheme": "Bearer", "credentials": "a2a-cred-81b2"}}),
        );
        assert_eq!(created.status, 200, "{}", created.body);
        assert_eq!(
            created.body,
            json!({"id": "cfg-1", "taskId": tid, "url": format!("{}/hook", receiver.url),
                   "authentication": {"scheme": "Bearer"}}),
            "the config as stored, never its secrets"
        );
        let answer: Resp = call.join().expect("the blocking call");
        (tid, answer)
    });
    let (tid, answer) = blocking;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body["task"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );

    let pushes = receiver.wait_requests(1, Duration::from_secs(20));
    assert_eq!(pushes.len(), 1, "one push: {pushes:?}");
    let push = &pushes[0];
    assert_eq!(push.path, "/hook");
    let task = pushed_task(push);
    assert_eq!(task["id"], tid.as_str());
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(
        push.headers.get("authorization").map(String::as_str),
        Some("Bearer a2a-cred-81b2")
    );
    assert_eq!(
        push.headers
            .get("x-a2a-notification-token")
            .map(String::as_str),
        Some("a2a-token-3e7f")
    );
    assert_signed(push, &secret);

    // The config is kept with the task; its secrets are not in what GetTaskPushNotificationConfig shows.
    let got = s.get(&format!("{}/cfg-1", configs_path(&agent, &tid)));
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["url"], format!("{}/hook", receiver.url));
    assert!(!got.body.to_string().contains("a2a-token-3e7f"));
}

/// A config created on a task that has ended gets the final task at once (1.0 and 0.3 shapes);
/// bad configs are refused naming the field; a key that may not see the task does not find it.
#[test]
fn a_config_created_on_a_finished_task_is_delivered_at_once() {
    let tool = FakeServer::start(|_| Reply::json(200, json!({"ok": true})));
    let receiver = FakeServer::start(|_| Reply::json(200, json!({})));
    let s = Server::start();
    let agent = tool_agent(&s, &tool.url, 4);
    let sent = rpc(
        &s,
        &agent,
        "SendMessage",
        json!({"message": message("done")}),
    );
    let task = &sent["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{sent}");
    let tid = task["id"].as_str().expect("id").to_owned();

    // 1.0: the flat TaskPushNotificationConfig, as the a2a-sdk client sends it.
    let created = rpc(
        &s,
        &agent,
        "CreateTaskPushNotificationConfig",
        json!({"taskId": tid, "url": format!("{}/v1", receiver.url), "token": "tok-1"}),
    );
    let config = &created["result"];
    assert_eq!(config["taskId"], tid.as_str(), "{created}");
    assert_eq!(config["url"], format!("{}/v1", receiver.url));
    let cid = config["id"].as_str().expect("an id is made").to_owned();
    let pushes = receiver.wait_requests(1, Duration::from_secs(20));
    assert_eq!(pushes[0].path, "/v1");
    assert_eq!(
        pushed_task(&pushes[0])["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
    assert_eq!(
        pushes[0]
            .headers
            .get("a2a-notification-token")
            .map(String::as_str),
        Some("tok-1")
    );
    let listed = rpc(
        &s,
        &agent,
        "ListTaskPushNotificationConfigs",
        json!({"taskId": tid}),
    );
    assert_eq!(
        listed["result"]["configs"][0]["id"],
        cid.as_str(),
        "{listed}"
    );

    // 0.3: `tasks/pushNotificationConfig/set` with `pushNotificationConfig`; it replaces the
    // task's config (one per task) and is delivered too.
    let set = rpc_as(
        &s,
        common::TOKEN,
        &agent,
        false,
        "tasks/pushNotificationConfig/set",
        json!({"taskId": tid, "pushNotificationConfig": {
            "id": "legacy", "url": format!("{}/v03", receiver.url),
            "authentication": {"schemes": ["Bearer"], "credentials": "c-03"}}}),
    );
    assert_eq!(
        set["result"],
        json!({"taskId": tid, "pushNotificationConfig": {
            "id": "legacy", "url": format!("{}/v03", receiver.url),
            "authentication": {"schemes": ["Bearer"]}}}),
        "{set}"
    );
    let pushes = receiver.wait_requests(2, Duration::from_secs(20));
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].path, "/v03");
    assert_eq!(
        pushes[1].headers.get("authorization").map(String::as_str),
        Some("Bearer c-03")
    );
    let listed = rpc_as(
        &s,
        common::TOKEN,
        &agent,
        false,
        "tasks/pushNotificationConfig/list",
        json!({"id": tid}),
    );
    let configs = listed["result"].as_array().expect("0.3: a list");
    assert_eq!(configs.len(), 1, "one config per task: {listed}");
    assert_eq!(configs[0]["pushNotificationConfig"]["id"], "legacy");
    let gone = rpc(
        &s,
        &agent,
        "GetTaskPushNotificationConfig",
        json!({"taskId": tid, "id": cid}),
    );
    assert_eq!(gone["error"]["code"], -32001, "replaced: {gone}");

    // Refusals name the field, on both bindings.
    let bad = rpc(
        &s,
        &agent,
        "CreateTaskPushNotificationConfig",
        json!({"taskId": tid, "url": "ftp://example.com/x"}),
    );
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("params.url"),
        "{bad}"
    );
    let bad = s.post(&configs_path(&agent, &tid), &json!({"url": 7}));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.body["error"]["details"][0]["reason"], "INVALID_REQUEST");
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("url"));
    let missing = rpc(
        &s,
        &agent,
        "CreateTaskPushNotificationConfig",
        json!({"taskId": "0190a8c4-0000-7000-8000-000000000000", "url": "http://127.0.0.1:9/x"}),
    );
    assert_eq!(missing["error"]["code"], -32001, "{missing}");

    // A member's key sees only its member's tasks: this one is not found, and not changed.
    let key = s.post(
        &format!("/v1/agents/{agent}/keys"),
        &json!({"member": "bob"}),
    );
    assert_eq!(key.status, 201, "{}", key.body);
    let key = key.body["key"].as_str().expect("key").to_owned();
    let hidden = rpc_as(
        &s,
        &key,
        &agent,
        true,
        "CreateTaskPushNotificationConfig",
        json!({"taskId": tid, "url": "http://127.0.0.1:9/bob"}),
    );
    assert_eq!(hidden["error"]["code"], -32001, "{hidden}");
    let hidden = rpc_as(
        &s,
        &key,
        &agent,
        true,
        "DeleteTaskPushNotificationConfig",
        json!({"taskId": tid, "id": "legacy"}),
    );
    assert_eq!(hidden["error"]["code"], -32001, "{hidden}");
    let listed = rpc(
        &s,
        &agent,
        "ListTaskPushNotificationConfigs",
        json!({"taskId": tid}),
    );
    assert_eq!(listed["result"]["configs"][0]["id"], "legacy", "{listed}");
}

/// A config deleted before the task ends: nothing is pushed, and the run shows no push.
/// Deleting again is not an error.
#[test]
fn a_config_deleted_before_the_end_pushes_nothing() {
    let tool = FakeServer::start(|_| {
        Reply::json(200, json!({"ok": true})).slow(Duration::from_millis(1500))
    });
    let receiver = FakeServer::start(|_| Reply::json(200, json!({})));
    let s = Server::start();
    let agent = tool_agent(&s, &tool.url, 4);
    let sent = rpc(
        &s,
        &agent,
        "SendMessage",
        json!({"message": message("later"), "configuration": {"returnImmediately": true,
               "taskPushNotificationConfig": {"id": "c", "url": format!("{}/hook", receiver.url)}}}),
    );
    let tid = sent["result"]["task"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deleted = s.delete(&format!("{}/c", configs_path(&agent, &tid)));
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.body, json!({}));
    let listed = s.get(&configs_path(&agent, &tid));
    assert_eq!(listed.body, json!({"configs": []}));

    assert_eq!(wait_settled(&s, &agent, &tid), "TASK_STATE_COMPLETED");
    let run = s.get(&format!("/v1/agents/{agent}/requests/{tid}"));
    assert_eq!(run.body["status"], "succeeded", "{}", run.body);
    assert_eq!(
        run.body["push"],
        Value::Null,
        "no push scheduled: {}",
        run.body
    );
    let again = rpc(
        &s,
        &agent,
        "DeleteTaskPushNotificationConfig",
        json!({"taskId": tid, "id": "c"}),
    );
    assert_eq!(again["result"], Value::Null, "{again}");
    assert!(again.get("error").is_none(), "{again}");
    assert!(
        receiver.wait_requests(1, Duration::from_secs(2)).is_empty(),
        "nothing arrives"
    );
}

/// Guards against a config acknowledged by Create being lost by a crash: the process is killed
/// right after the 2xx, while one task runs and one waits in the queue; after the restart both
/// ends are pushed to the configs created on them.
#[test]
fn kill_9_after_create_still_delivers() {
    let tool = FakeServer::start(|_| {
        Reply::json(200, json!({"ok": true})).slow(Duration::from_millis(1500))
    });
    let receiver = FakeServer::start(|_| Reply::json(200, json!({})));
    let s = Server::start_with(
        tempfile::tempdir().expect("dir"),
        &[("HANGAR_PUSH_SCHEDULE", "1,1,1")],
    );
    let agent = tool_agent(&s, &tool.url, 1);
    let mut tids = Vec::new();
    for text in ["first", "second"] {
        let sent = rpc(
            &s,
            &agent,
            "SendMessage",
            json!({"message": message(text), "configuration": {"returnImmediately": true}}),
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
    for (tid, path) in tids.iter().zip(["/first", "/second"]) {
        let created = s.post(
            &configs_path(&agent, tid),
            &json!({"url": format!("{}{path}", receiver.url), "token": "crash-token-5a"}),
        );
        assert_eq!(created.status, 200, "{}", created.body);
    }
    let mut s = s;
    s.kill();
    assert_eq!(
        common::dir_contains(s.data(), "crash-token-5a"),
        None,
        "the token is sealed at rest"
    );
    let _s = s.start_again();

    let pushes = receiver.wait_requests(2, Duration::from_secs(30));
    assert!(pushes.len() >= 2, "both pushed: {pushes:?}");
    let state_at = |path: &str| {
        pushes
            .iter()
            .find(|p| p.path == path)
            .map(|p| pushed_task(p)["status"]["state"].clone())
    };
    // Cut off by the crash: failed (interrupted); the queued one ran after the restart.
    assert_eq!(state_at("/first"), Some(json!("TASK_STATE_FAILED")));
    assert_eq!(state_at("/second"), Some(json!("TASK_STATE_COMPLETED")));
}

/// In a cluster the task runs on one node and its config is created through another: the
/// store, which every node shares, keeps it, and the end of the task is pushed to it once.
#[test]
fn a_config_created_through_another_node_gets_the_end_of_a_task_running_elsewhere() {
    let Some(c) = common::cluster::Cluster::start(2) else {
        return;
    };
    let tool = FakeServer::start(|_| {
        Reply::json(200, json!({"ok": true})).slow(Duration::from_millis(1500))
    });
    let receiver = FakeServer::start(|_| Reply::json(200, json!({})));
    let agent = tool_agent(&c[0], &tool.url, 4);
    let (tid, answer) = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            c[0].call(
                "POST",
                &format!("/a2a/{agent}"),
                Some(common::TOKEN),
                &[("A2A-Version", "1.0"), ("Idempotency-Key", "cluster-1")],
                Some(
                    &json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                            "params": {"message": message("elsewhere")}})
                    .to_string(),
                ),
            )
        });
        assert_eq!(tool.wait_requests(1, Duration::from_secs(10)).len(), 1);
        let listed = rpc(&c[1], &agent, "ListTasks", json!({}));
        let tid = listed["result"]["tasks"][0]["id"]
            .as_str()
            .expect("the running task, seen from the other node")
            .to_owned();
        let created = rpc(
            &c[1],
            &agent,
            "CreateTaskPushNotificationConfig",
            json!({"taskId": tid, "url": format!("{}/hook", receiver.url)}),
        );
        assert!(created.get("error").is_none(), "{created}");
        (tid, call.join().expect("the blocking call"))
    });
    assert_eq!(
        answer.body["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{}",
        answer.body
    );
    let pushes = receiver.wait_requests(1, Duration::from_secs(20));
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushed_task(&pushes[0])["id"], tid.as_str());
    assert_eq!(
        pushed_task(&pushes[0])["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
    // Every pusher polls the outbox several times a second: give them time to repeat it.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.requests().len(), 1, "delivered by one node");
}
