//! hangar-crashtest: a crash-and-load test program for the real `hangar` binary.
//!
//! It builds and starts the server, deploys a few agents (one calls a slow loopback tool, some
//! push their results to a loopback webhook receiver), drives async submissions and draft writes
//! from several threads, kills the server with SIGKILL at random moments and restarts it on the
//! same data directory, then proves that nothing acknowledged was lost: every 202'd request
//! exists and ends in an allowed final state, every 2xx'd write is in the log at its seq,
//! `hangar verify` passes, and every final run of a push agent was delivered.
//!
//! With `--cluster N` it starts a temporary PostgreSQL (`initdb`/`pg_ctl`, as the `postgres` user
//! when run as root) and N `hangar serve` nodes on it, spreads the same load over the nodes, kills
//! a random node at each kill and restarts it (same `--node-id`), and checks the same way through
//! any node, with `hangar verify --store URL` for the chains.
//!
//! ```sh
//! cargo run --release -p hangar-crashtest -- [--kills 5] [--seconds-between 1.5] [--writers 4]
//!     [--submitters 8] [--agents 4] [--cluster N] [--seed N] [--keep]
//! ```
//! Exit status: 0 all proven, 1 something was lost or wrong, 2 the harness could not run.

mod cluster;
mod http;
mod load;
mod receivers;
mod rng;
mod server;
mod verify;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use events::store::pg::testing::TempPostgres;
use load::{Accepted, Ack, Shared, Tally, Target};
use rng::Rng;

struct Args {
    kills: usize,
    seconds_between: f64,
    writers: usize,
    submitters: usize,
    agents: usize,
    /// 0: one node on sled; N: N nodes on a temporary PostgreSQL.
    cluster: usize,
    seed: u64,
    keep: bool,
}

const USAGE: &str = "usage: hangar-crashtest [--kills N (5)] [--seconds-between S (1.5)] \
[--writers N (4)] [--submitters N (8)] [--agents N (4)] [--cluster NODES (0: one node on sled)] \
[--seed N] [--keep]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        kills: 5,
        seconds_between: 1.5,
        writers: 4,
        submitters: 8,
        agents: 4,
        cluster: 0,
        seed: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--keep" {
            a.keep = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let bad = format!("{flag}: not a number: {value}\n{USAGE}");
        match flag.as_str() {
            "--kills" => a.kills = value.parse().map_err(|_| bad.clone())?,
            "--seconds-between" => a.seconds_between = value.parse().map_err(|_| bad.clone())?,
            "--writers" => a.writers = value.parse().map_err(|_| bad.clone())?,
            "--submitters" => a.submitters = value.parse().map_err(|_| bad.clone())?,
            "--agents" => a.agents = value.parse().map_err(|_| bad.clone())?,
            "--cluster" => a.cluster = value.parse().map_err(|_| bad.clone())?,
            "--seed" => a.seed = value.parse().map_err(|_| bad.clone())?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if a.agents == 0
        || !(0.05..=60.0).contains(&a.seconds_between)
        || a.kills > 100
        || a.cluster > 16
    {
        return Err(format!(
            "--agents must be at least 1, --seconds-between 0.05-60, --kills at most 100, \
             --cluster at most 16\n{USAGE}"
        ));
    }
    Ok(a)
}

/// How long, at most, the checks after the load may take.
const RUNS_DEADLINE: Duration = Duration::from_secs(60);
const PUSH_DEADLINE: Duration = Duration::from_secs(45);
/// Without a single delivery by then, push is taken as not wired.
const PUSH_FIRST_DELIVERY: Duration = Duration::from_secs(15);

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match run(&a) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("crashtest: harness error: {e}");
            std::process::exit(2);
        }
    }
}

fn spec(name: &str, description: &str) -> Value {
    json!({
        "name": name, "description": description,
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "flow": {"start": "greet", "nodes": [
            {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.name }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.greet.text }}"}}
        ]}
    })
}

