//! One lane per conversation thread: the runs of a thread run one at a time, in the order the
//! agent's runtime accepted them.
//!
//! A run whose thread is busy waits here (a sync caller keeps waiting; a claimed async run stays
//! `running` in the store with no `started_at`, which recovery reads as "never started": it is
//! run after a restart, not marked interrupted). The lane passes to the next waiting run once
//! the previous one's final state and turn are stored, so the next run sees that turn.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use uuid::Uuid;

/// A run waiting for its thread, with whatever starting it needs (`W`).
pub(super) struct Waiting<W> {
    pub rid: Uuid,
    pub since: Instant,
    pub what: W,
}

struct Lane<W> {
    /// The run that holds the thread.
    active: Option<Uuid>,
    waiting: VecDeque<Waiting<W>>,
    /// Async runs of the thread accepted and still on the store's queue.
    queued: usize,
}

impl<W> Default for Lane<W> {
    fn default() -> Self {
        Lane {
            active: None,
            waiting: VecDeque::new(),
            queued: 0,
        }
    }
}

pub(super) struct Lanes<W> {
    lanes: HashMap<String, Lane<W>>,
}

impl<W> Default for Lanes<W> {
    fn default() -> Self {
        Lanes {
            lanes: HashMap::new(),
        }
    }
}

impl<W> Lanes<W> {
    /// Whether a new request of `thread` would have to wait: a run holds it, waits for it, or
    /// is queued for it.
    pub fn busy(&self, thread: &str) -> bool {
        self.lanes
            .get(thread)
            .is_some_and(|l| l.active.is_some() || !l.waiting.is_empty() || l.queued > 0)
    }

    /// Whether `thread` is free for a run to start now (nothing holds it or waits for it).
    pub fn free(&self, thread: &str) -> bool {
        self.lanes
            .get(thread)
            .is_none_or(|l| l.active.is_none() && l.waiting.is_empty())
    }

    /// The run that holds `thread`, if any.
    pub fn active(&self, thread: &str) -> Option<Uuid> {
        self.lanes.get(thread).and_then(|l| l.active)
    }

    /// `rid` holds `thread` from now on.
    pub fn enter(&mut self, thread: &str, rid: Uuid) {
        self.lanes.entry(thread.to_owned()).or_default().active = Some(rid);
    }

    /// `rid` waits for `thread`, after those already waiting.
    pub fn wait(&mut self, thread: &str, rid: Uuid, what: W) {
        self.lanes
            .entry(thread.to_owned())
            .or_default()
            .waiting
            .push_back(Waiting {
                rid,
                since: Instant::now(),
                what,
            });
    }

    /// An async run of `thread` was accepted onto the queue.
    pub fn queued(&mut self, thread: &str) {
        self.lanes.entry(thread.to_owned()).or_default().queued += 1;
    }

    /// An async run of `thread` left the queue (claimed or cancelled).
    pub fn dequeued(&mut self, thread: &str) {
        if let Some(lane) = self.lanes.get_mut(thread) {
            lane.queued = lane.queued.saturating_sub(1);
        }
        self.forget_if_idle(thread);
    }

    /// `rid` lets go of `thread`; the next waiting run, which holds it from now on.
    pub fn leave(&mut self, thread: &str, rid: Uuid) -> Option<Waiting<W>> {
        let lane = self.lanes.get_mut(thread)?;
        if lane.active == Some(rid) {
            lane.active = None;
        }
        let next = if lane.active.is_none() {
            lane.waiting.pop_front()
        } else {
            None
        };
        if let Some(next) = &next {
            lane.active = Some(next.rid);
        }
        self.forget_if_idle(thread);
        next
    }

    /// Takes `rid` out of whichever lane it waits in.
    pub fn remove_waiting(&mut self, rid: Uuid) -> Option<Waiting<W>> {
        for lane in self.lanes.values_mut() {
            if let Some(i) = lane.waiting.iter().position(|w| w.rid == rid) {
                return lane.waiting.remove(i);
            }
        }
        None
    }

    /// Every waiting run, lanes emptied (undeploy).
    pub fn drain(&mut self) -> Vec<Waiting<W>> {
        let all = self
            .lanes
            .drain()
            .flat_map(|(_, lane)| lane.waiting)
            .collect();
        all
    }

    fn forget_if_idle(&mut self, thread: &str) {
        let idle = self
            .lanes
            .get(thread)
            .is_some_and(|l| l.active.is_none() && l.waiting.is_empty() && l.queued == 0);
        if idle {
            self.lanes.remove(thread);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_passes_to_waiting_runs_in_order() {
        let mut lanes: Lanes<&str> = Lanes::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert!(lanes.free("t") && !lanes.busy("t"));
        lanes.enter("t", a);
        assert!(!lanes.free("t") && lanes.busy("t"));
        lanes.wait("t", b, "b");
        lanes.wait("t", c, "c");
        assert!(lanes.free("other"));
        let next = lanes.leave("t", a).expect("b is next");
        assert_eq!((next.rid, next.what), (b, "b"));
        assert!(
            lanes.leave("t", a).is_none(),
            "a let go already; b holds it"
        );
        assert_eq!(lanes.remove_waiting(c).map(|w| w.what), Some("c"));
        assert!(lanes.leave("t", b).is_none());
        assert!(lanes.free("t") && !lanes.busy("t"));
        lanes.queued("t");
        assert!(lanes.busy("t") && lanes.free("t"));
        lanes.dequeued("t");
        assert!(!lanes.busy("t"));
    }
}
