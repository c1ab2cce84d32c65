//! Cluster mode: several `hangar serve` nodes on one PostgreSQL store answer as one Hangar
//! (`docs/cluster.md`). Each test starts a temporary PostgreSQL and its nodes; without
//! PostgreSQL's binaries the tests say so loudly and pass (`./x test` installs them).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, SECRET_KEY};
use common::fake_http::{FakeServer, Reply};
use common::{bin, valid_spec, Resp, Server, TOKEN};
use serde_json::{json, Value};

fn edit(s: &Server, id: &str, name: &str, if_match: Option<&str>) -> Resp {
    let mut spec = valid_spec(name);
    spec["description"] = json!(format!("edited as {name}"));
    let headers: Vec<(&str, &str)> = if_match.map(|m| ("If-Match", m)).into_iter().collect();
    s.call(
        "PUT",
        &format!("/v1/agents/{id}/draft"),
        Some(TOKEN),
        &headers,
        Some(&spec.to_string()),
    )
}

fn deploy(s: &Server, id: &str) {
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
}

/// Polls `GET …/requests/{rid}` on `s` until the run is final; panics after `max`.
fn until_final(s: &Server, id: &str, rid: &str, max: Duration) -> Value {
    let start = Instant::now();
    loop {
        let r = s.get(&format!("/v1/agents/{id}/requests/{rid}"));
        assert_eq!(r.status, 200, "poll: {}", r.body);
        let status = r["status"].as_str().unwrap_or("").to_owned();
        if !["queued", "running"].contains(&status.as_str()) {
            return r.body;
        }
        assert!(
            start.elapsed() < max,
            "run {rid} still {status} after {max:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_write_on_one_node_is_read_on_every_other() {
    let Some(c) = Cluster::start(2) else { return };
    let (a, b) = (&c[0], &c[1]);
    let id = a.create(&valid_spec("Shared"));
    assert_eq!(edit(a, &id, "FromA", None).status, 200);
    let on_b = b.get(&format!("/v1/agents/{id}"));
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    assert_eq!(on_b["draft"]["name"], "FromA");
    assert_eq!(on_b["seq"], 2);

    // A has the agent cached; B's write must still be what A reads next.
    assert_eq!(edit(b, &id, "FromB", None).status, 200);
    let on_a = a.get(&format!("/v1/agents/{id}"));
    assert_eq!(on_a["draft"]["name"], "FromB", "{}", on_a.body);
    assert_eq!(on_a["seq"], 3);
    let listed = a.get("/v1/agents");
    assert!(listed.body.to_string().contains(&id));
}

#[test]
fn a_stale_if_match_is_refused_on_every_node_and_the_log_never_forks() {
    let Some(c) = Cluster::start(2) else { return };
    let (a, b) = (&c[0], &c[1]);
    let id = a.create(&valid_spec("Fenced"));
    let first = a.get(&format!("/v1/agents/{id}"));
    assert_eq!(first.etag.as_deref(), Some("\"1\""));

    let on_b = edit(b, &id, "B", Some("\"1\""));
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    assert_eq!(on_b.etag.as_deref(), Some("\"2\""));
    // A last saw seq 1 itself: the If-Match it would have accepted is now stale.
    let stale = edit(a, &id, "A", Some("\"1\""));
    assert_eq!(stale.status, 412, "{}", stale.body);
    // The seq B's client saw is current on A too.
    let fresh = edit(a, &id, "A", Some("\"2\""));
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(fresh.etag.as_deref(), Some("\"3\""));
    // Without If-Match, a write on a node whose copy is behind applies to the current state.
    let blind = edit(b, &id, "B2", None);
    assert_eq!(blind.status, 200, "{}", blind.body);
    assert_eq!(blind.etag.as_deref(), Some("\"4\""));

    // Concurrent blind writes from both nodes: each lands after the others (re-decided on the
    // current log) or, if it lost every retry, is refused as a conflict; none forks the log.
    let writers: Vec<_> = [a.base.clone(), b.base.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, base)| {
            let id = id.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build();
                let mut ok = 0;
                for i in 0..10 {
                    let mut spec = valid_spec(&format!("W{n}x{i}"));
                    spec["description"] = json!("racing");
                    let r = agent
                        .put(&format!("{base}/v1/agents/{id}/draft"))
                        .set("Authorization", &format!("Bearer {TOKEN}"))
                        .send_json(spec);
                    match r {
                        Ok(_) => ok += 1,
                        Err(ureq::Error::Status(409, _)) => {}
                        Err(e) => panic!("a racing write failed: {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    let landed: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    assert!(landed > 0);
    let head = 4 + landed;
    assert_eq!(a.seq(&id), head, "one event per write that landed");
    assert_eq!(b.seq(&id), head);
    for node in [a, b] {
        let v = node.get(&format!("/v1/agents/{id}/verify"));
        assert_eq!(v.status, 200, "{}", v.body);
    }
    let out = Command::new(bin())
        .args(["verify", "--store", &c.url])
        .output()
        .expect("hangar verify runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("1 agents, {head} events")), "{text}");
    let log = Command::new(bin())
        .args(["events", "--store", &c.url, &id])
        .output()
        .expect("hangar events runs");
    assert!(log.status.success());
    let lines = String::from_utf8_lossy(&log.stdout).lines().count();
    assert_eq!(lines as u64, head);
}

#[test]
fn an_async_request_accepted_on_one_node_is_polled_on_another() {
    let Some(c) = Cluster::start(3) else { return };
    let (a, cc) = (&c[0], &c[2]);
    let id = a.create(&valid_spec("Async"));
    deploy(a, &id);
    let accepted = a.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"name": "Ada"}}),
    );
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let rid = accepted["request_id"].as_str().expect("rid").to_owned();
    let done = until_final(cc, &id, &rid, Duration::from_secs(20));
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["greeting"], "Hello Ada");
    // The run is the same on the node that accepted it.
    let on_a = a.get(&format!("/v1/agents/{id}/requests/{rid}"));
    assert_eq!(on_a.body, done);
}

#[test]
fn an_idempotency_key_names_one_request_across_nodes() {
    let Some(c) = Cluster::start(2) else { return };
    let (a, b) = (&c[0], &c[1]);
    let id = a.create(&valid_spec("Keyed"));
    deploy(a, &id);
    let path = format!("/v1/agents/{id}/invoke/async");
    let send = |s: &Server, body: Value| {
        s.call(
            "POST",
            &path,
            Some(TOKEN),
            &[("Idempotency-Key", "order-7")],
            Some(&body.to_string()),
        )
    };
    let first = send(a, json!({"input": {"name": "Bo"}}));
    assert_eq!(first.status, 202, "{}", first.body);
    let again = send(b, json!({"input": {"name": "Bo"}}));
    assert!(again.status < 300, "{}", again.body);
    assert_eq!(again["request_id"], first["request_id"], "the same request");
    let other = send(b, json!({"input": {"name": "Cy"}}));
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.code(), "idempotency_key_reused");
}

#[test]
fn every_node_reports_itself_and_the_cluster() {
    let Some(mut c) = Cluster::start(2) else {
        return;
    };
    let ids: Vec<String> = c
        .nodes
        .iter()
        .map(|s| {
            let h = s.call("GET", "/healthz", None, &[], None);
            assert_eq!(h.status, 200, "{}", h.body);
            assert_eq!(h["status"], "ok");
            assert_eq!(h["store"], "postgres");
            h["node"].as_str().expect("node id").to_owned()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    let named = c.add_node(&[("HANGAR_NODE_ID", "node-c")]);
    let h = named.call("GET", "/healthz", None, &[], None);
    assert_eq!(h["node"], "node-c");
    let cluster = c[0].get("/v1/cluster");
    assert_eq!(cluster.status, 200, "{}", cluster.body);
    assert_eq!(cluster["store"], "postgres");
    let listed: Vec<&str> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id"))
        .collect();
    for id in ids.iter().map(String::as_str).chain(["node-c"]) {
        assert!(listed.contains(&id), "{id} missing from {}", cluster.body);
    }
    for n in cluster["nodes"].as_array().expect("nodes") {
        assert!(n["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")));
        assert!(n["started_at"].is_string() && n["last_seen"].is_string());
    }
    assert_eq!(c[0].call("GET", "/v1/cluster", None, &[], None).status, 401);
    // A clean stop leaves the table at once.
    let status = c.nodes[2].terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()));
    let cluster = c[0].get("/v1/cluster");
    assert!(
        !cluster.body.to_string().contains("node-c"),
        "{}",
        cluster.body
    );
}

