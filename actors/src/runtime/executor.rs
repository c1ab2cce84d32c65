//! One executor actor per request. It runs the flow as a future spawned in its own context, so
//! stopping the actor drops the future — and with it any tool or model HTTP call in flight: the
//! connection is closed, not awaited.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use events::connection::Environment;
use events::event::Snapshot;
use events::secret::Cipher;
use events::AgentState;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use super::run_events::Recorder;
use events::run::Turn;
use events::store::StoreFuture;

use crate::flow::{self, FlowError, HttpEffects, Outcome};

/// Everything one run needs, fixed when it starts.
pub struct Job {
    pub rid: Uuid,
    pub snapshot: Arc<Snapshot>,
    pub input: Value,
    /// The caller's member name (`X-Hangar-Member`).
    pub member: Option<String>,
    /// The agent as it is now: members' own credentials and live credentials come from it.
    pub current: Arc<AgentState>,
    /// Live for a deployed version's run, draft for a preview.
    pub environment: Environment,
    pub cipher: Arc<Cipher>,
    /// The agent (endpoint) limit: the outermost timeout.
    pub limit: Option<Duration>,
    /// Calls a collaborator agent (`agent` nodes).
    pub collaborator: flow::AgentCall,
    /// Where the run's events go; `None` for a preview, which records none.
    pub recorder: Option<Recorder>,
    /// The run's thread and the read of its last turns (`thread.turns`, `history`).
    pub thread: Option<(String, StoreFuture<Vec<Turn>>)>,
    /// For a paused run going on: where it stopped and the answer it got.
    pub resume: Option<flow::Resume>,
}

pub struct Executor {
    /// The agent the run belongs to, for its tracing span.
    agent: Uuid,
    job: Option<Job>,
    /// Told when the flow ends: the agent's runtime, which knows executors only by address.
    parent: Recipient<Finished>,
    running: Option<SpawnHandle>,
}

impl Executor {
    pub fn new(agent: Uuid, job: Job, parent: Recipient<Finished>) -> Self {
        Executor {
            agent,
            job: Some(job),
            parent,
            running: None,
        }
    }
}

impl Actor for Executor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(job) = self.job.take() else {
            ctx.stop();
            return;
        };
        let rid = job.rid;
        let effects = HttpEffects {
            agent_id: self.agent,
            snapshot: job.snapshot.clone(),
            current: job.current,
            environment: job.environment,
            member: job.member,
            cipher: job.cipher,
            agent: job.collaborator,
            progress: job.recorder.map(|recorder| {
                Rc::new(move |progress| recorder.progress(progress)) as Rc<dyn Fn(flow::Progress)>
            }),
        };
        let snapshot = job.snapshot;
        let (input, limit, thread, resume) = (job.input, job.limit, job.thread, job.resume);
        let span = tracing::info_span!("run", request_id = %rid, agent = %self.agent);
        let work = async move {
            let thread = match thread {
                Some((id, turns)) => Some(flow::Thread {
                    id,
                    turns: turns.await.map_err(|e| FlowError::Failed {
                        node: String::new(),
                        code: "thread_unreadable".into(),
                        message: format!("the thread's turns could not be read: {e}"),
                    })?,
                }),
                None => None,
            };
            let start = flow::Start {
                input,
                thread,
                resume,
            };
            flow::run_from(&snapshot, start, &effects, limit).await
        }
        .instrument(span);
        let handle = ctx.spawn(work.into_actor(self).map(
            move |result: Result<Outcome, FlowError>, act, ctx| {
                act.parent.do_send(Finished { rid, result });
                ctx.stop();
            },
        ));
        self.running = Some(handle);
    }
}

/// An executor's flow ended: sent to its parent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finished {
    pub rid: Uuid,
    pub result: Result<Outcome, FlowError>,
}

/// Stop now: the flow future is dropped with whatever call it was waiting on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Abort;

impl Handler<Abort> for Executor {
    type Result = ();

    fn handle(&mut self, _msg: Abort, ctx: &mut Self::Context) {
        if let Some(h) = self.running.take() {
            ctx.cancel_future(h);
        }
        ctx.stop();
    }
}
