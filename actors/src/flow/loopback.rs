//! Test support: a loopback HTTP server that answers a few requests with fixed answers and
//! records what it was sent. Bounded: it serves as many connections as it has answers and gives
//! up after 10 s, so a failing test cannot leave it running.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One request as the loopback server saw it.
#[derive(Debug)]
pub struct Seen {
    pub line: String,
    /// Lowercased names.
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A loopback HTTP server that answers each of the first `answers.len()` connections with
/// the next fixed answer, records the requests and stops; it gives up after 10 s.
pub fn serve(answers: Vec<(u16, &'static str)>) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.set_nonblocking(true).expect("nonblocking");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut answers = answers.into_iter();
        let mut next = answers.next();
        while let Some((status, body)) = next {
            if Instant::now() > give_up {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(seen) = answer(stream, status, body) {
                        let _ = tx.send(seen);
                    }
                    next = answers.next();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (base, rx)
}

fn answer(stream: TcpStream, status: u16, body: &str) -> Option<Seen> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut raw = vec![0; len];
    reader.read_exact(&mut raw).ok()?;
    let mut stream = stream;
    let location = if status == 302 {
        "Location: /elsewhere\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    Some(Seen {
        line: line.trim_end().to_owned(),
        headers,
        body: String::from_utf8(raw).ok()?,
    })
}

pub fn recv(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the server saw a request")
}