#[test]
fn a_postgres_node_needs_the_shared_secrets() {
    for missing in ["HANGAR_ADMIN_TOKEN", "HANGAR_SECRET_KEY"] {
        let dir = tempfile::tempdir().expect("dir");
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .env("HANGAR_STORE", "postgres://hangar@127.0.0.1:1/x")
            .env("HANGAR_ADMIN_TOKEN", TOKEN)
            .env("HANGAR_SECRET_KEY", SECRET_KEY)
            .env_remove(missing);
        let out = cmd.output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "without {missing}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(missing), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn while_postgres_is_away_nodes_answer_503_then_recover_by_themselves() {
    let Some(c) = Cluster::start(1) else { return };
    let a = &c[0];
    let id = a.create(&valid_spec("Outage"));
    deploy(a, &id);
    c.pg.stop();
    let started = Instant::now();
    let h = a.call("GET", "/healthz", None, &[], None);
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h["status"], "unavailable");
    for r in [
        a.get(&format!("/v1/agents/{id}")),
        a.post(
            &format!("/v1/agents/{id}/invoke/async"),
            &json!({"input": {"name": "X"}}),
        ),
        edit(a, &id, "During", None),
    ] {
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.retry_after.is_some(), "503 without Retry-After");
    }
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "each answer came within the store's deadline"
    );
    c.pg.start_again();
    let back = Instant::now();
    loop {
        let r = a.get(&format!("/v1/agents/{id}"));
        if r.status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "never recovered: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(edit(a, &id, "After", None).status, 200);
    let h = a.call("GET", "/healthz", None, &[], None);
    assert_eq!(h.status, 200);
}

