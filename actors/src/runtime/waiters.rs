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

    pub fn wake(&self, rid: Uuid) {
        let waiting = self.map.lock().ok().and_then(|mut m| m.remove(&rid));
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(());
        }
    }
}
