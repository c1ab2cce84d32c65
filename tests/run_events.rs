//! Run events over SSE: what a chat front-end or a monitoring client relies on. Every event is
//! numbered once, in order, ending with `run.finished`; a reader that drops the connection
//! resumes with `Last-Event-ID` and misses nothing nor sees anything twice; a slow reader never
//! holds up the run or the other callers; model nodes stream their reply as `model.delta`s.

mod common;

use std::time::{Duration, Instant};

use common::fake_http::{FakeServer, Reply};
use common::sse::{open, SseEvent};
use common::Server;
use serde_json::{json, Value};

fn agent(name: &str, nodes: Value) -> Value {
    json!({
        "name": name, "description": format!("{name} test agent"),
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "flow": {"start": nodes[0]["id"], "nodes": nodes}
    })
}

fn deploy(s: &Server, id: &str) {
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
}

/// An agent whose echo model node answers `Hello there NAME, how are you today?`.
fn echo_agent(s: &Server) -> String {
    let id = s.create(&agent(
        "Echo",
        json!([{"id": "m", "type": "model", "prompt": "Hello there {{ input.name }}, how are you today?", "next": "done"},
               {"id": "done", "type": "end", "output": {"text": "{{ nodes.m.text }}"}}]),
    ));
    deploy(s, &id);
    id
}

/// An agent that calls a slow tool between two steps, so its run is in flight for a while.
fn slow_tool_agent(s: &Server, tool_url: &str) -> String {
    let mut spec = agent(
        "Slow",
        json!([{"id": "first", "type": "transform", "output": {"x": 1}, "next": "call"},
               {"id": "call", "type": "tool", "tool": "t", "args": {}, "next": "m"},
               {"id": "m", "type": "model", "prompt": "tool said {{ nodes.call.status }}", "next": "done"},
               {"id": "done", "type": "end", "output": {"text": "{{ nodes.m.text }}"}}]),
    );
    spec["tools"] = json!([{"name": "t", "connection": "svc", "security": "bearer", "method": "GET", "path": "/slow"}]);
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": tool_url, "auth": {"type": "bearer", "token": "t"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    deploy(s, &id);
    id
}

fn kinds(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.id.expect("every event has an id"))
        .collect()
}

fn deltas(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event == "model.delta")
        .map(|e| e.data["text"].as_str().expect("text"))
        .collect()
}

#[test]
fn a_streamed_run_tells_its_steps_in_order_and_ends_with_its_run() {
    let s = Server::start();
    let id = echo_agent(&s);
    let stream = open(
        &s,
        "POST",
        &format!("/v1/agents/{id}/invoke/stream"),
        &[],
        Some(&json!({"input": {"name": "Bo"}})),
    )
    .expect("200");
    assert!(stream.content_type.starts_with("text/event-stream"));
    let events = stream.rest();
    let n = events.len() as u64;
    assert_eq!(ids(&events), (1..=n).collect::<Vec<_>>(), "{events:?}");
    let k = kinds(&events);
    assert_eq!(k[..2], ["run.started", "node.started"]);
    assert_eq!(events[0].data["version"], 1);
    assert_eq!(events[1].data, json!({"node": "m", "type": "model"}));
    let reply = "Hello there Bo, how are you today?";
    assert!(
        k.iter().filter(|k| **k == "model.delta").count() > 1,
        "echo streams in pieces"
    );
    assert_eq!(deltas(&events), reply);
    assert_eq!(
        k[k.len() - 4..],
        [
            "node.finished",
            "node.started",
            "node.finished",
            "run.finished"
        ]
    );
    let finished = &events[events.len() - 1].data["run"];
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["output"]["text"], reply);

    // The same run, polled and replayed: a final run's stream replays and closes.
    let rid = finished["request_id"].as_str().expect("rid");
    assert_eq!(events[0].data["request_id"], rid);
    let polled = s.get(&format!("/v1/agents/{id}/requests/{rid}"));
    assert_eq!(polled.body["status"], "succeeded");
    let replay = open(
        &s,
        "GET",
        &format!("/v1/agents/{id}/requests/{rid}/events"),
        &[],
        None,
    )
    .expect("200")
    .rest();
    assert_eq!(replay, events);
    let tail = open(
        &s,
        "GET",
        &format!("/v1/agents/{id}/requests/{rid}/events?after=3"),
        &[],
        None,
    )
    .expect("200")
    .rest();
    assert_eq!(tail, events[3..]);

    // Refusals before a run exists are ordinary JSON errors.
    let draft = s.create(&agent(
        "Draft",
        json!([{"id": "done", "type": "end", "output": {}}]),
    ));
    let (status, body) = open(
        &s,
        "POST",
        &format!("/v1/agents/{draft}/invoke/stream"),
        &[],
        Some(&json!({})),
    )
    .err()
    .expect("refused");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_deployed"))
    );
    let missing = format!("/v1/agents/{id}/requests/{}/events", uuid_like());
    assert_eq!(
        open(&s, "GET", &missing, &[], None).err().map(|e| e.0),
        Some(404)
    );
    let bad = format!("/v1/agents/{id}/requests/{rid}/events");
    let (status, body) = open(&s, "GET", &bad, &[("Last-Event-ID", "x")], None)
        .err()
        .expect("400");
    assert_eq!(status, 400, "{body}");
}

