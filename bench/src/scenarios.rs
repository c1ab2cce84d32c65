//! The seven scenarios of the performance issue. Each starts its own `hangar serve` on a fresh
//! data directory, prints its figures as it goes, and adds rows (figure, target, verdict) to
//! the final table.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::baseline::Baseline;
use crate::http::{Conn, Receiver, Resp, Sink};
use crate::load::{self, median, Figure, Outcome, Stats};
use crate::server::{Hangar, TOKEN};
use crate::wrk::WrkRound;
use crate::{Ctx, Row, Verdict};

pub(crate) const INVOKE_BODY: &str = r#"{"input": {"name": "x"}}"#;
/// Concurrency of the loaded scenarios.
pub(crate) const C: usize = 32;

type Result<T> = std::result::Result<T, String>;

// ---------- formatting ----------

pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub(crate) fn rate(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    format!("{}/s", thousands(x.round() as u64))
}

pub(crate) fn ms(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x < 10.0 {
        format!("{x:.2} ms")
    } else if x < 100.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.0} ms")
    }
}

pub(crate) fn fig(f: &Figure) -> String {
    format!(
        "{} · p50 {} · p99 {}",
        rate(f.rate),
        ms(f.p50_ms),
        ms(f.p99_ms)
    )
}

pub(crate) fn round_line(label: &str, s: &Stats) {
    let mut line = format!(
        "    {label}: {} ok in {:.2} s = {} · p50 {} · p99 {}",
        thousands(s.ok),
        s.secs,
        rate(s.rate()),
        ms(s.p50_ms()),
        ms(s.p99_ms())
    );
    if s.errors > 0 {
        line.push_str(&format!(
            " · {} errors (first: {})",
            thousands(s.errors),
            s.first_error.as_deref().unwrap_or("unexpected answer")
        ));
    }
    println!("{line}");
}

// ---------- HTTP helpers ----------

pub(crate) fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

pub(crate) fn expect(r: std::io::Result<Resp>, status: u16, what: &str) -> Result<Resp> {
    let r = r.map_err(|e| format!("{what}: {e}"))?;
    if r.status == status {
        Ok(r)
    } else {
        Err(format!(
            "{what}: HTTP {} (wanted {status}): {}",
            r.status,
            short(&r.text())
        ))
    }
}

/// An operation's outcome: `Ok(true)` on `status`, else the status and body as the error.
pub(crate) fn outcome(r: std::io::Result<Resp>, status: u16) -> Outcome {
    match r {
        Ok(r) if r.status == status => Ok(true),
        Ok(r) => Err(format!("HTTP {}: {}", r.status, short(&r.text()))),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn admin(h: &Hangar) -> Conn {
    Conn::new(h.addr, Some(TOKEN))
}

/// The issue's agent: transform → end.
pub(crate) fn greet_spec(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "description": description,
        "model": {"provider": "echo", "name": "echo-1", "timeout_s": 30},
        "instructions": "You answer briefly.",
        "flow": {"start": "greet", "nodes": [
            {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.name }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.greet.text }}"}}
        ]}
    })
}

/// The greet spec as the body of a draft write; `rev` makes each write a different draft.
pub(crate) fn draft_body(name: &str, rev: &str) -> String {
    greet_spec(name, &format!("{name} answers greetings, revision {rev}")).to_string()
}

