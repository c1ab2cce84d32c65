//! The soak: sync invoke at c=32 for minutes against a server with a short run retention and the
//! default cache bound, sampling its resident memory and its data directory as it goes.
//!
//! What it checks (the contract of `--cache-mb`, `/work/shared/API.md`): the RSS stays within the
//! cache bound plus 64 MiB and stops growing; the store stops growing once the retention has
//! passed, because the purge removes runs as fast as the load adds them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::load;
use crate::scenarios::{
    admin, dir_size, expect, greet_agent, outcome, rate, round_line, short, thousands, C,
    INVOKE_BODY,
};
use crate::server::TOKEN;
use crate::{Ctx, Row, Verdict};

type Result<T> = std::result::Result<T, String>;

/// What the server may hold beyond its cache bound.
const OVERHEAD_MIB: f64 = 64.0;
/// "Flat": the RSS's trend over the last `FLAT_WINDOW` (see [`trend`]) is under this.
const FLAT_GROWTH: f64 = 0.05;
const FLAT_WINDOW: Duration = Duration::from_secs(120);
/// "Not growing": once settled, the trend of the store (without its write-ahead log) is under
/// this; sled grows its file in steps of segments, hence more room than for the RSS.
const STORE_GROWTH: f64 = 0.10;
/// Retentions after which the store is taken to be settled (see `verdicts`).
const SETTLED_RETENTIONS: f64 = 4.0;
/// The write-ahead log, which cycles between empty and its checkpoint size (64 MiB) by design:
/// left out of the store's growth, shown on its own.
const WAL: &str = "store/hangar.wal";

const MIB: f64 = (1 << 20) as f64;
/// The soak writes gigabytes on a disk it may share: below this much free space it stops early.
const MIN_FREE: u64 = 2 << 30;

/// Bytes free for unprivileged users on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

struct Sample {
    secs: f64,
    rss_kib: u64,
    /// The data directory without the write-ahead log.
    store: u64,
    wal: u64,
    /// Sync invocations answered 200 so far.
    ok: u64,
}

fn sample(pid: u32, data: &Path, start: Instant, ok: u64) -> Result<Sample> {
    let rss_kib = crate::server::rss_kib(pid).ok_or("no VmRSS: did the server die?")?;
    let total = dir_size(data);
    let wal = std::fs::metadata(data.join(WAL)).map_or(0, |m| m.len());
    Ok(Sample {
        secs: start.elapsed().as_secs_f64(),
        rss_kib,
        store: total.saturating_sub(wal),
        wal,
        ok,
    })
}

/// One line: `s`, the rate since `prev` (the previous line) and the highest RSS in between.
fn print_sample(s: &Sample, prev: Option<&Sample>, between: &[Sample]) {
    let recent = prev.map_or(String::new(), |p| {
        format!(
            " · {} over the last {:.0} s",
            rate((s.ok - p.ok) as f64 / (s.secs - p.secs).max(1e-9)),
            s.secs - p.secs
        )
    });
    let high = between
        .iter()
        .map(|x| x.rss_kib)
        .max()
        .unwrap_or(0)
        .max(s.rss_kib);
    println!(
        "    t={:>4.0} s: RSS {:>6.1} MiB (max {:>6.1}) · store {:>7.1} MiB + log {:>5.1} MiB · {} runs{recent}",
        s.secs,
        s.rss_kib as f64 / 1024.0,
        high as f64 / 1024.0,
        s.store as f64 / MIB,
        s.wal as f64 / MIB,
        thousands(s.ok),
    );
}

/// `purged old runs purged=N` lines of the server's log: how many passes, how many runs.
fn purges(log: &Path) -> (usize, u64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut passes = 0;
    let mut runs = 0;
    for line in text.lines().filter(|l| l.contains("purged old runs")) {
        passes += 1;
        let plain = strip_ansi(line);
        if let Some(n) = plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix("purged="))
            .and_then(|n| n.parse::<u64>().ok())
        {
            runs += n;
        }
    }
    (passes, runs)
}

/// The server's log is written with colours (its writer is not a terminal, tracing's default).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // CSI: ESC [ parameters final-letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