fn uuid_like() -> &'static str {
    "01900000-0000-7000-8000-000000000000"
}

#[test]
fn a_reader_that_drops_the_connection_resumes_with_last_event_id_and_misses_nothing() {
    let s = Server::start();
    let tool = FakeServer::start(|_| {
        Reply::json(200, json!({"ok": true})).slow(Duration::from_millis(1500))
    });
    let id = slow_tool_agent(&s, &tool.url);
    let accepted = s.post(
        &format!("/v1/agents/{id}/invoke/async"),
        &json!({"input": {}}),
    );
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let rid = accepted.body["request_id"]
        .as_str()
        .expect("rid")
        .to_owned();
    let path = format!("/v1/agents/{id}/requests/{rid}/events");

    // Read a few events, then hang up while the tool is still answering.
    let mut first = open(&s, "GET", &path, &[], None).expect("200");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(first.next_event().expect("an event"));
    }
    drop(first);
    assert_eq!(kinds(&seen)[..2], ["run.queued", "run.started"]);
    let last = seen[seen.len() - 1].id.expect("id").to_string();

    // The run was not cancelled by the hang-up; resuming picks up right after the last event.
    let rest = open(&s, "GET", &path, &[("Last-Event-ID", last.as_str())], None)
        .expect("200")
        .rest();
    let mut all = seen.clone();
    all.extend(rest);
    let n = all.len() as u64;
    assert_eq!(
        ids(&all),
        (1..=n).collect::<Vec<_>>(),
        "nothing missed or repeated"
    );
    assert_eq!(all[all.len() - 1].event, "run.finished");
    assert_eq!(all[all.len() - 1].data["run"]["status"], "succeeded");
    assert!(kinds(&all).contains(&"tool.called"));
    let called = all.iter().find(|e| e.event == "tool.called").expect("tool");
    assert_eq!(
        called.data,
        json!({"node": "call", "tool": "t", "status": 200})
    );

    // The whole stream, replayed, is what the two readings made together.
    let replay = open(&s, "GET", &path, &[], None).expect("200").rest();
    assert_eq!(replay, all);

    // A streamed sync run whose caller hangs up runs to its end too.
    let mut streamed = open(
        &s,
        "POST",
        &format!("/v1/agents/{id}/invoke/stream"),
        &[],
        Some(&json!({"input": {}})),
    )
    .expect("200");
    let started = streamed.next_event().expect("run.started");
    assert_eq!(started.event, "run.started");
    let rid = started.data["request_id"].as_str().expect("rid").to_owned();
    drop(streamed);
    let rest = open(
        &s,
        "GET",
        &format!("/v1/agents/{id}/requests/{rid}/events"),
        &[("Last-Event-ID", "1")],
        None,
    )
    .expect("the run in flight can be followed")
    .rest();
    assert_eq!(rest[0].id, Some(2));
    let end = &rest[rest.len() - 1];
    assert_eq!(
        (end.event.as_str(), end.data["run"]["status"].as_str()),
        ("run.finished", Some("succeeded"))
    );
}

/// A fake OpenAI-compatible server that streams `pieces` as chat.completion.chunks.
fn streaming_model(pieces: Vec<String>) -> FakeServer {
    FakeServer::start(move |_| {
        let mut body = String::new();
        body.push_str(&format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        ));
        for p in &pieces {
            body.push_str(&format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}}]})
            ));
        }
        body.push_str("data: [DONE]\n\n");
        Reply::event_stream(body)
    })
}