pub(crate) fn create(c: &mut Conn, spec: &Value) -> Result<String> {
    let r = expect(c.post("/v1/agents", &spec.to_string()), 201, "create agent")?;
    r.json()["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "create agent: no id".to_string())
}

pub(crate) fn deploy(c: &mut Conn, id: &str) -> Result<()> {
    expect(
        c.post(&format!("/v1/agents/{id}/deploy"), "{}"),
        200,
        "deploy",
    )
    .map(drop)
}

pub(crate) fn greet_agent(c: &mut Conn, name: &str) -> Result<String> {
    let id = create(c, &greet_spec(name, &format!("{name} answers greetings")))?;
    deploy(c, &id)?;
    Ok(id)
}

/// `hangar_queue_depth` from `/metrics`.
fn queue_depth(c: &mut Conn) -> Option<u64> {
    let r = c.get("/metrics").ok()?;
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("hangar_queue_depth "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Waits (at most `limit`) for the async queue to empty; returns how long it took.
fn drain(c: &mut Conn, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        match queue_depth(c) {
            Some(0) | None => break,
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    t0.elapsed()
}

/// Runs a warm-up, then `rounds` rounds of `op` at concurrency `c`, printing each round.
fn rounds<F>(ctx: &Ctx, label: &str, addr: std::net::SocketAddr, c: usize, op: F) -> Vec<Stats>
where
    F: Fn(usize, u64, &mut Conn) -> Outcome + Sync,
{
    let _ = load::run(addr, Some(TOKEN), c, ctx.warmup(), &op);
    (0..ctx.opts.rounds)
        .map(|i| {
            let s = load::run(addr, Some(TOKEN), c, ctx.opts.duration, &op);
            round_line(&format!("{label} round {}", i + 1), &s);
            s
        })
        .collect()
}

// ---------- 1. sync invoke vs the baseline ----------

/// Who drives a round of the sync scenario.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Wrk,
    Builtin,
}

fn wrk_line(label: &str, r: &WrkRound) {
    let mut line = format!(
        "    {label}: {} ok in {:.2} s = {} · p50 {} · p99 {} (wrk)",
        thousands(r.requests.saturating_sub(r.non_2xx)),
        r.secs,
        rate(r.rate()),
        ms(r.p50_ms),
        ms(r.p99_ms)
    );
    if r.non_2xx > 0 {
        line.push_str(&format!(" · {} answers not 2xx", thousands(r.non_2xx)));
    }
    if let Some(e) = &r.socket_errors {
        line.push_str(&format!(" · {e}"));
    }
    println!("{line}");
}

/// One round of `POST path` at concurrency `c`, printed under `label` unless it is a warm-up.
#[allow(clippy::too_many_arguments)]
fn post_round(
    ctx: &Ctx,
    client: Client,
    label: Option<&str>,
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    c: usize,
    dur: Duration,
) -> Result<Figure> {
    if let (Client::Wrk, Some(wrk)) = (client, &ctx.wrk) {
        let r = wrk.post(addr, path, token, INVOKE_BODY, c, dur)?;
        if let Some(label) = label {
            wrk_line(label, &r);
        }
        return Ok(r.figure());
    }
    let s = load::run(addr, token, c, dur, |_, _, conn| {
        outcome(conn.post(path, INVOKE_BODY), 200)
    });
    if let Some(label) = label {
        round_line(label, &s);
    }
    Ok(s.figure())
}

pub fn sync(ctx: &mut Ctx) -> Result<()> {
    let base = Baseline::start()?;
    let h = ctx.fresh_server("sync", &[])?;
    let mut c = admin(&h);
    let id = greet_agent(&mut c, "bench sync")?;
    let path = format!("/v1/agents/{id}/invoke");
    let bpath = "/v1/agents/baseline/invoke";
    let r = expect(c.post(&path, INVOKE_BODY), 200, "sync invoke")?;
    if r.json()["output"]["greeting"] != "Hello x" {
        return Err(format!("unexpected sync answer: {}", short(&r.text())));
    }
    let r = expect(
        Conn::new(base.addr, None).post(bpath, INVOKE_BODY),
        200,
        "baseline",
    )?;
    if r.json()["greeting"] != "Hello x" {
        return Err(format!("unexpected baseline answer: {}", short(&r.text())));
    }
    println!(
        "  hangar {} · baseline (in-process actix-web) {}",
        h.addr, base.addr
    );
    let (client, by) = match &ctx.wrk {
        Some(w) => (Client::Wrk, format!("wrk, {} threads", w.threads())),
        None => (Client::Builtin, "the built-in client".to_string()),
    };
    println!("  load generator: {by}");
    let hangar = |label: Option<&str>, conc, dur| {
        post_round(ctx, client, label, h.addr, &path, Some(TOKEN), conc, dur)
    };
    let baseline = |client, label: Option<&str>, conc, dur| {
        post_round(ctx, client, label, base.addr, bpath, None, conc, dur)
    };
    let mut rows = Vec::new();
    for conc in [1usize, C] {
        // Interleaved rounds, so drift (page cache, sled growth) hits both alike.
        hangar(None, conc, ctx.warmup())?;
        baseline(client, None, conc, ctx.warmup())?;
        let (mut hs, mut bs, mut builtin) = (Vec::new(), Vec::new(), Vec::new());
        for i in 1..=ctx.opts.rounds {
            let dur = ctx.opts.duration;
            hs.push(hangar(
                Some(&format!("hangar   c={conc} round {i}")),
                conc,
                dur,
            )?);
            bs.push(baseline(
                client,
                Some(&format!("baseline c={conc} round {i}")),
                conc,
                dur,
            )?);
            if client == Client::Wrk {
                // The same baseline under the built-in client, to show what it would have said.
                builtin.push(baseline(
                    Client::Builtin,
                    Some(&format!("baseline c={conc} round {i}, built-in client")),
                    conc,
                    dur,
                )?);
            }
        }
        let (hf, bf) = (Figure::median(&hs), Figure::median(&bs));
        println!(
            "  c={conc}: hangar {} | baseline {} | throughput {:.2}× · p50 +{} · p99 {:.1}×",
            fig(&hf),
            fig(&bf),
            hf.rate / bf.rate,
            ms(hf.p50_ms - bf.p50_ms),
            hf.p99_ms / bf.p99_ms
        );
        let by = if client == Client::Wrk { " (wrk)" } else { "" };
        if conc == 1 {
            rows.push(
                Row::new(format!("sync invoke c=1{by}"), fig(&hf))
                    .baseline(
                        fig(&bf),
                        format!(
                            "{:.2}× req/s, p50 +{}",
                            hf.rate / bf.rate,
                            ms(hf.p50_ms - bf.p50_ms)
                        ),
                    )
                    .target(
                        "p50 ≤ baseline p50 + 0.2 ms",
                        Verdict::of(hf.p50_ms <= bf.p50_ms + 0.2),
                    ),
            );
        } else {
            rows.push(
                Row::new(format!("sync invoke c={conc}{by}"), fig(&hf))
                    .baseline(fig(&bf), format!("{:.2}× req/s", hf.rate / bf.rate))
                    .target(
                        "≥ 0.7× baseline req/s",
                        Verdict::of(hf.rate >= 0.7 * bf.rate),
                    ),
            );
            rows.push(
                Row::new(
                    format!("sync invoke c={conc} p99{by}"),
                    format!("p99 {}", ms(hf.p99_ms)),
                )
                .baseline(
                    format!("p99 {}", ms(bf.p99_ms)),
                    format!("{:.2}× p99", hf.p99_ms / bf.p99_ms),
                )
                .target(
                    "p99 ≤ 2× baseline p99",
                    Verdict::of(hf.p99_ms <= 2.0 * bf.p99_ms),
                ),
            );
        }
        if !builtin.is_empty() {
            let own = Figure::median(&builtin);
            println!(
                "  c={conc}: the baseline under the built-in client: {} = {:.2}× of its rate under wrk \
                 (a ratio to it would read {:.2}× instead of {:.2}×)",
                fig(&own),
                own.rate / bf.rate,
                hf.rate / own.rate,
                hf.rate / bf.rate
            );
            rows.push(
                Row::new(format!("baseline c={conc}, built-in client"), fig(&own)).baseline(
                    format!("{} (wrk)", fig(&bf)),
                    format!("{:.2}× of wrk's req/s", own.rate / bf.rate),
                ),
            );
        }
    }
    ctx.rows.extend(rows);
    Ok(())
}

// ---------- 2. async: durable accept, submit → result ----------

/// The request path of a `poll_url` (a path, or an absolute URL).
fn poll_path(poll_url: &str) -> String {
    match poll_url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/".into(), |i| rest[i..].to_owned()),
        None => poll_url.to_owned(),
    }
}

/// One flow: `POST submit` (202), then long-polls its `poll_url` until the run succeeded.
pub(crate) fn submit_and_wait(conn: &mut Conn, submit: &str) -> Outcome {
    let r = conn.post(submit, INVOKE_BODY).map_err(load::io_err)?;
    if r.status != 202 {
        return Err(format!("submit: HTTP {}: {}", r.status, short(&r.text())));
    }
    let poll = r.json()["poll_url"]
        .as_str()
        .map(poll_path)
        .ok_or("no poll_url")?;
    let sep = if poll.contains('?') { '&' } else { '?' };
    let url = format!("{poll}{sep}wait=30");
    for _ in 0..4 {
        let r = conn.get(&url).map_err(load::io_err)?;
        if r.status != 200 {
            return Err(format!("poll: HTTP {}: {}", r.status, short(&r.text())));
        }
        match r.json()["status"].as_str() {
            Some("succeeded") => return Ok(true),
            Some("queued" | "running") => continue,
            other => return Err(format!("run ended {other:?}")),
        }
    }
    Err("not finished after 4 long polls".into())
}

pub fn asynchronous(ctx: &mut Ctx) -> Result<()> {
    // A queue bound above anything this scenario can submit, so accept is what is measured.
    let h = ctx.fresh_server("async", &[("HANGAR_MAX_QUEUE", "1000000")])?;
    let mut c = admin(&h);
    let id = greet_agent(&mut c, "bench async")?;
    let submit = format!("/v1/agents/{id}/invoke/async");
    println!("  (HANGAR_MAX_QUEUE=1000000 so no submit meets the queue bound)");
    let op = |_: usize, _: u64, conn: &mut Conn| outcome(conn.post(&submit, INVOKE_BODY), 202);
    let _ = load::run(h.addr, Some(TOKEN), C, ctx.warmup(), op);
    drain(&mut c, Duration::from_secs(120));
    let mut all = Vec::new();
    for i in 0..ctx.opts.rounds {
        let s = load::run(h.addr, Some(TOKEN), C, ctx.opts.duration, op);
        round_line(&format!("accept c={C} round {}", i + 1), &s);
        let waited = drain(&mut c, Duration::from_secs(120));
        println!(
            "      backlog ran in {:.2} s more: {} runs executed per second overall",
            waited.as_secs_f64(),
            rate(s.ok as f64 / (s.secs + waited.as_secs_f64()))
        );
        all.push(s);
    }
    let f = Figure::of(&all);
    println!("  accept: {}", fig(&f));
    ctx.rows.push(
        Row::new(format!("async accept (durable 202) c={C}"), fig(&f))
            .target("≥ 10,000/s", Verdict::of(f.rate >= 10_000.0)),
    );

    let id = greet_agent(&mut c, "bench flows")?;
    let submit = format!("/v1/agents/{id}/invoke/async");
    let flow = |_: usize, _: u64, conn: &mut Conn| submit_and_wait(conn, &submit);
    let all = rounds(ctx, "submit→result", h.addr, C, flow);
    let f = Figure::of(&all);
    println!("  submit→result: {}", fig(&f));
    ctx.rows.push(
        Row::new(format!("submit→result c={C} (flows)"), fig(&f))
            .target("≥ 6,000 flows/s", Verdict::of(f.rate >= 6_000.0)),
    );
    Ok(())
}

// ---------- 3. push deliveries ----------

pub fn push(ctx: &mut Ctx) -> Result<()> {
    let receiver = Receiver::start().map_err(|e| format!("receiver: {e}"))?;
    let h = ctx.fresh_server(
        "push",
        &[
            ("HANGAR_MAX_QUEUE", "1000000"),
            ("HANGAR_PUSH_SCHEDULE", "1,2,4"),
        ],
    )?;
    let mut c = admin(&h);
    let id = create(&mut c, &greet_spec("bench push", "pushes greetings"))?;
    let body = json!({"async": {"push_enabled": true, "url": receiver.url, "token": "t"}});
    expect(
        c.put(&format!("/v1/agents/{id}/endpoint"), &body.to_string()),
        200,
        "enable push",
    )?;
    deploy(&mut c, &id)?;
    println!("  receiver {}", receiver.url);
    let submit = format!("/v1/agents/{id}/invoke/async");
    let op = |_: usize, _: u64, conn: &mut Conn| outcome(conn.post(&submit, INVOKE_BODY), 202);
    const FIRST_WAIT: u64 = 10;
    // One warm-up round (not counted), then the measured ones.
    let (mut rates, mut accept_rates) = (Vec::new(), Vec::new());
    for i in 0..=ctx.opts.rounds {
        let warm = i == 0;
        let before = receiver.count.load(std::sync::atomic::Ordering::Relaxed);
        let start_ns = receiver.epoch.elapsed().as_nanos() as u64;
        let dur = if warm {
            ctx.warmup()
        } else {
            ctx.opts.duration
        };
        let s = load::run(h.addr, Some(TOKEN), C, dur, op);
        let accepted = s.ok;
        let t0 = Instant::now();
        let (mut last, mut last_change) = (0u64, Instant::now());
        let delivered = loop {
            let d = receiver.count.load(std::sync::atomic::Ordering::Relaxed) - before;
            if d != last {
                last = d;
                last_change = Instant::now();
            }
            if d >= accepted
                || (d == 0 && t0.elapsed() > Duration::from_secs(FIRST_WAIT))
                || (d > 0 && last_change.elapsed() > Duration::from_secs(5))
                || t0.elapsed() > Duration::from_secs(120)
            {
                break d;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let label = if warm {
            "warm-up".to_string()
        } else {
            format!("round {i}")
        };
        if delivered == 0 {
            println!(
                "    {label}: {} submitted, no delivery within {FIRST_WAIT} s",
                thousands(accepted)
            );
            continue;
        }
        let last_ns = receiver.last_ns.load(std::sync::atomic::Ordering::Relaxed);
        let secs = (last_ns.saturating_sub(start_ns)) as f64 / 1e9;
        let r = delivered as f64 / secs.max(1e-9);
        println!(
            "    {label}: {} submitted in {:.2} s ({}), {} delivered by {:.2} s after the first submit = {}",
            thousands(accepted),
            s.secs,
            rate(s.rate()),
            thousands(delivered),
            secs,
            rate(r)
        );
        if !warm {
            rates.push(r);
            accept_rates.push(s.rate());
        }
    }
    if rates.is_empty() {
        ctx.rows.push(
            Row::new(
                "push deliveries",
                format!("n/a (no deliveries in {FIRST_WAIT} s)"),
            )
            .target("≥ 5,000/s", Verdict::NotMeasured),
        );
        return Ok(());
    }
    let (r, a) = (median(rates), median(accept_rates));
    println!(
        "  deliveries/s = {:.2}× the async accept rate of the same rounds (deliveries cannot outrun accepts)",
        r / a
    );
    ctx.rows.push(
        Row::new(
            format!("push deliveries (submit c={C} → receiver 200)"),
            format!("{} (accept in the same rounds {})", rate(r), rate(a)),
        )
        .target("≥ 5,000/s", Verdict::of(r >= 5_000.0)),
    );
    Ok(())
}

// ---------- 4. management writes ----------

pub fn writes(ctx: &mut Ctx) -> Result<()> {
    let h = ctx.fresh_server("writes", &[])?;
    let mut c = admin(&h);
    let ids: Vec<String> = (0..C)
        .map(|i| {
            let name = format!("bench writes {i}");
            create(
                &mut c,
                &greet_spec(&name, &format!("{name} answers greetings")),
            )
        })
        .collect::<Result<_>>()?;
    let write = |agent: &str, rev: String, conn: &mut Conn| {
        outcome(
            conn.put(
                &format!("/v1/agents/{agent}/draft"),
                &draft_body("bench writes", &rev),
            ),
            200,
        )
    };
    let spread =
        |t: usize, i: u64, conn: &mut Conn| write(&ids[t % ids.len()], format!("{t}-{i}"), conn);
    let all = rounds(ctx, &format!("{C} agents"), h.addr, C, spread);
    let f = Figure::of(&all);
    println!("  writes over {C} agents: {}", fig(&f));
    ctx.rows.push(
        Row::new(format!("draft writes c={C}, {C} agents"), fig(&f))
            .target("≥ 5,000/s", Verdict::of(f.rate >= 5_000.0)),
    );
    let one = |t: usize, i: u64, conn: &mut Conn| write(&ids[0], format!("{t}-{i}"), conn);
    let all = rounds(ctx, "one agent", h.addr, C, one);
    let f = Figure::of(&all);
    println!("  writes on one agent: {}", fig(&f));
    ctx.rows
        .push(Row::new(format!("draft writes c={C}, one agent"), fig(&f)));
    Ok(())
}

// ---------- 5. replay and cold activation ----------

fn agent_seq(c: &mut Conn, id: &str) -> Result<u64> {
    let r = expect(c.get(&format!("/v1/agents/{id}")), 200, "get agent")?;
    r.json()["seq"]
        .as_u64()
        .ok_or_else(|| "agent without seq".to_string())
}

fn time_replay(h: &Hangar, id: &str) -> Result<Duration> {
    let t0 = Instant::now();
    let out = Command::new(h.bin())
        .args(["replay", "--data"])
        .arg(&h.data)
        .arg(id)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("hangar replay: {e}"))?;
    let took = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "hangar replay failed: {}",
            short(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(took)
}

pub fn replay(ctx: &mut Ctx) -> Result<()> {
    let mut h = ctx.fresh_server("replay", &[])?;
    let mut c = admin(&h);
    let big = create(&mut c, &greet_spec("bench replay", "many edits"))?;
    let small = create(&mut c, &greet_spec("bench replay small", "one event"))?;
    let want = ctx.opts.events as u64;
    let have = agent_seq(&mut c, &big)?;
    let missing = want.saturating_sub(have) as usize;
    println!(
        "  filling the log: {} draft writes on one agent at c={C} (bounded to 10 min)",
        thousands(missing as u64)
    );
    let fill = load::run_items(
        h.addr,
        Some(TOKEN),
        C,
        missing,
        Duration::from_secs(600),
        |i, conn| {
            outcome(
                conn.put(
                    &format!("/v1/agents/{big}/draft"),
                    &draft_body("bench replay", &i.to_string()),
                ),
                200,
            )
        },
    );
    round_line("fill", &fill);
    let events = agent_seq(&mut c, &big)?;
    let log_bytes = dir_size(&h.data);
    println!(
        "  agent {big}: {} events; data directory {:.1} MiB",
        thousands(events),
        log_bytes as f64 / (1 << 20) as f64
    );
    drop(c);
    h.stop();

    let mut big_t = Vec::new();
    let mut small_t = Vec::new();
    for i in 0..ctx.opts.rounds {
        let b = time_replay(&h, &big)?;
        let s = time_replay(&h, &small)?;
        println!(
            "    replay round {}: {} events in {} · a 1-event agent in {} (process start, open)",
            i + 1,
            thousands(events),
            ms(b.as_secs_f64() * 1e3),
            ms(s.as_secs_f64() * 1e3)
        );
        big_t.push(b.as_secs_f64());
        small_t.push(s.as_secs_f64());
    }
    let (bt, st) = (median(big_t), median(small_t));
    let raw = events as f64 / bt;
    let net = events as f64 / (bt - st).max(1e-6);
    println!(
        "  replay: {} events counting the whole command, {} net of a 1-event replay",
        rate(raw),
        rate(net)
    );
    ctx.rows.push(
        Row::new(
            format!("replay offline, {} events", thousands(events)),
            format!(
                "{} ev/s net ({} whole command, {})",
                thousands(net.round() as u64),
                thousands(raw.round() as u64),
                ms(bt * 1e3)
            ),
        )
        .target("≥ 1,000,000 events/s", Verdict::of(net >= 1_000_000.0)),
    );

    let mut cold = Vec::new();
    for i in 0..ctx.opts.rounds {
        h.restart()?;
        let mut c = admin(&h);
        expect(c.get("/healthz"), 200, "healthz")?;
        let t0 = Instant::now();
        expect(c.get(&format!("/v1/agents/{big}")), 200, "cold get")?;
        let first = t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        expect(c.get(&format!("/v1/agents/{big}")), 200, "warm get")?;
        let second = t0.elapsed().as_secs_f64() * 1e3;
        println!(
            "    restart {}: first GET {} (activation), second GET {}",
            i + 1,
            ms(first),
            ms(second)
        );
        cold.push(first);
    }
    h.stop();
    let cold = median(cold);
    ctx.rows.push(
        Row::new(
            format!("cold activation, {} events", thousands(events)),
            format!("first GET {}", ms(cold)),
        )
        .target("≤ 20 ms", Verdict::of(cold <= 20.0)),
    );
    Ok(())
}

pub(crate) fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

// ---------- 6. idle memory per agent ----------

pub fn memory(ctx: &mut Ctx) -> Result<()> {
    let h = ctx.fresh_server("memory", &[])?;
    let mut c = admin(&h);
    let first = create(&mut c, &greet_spec("bench memory warm", "warm-up"))?;
    expect(c.get(&format!("/v1/agents/{first}")), 200, "get")?;
    std::thread::sleep(Duration::from_secs(1));
    let before = h.rss_kib().ok_or("no VmRSS for the server")?;
    let n = ctx.opts.agents;
    let ids = Mutex::new(Vec::with_capacity(n));
    let spec = greet_spec("bench memory", "an idle agent").to_string();
    let made = load::run_items(
        h.addr,
        Some(TOKEN),
        C,
        n,
        Duration::from_secs(600),
        |_, conn| {
            let r = conn.post("/v1/agents", &spec).map_err(load::io_err)?;
            if r.status != 201 {
                return Err(format!("HTTP {}: {}", r.status, short(&r.text())));
            }
            let id = r.json()["id"].as_str().ok_or("no id")?.to_owned();
            ids.lock().expect("ids").push(id);
            Ok(true)
        },
    );
    round_line("create", &made);
    let ids = ids.into_inner().expect("ids");
    let touched = load::run_items(
        h.addr,
        Some(TOKEN),
        C,
        ids.len(),
        Duration::from_secs(600),
        |i, conn| outcome(conn.get(&format!("/v1/agents/{}", ids[i])), 200),
    );
    round_line("GET each", &touched);
    let idle = if ctx.opts.quick { 2 } else { 5 };
    std::thread::sleep(Duration::from_secs(idle));
    let after = h.rss_kib().ok_or("no VmRSS for the server")?;
    let per = after.saturating_sub(before) as f64 / ids.len().max(1) as f64;
    println!(
        "  VmRSS {} KiB before, {} KiB after {} agents created, read once and left idle {idle} s: {per:.1} KiB/agent",
        thousands(before),
        thousands(after),
        thousands(ids.len() as u64)
    );
    ctx.rows.push(
        Row::new(
            format!("idle memory, {} agents", thousands(ids.len() as u64)),
            format!(
                "{per:.1} KiB/agent (RSS {} → {} MiB)",
                before / 1024,
                after / 1024
            ),
        )
        .target("≤ 10 KiB/agent", Verdict::of(per <= 10.0)),
    );
    Ok(())
}

// ---------- 7. undeploy with runs in flight ----------

/// A deployed agent whose flow calls a tool on `server` (which never answers).
pub(crate) fn tool_agent(c: &mut Conn, server: &str, max_concurrency: usize) -> Result<String> {
    let id = create(
        c,
        &json!({
            "name": "bench undeploy", "description": "calls a tool that never answers",
            "model": {"provider": "echo", "name": "echo-1"},
            "instructions": "Be brief.",
            "tools": [{"name": "t", "connection": "svc", "security": "bearer", "method": "POST",
                       "path": "/slow?q={{ args.q }}", "body": {"query": "{{ args.q }}"}}],
            "flow": {"start": "call", "nodes": [
                {"id": "call", "type": "tool", "tool": "t", "args": {"q": "{{ input.q }}"}, "next": "done"},
                {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}
            ]}
        }),
    )?;
    expect(
        c.post(
            &format!("/v1/agents/{id}/connections"),
            &json!({"id": "svc", "server": server, "credentials": "team",
                    "auth": {"type": "bearer", "token": "t"}})
            .to_string(),
        ),
        201,
        "add connection",
    )?;
    expect(
        c.put(
            &format!("/v1/agents/{id}/endpoint"),
            &json!({"max_concurrency": max_concurrency}).to_string(),
        ),
        200,
        "set max_concurrency",
    )?;
    deploy(c, &id)?;
    Ok(id)
}

pub fn undeploy(ctx: &mut Ctx) -> Result<()> {
    let h = ctx.fresh_server("undeploy", &[("HANGAR_MAX_QUEUE", "1000000")])?;
    let mut c = admin(&h);
    let n = ctx.opts.in_flight;
    let (mut undeploy_ms, mut all_ms) = (Vec::new(), Vec::new());
    for round in 1..=ctx.opts.rounds {
        let sink = Sink::start().map_err(|e| format!("slow server: {e}"))?;
        let id = tool_agent(&mut c, &sink.url, n.max(1))?;
        let submit = format!("/v1/agents/{id}/invoke/async");
        let rids = Mutex::new(Vec::with_capacity(n));
        let sent = load::run_items(
            h.addr,
            Some(TOKEN),
            C,
            n,
            Duration::from_secs(120),
            |i, conn| {
                let r = conn
                    .post(&submit, &format!(r#"{{"input": {{"q": "{i}"}}}}"#))
                    .map_err(load::io_err)?;
                if r.status != 202 {
                    return Err(format!("HTTP {}: {}", r.status, short(&r.text())));
                }
                let rid = r.json()["request_id"]
                    .as_str()
                    .ok_or("no request_id")?
                    .to_owned();
                rids.lock().expect("rids").push(rid);
                Ok(true)
            },
        );
        let rids = rids.into_inner().expect("rids");
        // Wait for the tool calls to reach the slow server: all of them, or until no new one
        // arrived for 2 s (bounded to 20 s).
        let t0 = Instant::now();
        let (mut seen, mut changed) = (0, Instant::now());
        while t0.elapsed() < Duration::from_secs(20) {
            let now = sink.accepted();
            if now != seen {
                seen = now;
                changed = Instant::now();
            }
            if now >= rids.len() || changed.elapsed() > Duration::from_secs(2) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let open = sink.accepted();
        let t0 = Instant::now();
        expect(
            c.post(&format!("/v1/agents/{id}/undeploy"), "{}"),
            200,
            "undeploy",
        )?;
        let took = t0.elapsed().as_secs_f64() * 1e3;
        // Every run must read `cancelled`; bounded to 30 s.
        let mut pending = rids.clone();
        while !pending.is_empty() && t0.elapsed() < Duration::from_secs(30) {
            let still = Mutex::new(Vec::new());
            let _ = load::run_items(
                h.addr,
                Some(TOKEN),
                C,
                pending.len(),
                Duration::from_secs(30),
                |i, conn| {
                    let rid = &pending[i];
                    let r = conn
                        .get(&format!("/v1/agents/{id}/requests/{rid}"))
                        .map_err(load::io_err)?;
                    if r.status != 200 || r.json()["status"] != "cancelled" {
                        still.lock().expect("still").push(rid.clone());
                    }
                    Ok(true)
                },
            );
            pending = still.into_inner().expect("still");
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let all = t0.elapsed().as_secs_f64() * 1e3;
        std::thread::sleep(Duration::from_millis(300));
        let closed = sink.closed_by_client();
        println!(
            "    round {round}: {} accepted ({}), {} tool calls open at the slow server; \
             undeploy answered in {}; all {} runs read cancelled {} after it started{}; \
             {closed} of {open} tool connections closed by hangar",
            thousands(sent.ok),
            rate(sent.rate()),
            thousands(open as u64),
            ms(took),
            thousands(rids.len() as u64),
            ms(all),
            if pending.is_empty() {
                String::new()
            } else {
                format!(" (NOT cancelled after 30 s: {})", pending.len())
            },
        );
        undeploy_ms.push(took);
        all_ms.push(all);
    }
    let (u, a) = (median(undeploy_ms), median(all_ms));
    ctx.rows.push(
        Row::new(
            format!("undeploy, {} runs in flight", thousands(n as u64)),
            format!("{} (all read cancelled by {})", ms(u), ms(a)),
        )
        .target("≤ 100 ms", Verdict::of(u <= 100.0)),
    );
    Ok(())
}
