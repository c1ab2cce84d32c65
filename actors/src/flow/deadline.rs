//! The three time limits of a run and how they nest.
//!
//! The contract's precedence is agent (endpoint) > node > model: an inner limit never extends an
//! outer one. Each limit becomes an absolute [`Deadline`] when its scope starts; a step is bounded
//! by the earliest deadline that applies, and a timeout names that one. When two are equal the
//! outer one is named, since the inner one did not make the run any shorter.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Which limit fired, as the error's `details.limit` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The endpoint's timeout for the whole run (sync or async).
    Agent,
    /// A node's `timeout_s`.
    Node,
    /// The model's `timeout_s`, for one model call.
    Model,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Agent => "agent",
            Limit::Node => "node",
            Limit::Model => "model",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit that started now and ends at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Deadline {
    pub at: Instant,
    pub limit: Limit,
}

impl Deadline {
    /// The deadline of `limit` starting now; `None` for no limit, or one too far away to
    /// represent (which no run lives to see).
    pub fn starting_now(limit: Limit, after: Option<Duration>) -> Option<Deadline> {
        let at = Instant::now().checked_add(after?)?;
        Some(Deadline { at, limit })
    }

    /// `starting_now` for a limit given in whole seconds.
    pub fn starting_now_s(limit: Limit, seconds: Option<u64>) -> Option<Deadline> {
        Self::starting_now(limit, seconds.map(Duration::from_secs))
    }
}

/// The deadline that bounds a scope inside `outer`: the inner one only if it is strictly earlier.
pub(super) fn earliest(outer: Option<Deadline>, inner: Option<Deadline>) -> Option<Deadline> {
    match (outer, inner) {
        (Some(o), Some(i)) if i.at < o.at => Some(i),
        (Some(o), _) => Some(o),
        (None, i) => i,
    }
}

/// Runs `work` until `deadline`; `Err(limit)` if the deadline came first. Dropping the
/// unfinished `work` is how it is cancelled.
pub(super) async fn bounded<F: Future>(
    deadline: Option<Deadline>,
    work: F,
) -> Result<F::Output, Limit> {
    match deadline {
        None => Ok(work.await),
        Some(d) => tokio::time::timeout_at(d.at, work)
            .await
            .map_err(|_| d.limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64, limit: Limit) -> Option<Deadline> {
        Deadline::starting_now_s(limit, Some(s))
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_wins_and_ties_go_outward() {
        assert_eq!(
            earliest(at(8, Limit::Agent), at(5, Limit::Node)).map(|d| d.limit),
            Some(Limit::Node)
        );
        assert_eq!(
            earliest(at(1, Limit::Agent), at(100, Limit::Node)).map(|d| d.limit),
            Some(Limit::Agent)
        );
        assert_eq!(
            earliest(at(5, Limit::Node), at(5, Limit::Model)).map(|d| d.limit),
            Some(Limit::Node)
        );
        assert_eq!(
            earliest(None, at(5, Limit::Model)).map(|d| d.limit),
            Some(Limit::Model)
        );
        assert_eq!(earliest(None, None), None);
        assert_eq!(Deadline::starting_now_s(Limit::Node, Some(u64::MAX)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_fires_at_the_deadline() {
        let start = Instant::now();
        let slow = tokio::time::sleep(Duration::from_secs(10));
        assert_eq!(bounded(at(3, Limit::Node), slow).await, Err(Limit::Node));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(bounded(None, async { 7 }).await, Ok(7));
    }
}