/// A tool server that answers after 30 s when the body says "slow", at once otherwise.
fn slow_tool() -> FakeServer {
    FakeServer::start(|r| {
        let reply = Reply::json(200, json!({}));
        if r.body.contains("slow") {
            reply.slow(Duration::from_secs(30))
        } else {
            reply
        }
    })
}

/// A deployed agent whose one node calls `tool` with the input's `n`.
fn tool_agent(s: &Server, tool: &FakeServer, max_concurrency: u32) -> String {
    let spec = json!({
        "name": "Tooled", "description": "Calls a tool once per run",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "tools": [{"name": "t", "connection": "svc", "security": "bearer", "method": "POST",
                   "path": "/do", "body": {"n": "{{ args.n }}"}}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "t", "args": {"n": "{{ input.n }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}
        ]}
    });
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": tool.url, "credentials": "team", "auth": {"type": "bearer", "token": "tok"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let e = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"max_concurrency": max_concurrency}),
    );
    assert_eq!(e.status, 200, "{}", e.body);
    deploy(s, &id);
    id
}

fn submit(s: &Server, id: &str, n: &str) -> String {
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"n": n}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    r["request_id"].as_str().expect("rid").to_owned()
}

/// Polls until the run has `status`; panics after `max`.
fn until_status(s: &Server, id: &str, rid: &str, status: &str, max: Duration) -> Value {
    let start = Instant::now();
    loop {
        let r = s.get(&format!("/v1/agents/{id}/requests/{rid}"));
        if r.status == 200 && r["status"] == status {
            return r.body;
        }
        assert!(
            start.elapsed() < max,
            "run {rid} not {status} after {max:?}: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn undeploy_on_one_node_cancels_the_runs_of_another() {
    let Some(c) = Cluster::start(2) else { return };
    let (a, b) = (&c[0], &c[1]);
    let tool = slow_tool();
    let id = tool_agent(a, &tool, 4);
    // Accepted, and so run, by B.
    let rid = submit(b, &id, "slow");
    until_status(b, &id, &rid, "running", Duration::from_secs(10));
    tool.wait_requests(1, Duration::from_secs(10));
    let undeployed = Instant::now();
    let r = a.post(&format!("/v1/agents/{id}/undeploy"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    // The contract's bound is 1 s; the slack is for this shared 2-core machine.
    let run = until_status(a, &id, &rid, "cancelled", Duration::from_secs(3));
    assert!(undeployed.elapsed() < Duration::from_secs(3));
    assert!(run["error"].is_object(), "{run}");
    // And B no longer takes requests for it.
    let refused = b.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"n": "1"}}),
    );
    assert_eq!(refused.status, 409, "{}", refused.body);
}

#[test]
fn a_killed_nodes_running_runs_end_interrupted_and_its_queue_runs_elsewhere() {
    let Some(mut c) = Cluster::start(2) else {
        return;
    };
    let tool = slow_tool();
    let id = tool_agent(&c[0], &tool, 1);
    let running = submit(&c[0], &id, "slow");
    until_status(&c[0], &id, &running, "running", Duration::from_secs(10));
    tool.wait_requests(1, Duration::from_secs(10));
    // The agent's one slot on A is taken: this one waits in the queue.
    let queued = submit(&c[0], &id, "fast");
    c.nodes[0].kill();
    let killed = Instant::now();
    let b = &c.nodes[1];
    let failed = until_status(b, &id, &running, "failed", Duration::from_secs(45));
    assert_eq!(failed["error"]["code"], "interrupted", "{failed}");
    let done = until_status(b, &id, &queued, "succeeded", Duration::from_secs(45));
    assert_eq!(done["output"]["status"], 200, "{done}");
    // Within the contract's 30 s of the node's death (B may need its own 15 s of heartbeats
    // first, which a node that started with A has had).
    assert!(killed.elapsed() < Duration::from_secs(45));
    let cluster = b.get("/v1/cluster");
    assert_eq!(
        cluster["nodes"].as_array().map(Vec::len),
        Some(1),
        "{}",
        cluster.body
    );
}

