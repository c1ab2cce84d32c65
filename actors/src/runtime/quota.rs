//! The storage quota of one agent's async queue: how many bytes of input its queued requests may
//! hold (`HANGAR_AGENT_QUOTA_MB`). A queued request keeps its whole input (up to the 4 MiB a body
//! may carry) until it runs, so `max_queue` alone would let one agent fill gigabytes of disk.
//!
//! Counted in memory by the agent's runtime actor, per node: the inputs of the requests this
//! node accepted that are still queued. Requests queued before a restart are not counted (their
//! number still is, by `max_queue`), so the bound holds for what arrives after a start.

use std::collections::HashMap;

use uuid::Uuid;

pub(super) struct QueuedInputs {
    /// Bytes of input the queue may hold.
    limit: usize,
    /// The input size of each queued request this node accepted, so that a claim or cancel
    /// gives back exactly what its acceptance took, and nothing for requests never counted.
    held: HashMap<Uuid, usize>,
    total: usize,
}

impl QueuedInputs {
    pub(super) fn new(limit: usize) -> Self {
        QueuedInputs {
            limit,
            held: HashMap::new(),
            total: 0,
        }
    }

    /// Whether a request with `bytes` of input fits. An empty queue takes any request the body
    /// limit let through, so a quota below 4 MiB never refuses a large input forever.
    pub(super) fn admits(&self, bytes: usize) -> bool {
        self.total == 0 || self.total.saturating_add(bytes) <= self.limit
    }

    /// Counts a request being accepted.
    pub(super) fn hold(&mut self, rid: Uuid, bytes: usize) {
        if let Some(old) = self.held.insert(rid, bytes) {
            self.total -= old;
        }
        self.total += bytes;
    }

    /// A request left the queue (claimed, cancelled, or not queued after all).
    pub(super) fn release(&mut self, rid: Uuid) {
        if let Some(bytes) = self.held.remove(&rid) {
            self.total -= bytes;
        }
    }

    /// Undeploy emptied the queue.
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_up_to_the_limit_and_gives_back_what_it_took() {
        let mut q = QueuedInputs::new(100);
        assert!(q.admits(500), "an empty queue takes any request");
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        q.hold(a, 60);
        assert!(q.admits(40));
        assert!(!q.admits(41));
        q.hold(b, 40);
        q.release(Uuid::now_v7()); // never counted: changes nothing
        assert!(!q.admits(1));
        q.release(a);
        assert!(q.admits(60));
        q.release(a); // twice: nothing more
        q.hold(c, 60);
        assert!(!q.admits(1));
        q.clear();
        assert!(q.admits(100));
    }
}
