//! Bounded work per request (API.md, "Changes to v1"): what one request may make the server
//! inflate, wait for, keep or build. Each test names the exhaustion it guards against.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_http::{FakeServer, Reply};
use common::{dir_contains, valid_spec, Server, TOKEN};
use serde_json::{json, Value};

/// Sends `body` as is (bytes, not a string) with the admin token and `headers`.
fn send_bytes(s: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut req = ureq::post(&format!("{}{path}", s.base))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: transport error {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap_or(Value::Null))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Guards against decompression bombs: actix-web inflated a gzip body before the 4 MiB cap saw
/// it, so 1–3.5 MB on the wire cost 0.3–0.5 GB of memory. A compressed body is refused before it
/// is read, whatever route takes it, and nothing is written.
#[test]
fn compressed_bodies_are_refused_with_415() {
    let s = Server::start();
    let spec = valid_spec("Zipped").to_string();
    let (status, body) = send_bytes(
        &s,
        "/v1/agents",
        &[("Content-Encoding", "gzip")],
        &gzip(spec.as_bytes()),
    );
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    assert_eq!(body["error"]["details"]["field"], "Content-Encoding");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("Content-Encoding: gzip"), "{message}");
    assert_eq!(s.get("/v1/agents")["agents"], json!([]), "nothing created");

    // A bomb: 64 MiB of spaces (valid JSON whitespace around `{}`) in about 64 KB.
    let mut bomb = vec![b' '; 64 << 20];
    bomb.extend_from_slice(b"{\"input\": {}}");
    let bomb = gzip(&bomb);
    let id = s.create(&valid_spec("Target"));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    for encoding in [
        "gzip",
        "deflate",
        "br",
        "zstd",
        "identity, gzip",
        "x-custom",
    ] {
        let (status, body) = send_bytes(
            &s,
            &format!("/v1/agents/{id}/invoke"),
            &[("Content-Encoding", encoding)],
            &bomb,
        );
        assert_eq!(status, 415, "{encoding}: {body}");
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }

    // `identity` is no encoding at all.
    let (status, body) = send_bytes(
        &s,
        "/v1/agents",
        &[("Content-Encoding", "identity")],
        spec.as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
}

/// One HTTP/1.1 response read off a raw connection: the head (lowercased) and the JSON body.
/// Reads exactly `Content-Length` bytes, so it does not depend on the server closing.
fn read_response(conn: &mut TcpStream) -> std::io::Result<(String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body =
                    serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                return Ok((head, body));
            }
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Guards against slow-body exhaustion: actix-web's request timeout covers only the headers, so
/// a client that sent its headers and then a byte every half second held a connection (and its
/// buffer) forever. The body must arrive within `HANGAR_BODY_TIMEOUT_S` (30 s by default; 2 s
/// here): then 408 `request_timeout`, and the connection is closed.
#[test]
fn a_body_that_dribbles_in_gets_408_and_the_connection_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Server::start_with(dir, &[("HANGAR_BODY_TIMEOUT_S", "2")]);
    let addr = s.base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).expect("connects");
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let head = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    conn.write_all(head.as_bytes()).expect("headers sent");
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let mut writer = conn.try_clone().expect("clone");
    let stop = done.clone();
    let dribbler = std::thread::spawn(move || {
        // 40 bytes over 20 s: far from the 1000 announced.
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(500));
            if stop.load(Ordering::SeqCst) || writer.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let answer = read_response(&mut conn);
    let waited = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let (head, body) = answer.expect("answered before the client gave up (15 s)");
    assert!(head.starts_with("http/1.1 408"), "{head}\n{body}");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    // The server hangs up: no second request on a connection whose body is still owed.
    let mut rest = [0u8; 64];
    conn.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("read timeout");
    match conn.read(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection stayed open: {e}"),
        Ok(n) => panic!("more bytes after the answer: {:?}", &rest[..n]),
    }
    dribbler.join().expect("dribbler");
    assert_eq!(s.get("/v1/agents")["agents"], json!([]), "nothing created");
}

fn deploy(s: &Server, id: &str) {
    let r = s.post(&format!("/v1/agents/{id}/deploy"), &json!({}));
    assert_eq!(r.status, 200, "deploy: {}", r.body);
}