#[test]
fn each_push_is_delivered_by_one_node() {
    let Some(c) = Cluster::start_with(3, &[("HANGAR_PUSH_SCHEDULE", "1,1,1")]) else {
        return;
    };
    let receiver = FakeServer::start(|_| Reply::json(200, json!({})));
    let a = &c[0];
    let id = a.create(&json!({
        "name": "Pusher", "description": "pushes results",
        "model": {"provider": "echo", "name": "echo-1"},
        "flow": {"start": "done", "nodes": [{"id": "done", "type": "end", "output": {"echo": "{{ input.msg }}"}}]}
    }));
    let ep = a.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"async": {"push_enabled": true, "url": format!("{}/hook", receiver.url), "token": "hook-token-0123456789"}}),
    );
    assert_eq!(ep.status, 200, "{}", ep.body);
    deploy(a, &id);
    let rids: Vec<String> = (0..6)
        .map(|i| {
            let r = c[i % 3].post(
                &format!("/v1/agents/{id}/invoke/async"),
                &json!({"input": {"msg": format!("m{i}")}}),
            );
            assert_eq!(r.status, 202, "{}", r.body);
            r["request_id"].as_str().expect("rid").to_owned()
        })
        .collect();
    receiver.wait_requests(6, Duration::from_secs(20));
    // Every pusher polls the outbox several times a second: give them time to repeat one.
    std::thread::sleep(Duration::from_secs(2));
    let got = receiver.requests();
    for rid in &rids {
        let n = got.iter().filter(|r| r.body.contains(rid.as_str())).count();
        assert_eq!(n, 1, "push of {rid} delivered {n} times");
    }
}

#[test]
fn on_sled_the_cluster_is_this_node() {
    let s = Server::start();
    let h = s.call("GET", "/healthz", None, &[], None);
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"], "sled");
    let port = s.base.rsplit(':').next().expect("port").to_owned();
    assert!(
        h["node"]
            .as_str()
            .is_some_and(|n| n.ends_with(&format!(":{port}"))),
        "the default id is host:port: {}",
        h.body
    );
    let c = s.get("/v1/cluster");
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c["store"], "sled");
    let nodes = c["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["id"], h["node"]);
    assert_eq!(nodes[0]["addr"], format!("127.0.0.1:{port}"));
}

#[test]
fn a_long_poll_on_another_node_sees_the_result_as_soon_as_it_is_final() {
    let Some(c) = Cluster::start(2) else { return };
    let (a, b) = (&c[0], &c[1]);
    let tool = FakeServer::start(|_| Reply::json(200, json!({})).slow(Duration::from_secs(1)));
    let id = tool_agent(a, &tool, 2);
    let rid = submit(a, &id, "1");
    let asked = Instant::now();
    let r = b.get(&format!("/v1/agents/{id}/requests/{rid}?wait=25"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r["status"], "succeeded", "{}", r.body);
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the long-poll on B waited for its timeout, not for the run"
    );
}

#[test]
fn runs_that_end_while_postgres_restarts_are_stored_once_it_is_back() {
    let Some(c) = Cluster::start(2) else { return };
    let tool = FakeServer::start(|_| Reply::json(200, json!({})).slow(Duration::from_secs(2)));
    let id = tool_agent(&c[0], &tool, 8);
    let rids: Vec<String> = (0..6).map(|i| submit(&c[i % 2], &id, "x")).collect();
    // Every run is in flight (its tool call made) when the database goes away.
    tool.wait_requests(6, Duration::from_secs(20));
    c.pg.stop();
    // The tools answer meanwhile: the runs end while their final state cannot be stored.
    std::thread::sleep(Duration::from_secs(3));
    c.pg.start_again();
    for (i, rid) in rids.iter().enumerate() {
        let done = until_status(
            &c[(i + 1) % 2],
            &id,
            rid,
            "succeeded",
            Duration::from_secs(40),
        );
        assert_eq!(done["output"]["status"], 200, "{done}");
    }
}