pub fn soak(ctx: &mut Ctx) -> Result<()> {
    let total = ctx.opts.soak;
    let retention = ctx.opts.soak_retention;
    let cache_mb = ctx.opts.cache_mb;
    let cache = cache_mb.to_string();
    let keep = format!("{}s", retention.as_secs());
    let h = ctx.fresh_server(
        "soak",
        &[("HANGAR_CACHE_MB", &cache), ("HANGAR_RUN_RETENTION", &keep)],
    )?;
    let pid = h.pid().ok_or("the server is not running")?;
    let mut c = admin(&h);
    let id = greet_agent(&mut c, "bench soak")?;
    let path = format!("/v1/agents/{id}/invoke");
    // A run from the start, which the purge must have removed by the end.
    let first = expect(c.post(&path, INVOKE_BODY), 200, "sync invoke")?;
    let first_rid = first.json()["request_id"]
        .as_str()
        .ok_or_else(|| format!("no request_id in {}", short(&first.text())))?
        .to_owned();
    // Printed every 30 s (a tenth of a shorter soak), sampled every second: the RSS has spikes
    // of a second or two that a 30 s sample would mostly miss, and the trends below rest on
    // many points.
    let print_every = (total / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let every = Duration::from_secs(1);
    let per_line = (print_every.as_secs() as usize).max(1);
    println!(
        "  HANGAR_CACHE_MB={cache_mb} HANGAR_RUN_RETENTION={keep}; sync invoke at c={C} for {} s \
         (built-in client); RSS and data directory every {} s",
        total.as_secs(),
        print_every.as_secs()
    );
    let done = AtomicU64::new(0);
    let op = |_: usize, _: u64, conn: &mut crate::http::Conn| {
        let r = outcome(conn.post(&path, INVOKE_BODY), 200);
        if matches!(r, Ok(true)) {
            done.fetch_add(1, Ordering::Relaxed);
        }
        r
    };
    let start = Instant::now();
    let mut samples = vec![sample(pid, &h.data, start, 0)?];
    print_sample(&samples[0], None, &[]);
    let mut printed = 0;
    let going = AtomicBool::new(true);
    let mut stopped = None;
    let stats = std::thread::scope(|scope| -> Result<load::Stats> {
        let load = scope.spawn(|| load::run_while(h.addr, Some(TOKEN), C, total, &going, op));
        let mut next = start + every;
        while !load.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
            let low = free_bytes(&h.data).is_some_and(|f| f < MIN_FREE);
            if low && stopped.is_none() {
                let at = start.elapsed().as_secs();
                println!(
                    "  STOPPING at t={at} s: under {} GiB free on the data directory's disk",
                    MIN_FREE >> 30
                );
                stopped = Some(at);
                going.store(false, Ordering::Relaxed);
            }
            if Instant::now() >= next && !load.is_finished() {
                next += every;
                let s = sample(pid, &h.data, start, done.load(Ordering::Relaxed))?;
                if samples.len() % per_line == 0 {
                    print_sample(&s, samples.get(printed), &samples[printed..]);
                    printed = samples.len();
                }
                samples.push(s);
            }
        }
        load.join()
            .map_err(|_| "the load thread panicked".to_string())
    })?;
    let end = sample(pid, &h.data, start, done.load(Ordering::Relaxed))?;
    print_sample(&end, samples.get(printed), &samples[printed..]);
    samples.push(end);
    round_line("soak", &stats);
    let first_gone = c
        .get(&format!("/v1/agents/{id}/requests/{first_rid}"))
        .map(|r| r.status);
    let (passes, purged) = purges(h.log());
    println!(
        "  the first run: {}; the server's log: {passes} purge passes removed {} runs",
        match first_gone {
            Ok(404) => "purged (404)".to_string(),
            Ok(s) => format!("still there (HTTP {s})"),
            Err(e) => format!("unreadable ({e})"),
        },
        thousands(purged)
    );
    if let Some(at) = stopped {
        return Err(format!(
            "stopped at t={at} s: the disk of the data directory had under {} GiB free",
            MIN_FREE >> 30
        ));
    }
    verdicts(ctx, &samples, &stats, retention, cache_mb);
    Ok(())
}

/// The least-squares trend of `points` (seconds, value) over `span` seconds, as a fraction of
/// their mean: +0.05 is "grew 5 % over the span". One outlying sample moves it less than it
/// moves a comparison of two samples. `None` under three points.
fn trend(points: &[(f64, f64)], span: f64) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 || my <= 0.0 {
        return None;
    }
    Some(sxy / sxx * span / my)
}