fn tool_spec(name: &str, description: &str) -> Value {
    json!({
        "name": name, "description": description,
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Be brief.",
        "tools": [{"name": "slow", "connection": "svc", "security": "bearer", "method": "POST",
                   "path": "/slow?q={{ args.q }}", "body": {"q": "{{ args.q }}"}}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "slow", "args": {"q": "{{ input.q }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}
        ]}
    })
}

/// Creates `quick` transform → end agents and one slow-tool agent; every other quick agent and
/// the tool agent push to the webhook receiver. Deploys them all.
fn setup(base: &str, quick: usize, tool_url: &str, hook_url: &str) -> Result<Vec<Target>, String> {
    let agent = http::agent(Duration::from_secs(30));
    let mut targets = Vec::new();
    for i in 0..=quick {
        let tool = i == quick;
        let push = tool || i % 2 == 1;
        let name = if tool {
            "crash-tool".to_owned()
        } else {
            format!("crash-quick-{i}")
        };
        let desc = format!("{name}: crashtest agent");
        let spec = if tool {
            tool_spec(&name, &desc)
        } else {
            spec(&name, &desc)
        };
        let created = http::expect(
            &agent,
            "POST",
            &format!("{base}/v1/agents"),
            Some(&spec),
            201,
        )?;
        let id = created["id"]
            .as_str()
            .ok_or("created agent without id")?
            .to_owned();
        let at = |p: &str| format!("{base}/v1/agents/{id}{p}");
        if tool {
            let conn = json!({"id": "svc", "server": tool_url, "credentials": "team",
                              "auth": {"type": "bearer", "token": receivers::TOOL_TOKEN}});
            http::expect(&agent, "POST", &at("/connections"), Some(&conn), 201)?;
        }
        if push {
            let ep = json!({"async": {"push_enabled": true, "url": format!("{hook_url}/hook/{id}"),
                                      "token": receivers::HOOK_TOKEN}});
            http::expect(&agent, "PUT", &at("/endpoint"), Some(&ep), 200)?;
        }
        http::expect(&agent, "POST", &at("/deploy"), Some(&json!({})), 200)?;
        targets.push(Target { id, spec, push });
    }
    Ok(targets)
}

