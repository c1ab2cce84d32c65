//! The loopback servers the agents call: a slow tool (answers after 50-200 ms, so runs are in
//! flight when the server is killed) and a webhook receiver recording every push delivery.
//! Plain std::net HTTP/1.1 with keep-alive, one thread per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::rng::{fnv, Rng};

pub struct Request {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

type Handler = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// Binds 127.0.0.1:0 and serves `handler` on its own threads; returns the base URL.
fn serve(handler: Arc<Handler>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || {
                let _ = connection(stream, &*handler);
            });
        }
    });
    Ok(url)
}

fn connection(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(req) = read_request(&mut reader)? else {
            return Ok(());
        };
        let close = req
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (status, body) = handler(&req);
        let reason = match status {
            200 => "OK",
            500 => "Internal Server Error",
            _ => "Status",
        };
        write!(
            writer,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// One request, or `None` at a clean end of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2]; // the chunk and its CRLF
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = headers.get("content-length").and_then(|v| v.parse().ok()) {
        body = vec![0; n];
        r.read_exact(&mut body)?;
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

pub const TOOL_TOKEN: &str = "crashtest-tool-token";
pub const HOOK_TOKEN: &str = "crashtest-hook-token";

/// What the tool saw.
#[derive(Default)]
pub struct ToolCalls {
    pub total: AtomicU64,
    /// Calls per `q` (the submission's unique tag): a run calls the tool once, so a tag seen
    /// twice means a run was executed again after a crash.
    pub by_tag: Mutex<HashMap<String, u32>>,
    arrived: Condvar,
}

impl ToolCalls {
    /// Blocks until a call arrives that was not counted yet, up to `timeout`; true if one did.
    pub fn wait_for_next(&self, timeout: Duration) -> bool {
        let map = self.by_tag.lock().unwrap();
        let before = self.total.load(Ordering::SeqCst);
        let (_map, res) = self
            .arrived
            .wait_timeout_while(map, timeout, |_| {
                self.total.load(Ordering::SeqCst) == before
            })
            .unwrap();
        !res.timed_out()
    }

    /// Blocks until the tool was called for `tag`, up to `timeout`; true if it was.
    pub fn wait_for_tag(&self, tag: &str, timeout: Duration) -> bool {
        let map = self.by_tag.lock().unwrap();
        let (_map, res) = self
            .arrived
            .wait_timeout_while(map, timeout, |m| !m.contains_key(tag))
            .unwrap();
        !res.timed_out()
    }

    /// Waits until no call arrived for `quiet`, up to `timeout`; true if it got that quiet.
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let before = self.total.load(Ordering::SeqCst);
            std::thread::sleep(quiet);
            if self.total.load(Ordering::SeqCst) == before {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
        }
    }
}

/// The slow tool: answers 200 after 50-200 ms. Returns its URL and what it saw.
pub fn tool(seed: u64) -> std::io::Result<(String, Arc<ToolCalls>)> {
    let calls = Arc::new(ToolCalls::default());
    let seen = calls.clone();
    let url = serve(Arc::new(move |req: &Request| {
        let tag = req
            .path
            .split_once("?q=")
            .map_or(String::new(), |(_, q)| q.to_owned());
        let n = {
            let mut map = seen.by_tag.lock().unwrap();
            *map.entry(tag).or_default() += 1;
            seen.total.fetch_add(1, Ordering::SeqCst)
        };
        seen.arrived.notify_all();
        let ms = 50 + Rng::new(seed ^ n).below(151) as u64;
        std::thread::sleep(Duration::from_millis(ms));
        (
            200,
            json!({"ok": true, "path": req.path, "ms": ms}).to_string(),
        )
    }))?;
    Ok((url, calls))
}

/// What the receiver saw for one `webhook-id` (= request id).
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Every POST with this id, whatever we answered.
    pub attempts: u32,
    /// POSTs we answered 2xx.
    pub delivered: u32,
    /// The Run's `status` in the last body.
    pub run_status: String,
    /// The Run's `error.code`, if any.
    pub error_code: String,
    pub bad_auth: bool,
    pub missing_headers: bool,
}

#[derive(Default)]
pub struct Hooks {
    pub by_id: Mutex<HashMap<String, Delivery>>,
    /// Deliveries answered 500 on purpose.
    pub refused: AtomicU64,
}

/// The webhook receiver: records every delivery; the first attempt of about 10% of the ids is
/// answered 500 (so retries happen), every other attempt 200.
pub fn webhook() -> std::io::Result<(String, Arc<Hooks>)> {
    let hooks = Arc::new(Hooks::default());
    let h = hooks.clone();
    let url = serve(Arc::new(move |req: &Request| {
        if req.method != "POST" {
            return (404, "{}".to_owned());
        }
        let id = req.headers.get("webhook-id").cloned().unwrap_or_default();
        let run: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut map = h.by_id.lock().unwrap();
        let d = map.entry(id.clone()).or_default();
        d.attempts += 1;
        d.run_status = run["status"].as_str().unwrap_or_default().to_owned();
        d.error_code = run["error"]["code"].as_str().unwrap_or_default().to_owned();
        if req.headers.get("authorization").map(String::as_str)
            != Some(&format!("Bearer {HOOK_TOKEN}"))
        {
            d.bad_auth = true;
        }
        if !req.headers.contains_key("webhook-timestamp")
            || !req.headers.contains_key("webhook-signature")
            || id.is_empty()
        {
            d.missing_headers = true;
        }
        if d.attempts == 1 && fnv(&id).is_multiple_of(10) {
            h.refused.fetch_add(1, Ordering::Relaxed);
            return (500, r#"{"error":"try again"}"#.to_owned());
        }
        d.delivered += 1;
        (200, "{}".to_owned())
    }))?;
    Ok((url, hooks))
}
