//! The load loop: `c` OS threads, one keep-alive connection each, for a fixed time; latencies in
//! an HDR histogram (microseconds), merged at the end.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::http::Conn;

pub struct Stats {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed (transport error or unexpected status), by first message.
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
    pub hist: Histogram<u64>,
}

impl Stats {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }
    pub fn p50_ms(&self) -> f64 {
        self.hist.value_at_quantile(0.50) as f64 / 1000.0
    }
    pub fn p99_ms(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1000.0
    }
    pub fn figure(&self) -> Figure {
        Figure {
            rate: self.rate(),
            p50_ms: self.p50_ms(),
            p99_ms: self.p99_ms(),
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// What one operation reported: `Ok(true)` counts, `Ok(false)` is a failure with no message.
pub type Outcome = Result<bool, String>;

pub fn io_err(e: io::Error) -> String {
    e.to_string()
}

/// Runs `op(thread, iteration, conn)` on `c` threads until `dur` has passed. Each thread owns
/// one connection (with `token` as its bearer). Latency is recorded for successes only.
pub fn run<F>(addr: SocketAddr, token: Option<&str>, c: usize, dur: Duration, op: F) -> Stats
where
    F: Fn(usize, u64, &mut Conn) -> Outcome + Sync,
{
    run_while(addr, token, c, dur, &AtomicBool::new(true), op)
}

/// [`run`], ending early once `going` turns false (the soak stops when the disk fills up).
pub fn run_while<F>(
    addr: SocketAddr,
    token: Option<&str>,
    c: usize,
    dur: Duration,
    going: &AtomicBool,
    op: F,
) -> Stats
where
    F: Fn(usize, u64, &mut Conn) -> Outcome + Sync,
{
    run_spread(&[addr], token, c, dur, going, op)
}

/// [`run_while`] over several servers (a cluster's nodes): thread `t` talks to
/// `addrs[t % addrs.len()]`, so the load is spread evenly over them.
pub fn run_spread<F>(
    addrs: &[SocketAddr],
    token: Option<&str>,
    c: usize,
    dur: Duration,
    going: &AtomicBool,
    op: F,
) -> Stats
where
    F: Fn(usize, u64, &mut Conn) -> Outcome + Sync,
{
    let barrier = Barrier::new(c + 1);
    let (op, barrier) = (&op, &barrier);
    let (results, secs) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..c)
            .map(|t| {
                scope.spawn(move || {
                    let mut conn = Conn::new(addrs[t % addrs.len()], token);
                    let mut hist = histogram();
                    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                    barrier.wait();
                    let deadline = Instant::now() + dur;
                    let mut i = 0u64;
                    while Instant::now() < deadline && going.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        match op(t, i, &mut conn) {
                            Ok(true) => {
                                ok += 1;
                                let us = t0.elapsed().as_micros() as u64;
                                let _ = hist.record(us.max(1));
                            }
                            Ok(false) => errors += 1,
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                                // Do not spin on a refused connection.
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                        i += 1;
                    }
                    (ok, errors, first_error, hist)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("load thread"))
            .collect();
        (results, start.elapsed().as_secs_f64())
    });
    let mut stats = Stats {
        ok: 0,
        errors: 0,
        first_error: None,
        secs,
        hist: histogram(),
    };
    for (ok, errors, first_error, hist) in results {
        stats.ok += ok;
        stats.errors += errors;
        if stats.first_error.is_none() {
            stats.first_error = first_error;
        }
        stats.hist.add(hist).expect("same bounds");
    }
    stats
}

/// Runs `items` operations spread over `c` threads (thread t takes items t, t+c, …), bounded by
/// `limit` in time. Returns the stats; the caller checks `ok` against the count it wanted.
pub fn run_items<F>(
    addr: SocketAddr,
    token: Option<&str>,
    c: usize,
    items: usize,
    limit: Duration,
    op: F,
) -> Stats
where
    F: Fn(usize, &mut Conn) -> Outcome + Sync,
{
    let op = &op;
    let start = Instant::now();
    let deadline = start + limit;
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..c)
            .map(|t| {
                scope.spawn(move || {
                    let mut conn = Conn::new(addr, token);
                    let mut hist = histogram();
                    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                    let mut item = t;
                    while item < items && Instant::now() < deadline {
                        let t0 = Instant::now();
                        match op(item, &mut conn) {
                            Ok(true) => {
                                ok += 1;
                                let _ = hist.record((t0.elapsed().as_micros() as u64).max(1));
                            }
                            Ok(false) => errors += 1,
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                        item += c;
                    }
                    (ok, errors, first_error, hist)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread"))
            .collect()
    });
    let mut stats = Stats {
        ok: 0,
        errors: 0,
        first_error: None,
        secs: start.elapsed().as_secs_f64(),
        hist: histogram(),
    };
    for (ok, errors, first_error, hist) in results {
        stats.ok += ok;
        stats.errors += errors;
        if stats.first_error.is_none() {
            stats.first_error = first_error;
        }
        stats.hist.add(hist).expect("same bounds");
    }
    stats
}

/// The median of `xs` (mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Medians over rounds of throughput, p50 and p99.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Figure {
    pub fn of(rounds: &[Stats]) -> Figure {
        Figure::median(&rounds.iter().map(Stats::figure).collect::<Vec<_>>())
    }

    /// Each figure's median over rounds measured by any client (this one's or wrk).
    pub fn median(rounds: &[Figure]) -> Figure {
        Figure {
            rate: median(rounds.iter().map(|f| f.rate).collect()),
            p50_ms: median(rounds.iter().map(|f| f.p50_ms).collect()),
            p99_ms: median(rounds.iter().map(|f| f.p99_ms).collect()),
        }
    }
}
