//! `hangar-bench`: measures a real `hangar serve` (built and started by this program) against a
//! bare actix-web baseline started in this process, and prints one table of figures, targets and
//! PASS/MISS. A benchmark, not a test: it exits 0 whatever it measured.
//!
//! ```sh
//! cargo run --release -p hangar-bench                 # full run (< 15 min)
//! cargo run --release -p hangar-bench -- --quick      # smoke run (1 s rounds, 10k events, 1k agents)
//! cargo run --release -p hangar-bench -- --only sync,writes --duration 3s --rounds 5
//! cargo run --release -p hangar-bench -- --only soak  # memory and disk under 5 min of load
//! cargo run --release -p hangar-bench -- --only cluster  # sled vs 1 and 3 nodes on PostgreSQL
//! ```
//!
//! # Layout
//! - `server`: builds and starts `hangar serve`, reads its RSS; `baseline`: the bare actix-web
//!   server; `http`: the minimal client and the loopback receivers; `load`: the built-in load
//!   loop and its histograms; `wrk`: wrk as the sync scenario's load generator when installed.
//! - `scenarios`: the seven scenarios of the performance issue; `soak`: the long-running one.
//!
//! Only 127.0.0.1 is ever contacted; every loop is bounded in time and count; every process and
//! thread it starts is stopped before it exits.

mod baseline;
mod cluster;
mod http;
mod load;
mod protocols;
mod scenarios;
mod server;
mod soak;
mod wrk;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub const SCENARIOS: [&str; 10] = [
    "sync",
    "async",
    "push",
    "writes",
    "replay",
    "memory",
    "undeploy",
    "soak",
    "protocols",
    "cluster",
];
/// What a run without `--only` measures: not the soak, which takes minutes by design, nor the
/// cluster, which needs PostgreSQL.
const DEFAULT_SCENARIOS: [&str; 8] = [
    "sync",
    "async",
    "push",
    "writes",
    "replay",
    "memory",
    "undeploy",
    "protocols",
];

#[derive(Clone, Debug)]
pub struct Opts {
    pub quick: bool,
    /// Length of one measured round.
    pub duration: Duration,
    pub rounds: usize,
    pub only: Vec<String>,
    /// Events in the replay agent's log.
    pub events: usize,
    /// Agents created for the memory scenario.
    pub agents: usize,
    /// Runs in flight when undeploying.
    pub in_flight: usize,
    /// Keep the scratch directory (data directories, server logs) for a closer look.
    pub keep: bool,
    /// Drive the sync scenario with the built-in client even when wrk is installed.
    pub no_wrk: bool,
    /// wrk's threads (event loops).
    pub wrk_threads: usize,
    /// Length of the soak.
    pub soak: Duration,
    /// `HANGAR_RUN_RETENTION` of the soak's server.
    pub soak_retention: Duration,
    /// `HANGAR_CACHE_MB` of the soak's server, and the base of its memory target.
    pub cache_mb: u64,
}

const USAGE: &str = "\
hangar-bench: measure a real `hangar serve` against a bare actix-web baseline

