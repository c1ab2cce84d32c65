//! The thread lanes of an agent's runtime: what a run waiting for its thread holds, how it
//! starts once the thread passes to it, the message that passes a thread on, and the runs a
//! restart finds held back for their thread (`runtime::threads::Lanes` keeps the order).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use events::event::Snapshot;
use serde_json::Value;
use uuid::Uuid;

use super::{AgentRuntime, Answer};
use crate::flow::Resume;
use crate::runtime::{RunError, RunStatus, StoredRun};

/// What a run waiting for its thread needs to start.
pub(super) enum Held {
    /// A sync call: its caller waits; the agent limit counts from the call.
    Sync {
        run: StoredRun,
        snapshot: Arc<Snapshot>,
        limit: Duration,
        reply: Answer,
        depth: u8,
    },
    /// An async run taken off the queue (stored `running` without `started_at`).
    Claimed { run: StoredRun },
    /// A paused run a person answered.
    Resumed { run: StoredRun, resume: Resume },
}

impl Held {
    pub(super) fn into_run(self) -> (StoredRun, Option<Answer>) {
        match self {
            Held::Sync { run, reply, .. } => (run, Some(reply)),
            Held::Claimed { run } | Held::Resumed { run, .. } => (run, None),
        }
    }
}

impl AgentRuntime {
    /// Starts a run that held its thread's lane waiting, now that the thread passed to it.
    pub(super) fn start_held(&mut self, held: Held, since: Instant, ctx: &mut Context<Self>) {
        self.reserved = self.reserved.saturating_sub(1);
        match held {
            Held::Sync {
                run,
                snapshot,
                limit,
                reply,
                depth,
            } => {
                // The agent limit counts from the call, waiting included.
                let left = limit.saturating_sub(since.elapsed());
                self.start(
                    run,
                    snapshot,
                    Some(left),
                    Some(reply),
                    true,
                    depth,
                    None,
                    ctx,
                );
            }
            Held::Claimed { mut run } => {
                // Durably started before it runs: a crash from here on marks it interrupted
                // rather than running it again.
                run.run.started_at = Some(Utc::now());
                let put = self.rt.runs().put(run.clone());
                ctx.spawn(put.into_actor(self).map(move |put, act, ctx| match put {
                    Ok(()) => act.launch_queued(run, None, ctx),
                    Err(e) => {
                        let error = RunError::new(
                            "internal",
                            format!("cannot start the run: {e}"),
                            Value::Null,
                        );
                        let ending = (RunStatus::Failed, None, Some(error));
                        act.finalize(run, true, vec![], Instant::now(), ending, true);
                    }
                }));
            }
            Held::Resumed { run, resume } => self.launch_queued(run, Some(resume), ctx),
        }
    }
    /// `rid` let go of `thread`: the next run waiting for it starts.
    pub(super) fn thread_free(&mut self, thread: &str, rid: Uuid, ctx: &mut Context<Self>) {
        if let Some(next) = self.lanes.leave(thread, rid) {
            self.start_held(next.what, next.since, ctx);
        }
    }
}

/// A thread's run is stored final (or paused) with its turn: the thread passes on.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ThreadFree {
    pub thread: String,
    pub rid: Uuid,
}

impl Handler<ThreadFree> for AgentRuntime {
    type Result = ();

    fn handle(&mut self, msg: ThreadFree, ctx: &mut Self::Context) {
        self.thread_free(&msg.thread, msg.rid, ctx);
    }
}

/// After a restart: async runs a previous process claimed but held back because their thread
/// was busy (stored `running` with no `started_at`). They never started, so they run now, oldest
/// first, before anything still queued.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt {
    pub runs: Vec<StoredRun>,
}

impl Handler<Adopt> for AgentRuntime {
    type Result = ();

    fn handle(&mut self, msg: Adopt, ctx: &mut Self::Context) {
        for run in msg.runs {
            self.start_queued(run, ctx);
        }
    }
}