fn run(a: &Args) -> Result<bool, String> {
    let began = Instant::now();
    println!("crashtest: seed {} (rerun with --seed {0})", a.seed);
    println!("crashtest: building the server (cargo build --release --bin hangar)");
    let bin = server::build()?;
    let work = tempfile::Builder::new()
        .prefix("hangar-crashtest-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;

    let (tool_url, tool_calls) = receivers::tool(a.seed).map_err(|e| format!("tool: {e}"))?;
    let (hook_url, hooks) = receivers::webhook().map_err(|e| format!("webhook: {e}"))?;
    let pg = if a.cluster > 0 {
        let pg = cluster::postgres()?;
        println!("crashtest: PostgreSQL at {}", pg.url());
        Some(pg)
    } else {
        None
    };
    let store_url = pg.as_ref().map(TempPostgres::url);
    let (mut nodes, logs) =
        cluster::start_nodes(&bin, work.path(), store_url.as_deref(), a.cluster)?;
    for n in &nodes {
        println!("crashtest: {} at {}", n.name, n.base);
    }
    let targets = Arc::new(setup(&nodes[0].base, a.agents, &tool_url, &hook_url)?);
    println!(
        "crashtest: {} agents deployed ({} push, 1 calls a 50-200 ms tool)",
        targets.len(),
        targets.iter().filter(|t| t.push).count()
    );

    // The load, across kills.
    let shared = Arc::new(Shared {
        bases: RwLock::new(nodes.iter().map(|n| n.base.clone()).collect()),
        stop: Default::default(),
        paused: Default::default(),
    });
    let load_began = Instant::now();
    let subs: Vec<_> = (0..a.submitters)
        .map(|n| {
            let (t, s, seed) = (
                targets.clone(),
                shared.clone(),
                a.seed ^ (0x5u64 << 32) ^ n as u64,
            );
            std::thread::spawn(move || load::submitter(n, seed, t, s))
        })
        .collect();
    let wrs: Vec<_> = (0..a.writers)
        .map(|n| {
            let (t, s, seed) = (
                targets.clone(),
                shared.clone(),
                a.seed ^ (0x7u64 << 32) ^ n as u64,
            );
            std::thread::spawn(move || load::writer(n, seed, t, s))
        })
        .collect();

    let mut rng = Rng::new(a.seed);
    let mut kills = 0;
    let mut restart_error = None;
    for k in 0..a.kills {
        let delay = a.seconds_between * rng.range(0.3, 1.7);
        std::thread::sleep(Duration::from_secs_f64(delay));
        // Every other kill lands the moment a tool call arrives: a run has just started and is
        // in flight, the moment where "running" must already be durable.
        let at_tool_call = k % 2 == 1 && tool_calls.wait_for_next(Duration::from_secs(1));
        // In a cluster, a random node: the tool call may be running on any of them.
        let victim = if nodes.len() > 1 {
            rng.below(nodes.len())
        } else {
            0
        };
        let srv = &mut nodes[victim];
        srv.kill();
        kills += 1;
        if let Err(e) = srv.restart() {
            restart_error = Some(format!("restart of {} after kill {}: {e}", srv.name, k + 1));
            break;
        }
        shared.bases.write().unwrap()[victim] = srv.base.clone();
        println!(
            "crashtest: kill {} of {} at +{:.2}s (after {:.2}s{}), restarted at {} in {:.2}s",
            k + 1,
            srv.name,
            load_began.elapsed().as_secs_f64(),
            delay,
            if at_tool_call { ", at a tool call" } else { "" },
            srv.base,
            srv.start_times.last().map_or(0.0, Duration::as_secs_f64)
        );
    }
    let mut probe = None;
    // The probe needs to know which server runs the probe's run: one node only.
    if restart_error.is_none() && nodes.len() == 1 {
        let srv = &mut nodes[0];
        // The probe kill: pause the load, let everything settle, submit one request to the tool
        // agent and kill the server the moment its tool call arrives. Nothing else is writing,
        // so this is the one moment where a "running" mark that is not yet durable would show.
        shared.paused.store(true, Ordering::Relaxed);
        let quiet = tool_calls.wait_quiet(Duration::from_millis(300), Duration::from_secs(15));
        let tool_agent = targets.len() - 1;
        let agent = http::agent(Duration::from_secs(20));
        let url = format!(
            "{}/v1/agents/{}/invoke/async",
            srv.base, targets[tool_agent].id
        );
        let body = json!({"input": {"name": "probe", "q": "probe"}});
        match http::call(&agent, "POST", &url, Some(&body)) {
            Ok((202, b)) if b["request_id"].is_string() => {
                let rid = b["request_id"].as_str().unwrap_or_default().to_owned();
                let called = tool_calls.wait_for_tag("probe", Duration::from_secs(10));
                srv.kill();
                kills += 1;
                match srv.restart() {
                    Ok(()) => {
                        shared.bases.write().unwrap()[0] = srv.base.clone();
                        println!(
                            "crashtest: probe kill {kills} at +{:.2}s ({}, request {rid}{}), restarted at {}",
                            load_began.elapsed().as_secs_f64(),
                            if quiet { "quiet" } else { "NOT quiet after 15s" },
                            if called { " at its tool call" } else { ": its tool call never came" },
                            srv.base
                        );
                        probe = Some(Accepted {
                            agent: tool_agent,
                            request_id: rid,
                            tag: "probe".to_owned(),
                        });
                    }
                    Err(e) => restart_error = Some(format!("restart after the probe kill: {e}")),
                }
            }
            other => println!("crashtest: probe not submitted ({other:?}); skipped"),
        }
        shared.paused.store(false, Ordering::Relaxed);
    }
    if restart_error.is_none() {
        // Some load on the last server too, then stop.
        std::thread::sleep(Duration::from_secs_f64(a.seconds_between));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let load_secs = load_began.elapsed().as_secs_f64();
    let (mut accepted, mut acks) = (Vec::<Accepted>::new(), Vec::<Ack>::new());
    let (mut sub_tally, mut wr_tally) = (Tally::default(), Tally::default());
    for h in subs {
        let (acc, t) = h.join().map_err(|_| "a submitter panicked")?;
        accepted.extend(acc);
        merge(&mut sub_tally, t);
    }
    for h in wrs {
        let (ack, t) = h.join().map_err(|_| "a writer panicked")?;
        acks.extend(ack);
        merge(&mut wr_tally, t);
    }
    let probe_done = probe.is_some();
    accepted.extend(probe);
    println!(
        "crashtest: load stopped after {load_secs:.1}s: {} requests accepted, {} writes acknowledged; checking",
        accepted.len(),
        acks.len()
    );

    let mut failures: Vec<String> = Vec::new();
    if let Some(e) = restart_error {
        failures.push(e);
        return finish(a, work, &logs, &failures);
    }
    failures.extend(
        sub_tally
            .malformed
            .iter()
            .map(|m| format!("submission: {m}")),
    );
    failures.extend(wr_tally.malformed.iter().map(|m| format!("write: {m}")));

    // (a) every accepted request exists and ends in an allowed final state. Any node answers
    // for every agent in a cluster: the first one is asked.
    let base = nodes[0].base.clone();
    let t0 = Instant::now();
    let runs = verify::runs(
        &base,
        &targets,
        &accepted,
        8,
        Instant::now() + RUNS_DEADLINE,
    );
    let runs_secs = t0.elapsed().as_secs_f64();
    failures.extend(runs.lost.iter().map(|m| format!("lost request {m}")));
    failures.extend(runs.stuck.iter().map(|m| format!("stuck request {m}")));
    failures.extend(runs.unexpected.iter().map(|m| format!("request {m}")));

    // (b) every acknowledged write is in the log at its seq.
    let writes = verify::writes(&base, &targets, &acks);
    failures.extend(writes.lost.iter().map(|m| format!("lost write {m}")));
    failures.extend(writes.chain.iter().map(|m| format!("log {m}")));
    // Two acknowledgements of one seq would mean the server answered two writes with one event.
    let mut seen = HashSet::new();
    for ack in &acks {
        if !seen.insert((ack.agent, ack.seq)) {
            failures.push(format!(
                "two writes acknowledged at {}#{}",
                targets[ack.agent].id, ack.seq
            ));
        }
    }

    // (d) push: every final run of a push agent delivered at least once.
    let push = check_push(&targets, &accepted, &runs, &hooks);
    failures.extend(push.failures.iter().cloned());

    // A run that was running at a kill ends `interrupted` and is not run again: no submission
    // reaches the tool twice.
    let repeated: Vec<(String, u32)> = tool_calls
        .by_tag
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, n)| (t.clone(), *n))
        .collect();
    for (tag, n) in repeated.iter().take(20) {
        let run = match accepted.iter().find(|x| &x.tag == tag) {
            Some(x) => match runs.finals.get(&x.request_id) {
                Some(f) if f.code.is_empty() => {
                    format!("request {} ended {}", x.request_id, f.status)
                }
                Some(f) => format!("request {} ended {}/{}", x.request_id, f.status, f.code),
                None => format!("request {}", x.request_id),
            },
            None => "its 202 was lost in a kill".to_owned(),
        };
        failures.push(format!(
            "re-run after a crash: the run of submission {tag} called the tool {n} times ({run})"
        ));
    }

    // No panic in the servers' logs, in any of their lives.
    let server_logs: Vec<String> = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
        .collect();
    let panics: Vec<&str> = server_logs
        .iter()
        .flat_map(|log| log.lines())
        .filter(|l| l.contains("panicked"))
        .collect();
    for l in panics.iter().take(5) {
        failures.push(format!("the server panicked: {l}"));
    }

    // (c) the stopped servers' logs verify: the data directory, or every chain in PostgreSQL.
    for n in &mut nodes {
        n.kill();
    }
    let (verified, verify_out) = match &store_url {
        Some(url) => nodes[0].verify_store(url)?,
        None => nodes[0].verify()?,
    };
    if !verified {
        failures.push(format!("hangar verify failed: {verify_out}"));
    }

    // The figures.
    let interrupted = runs.interrupted();
    let lost_requests = runs.lost.len();
    let lost_writes = writes.lost.len();
    println!();
    println!("== crashtest figures (seed {}) ==", a.seed);
    if a.cluster > 0 {
        println!(
            "nodes                         {} `hangar serve` on one PostgreSQL, the load spread over them",
            nodes.len()
        );
    }
    println!(
        "kills (SIGKILL + restart)     {kills} ({} at random moments under load{})",
        kills - usize::from(probe_done),
        if probe_done { ", 1 quiet probe" } else { "" }
    );
    let starts: Vec<Duration> = nodes
        .iter()
        .flat_map(|n| n.start_times.iter().copied())
        .collect();
    println!(
        "server starts                 {} (slowest {:.2}s)",
        starts.len(),
        starts.iter().map(Duration::as_secs_f64).fold(0.0, f64::max)
    );
    println!(
        "load                          {load_secs:.1}s, {} submitters, {} writers, {} agents",
        a.submitters,
        a.writers,
        targets.len()
    );
    println!(
        "requests accepted (202)       {}  ({:.0}/s)",
        accepted.len(),
        accepted.len() as f64 / load_secs
    );
    println!(
        "  final states                {}",
        fmt_counts(&runs.by_state)
    );
    println!("  checked in                  {runs_secs:.1}s");
    println!(
        "  not accepted                {} transport errors, HTTP {}",
        sub_tally.transport_errors,
        fmt_statuses(&sub_tally.statuses)
    );
    println!("writes acknowledged (2xx)     {}", acks.len());
    println!(
        "  not acknowledged            {} transport errors, HTTP {}",
        wr_tally.transport_errors,
        fmt_statuses(&wr_tally.statuses)
    );
    println!("  events in the logs          {}", writes.events);
    println!("lost requests                 {lost_requests}");
    println!("lost writes                   {lost_writes}");
    println!("stuck runs                    {}", runs.stuck.len());
    println!("unexpected final states       {}", runs.unexpected.len());
    println!("interrupted runs              {interrupted}");
    println!(
        "runs re-run after a kill      {} (a tool call repeated)",
        repeated.len()
    );
    println!(
        "tool calls                    {}",
        tool_calls.total.load(Ordering::Relaxed)
    );
    println!("push                          {}", push.summary);
    println!("duplicate pushes              {}", push.duplicates);
    println!("panics in the server log      {}", panics.len());
    println!(
        "hangar verify                 {} ({verify_out})",
        if verified { "ok" } else { "FAILED" }
    );
    println!(
        "total time                    {:.1}s",
        began.elapsed().as_secs_f64()
    );
    drop(nodes);
    drop(pg);
    finish(a, work, &logs, &failures)
}