usage: cargo run --release -p hangar-bench [-- OPTIONS]

  --quick            short smoke run: 1 s rounds, 10,000 events, 1,000 agents
  --duration D       length of one measured round: 5s (default; --quick: 1s), 500ms, 2
  --rounds N         rounds per figure; the median is reported (default 3)
  --only A,B         run only these scenarios: sync, async, push, writes, replay, memory, undeploy,
                     protocols (/invoke/stream, A2A, OpenAI), soak (not run unless named: it
                     takes minutes), cluster (1 node on sled, 1 and 3 nodes on a
                     temporary PostgreSQL, failover after kill -9; not run unless named)
  --events N         events in the replay agent's log (default 100000; --quick: 10000)
  --agents N         agents for the memory scenario (default 10000; --quick: 1000)
  --in-flight N      runs in flight when undeploying (default 1000)
  --keep             keep the scratch directory (each server's data directory and log)
  --no-wrk           sync scenario: the built-in client even if wrk is installed
  --wrk-threads N    sync scenario: wrk's threads (default 2)
  --soak-seconds N   soak: how long the load lasts (default 300)
  --soak-retention D soak: the server's HANGAR_RUN_RETENTION (default 30s)
  --cache-mb N       soak: the server's HANGAR_CACHE_MB (default 128)
  -h, --help         this text
";

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {s:?} (e.g. 5s, 500ms, 2)");
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|_| bad());
    }
    let secs = s.strip_suffix('s').unwrap_or(s);
    let v: f64 = secs.parse().map_err(|_| bad())?;
    if !(0.05..=600.0).contains(&v) {
        return Err(format!("duration {s} out of range (50ms-600s)"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_args() -> Result<Option<Opts>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Opts {
        quick,
        duration: Duration::from_secs(if quick { 1 } else { 5 }),
        rounds: 3,
        only: DEFAULT_SCENARIOS.iter().map(|s| s.to_string()).collect(),
        events: if quick { 10_000 } else { 100_000 },
        agents: if quick { 1_000 } else { 10_000 },
        in_flight: 1_000,
        keep: false,
        no_wrk: false,
        wrk_threads: 2,
        soak: Duration::from_secs(300),
        soak_retention: Duration::from_secs(30),
        cache_mb: 128,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, v: String, max: usize| -> Result<usize, String> {
            match v.replace('_', "").parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("{name} must be a number from 1 to {max}")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--quick" => {}
            "--keep" => o.keep = true,
            "--no-wrk" => o.no_wrk = true,
            "--wrk-threads" => o.wrk_threads = number(flag, value(flag)?, 64)?,
            "--soak-seconds" => {
                o.soak = Duration::from_secs(number(flag, value(flag)?, 86_400)? as u64)
            }
            "--soak-retention" => {
                let d = parse_duration(&value(flag)?)?;
                if d.as_secs() == 0 || d.subsec_nanos() != 0 {
                    return Err("--soak-retention must be whole seconds, e.g. 60s".into());
                }
                o.soak_retention = d;
            }
            "--cache-mb" => o.cache_mb = number(flag, value(flag)?, 1_048_576)? as u64,
            "--duration" => o.duration = parse_duration(&value(flag)?)?,
            "--rounds" => o.rounds = number(flag, value(flag)?, 25)?,
            "--events" => o.events = number(flag, value(flag)?, 2_000_000)?,
            "--agents" => o.agents = number(flag, value(flag)?, 200_000)?,
            "--in-flight" => o.in_flight = number(flag, value(flag)?, 10_000)?,
            "--only" => {
                let list: Vec<String> = value(flag)?
                    .split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = list.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                    return Err(format!(
                        "unknown scenario {bad:?}; one of {}",
                        SCENARIOS.join(", ")
                    ));
                }
                o.only = list;
            }
            other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
        }
    }
    Ok(Some(o))
}

/// Whether a figure met its target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Pass,
    Miss,
    /// Not measured (scenario failed or did not apply).
    NotMeasured,
    /// No target: shown for context.
    Info,
}

impl Verdict {
    pub fn of(pass: bool) -> Verdict {
        if pass {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }
    fn text(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::NotMeasured => "n/a",
            Verdict::Info => "",
        }
    }
}

/// One line of the final table.
pub struct Row {
    pub scenario: String,
    pub measured: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn new(scenario: impl Into<String>, measured: impl Into<String>) -> Row {
        Row {
            scenario: scenario.into(),
            measured: measured.into(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            verdict: Verdict::Info,
        }
    }
    pub fn baseline(mut self, b: impl Into<String>, ratio: impl Into<String>) -> Row {
        self.baseline = b.into();
        self.ratio = ratio.into();
        self
    }
    pub fn target(mut self, t: impl Into<String>, v: Verdict) -> Row {
        self.target = t.into();
        self.verdict = v;
        self
    }
}

/// What every scenario shares: the binary, the options, a scratch directory, the results.
pub struct Ctx {
    pub bin: PathBuf,
    /// wrk, when installed (and not `--no-wrk`): the sync scenario's load generator.
    pub wrk: Option<wrk::Wrk>,
    pub opts: Opts,
    pub work: tempfile::TempDir,
    pub rows: Vec<Row>,
    servers: usize,
}

impl Ctx {
    /// A new server on a fresh data directory.
    pub fn fresh_server(
        &mut self,
        name: &str,
        env: &[(&str, &str)],
    ) -> Result<server::Hangar, String> {
        self.servers += 1;
        let data = self.work.path().join(format!("{}-{name}", self.servers));
        let log = self
            .work
            .path()
            .join(format!("{}-{name}.log", self.servers));
        server::Hangar::start(&self.bin, &data, &log, env)
    }

