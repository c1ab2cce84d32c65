//! The `protocols` scenario: what streaming and the standard protocols cost.
//!
//! - First-event latency of `POST /invoke/stream`: from sending the request to reading the
//!   first event's `id:` line, one call at a time (a fresh connection each, as a browser's
//!   first request of a chat turn).
//! - Throughput at c=32 of A2A `SendMessage` (blocking, JSON-RPC) and of the OpenAI-compatible
//!   endpoint, each against plain `/invoke` on the same server and agent in interleaved rounds.
//!   Target: each protocol costs at most 15 % of `/invoke`'s throughput (ratio ≥ 0.85).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::load::{self, Figure};
use crate::scenarios::{admin, fig, greet_agent, outcome, round_line, INVOKE_BODY};
use crate::server::TOKEN;
use crate::{Ctx, Row, Verdict};

type Result<T> = std::result::Result<T, String>;

const C: usize = 32;
const FIRST_EVENT_CALLS: usize = 200;

/// One `/invoke/stream` call on a new connection: the time to its first event.
fn first_event(addr: std::net::SocketAddr, path: &str) -> std::io::Result<Duration> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INVOKE_BODY}",
        INVOKE_BODY.len()
    );
    s.write_all(req.as_bytes())?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("the stream ended before an event"));
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(5).any(|w| w == b"id: 1") {
            return Ok(t0.elapsed());
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

pub fn protocols(ctx: &mut Ctx) -> Result<()> {
    let h = ctx.fresh_server("protocols", &[])?;
    let mut c = admin(&h);
    let id = greet_agent(&mut c, "bench protocols")?;

    // First-event latency.
    let stream = format!("/v1/agents/{id}/invoke/stream");
    let mut ms = Vec::with_capacity(FIRST_EVENT_CALLS);
    for _ in 0..FIRST_EVENT_CALLS {
        let d = first_event(h.addr, &stream).map_err(|e| format!("invoke/stream: {e}"))?;
        ms.push(d.as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let (p50, p99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
    println!("  invoke/stream first event: p50 {p50:.2} ms · p99 {p99:.2} ms ({FIRST_EVENT_CALLS} calls)");
    ctx.rows.push(
        Row::new(
            "invoke/stream first event (c=1, new connection)",
            format!("p50 {p50:.2} ms · p99 {p99:.2} ms"),
        )
        .target("", Verdict::Info),
    );

    // Throughput against /invoke.
    let invoke = format!("/v1/agents/{id}/invoke");
    let a2a = format!("/a2a/{id}");
    let a2a_body = r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"x"},{"data":{"name":"x"}}]}}}"#;
    let chat = format!("/v1/agents/{id}/chat/completions");
    let chat_body = r#"{"model":"agent","messages":[{"role":"user","content":"x"}]}"#;
    // A body per call: the thread figure names a new thread in each.
    let round = |label: Option<String>, path: &str, body: &Body, dur: Duration| -> Figure {
        let s = load::run(h.addr, Some(TOKEN), C, dur, |t, n, conn| {
            let made;
            let body = match body {
                Body::Fixed(b) => *b,
                Body::NewThread => {
                    made = format!(r#"{{"input": {{"name": "x"}}, "thread_id": "bench-{t}-{n}"}}"#);
                    made.as_str()
                }
            };
            outcome(conn.post(path, body), 200)
        });
        if let Some(label) = label {
            round_line(&label, &s);
        }
        s.figure()
    };
    // An A2A message without a `contextId` runs in a new thread (API.md: the context is the
    // thread), so it is measured twice: against plain `/invoke` (the issue's figure, which then
    // includes what a thread costs) and against `/invoke` with a new thread per call, the same
    // work without the protocol (what A2A itself costs). The thread's own cost is the last
    // figure, without a target.
    let targets: [(&str, &str, Body, &str, Body, bool); 4] = [
        (
            "A2A SendMessage (blocking)",
            &a2a,
            Body::Fixed(a2a_body),
            "/invoke",
            Body::Fixed(INVOKE_BODY),
            true,
        ),
        (
            "A2A SendMessage (blocking), against a new thread per call",
            &a2a,
            Body::Fixed(a2a_body),
            "/invoke, a new thread per call",
            Body::NewThread,
            true,
        ),
        (
            "OpenAI chat/completions",
            &chat,
            Body::Fixed(chat_body),
            "/invoke",
            Body::Fixed(INVOKE_BODY),
            true,
        ),
        (
            "/invoke, a new thread per call",
            &invoke,
            Body::NewThread,
            "/invoke",
            Body::Fixed(INVOKE_BODY),
            false,
        ),
    ];
    for (name, path, body, base_name, base_body, targeted) in targets {
        round(None, &invoke, &base_body, ctx.warmup());
        round(None, path, &body, ctx.warmup());
        let (mut base, mut proto) = (Vec::new(), Vec::new());
        for i in 1..=ctx.opts.rounds {
            let dur = ctx.opts.duration;
            base.push(round(
                Some(format!("{base_name} c={C} round {i}")),
                &invoke,
                &base_body,
                dur,
            ));
            proto.push(round(
                Some(format!("{name} c={C} round {i}")),
                path,
                &body,
                dur,
            ));
        }
        let (bf, pf) = (Figure::median(&base), Figure::median(&proto));
        let ratio = pf.rate / bf.rate;
        println!(
            "  {name}: {} | {base_name} {} | {ratio:.2}×",
            fig(&pf),
            fig(&bf)
        );
        let verdict = match (targeted, ratio >= 0.85) {
            (false, _) => Verdict::Info,
            (true, true) => Verdict::Pass,
            (true, false) => Verdict::Miss,
        };
        ctx.rows.push(
            Row::new(format!("{name} c={C}"), fig(&pf))
                .baseline(
                    format!("{base_name} {}", fig(&bf)),
                    format!("{ratio:.2}× req/s"),
                )
                .target(
                    if targeted {
                        "≥ 0.85× the baseline"
                    } else {
                        ""
                    },
                    verdict,
                ),
        );
    }
    Ok(())
}

/// What a round posts.
enum Body {
    Fixed(&'static str),
    /// `/invoke`'s body with a thread of its own per call.
    NewThread,
}
