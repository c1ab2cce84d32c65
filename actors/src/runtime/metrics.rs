//! Prometheus metrics of the runtime: runs by status, run durations, queue depth, pushes.
//! Plain atomics rendered to the text format; no registry needed for a handful of series.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::RunStatus;

/// Upper bounds of the duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 600.0,
];

#[derive(Default)]
pub struct Metrics {
    /// Runs that reached each status (queued and running count entries into them).
    runs: [AtomicU64; RunStatus::ALL.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_us: AtomicU64,
    push_attempts: AtomicU64,
    push_failures: AtomicU64,
}

fn index(status: RunStatus) -> usize {
    RunStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}

impl Metrics {
    pub fn run_entered(&self, status: RunStatus) {
        self.runs[index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn run_finished(&self, status: RunStatus, seconds: f64) {
        self.run_entered(status);
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn push_attempt(&self) {
        self.push_attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn push_failure(&self) {
        self.push_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition; `queue_depth` is read from the queue itself at scrape time.
    pub fn render(&self, queue_depth: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP hangar_runs_total Runs that entered each status."
        );
        let _ = writeln!(out, "# TYPE hangar_runs_total counter");
        for s in RunStatus::ALL {
            let _ = writeln!(
                out,
                "hangar_runs_total{{status=\"{}\"}} {}",
                s.as_str(),
                self.runs[index(s)].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hangar_run_duration_seconds Time from start to a final state."
        );
        let _ = writeln!(out, "# TYPE hangar_run_duration_seconds histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "hangar_run_duration_seconds_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "hangar_run_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "hangar_run_duration_seconds_sum {sum}");
        let _ = writeln!(out, "hangar_run_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP hangar_queue_depth Async requests waiting for an executor."
        );
        let _ = writeln!(out, "# TYPE hangar_queue_depth gauge");
        let _ = writeln!(out, "hangar_queue_depth {queue_depth}");
        let _ = writeln!(
            out,
            "# HELP hangar_push_attempts_total Webhook delivery attempts."
        );
        let _ = writeln!(out, "# TYPE hangar_push_attempts_total counter");
        let _ = writeln!(
            out,
            "hangar_push_attempts_total {}",
            self.push_attempts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP hangar_push_failures_total Webhook attempts that were not a 2xx."
        );
        let _ = writeln!(out, "# TYPE hangar_push_failures_total counter");
        let _ = writeln!(
            out,
            "hangar_push_failures_total {}",
            self.push_failures.load(Ordering::Relaxed)
        );
        out
    }
}

impl crate::push::PushMetrics for Metrics {
    fn attempt(&self) {
        self.push_attempt();
    }

    fn failure(&self) {
        self.push_failure();
    }
}