/// Guards against every run keeping its whole input (up to 4 MiB) on disk for the 7 days of
/// retention: an ended run keeps at most 64 KiB of it, else a marker with its size.
#[test]
fn an_ended_run_does_not_keep_a_large_input_on_disk() {
    let mut s = Server::start();
    let id = s.create(&valid_spec("Keeper"));
    deploy(&s, &id);
    let needle = format!("needle-{}", uuid_like());
    let doc = format!("{needle}{}", "x".repeat(200_000));
    let r = s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {"name": "Ada", "doc": doc}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let small = s.post(
        &format!("/v1/agents/{id}/invoke"),
        &json!({"input": {"name": "Bob", "note": "small-input-kept"}}),
    );
    assert_eq!(small.status, 200, "{}", small.body);
    assert!(s.terminate(Duration::from_secs(30)).is_some(), "stopped");
    assert_eq!(
        dir_contains(s.data(), &needle),
        None,
        "the large input is not on disk"
    );
    assert!(
        dir_contains(s.data(), "small-input-kept").is_some(),
        "a small input is kept whole"
    );
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// Guards against one agent's async queue filling the disk: `max_queue` (10,000) requests of
/// up to 4 MiB each is 40 GB. The queued inputs of one agent are held to
/// `HANGAR_AGENT_QUOTA_MB` (1 MiB here); past it 429 `overloaded` with `Retry-After`, and room
/// comes back as the queue drains.
#[test]
fn queued_inputs_are_held_to_the_agent_quota() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Server::start_with(dir, &[("HANGAR_AGENT_QUOTA_MB", "1")]);
    let slow =
        // Slow enough that the first run still holds the one slot while the test fills the queue,
        // even on a loaded machine (700 ms was not, under a benchmark running beside it).
        FakeServer::start(|_| Reply::json(200, json!({"ok": 1})).slow(Duration::from_millis(3000)));
    let mut spec = valid_spec("Queued");
    spec["flow"]["start"] = json!("call");
    spec["flow"]["nodes"] = json!([
        {"id": "call", "type": "tool", "tool": "t", "next": "done"},
        {"id": "done", "type": "end", "output": {"ok": true}}
    ]);
    spec["tools"] = json!([{"name": "t", "connection": "svc", "security": "bearer", "method": "GET", "path": "/slow"}]);
    let id = s.create(&spec);
    let c = s.post(
        &format!("/v1/agents/{id}/connections"),
        &json!({"id": "svc", "server": slow.url, "auth": {"type": "bearer", "token": "t"}}),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let e = s.put(
        &format!("/v1/agents/{id}/endpoint"),
        &json!({"max_concurrency": 1}),
    );
    assert_eq!(e.status, 200, "{}", e.body);
    deploy(&s, &id);
    let submit = |pad: usize| {
        s.post(
            &format!("/v1/agents/{id}/invoke/async"),
            &json!({"input": {"pad": "p".repeat(pad)}}),
        )
    };
    // The one slot is taken, so what follows stays queued.
    assert_eq!(submit(1).status, 202);
    slow.wait_requests(1, Duration::from_secs(10));
    for i in 0..3 {
        let r = submit(300_000);
        assert_eq!(r.status, 202, "queued input {i}: {}", r.body);
    }
    let refused = submit(300_000);
    assert_eq!(refused.status, 429, "past 1 MiB: {}", refused.body);
    assert_eq!(refused.code(), "overloaded");
    assert!(refused.retry_after.is_some());
    // A small one still fits beside the three.
    assert_eq!(submit(10).status, 202);
    // As the queue drains, a large one fits again.
    let started = Instant::now();
    loop {
        let r = submit(300_000);
        if r.status == 202 {
            break;
        }
        assert_eq!(r.status, 429, "{}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the quota never freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Guards against templates that build gigabytes under the fuel limit (a string doubled 29
/// times is 512 MiB; `'x' * 100000000` is 100 MB in one instruction), whether the author or the
/// caller's input supplies the numbers: the node fails with `template_too_large`, in a preview
/// as in a live run, and the server carries on.
#[test]
fn a_template_that_builds_too_much_fails_the_node_as_template_too_large() {
    let s = Server::start();
    let cases = [
        (
            "{% set ns = namespace(s='x') %}{% for i in range(29) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            json!({}),
        ),
        ("{{ ('x' * 100000000)|length }}", json!({})),
        (
            "{{ (input.s * input.n)|length }}",
            json!({"s": "x".repeat(100_000), "n": 900}),
        ),
        ("{{ input.doc }}{{ input.doc }}", json!({"doc": "d".repeat(700_000)})),
    ];
    for (template, input) in cases {
        let mut spec = valid_spec("Builder");
        spec["flow"]["nodes"] = json!([
            {"id": "grow", "type": "transform", "output": {"n": template}, "next": "done"},
            {"id": "done", "type": "end", "output": {"n": "{{ nodes.grow.n }}"}}
        ]);
        spec["flow"]["start"] = json!("grow");
        let id = s.create(&spec);
        let r = s.post(
            &format!("/v1/agents/{id}/preview"),
            &json!({ "input": input }),
        );
        assert_eq!(r.status, 502, "{template}: {}", r.body);
        assert_eq!(r.code(), "run_failed");
        let error = &r.body["error"]["details"]["error"];
        assert_eq!(error["code"], "template_too_large", "{template}: {error}");
        assert_eq!(error["details"]["node"], "grow");
    }
    // Below the caps the same shapes run.
    let id = s.create(&valid_spec("Small"));
    let r = s.post(
        &format!("/v1/agents/{id}/preview"),
        &json!({"input": {"name": "x".repeat(500_000)}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.get("/healthz").status, 200);
}
