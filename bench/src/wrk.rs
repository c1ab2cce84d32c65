//! `wrk` as the load generator of the sync scenario, when it is installed.
//!
//! Why: the bench's own client (one OS thread per connection, blocking I/O) spends more CPU per
//! request than an epoll loop does, and on 2 shared cores that CPU comes out of the server's
//! share. It capped the bare actix-web baseline at ~66k req/s where wrk drives it past 110k/s, so
//! a ratio to a baseline measured with it flatters Hangar. wrk is run as a child process with a
//! Lua script that sets the POST body and the bearer token; its `--latency` report gives the
//! percentiles.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::load::Figure;

/// One wrk run, as read back from its report.
#[derive(Clone, Debug)]
pub struct WrkRound {
    /// Responses wrk counted, whatever their status.
    pub requests: u64,
    /// Of those, answers that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// wrk's "Socket errors" line, if it printed one (connect, read, write, timeout).
    pub socket_errors: Option<String>,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl WrkRound {
    /// Successful answers per second: wrk's own Requests/sec counts failures too.
    pub fn rate(&self) -> f64 {
        self.requests.saturating_sub(self.non_2xx) as f64 / self.secs.max(1e-9)
    }

    pub fn figure(&self) -> Figure {
        Figure {
            rate: self.rate(),
            p50_ms: self.p50_ms,
            p99_ms: self.p99_ms,
        }
    }
}

pub struct Wrk {
    bin: PathBuf,
    /// Where the Lua scripts go (the bench's scratch directory: the token must not land in /tmp
    /// for everyone to read).
    dir: PathBuf,
    /// wrk's event-loop threads, at most one per connection.
    threads: usize,
}

/// `wrk` on `PATH`, if any.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("wrk"))
        .find(|p| p.is_file())
}

impl Wrk {
    pub fn new(bin: PathBuf, dir: &Path, threads: usize) -> Wrk {
        Wrk {
            bin,
            dir: dir.to_path_buf(),
            threads: threads.max(1),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// `POST path` with `body` (and `token` as bearer) on `c` connections for `dur` (whole
    /// seconds, at least 1: wrk takes no finer duration).
    pub fn post(
        &self,
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        body: &str,
        c: usize,
        dur: Duration,
    ) -> Result<WrkRound, String> {
        let script = self.dir.join(format!("wrk-{}.lua", addr.port()));
        std::fs::write(&script, lua(body, token)?)
            .map_err(|e| format!("wrk script {}: {e}", script.display()))?;
        let secs = dur.as_secs_f64().ceil().max(1.0) as u64;
        let out = Command::new(&self.bin)
            .arg("-t")
            .arg(self.threads.min(c).to_string())
            .arg("-c")
            .arg(c.to_string())
            .arg("-d")
            .arg(format!("{secs}s"))
            // Its default, 2 s, would count a slow answer as an error instead of a latency.
            .args(["--timeout", "30s", "--latency", "-s"])
            .arg(&script)
            .arg(format!("http://{addr}{path}"))
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "wrk failed ({}): {}{}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        parse(&text)
    }
}

/// The script: the method, body and headers, set once (wrk then prebuilds the request, its
/// fastest path). Lua long strings need no escaping, as long as they hold no `]]`.
fn lua(body: &str, token: Option<&str>) -> Result<String, String> {
    let long = |s: &str| -> Result<String, String> {
        if s.contains("]]") || s.contains('\n') {
            Err(format!("cannot quote {s:?} for wrk's Lua script"))
        } else {
            Ok(format!("[[{s}]]"))
        }
    };
    let mut script = format!(
        "wrk.method = \"POST\"\nwrk.body = {}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        long(body)?
    );
    if let Some(t) = token {
        script.push_str(&format!(
            "wrk.headers[\"Authorization\"] = {}\n",
            long(&format!("Bearer {t}"))?
        ));
    }
    Ok(script)
}

/// `123.45us`, `1.20ms`, `2.00s`, `1.00m` → milliseconds.
fn time_ms(text: &str) -> Option<f64> {
    let split = text.find(|ch: char| ch.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let v: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(v * factor)
}

/// Reads wrk 4's report: the `--latency` distribution, `N requests in T, …`, and the error lines.
pub fn parse(report: &str) -> Result<WrkRound, String> {
    let bad = |what: &str| format!("wrk's report has no {what}:\n{}", report.trim());
    let mut round = WrkRound {
        requests: 0,
        non_2xx: 0,
        socket_errors: None,
        secs: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
    };
    let mut saw_requests = false;
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", t] => round.p50_ms = time_ms(t).ok_or_else(|| bad("readable p50"))?,
            ["99%", t] => round.p99_ms = time_ms(t).ok_or_else(|| bad("readable p99"))?,
            [n, "requests", "in", t, ..] => {
                round.requests = n.parse().map_err(|_| bad("request count"))?;
                let t = t.trim_end_matches(',');
                round.secs = time_ms(t).ok_or_else(|| bad("readable duration"))? / 1e3;
                saw_requests = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                round.non_2xx = n.parse().map_err(|_| bad("readable Non-2xx count"))?;
            }
            _ if line.starts_with("Socket errors:") => round.socket_errors = Some(line.into()),
            _ => {}
        }
    }
    if !saw_requests {
        return Err(bad("request count"));
    }
    if round.p50_ms.is_nan() || round.p99_ms.is_nan() {
        return Err(bad("latency distribution (--latency)"));
    }
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:41234/v1/agents/x/invoke
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   280.12us  150.00us   9.50ms   90.00%
    Req/Sec    57.53k     3.10k   62.00k    70.00%
  Latency Distribution
     50%  251.00us
     75%  300.00us
     90%  400.00us
     99%    1.20ms
  572391 requests in 5.00s, 60.25MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 12
Requests/sec: 114478.20
Transfer/sec:     12.05MB
";

    #[test]
    fn reads_wrk_4s_report() {
        let r = parse(REPORT).expect("parse");
        assert_eq!(r.requests, 572_391);
        assert_eq!(r.non_2xx, 12);
        assert!((r.secs - 5.0).abs() < 1e-9);
        assert!((r.p50_ms - 0.251).abs() < 1e-9);
        assert!((r.p99_ms - 1.2).abs() < 1e-9);
        assert!((r.rate() - 572_379.0 / 5.0).abs() < 1e-6);
        assert_eq!(
            r.socket_errors.as_deref(),
            Some("Socket errors: connect 0, read 3, write 0, timeout 0")
        );
    }

    #[test]
    fn a_report_without_latencies_is_an_error() {
        let cut: String = REPORT
            .lines()
            .filter(|l| !l.contains('%') || l.contains("Stdev"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse(&cut).is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn times_in_every_unit() {
        assert_eq!(time_ms("500.00us"), Some(0.5));
        assert_eq!(time_ms("2.50ms"), Some(2.5));
        assert_eq!(time_ms("1.00s"), Some(1000.0));
        assert_eq!(time_ms("1.00m"), Some(60_000.0));
        assert_eq!(time_ms("fast"), None);
        assert_eq!(time_ms("3"), None);
    }

    #[test]
    fn the_script_quotes_body_and_token() {
        let s = lua(r#"{"input": {"name": "x"}}"#, Some("tok")).expect("script");
        assert!(s.contains(r#"wrk.body = [[{"input": {"name": "x"}}]]"#));
        assert!(s.contains(r#"wrk.headers["Authorization"] = [[Bearer tok]]"#));
        assert!(lua("a]]b", None).is_err());
    }
}
