//! A scripted OpenAI-compatible chat-completions server on 127.0.0.1: each `POST
//! /chat/completions` gets the next answer of the script a test prescribes (tool calls, text, an
//! error status, or any of these slowly), and every request body is kept so the test can check
//! what the model was sent. A request asking for `"stream": true` gets the answer as
//! `chat.completion.chunk` server-sent events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::fake_http::{FakeServer, Reply};

/// One answer of the script.
#[derive(Debug, Clone)]
pub enum Say {
    /// The model asks for these calls: `(function name, arguments)`.
    Calls(Vec<(String, Value)>),
    /// The model answers this text, calling nothing.
    Text(String),
    /// The server answers this HTTP status with an error body.
    Status(u16),
    /// The answer, after a delay (the client hanging up meanwhile is recorded).
    Slowly(Duration, Box<Say>),
}

impl Say {
    pub fn call(name: &str, args: Value) -> Say {
        Say::Calls(vec![(name.to_owned(), args)])
    }
    pub fn text(text: &str) -> Say {
        Say::Text(text.to_owned())
    }
}

pub struct ScriptedModel {
    pub server: FakeServer,
    script: Arc<Mutex<VecDeque<Say>>>,
}

/// What the model says once the script is used up.
const AFTER_SCRIPT: &str = "(script over)";

impl ScriptedModel {
    pub fn start(script: Vec<Say>) -> ScriptedModel {
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let next = script.clone();
        let server = FakeServer::start(move |req| {
            let say = next
                .lock()
                .ok()
                .and_then(|mut s| s.pop_front())
                .unwrap_or_else(|| Say::text(AFTER_SCRIPT));
            let stream = serde_json::from_str::<Value>(&req.body)
                .map(|b| b["stream"] == true)
                .unwrap_or(false);
            answer(say, stream)
        });
        ScriptedModel { server, script }
    }

    /// The `base_url` of a model that uses this server.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Adds answers to the end of the script.
    pub fn then(&self, say: Say) {
        if let Ok(mut s) = self.script.lock() {
            s.push_back(say);
        }
    }

    /// The bodies of the chat requests received so far, oldest first.
    pub fn sent(&self) -> Vec<Value> {
        self.server
            .requests()
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    /// Waits up to `max` for `n` requests; their bodies.
    pub fn wait_sent(&self, n: usize, max: Duration) -> Vec<Value> {
        self.server.wait_requests(n, max);
        self.sent()
    }
}

fn answer(say: Say, stream: bool) -> Reply {
    match say {
        Say::Slowly(delay, say) => answer(*say, stream).slow(delay),
        Say::Status(status) => Reply::json(
            status,
            json!({"error": {"message": "scripted failure", "type": "server_error"}}),
        ),
        Say::Text(text) if stream => sse(&[
            json!({"role": "assistant", "content": ""}),
            json!({"content": text}),
        ]),
        Say::Text(text) => completion(json!({"role": "assistant", "content": text}), "stop"),
        Say::Calls(calls) => {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    json!({"id": format!("call_{i}_{name}"), "type": "function",
                           "function": {"name": name, "arguments": args.to_string()}})
                })
                .collect();
            completion(
                json!({"role": "assistant", "content": null, "tool_calls": calls}),
                "tool_calls",
            )
        }
    }
}

fn completion(message: Value, finish: &str) -> Reply {
    Reply::json(
        200,
        json!({"id": "chatcmpl-scripted", "object": "chat.completion", "model": "scripted",
               "choices": [{"index": 0, "message": message, "finish_reason": finish}],
               "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}),
    )
}

/// A streamed answer: one `chat.completion.chunk` event per delta, then `[DONE]`.
fn sse(deltas: &[Value]) -> Reply {
    let mut body = String::new();
    for delta in deltas {
        let chunk = json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    Reply {
        status: 200,
        body,
        delay: Duration::ZERO,
        content_type: "text/event-stream",
    }
}