fn model_agent(s: &Server, url: &str, output: Value) -> String {
    let mut spec = agent(
        "Streamer",
        json!([{"id": "think", "type": "model", "prompt": "{{ input.say }}", "next": "done"},
               {"id": "done", "type": "end", "output": output}]),
    );
    spec["model"] = json!({"provider": "openai", "name": "gpt-test", "base_url": url, "connection": "llm", "timeout_s": 60});
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "llm", "server": url, "auth": {"type": "bearer", "token": "sk-test"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    deploy(s, &id);
    id
}

#[test]
fn model_nodes_stream_from_an_openai_compatible_server() {
    let s = Server::start();
    let model = streaming_model(vec!["Par".into(), "is is ".into(), "the capital.".into()]);
    let id = model_agent(&s, &model.url, json!({"text": "{{ nodes.think.text }}"}));
    let events = open(
        &s,
        "POST",
        &format!("/v1/agents/{id}/invoke/stream"),
        &[],
        Some(&json!({"input": {"say": "capital of France?"}})),
    )
    .expect("200")
    .rest();
    let pieces: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "model.delta")
        .map(|e| &e.data)
        .collect();
    assert_eq!(
        pieces,
        [
            &json!({"node": "think", "text": "Par"}),
            &json!({"node": "think", "text": "is is "}),
            &json!({"node": "think", "text": "the capital."})
        ]
    );
    let end = &events[events.len() - 1];
    assert_eq!(end.data["run"]["output"]["text"], "Paris is the capital.");
    let sent: Value = serde_json::from_str(&model.requests()[0].body).expect("json");
    assert_eq!(sent["stream"], true);
    assert_eq!(
        model.requests()[0]
            .headers
            .get("authorization")
            .map(String::as_str),
        Some("Bearer sk-test")
    );
    // The plain endpoint gets the same reply from the stream.
    let r = s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {"say": "again"}}),
    );
    assert_eq!(
        r.body["output"]["text"], "Paris is the capital.",
        "{}",
        r.body
    );
}

#[test]
fn a_slow_reader_never_slows_the_run_or_other_callers() {
    let s = Server::start();
    // About 3 MiB of reply in 3000 pieces: far more than any buffer between the run and a
    // reader that does not read.
    let pieces: Vec<String> = (0..3000)
        .map(|i| format!("{i:04}{}", "x".repeat(1020)))
        .collect();
    let reply: String = pieces.concat();
    let model = streaming_model(pieces);
    // The output only measures the reply: an end node renders at most 1 MiB.
    let big = model_agent(
        &s,
        &model.url,
        json!({"length": "{{ nodes.think.text | length }}"}),
    );
    let echo = echo_agent(&s);

    let accepted = s.post(
        &format!("/v1/agents/{big}/invoke/async"),
        &json!({"input": {"say": "a lot"}}),
    );
    let rid = accepted.body["request_id"]
        .as_str()
        .expect("rid")
        .to_owned();
    let path = format!("/v1/agents/{big}/requests/{rid}/events");
    // The slow reader takes one event and then stops reading.
    let mut slow = open(&s, "GET", &path, &[], None).expect("200");
    let first = slow.next_event().expect("an event");
    assert_eq!(first.id, Some(1));
    // A reader that keeps up, at the same time.
    let path2 = path.clone();
    let base = s.base.clone();
    let brisk = std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout_read(Duration::from_secs(40))
            .build();
        let resp = agent
            .get(&format!("{base}{path2}"))
            .set("Authorization", &format!("Bearer {}", common::TOKEN))
            .call()
            .expect("200");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut resp.into_reader(), &mut text).expect("read");
        text
    });

    // Other callers are served meanwhile, and the run ends while the slow reader sleeps.
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let base = s.base.clone();
            let echo = echo.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build();
                for _ in 0..10 {
                    let r = agent
                        .post(&format!("{base}/v1/agents/{echo}/invoke"))
                        .set("Authorization", &format!("Bearer {}", common::TOKEN))
                        .send_json(json!({"input": {"name": "x"}}))
                        .expect("200");
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for c in callers {
        c.join().expect("callers served");
    }
    let started = Instant::now();
    loop {
        let r = s.get(&format!("/v1/agents/{big}/requests/{rid}"));
        if r.body["status"] == "succeeded" {
            assert_eq!(r.body["output"]["length"], reply.len());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run must end without its slow reader: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The slow reader, reading at last, gets every event once and in order.
    let mut all = vec![first];
    all.extend(slow.rest());
    let n = all.len() as u64;
    assert_eq!(ids(&all), (1..=n).collect::<Vec<_>>());
    assert_eq!(deltas(&all), reply);
    assert_eq!(all[all.len() - 1].event, "run.finished");
    let brisk = brisk.join().expect("brisk reader");
    assert!(brisk.contains("event: run.finished"));
    assert_eq!(brisk.matches("\nevent: ").count(), n as usize);
}
