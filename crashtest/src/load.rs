//! The load: submitter threads (`POST /invoke/async`) and writer threads (`PUT /draft`) that keep
//! going across kills, always at the current server's address. Only answers count: a request that
//! fails with a transport error (the server was being killed) is simply not accepted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use crate::http;
use crate::rng::Rng;

/// One deployed agent the load targets.
#[derive(Clone)]
pub struct Target {
    pub id: String,
    /// Its draft spec; writers re-send it with a new description.
    pub spec: Value,
    pub push: bool,
}

pub struct Shared {
    /// The servers' addresses (one, or each node of a cluster): the load is spread over them.
    pub bases: RwLock<Vec<String>>,
    pub stop: AtomicBool,
    /// While set, the threads send nothing (the quiet moment of the probe kill).
    pub paused: AtomicBool,
}

impl Shared {
    /// The address for a thread's `i`th request: the nodes in turn, so each thread's load is
    /// spread evenly over them.
    fn base(&self, i: u64) -> String {
        let bases = self.bases.read().unwrap();
        bases[(i % bases.len() as u64) as usize].clone()
    }
}

/// A request that got a 202.
#[derive(Clone)]
pub struct Accepted {
    pub agent: usize,
    pub request_id: String,
    /// The submission's unique tag (`input.q`), which the tool sees.
    pub tag: String,
}

/// A draft write that got a 2xx.
#[derive(Clone)]
pub struct Ack {
    pub agent: usize,
    pub seq: u64,
    pub description: String,
}

/// What one thread saw besides its successes.
#[derive(Default)]
pub struct Tally {
    pub transport_errors: u64,
    /// Non-success HTTP statuses, by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Success answers that did not look right (no request id, no seq, wrong description).
    pub malformed: Vec<String>,
}

pub fn submitter(
    n: usize,
    seed: u64,
    targets: Arc<Vec<Target>>,
    shared: Arc<Shared>,
) -> (Vec<Accepted>, Tally) {
    let agent = http::agent(Duration::from_secs(20));
    let mut rng = Rng::new(seed);
    let (mut accepted, mut tally) = (Vec::new(), Tally::default());
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        i += 1;
        let a = rng.below(targets.len());
        let url = format!(
            "{}/v1/agents/{}/invoke/async",
            shared.base(i),
            targets[a].id
        );
        let tag = format!("s{n}-{i}");
        match http::call(
            &agent,
            "POST",
            &url,
            Some(&json!({"input": {"name": tag, "q": tag}})),
        ) {
            Ok((202, body)) => match body["request_id"].as_str() {
                Some(rid) => accepted.push(Accepted {
                    agent: a,
                    request_id: rid.to_owned(),
                    tag: tag.clone(),
                }),
                None => tally
                    .malformed
                    .push(format!("202 without request_id: {body}")),
            },
            Ok((status, _)) => {
                *tally.statuses.entry(status).or_default() += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                tally.transport_errors += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    (accepted, tally)
}

pub fn writer(
    n: usize,
    seed: u64,
    targets: Arc<Vec<Target>>,
    shared: Arc<Shared>,
) -> (Vec<Ack>, Tally) {
    let agent = http::agent(Duration::from_secs(20));
    let mut rng = Rng::new(seed);
    let (mut acks, mut tally) = (Vec::new(), Tally::default());
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        i += 1;
        let a = rng.below(targets.len());
        let description = format!("crashtest write w{n}-{i}");
        let mut spec = targets[a].spec.clone();
        spec["description"] = json!(description);
        let url = format!("{}/v1/agents/{}/draft", shared.base(i), targets[a].id);
        match http::call(&agent, "PUT", &url, Some(&spec)) {
            Ok((s, body)) if (200..300).contains(&s) => match body["seq"].as_u64() {
                Some(seq) if body["description"] == description.as_str() => acks.push(Ack {
                    agent: a,
                    seq,
                    description,
                }),
                _ => tally.malformed.push(format!(
                    "{s} for {description} without its seq/description: {body}"
                )),
            },
            Ok((status, _)) => {
                *tally.statuses.entry(status).or_default() += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                tally.transport_errors += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    (acks, tally)
}