/// A tool that, for a body saying "slow", takes `hold` before answering, and counts how many
/// calls it is answering at once (the highest count seen is what `max_concurrency` bounds).
struct CountingTool {
    server: FakeServer,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn counting_tool(hold: Duration) -> CountingTool {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let p = peak.clone();
    let server = FakeServer::start(move |r| {
        if r.body.contains("slow") {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(hold);
            now.fetch_sub(1, Ordering::SeqCst);
        }
        Reply::json(200, json!({}))
    });
    CountingTool { server, peak }
}

impl CountingTool {
    fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn invoke(s: &Server, id: &str, n: &str) -> Resp {
    s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {"n": n}}),
    )
}

#[test]
fn max_concurrency_holds_for_the_whole_cluster() {
    let Some(c) = Cluster::start(2) else { return };
    let (a, b) = (&c[0], &c[1]);
    let tool = counting_tool(Duration::from_millis(1500));
    let id = tool_agent(a, &tool.server, 1);

    // Two sync calls at once, one per node: one runs, the other finds no slot anywhere.
    let (on_a, on_b) = std::thread::scope(|s| {
        let x = s.spawn(|| invoke(a, &id, "slow"));
        let y = s.spawn(|| invoke(b, &id, "slow"));
        (x.join().expect("a"), y.join().expect("b"))
    });
    let mut statuses = [on_a.status, on_b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 429], "A: {} B: {}", on_a.body, on_b.body);
    assert_eq!(tool.peak(), 1);

    // While A runs a slow sync call, B has no slot either: 429 there.
    std::thread::scope(|s| {
        let running = s.spawn(|| invoke(a, &id, "slow"));
        tool.server.wait_requests(2, Duration::from_secs(10));
        let refused = invoke(b, &id, "slow");
        assert_eq!(refused.status, 429, "{}", refused.body);
        assert_eq!(running.join().expect("a").status, 200);
    });

    // Async runs sent to both nodes queue and run one at a time, each claimed when a slot
    // frees on either node.
    let rids: Vec<(usize, String)> = (0..4)
        .map(|i| (i % 2, submit(&c[i % 2], &id, "slow")))
        .collect();
    for (node, rid) in &rids {
        let done = until_final(&c[1 - node], &id, rid, Duration::from_secs(40));
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    assert_eq!(tool.peak(), 1, "never two runs at once in the cluster");
    assert_eq!(tool.server.requests().len(), 2 + 4);
}

fn submit_in_thread(s: &Server, id: &str, n: &str, thread: &str) -> String {
    let r = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {"n": n}, "thread_id": thread}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    r["request_id"].as_str().expect("rid").to_owned()
}

#[test]
fn a_threads_runs_sent_to_two_nodes_run_one_after_the_other_in_accept_order() {
    let Some(c) = Cluster::start(2) else { return };
    let (a, b) = (&c[0], &c[1]);
    let tool = counting_tool(Duration::from_millis(1500));
    let id = tool_agent(a, &tool.server, 4);

    let first = submit_in_thread(a, &id, "slow-1", "conv");
    tool.server.wait_requests(1, Duration::from_secs(10));
    // Accepted by B while A runs the thread's first run: it waits for it.
    let second = submit_in_thread(b, &id, "slow-2", "conv");
    let third = std::thread::scope(|s| {
        let sync = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            // On the node that runs the thread now: still after B's run, accepted before it.
            a.post(
                &format!("/v1/agents/{id}/invoke"),
                &json!({"input": {"n": "slow-3"}, "thread_id": "conv"}),
            )
        });
        sync.join().expect("sync call")
    });
    assert_eq!(third.status, 200, "{}", third.body);
    for rid in [&first, &second] {
        let done = until_final(a, &id, rid, Duration::from_secs(30));
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    assert_eq!(tool.peak(), 1, "a thread's runs never overlap");
    let order: Vec<String> = tool
        .server
        .requests()
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).expect("json")["n"].to_string())
        .collect();
    assert_eq!(order, ["\"slow-1\"", "\"slow-2\"", "\"slow-3\""]);
    // Each run saw the turns before it: the thread reads in accept order on every node.
    for node in [a, b] {
        let thread = node.get(&format!("/v1/agents/{id}/threads/conv"));
        assert_eq!(thread.status, 200, "{}", thread.body);
        let turns: Vec<&str> = thread["turns"]
            .as_array()
            .expect("turns")
            .iter()
            .map(|t| t["request_id"].as_str().unwrap_or(""))
            .collect();
        let third_rid = third["request_id"].as_str().unwrap_or("");
        assert_eq!(turns, [first.as_str(), second.as_str(), third_rid]);
    }
}
