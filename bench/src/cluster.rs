//! The `cluster` scenario: async submit → result and draft writes at c=32 against one node on
//! sled, one node on PostgreSQL and three nodes on PostgreSQL (each load thread talks to one
//! node, the threads spread evenly over the nodes), in one run; then the failover time after a
//! node's kill -9, until the run it held queued runs on another node.
//!
//! The PostgreSQL is a temporary server (`events::store::pg::testing`) on this machine, with
//! fsync on, so that its durable commits compare with sled's flushed writes.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use events::store::pg::testing::TempPostgres;

use crate::http::{Conn, Sink};
use crate::load::{self, Figure, Outcome, Stats};
use crate::scenarios::{
    admin, create, draft_body, expect, fig, greet_agent, greet_spec, outcome, round_line,
    submit_and_wait, tool_agent, C,
};
use crate::server::{Hangar, TOKEN};
use crate::{Ctx, Row, Verdict};

type Result<T> = std::result::Result<T, String>;

/// A fixed 32-byte key (base64) the nodes of a bench cluster share.
const SECRET_KEY: &str = "YmVuY2gtY2x1c3Rlci1zZWNyZXQta2V5LTAxMjM0NTY=";
/// A node judges others dead only after beating for this long itself (docs/cluster.md).
const OWN_HEARTBEATS: Duration = Duration::from_secs(15);

pub fn cluster(ctx: &mut Ctx) -> Result<()> {
    let pg = match std::panic::catch_unwind(TempPostgres::start_durable) {
        Ok(Some(pg)) => pg,
        Ok(None) => {
            return Err("needs PostgreSQL (initdb, pg_ctl): apt-get install postgresql".into())
        }
        Err(_) => return Err("the temporary PostgreSQL did not start".into()),
    };
    println!("  (a temporary PostgreSQL with fsync on, on this machine's disk and cores)");

    let sled = vec![ctx.fresh_server("cluster-sled", &[("HANGAR_MAX_QUEUE", "1000000")])?];
    measure(ctx, "1 node, sled", &sled)?;
    drop(sled);

    let one = nodes(ctx, &pg.database("bench_one"), 1)?;
    measure(ctx, "1 node, PostgreSQL", &one)?;
    drop(one);

    let began = Instant::now();
    let mut three = nodes(ctx, &pg.database("bench_three"), 3)?;
    measure(ctx, "3 nodes, PostgreSQL", &three)?;
    // The nodes left must have beaten long enough to judge the killed one.
    if let Some(left) = OWN_HEARTBEATS.checked_sub(began.elapsed()) {
        std::thread::sleep(left);
    }
    failover(ctx, &mut three)
}

/// `count` nodes on `url`, each with its own data directory and node id.
fn nodes(ctx: &mut Ctx, url: &str, count: usize) -> Result<Vec<Hangar>> {
    (0..count)
        .map(|i| {
            let id = format!("bench-{}", (b'a' + i as u8) as char);
            ctx.fresh_server(
                &format!("cluster-{id}"),
                &[
                    ("HANGAR_STORE", url),
                    ("HANGAR_SECRET_KEY", SECRET_KEY),
                    ("HANGAR_NODE_ID", &id),
                    ("HANGAR_MAX_QUEUE", "1000000"),
                ],
            )
        })
        .collect()
}

/// A warm-up, then the rounds of `op` at c=32 spread over `addrs`.
fn rounds<F>(ctx: &Ctx, label: &str, addrs: &[SocketAddr], op: F) -> Figure
where
    F: Fn(usize, u64, &mut Conn) -> Outcome + Sync,
{
    let going = AtomicBool::new(true);
    let _ = load::run_spread(addrs, Some(TOKEN), C, ctx.warmup(), &going, &op);
    let all: Vec<Stats> = (0..ctx.opts.rounds)
        .map(|i| {
            let s = load::run_spread(addrs, Some(TOKEN), C, ctx.opts.duration, &going, &op);
            round_line(&format!("{label} round {}", i + 1), &s);
            s
        })
        .collect();
    Figure::of(&all)
}

