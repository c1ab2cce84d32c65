//! A scripted HTTP/1.1 server on 127.0.0.1 for tools, a fake OpenAI-compatible model and the
//! like. It records every request, can answer slowly, and notices when the client hangs up
//! while it is still waiting — which is how tests see an outbound call being dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// Wait this long before answering (watching for the client to hang up).
    pub delay: Duration,
    /// The answer's `Content-Type`.
    pub content_type: &'static str,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
            content_type: "application/json",
        }
    }

    /// A server-sent event stream (e.g. a streaming chat completion), sent whole.
    pub fn event_stream(body: String) -> Reply {
        Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
            content_type: "text/event-stream",
        }
    }

    pub fn slow(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Responder = dyn Fn(&Recorded) -> Reply + Send + Sync;

pub struct FakeServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Requests whose client hung up before the answer was sent.
    dropped: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    pub fn start(respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Responder> = Arc::new(respond);
        let (r, d, s) = (requests.clone(), dropped.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, d, respond) = (r.clone(), d.clone(), respond.clone());
                        std::thread::spawn(move || serve(stream, &r, &d, &*respond));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeServer {
            url,
            requests,
            dropped,
            stop,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn dropped(&self) -> Vec<Recorded> {
        self.dropped.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits up to `max` for `n` requests to have arrived.
    pub fn wait_requests(&self, n: usize, max: Duration) -> Vec<Recorded> {
        let start = Instant::now();
        while self.requests().len() < n && start.elapsed() < max {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.requests()
    }

    pub fn wait_dropped(&self, n: usize, max: Duration) -> Vec<Recorded> {
        let start = Instant::now();
        while self.dropped().len() < n && start.elapsed() < max {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.dropped()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    dropped: &Mutex<Vec<Recorded>>,
    respond: &Responder,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    // Keep-alive: answer requests on this connection until the client closes it.
    loop {
        let Some(req) = read_request(&mut stream) else {
            return;
        };
        if let Ok(mut r) = requests.lock() {
            r.push(req.clone());
        }
        let reply = respond(&req);
        if !reply.delay.is_zero() && client_hung_up_within(&mut stream, reply.delay) {
            if let Ok(mut d) = dropped.lock() {
                d.push(req);
            }
            return;
        }
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            reply.status,
            reply.content_type,
            reply.body.len()
        );
        if stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(reply.body.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// Watches the socket for `delay`; true if the client closed it meanwhile.
fn client_hung_up_within(stream: &mut TcpStream, delay: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(25)));
    let start = Instant::now();
    let mut byte = [0u8; 1];
    while start.elapsed() < delay {
        match stream.peek(&mut byte) {
            Ok(0) => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(25)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    false
}

fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}
