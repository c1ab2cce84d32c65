//! A small server-sent events reader for the black-box tests: it opens a stream on the real
//! server and hands out its events one by one, so a test can stop reading, drop the connection
//! or resume.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::Value;

use super::{Server, TOKEN};

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

pub struct SseStream {
    reader: BufReader<Box<dyn Read + Send + Sync>>,
    pub status: u16,
    pub content_type: String,
}

/// Opens `method path` as an event stream with the admin token. An answer that is not 200 comes
/// back as `Err((status, body))`.
pub fn open(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<SseStream, (u16, Value)> {
    let agent = ureq::AgentBuilder::new()
        .timeout_read(Duration::from_secs(40))
        .timeout_connect(Duration::from_secs(10))
        .build();
    let mut req = agent
        .request(method, &format!("{}{}", server.base, path))
        .set("Authorization", &format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    match result {
        Ok(resp) => {
            let status = resp.status();
            let content_type = resp.header("Content-Type").unwrap_or("").to_owned();
            Ok(SseStream {
                reader: BufReader::new(resp.into_reader()),
                status,
                content_type,
            })
        }
        Err(ureq::Error::Status(status, resp)) => {
            let body = resp.into_json().unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("{method} {path}: transport error {e}"),
    }
}

impl SseStream {
    /// The next event (comments skipped), or `None` once the stream has ended.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if event.is_empty() && data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(SseEvent { id, event, data });
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = value.parse().ok(),
                "event" => event = value.to_owned(),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                _ => {}
            }
        }
    }

    /// Every event up to the end of the stream.
    pub fn rest(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(e) = self.next_event() {
            events.push(e);
        }
        events
    }
}