fn finish(
    a: &Args,
    work: tempfile::TempDir,
    logs: &[PathBuf],
    failures: &[String],
) -> Result<bool, String> {
    if failures.is_empty() {
        if a.keep {
            let dir: PathBuf = work.keep();
            println!("kept {}", dir.display());
        }
        println!("RESULT: PASS");
        return Ok(true);
    }
    println!();
    println!("RESULT: FAIL ({} problems)", failures.len());
    for f in failures.iter().take(30) {
        println!("  - {f}");
    }
    if failures.len() > 30 {
        println!("  … and {} more", failures.len() - 30);
    }
    let dir = work.keep();
    println!(
        "kept the data directories and server logs for inspection: {}",
        dir.display()
    );
    for log in logs {
        if let Some(n) = log.file_name() {
            println!("  server log: {}", dir.join(n).display());
        }
    }
    println!("  reproduce with --seed {}", a.seed);
    Ok(false)
}

fn merge(into: &mut Tally, t: Tally) {
    into.transport_errors += t.transport_errors;
    for (s, n) in t.statuses {
        *into.statuses.entry(s).or_default() += n;
    }
    into.malformed.extend(t.malformed);
}

fn fmt_counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_statuses(m: &BTreeMap<u16, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct PushReport {
    summary: String,
    duplicates: u64,
    failures: Vec<String>,
}

/// Waits (bounded) until every final run of a push agent was delivered; no delivery at all
/// means push is not wired in this build, which is reported, not failed.
fn check_push(
    targets: &[Target],
    accepted: &[Accepted],
    runs: &verify::Runs,
    hooks: &receivers::Hooks,
) -> PushReport {
    let expected: Vec<&Accepted> = accepted
        .iter()
        .filter(|x| targets[x.agent].push && runs.finals.contains_key(&x.request_id))
        .collect();
    let started = Instant::now();
    let missing = loop {
        let map = hooks.by_id.lock().unwrap().clone();
        let delivered_any = map.values().any(|d| d.delivered > 0);
        let missing: Vec<&&Accepted> = expected
            .iter()
            .filter(|x| map.get(&x.request_id).is_none_or(|d| d.delivered == 0))
            .collect();
        if missing.is_empty() {
            break Vec::new();
        }
        let waited = started.elapsed();
        if (!delivered_any && waited > PUSH_FIRST_DELIVERY) || waited > PUSH_DEADLINE {
            break missing.into_iter().map(|x| x.request_id.clone()).collect();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let map = hooks.by_id.lock().unwrap().clone();
    let delivered: u64 = map.values().map(|d| d.delivered as u64).sum();
    let refused = hooks.refused.load(Ordering::Relaxed);
    if delivered == 0 && !expected.is_empty() {
        return PushReport {
            summary: format!(
                "not verified (no deliveries in {}s for {} push runs)",
                PUSH_FIRST_DELIVERY.as_secs(),
                expected.len()
            ),
            duplicates: 0,
            failures: Vec::new(),
        };
    }
    let mut failures: Vec<String> = missing
        .iter()
        .map(|rid| {
            let f = &runs.finals[rid];
            format!(
                "push: final run {rid} ({}{}) never delivered within {}s",
                f.status,
                if f.code.is_empty() {
                    String::new()
                } else {
                    format!("/{}", f.code)
                },
                PUSH_DEADLINE.as_secs()
            )
        })
        .collect();
    let push_ids: HashSet<&str> = expected.iter().map(|x| x.request_id.as_str()).collect();
    let mut unacknowledged = 0;
    for (id, d) in &map {
        if d.bad_auth || d.missing_headers {
            failures.push(format!(
                "push: delivery {id} without the bearer token or webhook headers"
            ));
        }
        match runs.finals.get(id) {
            Some(f) if f.status != d.run_status => failures.push(format!(
                "push: delivery {id} says {} but the run is {}",
                d.run_status, f.status
            )),
            Some(_) => {}
            None if !push_ids.contains(id.as_str()) => unacknowledged += 1,
            None => {}
        }
    }
    let duplicates = map.values().filter(|d| d.delivered > 1).count() as u64;
    PushReport {
        summary: format!(
            "{} push runs, {} delivered, {} missing; {delivered} deliveries answered 200, \
             {refused} answered 500 on purpose; {unacknowledged} for requests whose 202 was lost in a kill",
            expected.len(),
            expected.len() - missing.len(),
            missing.len()
        ),
        duplicates,
        failures,
    }
}
