//! The blocking HTTP client side: one call, with the admin token, returning the status and the
//! JSON body, or the transport error (connection refused or reset: the server was killed).

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::server::TOKEN;

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout(timeout)
        .redirects(0)
        .build()
}

/// `Ok((status, body))` for any HTTP answer, `Err` for a transport failure.
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let req = agent
        .request(method, url)
        .set("Authorization", &format!("Bearer {TOKEN}"));
    let result = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader()
        .take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the body: {e}"))?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, body))
}

/// A setup call that must succeed with `want`; the error names the call and the answer.
pub fn expect(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&Value>,
    want: u16,
) -> Result<Value, String> {
    match call(agent, method, url, body)? {
        (s, v) if s == want => Ok(v),
        (s, v) => Err(format!("{method} {url}: expected {want}, got {s}: {v}")),
    }
}