fn measure(ctx: &mut Ctx, setup: &str, nodes: &[Hangar]) -> Result<()> {
    println!("  -- {setup}");
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let mut c = admin(&nodes[0]);

    let id = greet_agent(&mut c, "bench cluster flows")?;
    let submit = format!("/v1/agents/{id}/invoke/async");
    let f = rounds(ctx, "submit→result", &addrs, |_, _, conn| {
        submit_and_wait(conn, &submit)
    });
    println!("  {setup}: submit→result {}", fig(&f));
    ctx.rows.push(Row::new(
        format!("cluster: submit→result c={C}, {setup}"),
        fig(&f),
    ));

    // One agent per thread: thread t writes agent t through node t % nodes, so the figure is
    // the nodes' write path, not two nodes racing for one agent's seq.
    let ids: Vec<String> = (0..C)
        .map(|i| {
            let name = format!("bench cluster writes {i}");
            create(
                &mut c,
                &greet_spec(&name, &format!("{name} answers greetings")),
            )
        })
        .collect::<Result<_>>()?;
    let f = rounds(ctx, "draft writes", &addrs, |t, i, conn| {
        outcome(
            conn.put(
                &format!("/v1/agents/{}/draft", ids[t % ids.len()]),
                &draft_body("bench cluster writes", &format!("{t}-{i}")),
            ),
            200,
        )
    });
    println!("  {setup}: draft writes {}", fig(&f));
    ctx.rows.push(Row::new(
        format!("cluster: draft writes c={C}, {C} agents, {setup}"),
        fig(&f),
    ));
    Ok(())
}

/// Kills node A while it runs one run of a one-slot agent and holds a second queued, and times
/// how long until that queued run's tool call arrives from another node, and until the killed
/// node's running run reads `interrupted` (the dead-node detection).
fn failover(ctx: &mut Ctx, nodes: &mut [Hangar]) -> Result<()> {
    println!("  -- failover after kill -9 (3 nodes)");
    let sink = Sink::start().map_err(|e| format!("slow tool: {e}"))?;
    let mut a = admin(&nodes[0]);
    let id = tool_agent(&mut a, &sink.url, 1)?;
    let submit = format!("/v1/agents/{id}/invoke/async");
    let accept = |a: &mut Conn, q: &str| -> Result<String> {
        let r = expect(
            a.post(&submit, &format!(r#"{{"input": {{"q": "{q}"}}}}"#)),
            202,
            "submit",
        )?;
        r.json()["request_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "submit: no request_id".to_string())
    };
    let running = accept(&mut a, "held")?;
    wait_for(|| sink.accepted() >= 1, Duration::from_secs(20))
        .ok_or("the first run's tool call never arrived")?;
    let _queued = accept(&mut a, "queued")?;
    std::thread::sleep(Duration::from_millis(500));
    // `max_concurrency` is per node (docs/cluster.md): another node whose runtime serves the
    // agent may claim the second run at once; then only the detection is timed.
    let held = sink.accepted() == 1;
    nodes[0].kill();
    let killed = Instant::now();
    let moved = if held {
        wait_for(|| sink.accepted() >= 2, Duration::from_secs(90))
    } else {
        None
    };
    let mut b = admin(&nodes[1]);
    let interrupted = wait_for(
        || {
            b.get(&format!("/v1/agents/{id}/requests/{running}"))
                .is_ok_and(|r| r.status == 200 && r.json()["error"]["code"] == "interrupted")
        },
        Duration::from_secs(60),
    )
    .map(|_| killed.elapsed());
    let secs = |d: Option<Duration>| {
        d.map_or("not within the bound".into(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        })
    };
    let queue = if held {
        format!("queued run runs elsewhere after {}", secs(moved))
    } else {
        "queued run claimed at once by another node".to_owned()
    };
    println!(
        "    {queue}; the killed node's running run read interrupted {} after the kill",
        secs(interrupted)
    );
    let bound = Duration::from_secs(30);
    let within =
        interrupted.is_some_and(|d| d <= bound) && (!held || moved.is_some_and(|d| d <= bound));
    ctx.rows.push(
        Row::new(
            "cluster: failover after kill -9, 3 nodes",
            format!(
                "{queue}; running run interrupted after {}",
                secs(interrupted)
            ),
        )
        .target("≤ 30 s", Verdict::of(within)),
    );
    Ok(())
}

/// Polls `done` every 50 ms until it holds (how long it took) or `limit` passes (`None`).
fn wait_for(mut done: impl FnMut() -> bool, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if done() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
