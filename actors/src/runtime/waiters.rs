//! Long-poll support: callers waiting for a run to reach a final state.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;
use uuid::Uuid;

#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<Uuid, Vec<oneshot::Sender<()>>>>,
}

impl Waiters {
    /// Resolves when [`Waiters::wake`] is called for `rid`. Register before reading the run, so a
    /// finish between the read and the wait is not missed.
    pub fn register(&self, rid: Uuid) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut map) = self.map.lock() {
            let list = map.entry(rid).or_default();
            list.retain(|s| !s.is_closed());
            list.push(tx);
        }
        rx
    }

    /// Drops the senders of callers of `rid` that stopped waiting, and the entry once none is
    /// left: only [`Waiters::wake`] removed entries, and a run that is final already is never
    /// woken again, so each poll of one (or of an unknown id) used to leave an entry for good.
    pub fn forget(&self, rid: Uuid) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(list) = map.get_mut(&rid) {
                list.retain(|s| !s.is_closed());
                if list.is_empty() {
                    map.remove(&rid);
                }
            }
        }
    }

    pub fn wake(&self, rid: Uuid) {
        let waiting = self.map.lock().ok().and_then(|mut m| m.remove(&rid));
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_that_stopped_waiting_leaves_nothing_behind() {
        let waiters = Waiters::default();
        let rid = Uuid::now_v7();
        let gone = waiters.register(rid);
        let kept = waiters.register(rid);
        drop(gone);
        waiters.forget(rid);
        assert_eq!(waiters.map.lock().expect("map")[&rid].len(), 1);
        drop(kept);
        waiters.forget(rid);
        assert!(waiters.map.lock().expect("map").is_empty());
    }
}
