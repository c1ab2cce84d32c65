//! The cheapest HTTP/1.1 we can get away with: a blocking client over one keep-alive
//! `TcpStream` (Content-Length and chunked bodies), and two tiny loopback servers — a webhook
//! receiver that answers 200 and counts, and a "slow tool" that accepts and never answers.
//!
//! Everything binds or connects to 127.0.0.1 only, and every read has a timeout.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One keep-alive connection. Reconnects when the server closed it.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    timeout: Duration,
    /// Prebuilt headers sent with every request (Host, Authorization).
    common: String,
}

pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Conn {
        let mut common = format!("Host: {addr}\r\n");
        if let Some(t) = token {
            common.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            timeout: Duration::from_secs(40),
            common,
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        self.stream = Some(s);
        self.buf.clear();
        Ok(())
    }

    pub fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.send("GET", path, None)
    }
    pub fn post(&mut self, path: &str, body: &str) -> io::Result<Resp> {
        self.send("POST", path, Some(body.as_bytes()))
    }
    pub fn put(&mut self, path: &str, body: &str) -> io::Result<Resp> {
        self.send("PUT", path, Some(body.as_bytes()))
    }

    /// One request. A keep-alive connection the server had already closed (nothing read back)
    /// is retried once on a new connection.
    pub fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<Resp> {
        let mut req = String::with_capacity(256);
        req.push_str(method);
        req.push(' ');
        req.push_str(path);
        req.push_str(" HTTP/1.1\r\n");
        req.push_str(&self.common);
        let mut bytes = req.into_bytes();
        match body {
            Some(b) => {
                bytes.extend_from_slice(
                    format!(
                        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    )
                    .as_bytes(),
                );
                bytes.extend_from_slice(b);
            }
            None => bytes.extend_from_slice(b"\r\n"),
        }
        for attempt in 0..2 {
            let reused = self.stream.is_some();
            if !reused {
                self.connect()?;
            }
            match self.exchange(&bytes) {
                Ok(r) => return Ok(r),
                Err((e, nothing_read)) => {
                    self.stream = None;
                    if !(reused && nothing_read && attempt == 0) {
                        return Err(e);
                    }
                }
            }
        }
        Err(bad("unreachable"))
    }

    /// Writes the request and reads one response. On error, whether no response byte came.
    fn exchange(&mut self, req: &[u8]) -> Result<Resp, (io::Error, bool)> {
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(req).map_err(|e| (e, true))?;
        self.buf.clear();
        // Head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = read_more(stream, &mut self.buf).map_err(|e| (e, self.buf.is_empty()))?;
            if n == 0 {
                let none = self.buf.is_empty();
                return Err((bad("connection closed"), none));
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| (bad("head"), false))?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| (bad(format!("status line: {head}")), false))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        for line in head.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        let mut rest = self.buf.split_off(head_end);
        let body = if chunked {
            read_chunked(stream, &mut rest).map_err(|e| (e, false))?
        } else {
            let len = length.unwrap_or(0);
            while rest.len() < len {
                if read_more(stream, &mut rest).map_err(|e| (e, false))? == 0 {
                    return Err((bad("body cut short"), false));
                }
            }
            rest.truncate(len);
            rest
        };
        if close {
            self.stream = None;
        }
        Ok(Resp { status, body })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            if read_more(stream, buf)? == 0 {
                return Err(bad("chunk cut short"));
            }
        };
        let size_text = std::str::from_utf8(&buf[pos..line_end]).map_err(|_| bad("chunk"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("chunk size"))?;
        let start = line_end + 2;
        while buf.len() < start + size + 2 {
            if read_more(stream, buf)? == 0 {
                return Err(bad("chunk cut short"));
            }
        }
        body.extend_from_slice(&buf[start..start + size]);
        pos = start + size + 2;
        if size == 0 {
            return Ok(body);
        }
    }
}

/// Reads one request (head + Content-Length body) from `buf`/`stream`; `Ok(false)` at EOF.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if read_more(stream, buf)? == 0 {
            return Ok(false);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        if read_more(stream, buf)? == 0 {
            return Ok(false);
        }
    }
    buf.drain(..head_end + len);
    Ok(true)
}

/// A webhook receiver on 127.0.0.1: answers every POST 200 and counts it.
pub struct Receiver {
    pub url: String,
    pub count: Arc<AtomicU64>,
    /// Nanoseconds after `epoch` of the latest delivery.
    pub last_ns: Arc<AtomicU64>,
    pub epoch: Instant,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> io::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let count = Arc::new(AtomicU64::new(0));
        let last_ns = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (c, l, s) = (count.clone(), last_ns.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let (c, l, s) = (c.clone(), l.clone(), s.clone());
                        workers.push(std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_nodelay(true);
                            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut buf = Vec::new();
                            while !s.load(Ordering::Relaxed) {
                                match read_request(&mut stream, &mut buf) {
                                    Ok(true) => {
                                        c.fetch_add(1, Ordering::Relaxed);
                                        l.store(
                                            epoch.elapsed().as_nanos() as u64,
                                            Ordering::Relaxed,
                                        );
                                        if stream
                                            .write_all(
                                                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                                            )
                                            .is_err()
                                        {
                                            break;
                                        }
                                    }
                                    Ok(false) => break,
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => break,
                                }
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Ok(Receiver {
            url,
            count,
            last_ns,
            epoch,
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// A "tool" on 127.0.0.1 that accepts connections and never answers; it holds them until dropped.
pub struct Sink {
    pub url: String,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Sink {
    pub fn start() -> io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(true);
                        c.lock().expect("sink").push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Sink {
            url,
            conns,
            stop,
            accept: Some(accept),
        })
    }

    /// Connections accepted so far (each carries one tool call that never gets its answer).
    pub fn accepted(&self) -> usize {
        self.conns.lock().expect("sink").len()
    }

    /// How many of the held connections the client has closed.
    pub fn closed_by_client(&self) -> usize {
        let conns = self.conns.lock().expect("sink");
        let mut buf = [0u8; 4096];
        conns
            .iter()
            .filter(|s| loop {
                let mut r: &TcpStream = s;
                match r.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            })
            .count()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        for s in self.conns.lock().expect("sink").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
