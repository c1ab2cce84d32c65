//! Long-poll support: callers waiting for a run to reach a final state.
//!
//! A waiter is registered only by a long-poll of a run that exists and is not final, and it is
//! removed when its [`Waiter`] is dropped (woken, timed out, or the client gone), so the map holds
//! only the polls in progress.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use uuid::Uuid;

type Map = HashMap<Uuid, Vec<(u64, oneshot::Sender<()>)>>;

#[derive(Default)]
pub struct Waiters {
    map: Arc<Mutex<Map>>,
    next: std::sync::atomic::AtomicU64,
}

/// Resolves when [`Waiters::wake`] is called for its run; deregisters itself when dropped.
pub struct Waiter {
    rid: Uuid,
    id: u64,
    rx: oneshot::Receiver<()>,
    map: Arc<Mutex<Map>>,
}

impl Waiters {
    /// Register before the last read of the run, so a finish between the read and the wait is
    /// not missed.
    pub fn register(&self, rid: Uuid) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut map) = self.map.lock() {
            map.entry(rid).or_default().push((id, tx));
        }
        Waiter {
            rid,
            id,
            rx,
            map: self.map.clone(),
        }
    }

    pub fn wake(&self, rid: Uuid) {
        let waiting = self.map.lock().ok().and_then(|mut m| m.remove(&rid));
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Runs with a long-poll waiting (a metric).
    pub(crate) fn runs_waited_on(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }
}

impl Future for Waiter {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.rx).poll(cx).map(|_| ())
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(list) = map.get_mut(&self.rid) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    map.remove(&self.rid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_is_gone_once_dropped_or_woken() {
        let waiters = Waiters::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = waiters.register(a);
        let second = waiters.register(a);
        let other = waiters.register(b);
        assert_eq!(waiters.runs_waited_on(), 2);
        drop(first);
        assert_eq!(
            waiters.runs_waited_on(),
            2,
            "a's second waiter is still there"
        );
        drop(second);
        assert_eq!(waiters.runs_waited_on(), 1);
        waiters.wake(b);
        other.await;
        assert_eq!(waiters.runs_waited_on(), 0);
    }
}