fn verdicts(
    ctx: &mut Ctx,
    samples: &[Sample],
    stats: &load::Stats,
    retention: Duration,
    cache_mb: u64,
) {
    let secs = ctx.opts.soak.as_secs();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let Some(last) = samples.last() else { return };
    let mut errors = String::new();
    if stats.errors > 0 {
        errors = format!(
            ", {} errors (first: {})",
            thousands(stats.errors),
            stats.first_error.as_deref().unwrap_or("unexpected answer")
        );
    }
    ctx.rows.push(Row::new(
        format!("soak: sync invoke c={C}, {secs} s"),
        format!("{}{errors}", rate(stats.rate())),
    ));

    // Memory: the peak under load, against the bound.
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let bound = cache_mb as f64 + OVERHEAD_MIB;
    let above = samples.iter().filter(|s| mib(s.rss_kib) > bound).count();
    ctx.rows.push(
        Row::new(
            "soak: peak RSS (1 s samples)",
            format!(
                "{:.0} MiB (idle {:.0}, end {:.0}; above the bound in {above} of {} samples)",
                mib(peak),
                mib(samples[0].rss_kib),
                mib(last.rss_kib),
                samples.len()
            ),
        )
        .target(
            format!("≤ cache {cache_mb} + {OVERHEAD_MIB:.0} MiB"),
            Verdict::of(mib(peak) <= bound),
        ),
    );

    // Flat: the trend of the RSS over the last FLAT_WINDOW (or half the soak).
    let window = FLAT_WINDOW.min(ctx.opts.soak / 2).as_secs_f64();
    let recent: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.secs >= last.secs - window)
        .collect();
    let points: Vec<(f64, f64)> = recent.iter().map(|s| (s.secs, s.rss_kib as f64)).collect();
    let (low, high) = recent.iter().fold((u64::MAX, 0), |(lo, hi), s| {
        (lo.min(s.rss_kib), hi.max(s.rss_kib))
    });
    ctx.rows.push(match trend(&points, window) {
        Some(growth) => Row::new(
            format!("soak: RSS over the last {window:.0} s"),
            format!(
                "{:.0}–{:.0} MiB, trend {:+.1} % over the {window:.0} s",
                mib(low),
                mib(high),
                growth * 100.0
            ),
        )
        .target(
            format!("flat: trend < +{:.0} %", FLAT_GROWTH * 100.0),
            Verdict::of(growth < FLAT_GROWTH),
        ),
        None => {
            Row::new("soak: RSS flat", "n/a (too few samples)").target("", Verdict::NotMeasured)
        }
    });

    // The store: a run is purged between 1× and 1.5× the retention after it finished (the purge
    // runs every half retention), plus the time the pass takes under load, and sled reuses the
    // space freed once whole segments are free: in the soaks measured, the store reached its
    // steady size after 3.5-4× the retention. From 4× on, it must not grow.
    let settled = SETTLED_RETENTIONS * retention.as_secs_f64();
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.secs >= settled).collect();
    let span = last.secs - settled;
    let points: Vec<(f64, f64)> = steady.iter().map(|s| (s.secs, s.store as f64)).collect();
    ctx.rows.push(match trend(&points, span) {
        Some(growth) if span >= 60.0 => {
            let (low, high) = steady.iter().fold((u64::MAX, 0), |(lo, hi), s| {
                (lo.min(s.store), hi.max(s.store))
            });
            Row::new(
                format!("soak: store from {settled:.0} s ({SETTLED_RETENTIONS}× retention)"),
                format!(
                    "{:.0}–{:.0} MiB, trend {:+.1} % over the {span:.0} s (log {:.0} MiB at the end)",
                    low as f64 / MIB,
                    high as f64 / MIB,
                    growth * 100.0,
                    last.wal as f64 / MIB
                ),
            )
            .target(
                format!("not growing: trend < +{:.0} %", STORE_GROWTH * 100.0),
                Verdict::of(growth < STORE_GROWTH),
            )
        }
        _ => Row::new(
            "soak: store not growing",
            format!(
                "n/a: needs a soak of {SETTLED_RETENTIONS}× the retention + 60 s ({} s)",
                settled as u64 + 60
            ),
        )
        .target("", Verdict::NotMeasured),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trend_is_the_fitted_growth_over_the_span() {
        let flat = [(0.0, 100.0), (10.0, 120.0), (20.0, 100.0), (30.0, 100.0)];
        assert!(trend(&flat, 30.0).expect("trend").abs() < 0.1);
        let rising = [(0.0, 100.0), (10.0, 110.0), (20.0, 120.0)];
        let g = trend(&rising, 20.0).expect("trend");
        assert!((g - 20.0 / 110.0).abs() < 1e-9, "{g}");
        assert_eq!(trend(&rising[..2], 10.0), None);
    }

    #[test]
    fn reads_the_purge_lines_of_a_coloured_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m purged old runs \u{1b}[3mpurged\u{1b}[0m\u{1b}[2m=\u{1b}[0m1200\n\
             other line\n\
             INFO purged old runs purged=34\n",
        )
        .expect("write");
        assert_eq!(purges(&log), (2, 1234));
        assert_eq!(purges(&dir.path().join("missing")), (0, 0));
    }
}
