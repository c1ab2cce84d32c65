//! `max_concurrency` and threads' turns for the whole cluster, when the store keeps them for
//! every process (`RunStore::slots_are_shared`: PostgreSQL). On sled none of this runs: one
//! process is the whole of it, and the runtime keeps both in memory.
//!
//! - Slots: a sync call takes a slot in the store before it runs; queued runs are claimed
//!   within the free slots, each holding one; a run's slot is let go by the write that stores
//!   it final or paused. The runtime's own count (`busy`) still bounds what this process
//!   starts, so a store round trip is never spent on a call this node would refuse anyway.
//! - Threads: the runtime's lanes order a thread's runs on this node; across nodes, a run of a
//!   thread takes the thread in the store before it reads the thread's turns and runs, waiting
//!   while another node's run holds it, and lets go once its turn is stored (or it paused).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use events::event::Snapshot;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{reply_from, AgentRuntime, Reply, Request};
use crate::runtime::{Runtime, StoredRun};
use crate::Error;
use events::run::Turn;
use events::store::{RunStores, StoreFuture};

/// How often a runtime with queued runs but no free slot in the cluster tries its claim again:
/// another node's run that ends frees a slot without telling this one.
pub(super) const SLOT_POLL: Duration = Duration::from_millis(250);

impl AgentRuntime {
    /// Takes a slot in the store for sync call `run`, then runs it; 429 (or the request its
    /// `Idempotency-Key` names) when every slot in the cluster is taken.
    pub(super) fn invoke_in_slot(
        &mut self,
        run: StoredRun,
        request: Request,
        snapshot: Arc<Snapshot>,
        ctx: &mut Context<Self>,
    ) -> Reply<StoredRun> {
        let rid = run.run.request_id;
        let limit = snapshot.endpoint.max_concurrency as usize;
        // Counted here while the take is on its way, so this node never promises the slot twice.
        self.reserved += 1;
        let taken = self.rt.runs().take_slot(self.agent, rid, limit);
        // Lets the slot go unless the run gets it, also if this actor stops (undeploy) before
        // the take lands and this callback never runs.
        let guard = SlotGuard {
            runs: self.rt.runs().clone(),
            agent: self.agent,
            rid,
            armed: true,
        };
        let (tx, rx) = oneshot::channel();
        ctx.spawn(taken.into_actor(self).map(move |taken, act, ctx| {
            act.reserved = act.reserved.saturating_sub(1);
            let reply = match taken {
                Ok(true) if act.closed => {
                    let _ = tx.send(Err(events::Rejection::NotDeployed.into()));
                    return;
                }
                Ok(true) => {
                    guard.disarm();
                    let reply = act.invoke_run(run, request, snapshot, true, ctx);
                    let (rt, agent) = (act.rt.clone(), act.agent);
                    Box::pin(async move {
                        let result = reply.await;
                        // A run that never started here (its thread was busy, its key named
                        // another request, the store failed) leaves no final write to free it.
                        if !matches!(&result, Ok(r) if r.run.request_id == rid) {
                            release_later(rt, agent, rid);
                        }
                        result
                    }) as Reply<StoredRun>
                }
                Ok(false) => act.overloaded(&request),
                Err(e) => Box::pin(std::future::ready(Err(Error::from(e)))),
            };
            actix::spawn(async move {
                let _ = tx.send(reply.await);
            });
        }));
        reply_from(rx)
    }

    /// After a claim within the cluster's slots that took fewer runs than this node had room
    /// for: if runs still wait on the queue, claim again shortly (a slot may free on another
    /// node, which does not tell this one).
    pub(super) fn poll_slots(&mut self, ctx: &mut Context<Self>) {
        if self.slot_poll || self.closed {
            return;
        }
        self.slot_poll = true;
        let queued = self.rt.runs().queued(self.agent);
        ctx.spawn(queued.into_actor(self).map(|queued, act, ctx| {
            match queued {
                // What the queue holds, whoever accepted it: this node's own count drifts when
                // another node claims runs it accepted.
                Ok(n) => act.queued = n,
                Err(e) => {
                    tracing::warn!(agent = %act.agent, error = %e, "cannot count the queue")
                }
            }
            if act.queued == 0 {
                act.slot_poll = false;
                return;
            }
            ctx.run_later(SLOT_POLL, |act, ctx| {
                act.slot_poll = false;
                act.pump(ctx);
            });
        }));
    }
}

/// How often a run waiting for its thread, held by a run on another node, tries again.
const THREAD_POLL: Duration = Duration::from_millis(100);

/// Waits until run `rid` holds `thread` in the store, then reads the thread's last turns (the
/// holder before it stored its turn before letting go). Dropped with the run if it is cancelled
/// meanwhile; a hold it took by then is let go when the run's end is stored.
pub(super) fn turns_in_turn(
    runs: Arc<dyn RunStores>,
    agent: Uuid,
    thread: String,
    rid: Uuid,
    last: usize,
) -> StoreFuture<Vec<Turn>> {
    Box::pin(async move {
        while !runs.take_thread(agent, thread.clone(), rid).await? {
            tokio::time::sleep(THREAD_POLL).await;
        }
        runs.turns(agent, thread, last).await
    })
}

/// Lets go of `thread` if run `rid` holds it in the store (cluster mode only). A failure is
/// logged: the hold then lasts until this node's id leaves the cluster.
pub(super) async fn release_thread(rt: &Runtime, agent: Uuid, thread: &str, rid: Uuid) {
    if !rt.runs().slots_are_shared() {
        return;
    }
    if let Err(e) = rt
        .runs()
        .release_thread(agent, thread.to_owned(), rid)
        .await
    {
        tracing::warn!(request_id = %rid, error = %e, "cannot let go of a thread");
    }
}

/// A slot being taken for a run, let go of when dropped still armed (the run will not use it).
struct SlotGuard {
    runs: Arc<dyn RunStores>,
    agent: Uuid,
    rid: Uuid,
    armed: bool,
}

impl SlotGuard {
    /// The run got its slot: it is let go with the run's final state.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.armed {
            // The store starts the release when called (the PostgreSQL store spawns each
            // operation on its own runtime): it need not be awaited from here, where there may
            // be no executor.
            drop(self.runs.release_slot(self.agent, self.rid));
        }
    }
}

/// Lets go of a slot a run took but will not use, beside whatever runs now.
fn release_later(rt: Runtime, agent: Uuid, rid: Uuid) {
    actix::spawn(async move {
        if let Err(e) = rt.runs().release_slot(agent, rid).await {
            tracing::warn!(request_id = %rid, error = %e, "cannot let go of a run slot");
        }
    });
}