    /// The warm-up before a measured figure: a quarter of a round, 0.2-1 s.
    pub fn warmup(&self) -> Duration {
        (self.opts.duration / 4).clamp(Duration::from_millis(200), Duration::from_secs(1))
    }
}

/// `/proc/loadavg`'s 1-minute figure: other work on the machine skews every number here.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn print_table(rows: &[Row]) -> String {
    let header = [
        "scenario", "measured", "baseline", "ratio", "target", "result",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.measured.clone(),
                r.baseline.clone(),
                r.ratio.clone(),
                r.target.clone(),
                r.verdict.text().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c.iter()) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::from("|");
        for (w, cell) in widths.iter().zip(c) {
            s.push_str(&format!(
                " {cell}{} |",
                " ".repeat(w - cell.chars().count())
            ));
        }
        s
    };
    let mut out = String::new();
    out.push_str(&line(&header.map(String::from)));
    out.push('\n');
    out.push('|');
    for w in widths {
        out.push_str(&format!("{}|", "-".repeat(w + 2)));
    }
    out.push('\n');
    for c in &cells {
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hangar-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let build_started = Instant::now();
    let bin = match server::build() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("hangar-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let work = match tempfile::Builder::new().prefix("hangar-bench-").tempdir() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("hangar-bench: temporary directory: {e}");
            return ExitCode::from(2);
        }
    };
    let build_secs = build_started.elapsed().as_secs_f64();
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("hangar-bench: {}", bin.display());
    println!(
        "mode: {}, rounds of {:?} ×{} (median reported), scenarios: {}",
        if opts.quick { "quick" } else { "full" },
        opts.duration,
        opts.rounds,
        opts.only.join(", ")
    );
    println!(
        "machine: {cores} CPU cores, SHARED by the load generator (this process, one OS thread \
         per connection), the server under test and the in-process baseline: absolute figures \
         are pessimistic, the ratios to the baseline are the fairer comparison."
    );
    let load_before = load_average();
    if let Some(l) = load_before {
        println!("load average (1 min) before: {l:.2}");
        if l > cores as f64 * 0.5 {
            println!(
                "WARNING: the machine is busy (load {l:.2} on {cores} cores): figures will be low and noisy"
            );
        }
    }
    // wrk drives the sync scenario only (see `wrk.rs`); the others keep the built-in client.
    let sync = opts.only.iter().any(|s| s == "sync");
    let wrk = match (opts.no_wrk, wrk::find()) {
        (true, _) => {
            if sync {
                println!("load generator of the sync scenario: the built-in client (--no-wrk)");
            }
            None
        }
        (false, Some(path)) => {
            if sync {
                println!(
                    "load generator of the sync scenario: {} ({} threads)",
                    path.display(),
                    opts.wrk_threads
                );
            }
            Some(wrk::Wrk::new(path, work.path(), opts.wrk_threads))
        }
        (false, None) => {
            if sync {
                println!(
                    "WARNING: wrk is not installed (apt-get install wrk): the sync scenario falls \
                     back to the built-in client, which caps the bare baseline (~66k req/s on 2 \
                     cores where wrk drives it past 100k/s), so its ratios flatter Hangar"
                );
            }
            None
        }
    };
    let mut ctx = Ctx {
        wrk,
        bin,
        opts: opts.clone(),
        work,
        rows: Vec::new(),
        servers: 0,
    };
    for name in &opts.only {
        println!("\n== {name} ==");
        let t0 = Instant::now();
        let result = match name.as_str() {
            "sync" => scenarios::sync(&mut ctx),
            "async" => scenarios::asynchronous(&mut ctx),
            "push" => scenarios::push(&mut ctx),
            "writes" => scenarios::writes(&mut ctx),
            "replay" => scenarios::replay(&mut ctx),
            "memory" => scenarios::memory(&mut ctx),
            "undeploy" => scenarios::undeploy(&mut ctx),
            "soak" => soak::soak(&mut ctx),
            "protocols" => protocols::protocols(&mut ctx),
            "cluster" => cluster::cluster(&mut ctx),
            _ => unreachable!("checked in parse_args"),
        };
        if let Err(e) = result {
            println!("  scenario {name} failed: {e}");
            ctx.rows.push(
                Row::new(name.clone(), format!("failed: {e}")).target("", Verdict::NotMeasured),
            );
        }
        println!("  ({name}: {:.1} s)", t0.elapsed().as_secs_f64());
    }
    println!(
        "\n== results ({} mode, median of {} rounds, {cores} cores shared by client and server; \
         scenarios {:.0} s, build {:.0} s) ==\n",
        if opts.quick { "quick" } else { "full" },
        opts.rounds,
        started.elapsed().as_secs_f64(),
        build_secs
    );
    print!("{}", print_table(&ctx.rows));
    if let (Some(b), Some(a)) = (load_before, load_average()) {
        println!(
            "\nload average (1 min): {b:.2} before, {a:.2} after (the bench itself adds about 2)"
        );
    }
    let misses = ctx
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Miss)
        .count();
    let passes = ctx
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Pass)
        .count();
    println!("\n{passes} PASS, {misses} MISS (a benchmark: the exit status is 0 either way)");
    if opts.keep {
        println!("kept: {}", ctx.work.keep().display());
    }
    ExitCode::SUCCESS
}
