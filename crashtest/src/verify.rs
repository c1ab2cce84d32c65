//! The proofs after the last restart: every accepted request exists and ends in an allowed final
//! state; every acknowledged write is in the log at its seq; the log's chain links up.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http;
use crate::load::{Accepted, Ack, Target};

/// A request's final state: its status and its error code ("" without an error).
#[derive(Clone, Debug)]
pub struct Final {
    pub status: String,
    pub code: String,
}

#[derive(Default)]
pub struct Runs {
    /// By request id.
    pub finals: HashMap<String, Final>,
    /// Counts by "status" or "status/code".
    pub by_state: BTreeMap<String, u64>,
    /// 404: the server does not know a request it answered 202 for.
    pub lost: Vec<String>,
    /// Still queued/running (or unreadable) at the deadline.
    pub stuck: Vec<String>,
    /// A final state outside succeeded / failed(interrupted) / cancelled, or a wrong body.
    pub unexpected: Vec<String>,
}

impl Runs {
    pub fn interrupted(&self) -> u64 {
        self.by_state
            .get("failed/interrupted")
            .copied()
            .unwrap_or(0)
    }
}

const FINAL: [&str; 4] = ["succeeded", "failed", "timed_out", "cancelled"];

/// Polls every accepted request (long-poll, `threads` at a time) until it is final or `deadline`.
pub fn runs(
    base: &str,
    targets: &[Target],
    accepted: &[Accepted],
    threads: usize,
    deadline: Instant,
) -> Runs {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Runs::default());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let agent = http::agent(Duration::from_secs(40));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(a) = accepted.get(i) else { return };
                    let verdict = one_run(&agent, base, &targets[a.agent].id, a, deadline);
                    let mut o = out.lock().unwrap();
                    let rid = a.request_id.clone();
                    match verdict {
                        Verdict::Final(f) => {
                            let key = if f.code.is_empty() || f.status == "succeeded" {
                                f.status.clone()
                            } else {
                                format!("{}/{}", f.status, f.code)
                            };
                            let allowed = f.status == "succeeded"
                                || f.status == "cancelled"
                                || (f.status == "failed" && f.code == "interrupted");
                            if !allowed {
                                o.unexpected.push(format!("{rid}: final state {key}"));
                            }
                            *o.by_state.entry(key).or_default() += 1;
                            o.finals.insert(rid, f);
                        }
                        Verdict::Lost => o.lost.push(format!("{rid}: 404 after its 202")),
                        Verdict::Stuck(why) => o.stuck.push(format!("{rid}: {why}")),
                        Verdict::Wrong(why) => o.unexpected.push(format!("{rid}: {why}")),
                    }
                }
            });
        }
    });
    out.into_inner().unwrap()
}

enum Verdict {
    Final(Final),
    Lost,
    Stuck(String),
    Wrong(String),
}

fn one_run(
    agent: &ureq::Agent,
    base: &str,
    agent_id: &str,
    a: &Accepted,
    deadline: Instant,
) -> Verdict {
    let mut last = String::from("never answered");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Verdict::Stuck(format!("not final at the deadline: {last}"));
        }
        let wait = left.as_secs().min(30);
        let url = format!(
            "{base}/v1/agents/{agent_id}/requests/{}?wait={wait}",
            a.request_id
        );
        match http::call(agent, "GET", &url, None) {
            Ok((200, run)) => {
                let status = run["status"].as_str().unwrap_or_default().to_owned();
                if run["request_id"] != a.request_id.as_str() || run["agent_id"] != agent_id {
                    return Verdict::Wrong(format!("the poll answered another run: {run}"));
                }
                if FINAL.contains(&status.as_str()) {
                    let code = run["error"]["code"].as_str().unwrap_or_default().to_owned();
                    return Verdict::Final(Final { status, code });
                }
                last = format!("status {status}");
                if wait == 0 {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Ok((404, _)) => return Verdict::Lost,
            Ok((s, body)) => {
                last = format!("HTTP {s}: {body}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                last = format!("transport error: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[derive(Default)]
pub struct Writes {
    pub checked: u64,
    /// Events read from all logs.
    pub events: u64,
    /// Acknowledged writes not in the log at their seq with their description.
    pub lost: Vec<String>,
    /// Gaps, bad links, unreadable pages.
    pub chain: Vec<String>,
}

/// Reads every target's log (paging by 1000) and finds each acknowledged write at its seq.
pub fn writes(base: &str, targets: &[Target], acks: &[Ack]) -> Writes {
    let agent = http::agent(Duration::from_secs(30));
    let mut out = Writes::default();
    for (i, t) in targets.iter().enumerate() {
        let mut log: HashMap<u64, Value> = HashMap::new();
        let mut after = 0u64;
        let mut prev_hash = "0".repeat(64);
        'pages: loop {
            let url = format!("{base}/v1/agents/{}/events?after={after}&limit=1000", t.id);
            let page = match http::call(&agent, "GET", &url, None) {
                Ok((200, body)) => body["events"].as_array().cloned().unwrap_or_default(),
                other => {
                    out.chain
                        .push(format!("{}: reading events after {after}: {other:?}", t.id));
                    break 'pages;
                }
            };
            let n = page.len();
            for e in page {
                let seq = e["seq"].as_u64().unwrap_or(0);
                if seq != after + 1 {
                    out.chain
                        .push(format!("{}: seq {seq} follows {after}", t.id));
                }
                if e["prev_hash"] != prev_hash.as_str() {
                    out.chain
                        .push(format!("{}#{seq}: prev_hash does not link", t.id));
                }
                prev_hash = e["hash"].as_str().unwrap_or_default().to_owned();
                after = seq;
                out.events += 1;
                log.insert(seq, e);
            }
            if n == 0 {
                break; // paging until an empty page works whatever the server's page cap
            }
        }
        for ack in acks.iter().filter(|a| a.agent == i) {
            out.checked += 1;
            match log.get(&ack.seq) {
                None => out.lost.push(format!(
                    "{}: write \"{}\" acknowledged at seq {} is not in the log (last seq {after})",
                    t.id, ack.description, ack.seq
                )),
                Some(e) => {
                    let desc = &e["data"]["spec"]["description"];
                    if e["type"] != "FlowEdited" || desc != ack.description.as_str() {
                        out.lost.push(format!(
                            "{}#{}: expected FlowEdited \"{}\", found {} {desc}",
                            t.id, ack.seq, ack.description, e["type"]
                        ));
                    }
                }
            }
        }
    }
    out
}
