//! The runtime of one agent: it owns the agent's runs in flight, one executor actor each, enforces
//! `max_concurrency`, feeds queued async requests to executors as slots free up, and cancels
//! everything at once on undeploy.

use std::collections::{BTreeMap, HashMap};
use std::future::ready;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use events::connection::Auth;
use events::event::Snapshot;
use events::secret::Sealed;
use events::{AgentState, Rejection};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::executor::{Abort, Executor, Job};
use super::run::{Mode, Run, RunError, RunStatus, StoredRun};
use super::run_store::Accepted;
use super::Runtime;
use crate::flow::{FlowError, Limit};
use crate::Error;

/// What a caller sends to an endpoint.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub input: Value,
    /// `X-Hangar-Member`: whose credentials `member` connections use.
    pub member: Option<String>,
    pub idempotency_key: Option<String>,
    /// How many agents deep this call is (collaborator calls add one).
    pub depth: u8,
}

struct InFlight {
    executor: Addr<Executor>,
    run: StoredRun,
    /// The sync caller waiting for this run, if any.
    reply: Option<oneshot::Sender<StoredRun>>,
    /// Preview runs of a draft are not stored.
    persist: bool,
    started: Instant,
}

pub struct AgentRuntime {
    agent: Uuid,
    rt: Runtime,
    /// The newest agent state seen; every request brings the one it was accepted against.
    state: Arc<AgentState>,
    snapshots: HashMap<u32, Arc<Snapshot>>,
    running: HashMap<Uuid, InFlight>,
    /// Runs taken off the queue and marked running, waiting for that mark to be durable before
    /// they start: a run must never execute while the disk still says `queued`, or a crash would
    /// run it a second time.
    starting: HashMap<Uuid, StoredRun>,
    queued: usize,
    /// Set by undeploy: nothing new starts, and the actor stops.
    closed: bool,
}

impl AgentRuntime {
    pub fn new(agent: Uuid, rt: Runtime) -> Self {
        AgentRuntime {
            agent,
            rt,
            state: Arc::new(AgentState::new(agent)),
            snapshots: HashMap::new(),
            running: HashMap::new(),
            starting: HashMap::new(),
            queued: 0,
            closed: false,
        }
    }

    fn refresh(&mut self, state: Arc<AgentState>) {
        if state.seq >= self.state.seq {
            self.state = state;
        }
    }

    /// The snapshot of `version`, shared by every run of that version.
    fn snapshot(&mut self, version: u32) -> Option<Arc<Snapshot>> {
        if let Some(s) = self.snapshots.get(&version) {
            return Some(s.clone());
        }
        let s = Arc::new(self.state.version(version)?.snapshot.clone());
        self.snapshots.insert(version, s.clone());
        Some(s)
    }

    fn live(&mut self) -> Option<(u32, Arc<Snapshot>)> {
        let v = self.state.live_version?;
        Some((v, self.snapshot(v)?))
    }

    fn max_concurrency(&mut self) -> usize {
        self.live()
            .map_or(0, |(_, s)| s.endpoint.max_concurrency as usize)
    }

    fn members(&self) -> BTreeMap<String, BTreeMap<String, Auth<Sealed>>> {
        self.state
            .connections
            .iter()
            .filter(|(_, c)| !c.members.is_empty())
            .map(|(id, c)| (id.clone(), c.members.clone()))
            .collect()
    }

    fn new_run(&self, version: u32, mode: Mode, request: &Request, push: bool) -> StoredRun {
        let now = Utc::now();
        StoredRun {
            run: Run {
                request_id: Uuid::now_v7(),
                agent_id: self.agent,
                version,
                status: match mode {
                    Mode::Sync => RunStatus::Running,
                    Mode::Async => RunStatus::Queued,
                },
                output: None,
                error: None,
                created_at: now,
                started_at: (mode == Mode::Sync).then_some(now),
                finished_at: None,
                push: None,
            },
            mode,
            input: request.input.clone(),
            member: request.member.clone(),
            idempotency_key: request.idempotency_key.clone(),
            push_enabled: push,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        run: StoredRun,
        snapshot: Arc<Snapshot>,
        limit: Option<Duration>,
        reply: Option<oneshot::Sender<StoredRun>>,
        persist: bool,
        depth: u8,
        ctx: &mut Context<Self>,
    ) {
        let rid = run.run.request_id;
        let job = Job {
            rid,
            snapshot,
            input: run.input.clone(),
            member: run.member.clone(),
            members: self.members(),
            cipher: self.rt.cipher().clone(),
            limit,
            collaborator: self.rt.collaborator_call(depth),
        };
        let executor = Executor::new(self.agent, job, ctx.address()).start();
        self.rt.metrics().run_entered(RunStatus::Running);
        self.rt.in_flight_changed(1);
        self.running.insert(
            rid,
            InFlight {
                executor,
                run,
                reply,
                persist,
                started: Instant::now(),
            },
        );
    }

    /// Records a final state, answers the sync caller at once, and — once the state is durable —
    /// wakes long-pollers and the push worker.
    fn finalize(
        &mut self,
        mut run: StoredRun,
        persist: bool,
        reply: Option<oneshot::Sender<StoredRun>>,
        started: Instant,
        (status, output, error): Ending,
    ) -> StoredRun {
        run.finish(status, output, error);
        // A line per successful run is an access log: at `debug`, since formatting and writing it
        // cost a tenth of a sync call's CPU (the metrics count every run anyway). Runs that did
        // not succeed stay visible at `info`.
        macro_rules! run_ended {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    request_id = %run.run.request_id,
                    agent = %self.agent,
                    version = run.run.version,
                    status = status.as_str(),
                    ms = started.elapsed().as_millis() as u64,
                    "run ended"
                )
            };
        }
        if status == RunStatus::Succeeded {
            run_ended!(tracing::Level::DEBUG);
        } else {
            run_ended!(tracing::Level::INFO);
        }
        self.rt
            .metrics()
            .run_finished(status, started.elapsed().as_secs_f64());
        let push_due = if persist { run.schedule_push() } else { None };
        if persist {
            if let Err(e) = self.rt.runs().finish(&run, push_due) {
                tracing::error!(request_id = %run.run.request_id, error = %e, "cannot store a run's final state");
            }
        }
        if let Some(tx) = reply {
            let _ = tx.send(run.clone());
        }
        if persist && run.mode == Mode::Sync {
            // The sync caller has its answer; a sync run's record need not cost a flush.
            self.rt.waiters().wake(run.run.request_id);
        } else if persist {
            let rt = self.rt.clone();
            let rid = run.run.request_id;
            let push = push_due.is_some();
            actix::spawn(async move {
                if let Err(e) = rt.runs().flushed().await {
                    tracing::error!(request_id = %rid, error = %e, "cannot flush a run's final state");
                }
                rt.waiters().wake(rid);
                if push {
                    rt.wake_pusher();
                }
            });
        }
        run
    }

    /// Ends a run in flight; `None` if it was not (any more).
    fn end(&mut self, rid: Uuid, ending: Ending) -> Option<StoredRun> {
        let entry = self.running.remove(&rid)?;
        self.rt.in_flight_changed(-1);
        Some(self.finalize(entry.run, entry.persist, entry.reply, entry.started, ending))
    }

    fn cancel_queued(&mut self, rid: Uuid, reason: &str) -> Result<Option<StoredRun>, Error> {
        if !self.rt.runs().unqueue(self.agent, rid)? {
            return Ok(None);
        }
        self.queued = self.queued.saturating_sub(1);
        let Some(run) = self.rt.runs().get(rid)? else {
            return Ok(None);
        };
        Ok(Some(self.finalize(
            run,
            true,
            None,
            Instant::now(),
            cancelled(reason),
        )))
    }

    /// Runs in flight or about to be, for `max_concurrency`.
    fn busy(&self) -> usize {
        self.running.len() + self.starting.len()
    }

    /// Takes queued runs while there are free slots, and starts them once their `running` mark
    /// is durable.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        // While the server drains, queued runs stay queued (durable) for the next start.
        if self.closed || self.rt.is_draining() {
            return;
        }
        let mut batch = Vec::new();
        while self.busy() < self.max_concurrency() {
            let run = match self.rt.runs().dequeue(self.agent) {
                Ok(Some(run)) => run,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(agent = %self.agent, error = %e, "cannot read the queue");
                    break;
                }
            };
            self.queued = self.queued.saturating_sub(1);
            batch.push(run.run.request_id);
            self.starting.insert(run.run.request_id, run);
        }
        if batch.is_empty() {
            return;
        }
        let flushed = self.rt.runs().flushed();
        ctx.spawn(flushed.into_actor(self).map(move |result, act, ctx| {
            if let Err(e) = result {
                tracing::error!(agent = %act.agent, error = %e, "cannot flush runs before starting them");
            }
            for rid in batch {
                // Gone if cancelled or undeployed meanwhile.
                if let Some(run) = act.starting.remove(&rid) {
                    act.start_queued(run, ctx);
                }
            }
        }));
    }

    fn start_queued(&mut self, run: StoredRun, ctx: &mut Context<Self>) {
        match self.snapshot(run.run.version) {
            Some(snapshot) => {
                let limit = snapshot
                    .endpoint
                    .asynchronous
                    .timeout_s
                    .map(Duration::from_secs);
                self.start(run, snapshot, limit, None, true, 0, ctx);
            }
            None => {
                let error = RunError::new(
                    "version_missing",
                    "the version that accepted this run no longer exists",
                    Value::Null,
                );
                let ending = (RunStatus::Failed, None, Some(error));
                self.finalize(run, true, None, Instant::now(), ending);
            }
        }
    }
}

impl Actor for AgentRuntime {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.queued = self.rt.runs().queued(self.agent);
    }
}

/// How a run ended: its final status, output and error.
type Ending = (RunStatus, Option<Value>, Option<RunError>);

fn cancelled(reason: &str) -> Ending {
    (
        RunStatus::Cancelled,
        None,
        Some(RunError::cancelled(reason)),
    )
}

/// The outcome of a flow as a run's final status.
fn outcome(result: Result<Value, FlowError>) -> Ending {
    match result {
        Ok(output) => (RunStatus::Succeeded, Some(output), None),
        Err(FlowError::Timeout { limit, node }) => {
            let which = match limit {
                Limit::Agent => "agent",
                Limit::Node => "node",
                Limit::Model => "model",
            };
            (
                RunStatus::TimedOut,
                None,
                Some(RunError::new(
                    "timeout",
                    format!("the {which} time limit fired while node '{node}' ran"),
                    json!({"limit": which, "node": node}),
                )),
            )
        }
        Err(FlowError::Failed {
            node,
            code,
            message,
        }) => (
            RunStatus::Failed,
            None,
            Some(RunError::new(code, message, json!({ "node": node }))),
        ),
    }
}

type Reply<T> = ResponseFuture<Result<T, Error>>;

fn fail<T: 'static>(e: impl Into<Error>) -> Reply<T> {
    let e = e.into();
    Box::pin(ready(Err(e)))
}

/// Run now and wait (sync endpoint), or run the draft (`preview`).
#[derive(Message)]
#[rtype(result = "Result<StoredRun, Error>")]
pub struct Invoke {
    pub state: Arc<AgentState>,
    pub request: Request,
    pub draft: bool,
}

impl Handler<Invoke> for AgentRuntime {
    type Result = Reply<StoredRun>;

    fn handle(&mut self, msg: Invoke, ctx: &mut Self::Context) -> Self::Result {
        self.refresh(msg.state);
        if self.closed {
            return fail(Rejection::NotDeployed);
        }
        let (version, snapshot) = if msg.draft {
            let s = &self.state;
            let snapshot = Snapshot {
                spec: s.draft.clone(),
                endpoint: s.endpoint.clone(),
                connections: s.draft_connections(),
            };
            (0, Arc::new(snapshot))
        } else {
            match self.live() {
                Some(live) => live,
                None => return fail(Rejection::NotDeployed),
            }
        };
        if self.busy() >= snapshot.endpoint.max_concurrency as usize {
            return fail(Error::Overloaded);
        }
        let run = self.new_run(version, Mode::Sync, &msg.request, false);
        let persist = !msg.draft;
        let limit = Duration::from_secs(snapshot.endpoint.sync_timeout_s);
        if persist {
            match self.rt.runs().accept(&run, false) {
                Err(e) => return fail(e),
                Ok(Accepted::Existing(existing)) => {
                    let rt = self.rt.clone();
                    return Box::pin(async move {
                        rt.wait(existing.run.agent_id, existing.run.request_id, limit)
                            .await
                    });
                }
                Ok(Accepted::New) => {}
            }
        }
        let (tx, rx) = oneshot::channel();
        self.start(
            run,
            snapshot,
            Some(limit),
            Some(tx),
            persist,
            msg.request.depth,
            ctx,
        );
        Box::pin(async move {
            rx.await
                .map_err(|_| Error::Unavailable("the run's executor vanished".into()))
        })
    }
}

/// Accept for background execution (async endpoints); answers once the request is durable.
#[derive(Message)]
#[rtype(result = "Result<StoredRun, Error>")]
pub struct Submit {
    pub state: Arc<AgentState>,
    pub request: Request,
}

impl Handler<Submit> for AgentRuntime {
    type Result = Reply<StoredRun>;

    fn handle(&mut self, msg: Submit, ctx: &mut Self::Context) -> Self::Result {
        self.refresh(msg.state);
        if self.closed {
            return fail(Rejection::NotDeployed);
        }
        let Some((version, snapshot)) = self.live() else {
            return fail(Rejection::NotDeployed);
        };
        if self.queued >= self.rt.config().max_queue {
            return fail(Error::Overloaded);
        }
        let run = self.new_run(
            version,
            Mode::Async,
            &msg.request,
            snapshot.endpoint.asynchronous.push_enabled,
        );
        let run = match self.rt.runs().accept(&run, true) {
            Err(e) => return fail(e),
            Ok(Accepted::Existing(existing)) => *existing,
            Ok(Accepted::New) => {
                self.queued += 1;
                self.rt.metrics().run_entered(RunStatus::Queued);
                run
            }
        };
        let flushed = self.rt.runs().flushed();
        let me = ctx.address();
        Box::pin(async move {
            flushed.await?;
            // Start it only once it is durable: a run never has effects before its 202 could.
            me.do_send(Pump);
            Ok(run)
        })
    }
}

/// Cancel one request (`DELETE /requests/{rid}`).
#[derive(Message)]
#[rtype(result = "Result<StoredRun, Error>")]
pub struct Cancel {
    pub rid: Uuid,
}

impl Handler<Cancel> for AgentRuntime {
    type Result = Reply<StoredRun>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        if let Some(entry) = self.running.get(&msg.rid) {
            entry.executor.do_send(Abort);
            let run = self.end(msg.rid, cancelled("requested"));
            ctx.notify(Pump);
            return flushed_reply(&self.rt, run);
        }
        if let Some(run) = self.starting.remove(&msg.rid) {
            let run = self.finalize(run, true, None, Instant::now(), cancelled("requested"));
            ctx.notify(Pump);
            return flushed_reply(&self.rt, Some(run));
        }
        match self.cancel_queued(msg.rid, "requested") {
            Err(e) => return fail(e),
            Ok(Some(run)) => return flushed_reply(&self.rt, Some(run)),
            Ok(None) => {}
        }
        match self.rt.runs().get(msg.rid) {
            Ok(Some(r)) if r.run.agent_id == self.agent && r.run.status.is_final() => {
                fail(Error::AlreadyFinished(Box::new(r.run)))
            }
            Ok(_) => fail(Rejection::not_found(format!("request {}", msg.rid))),
            Err(e) => fail(e),
        }
    }
}

fn flushed_reply(rt: &Runtime, run: Option<StoredRun>) -> Reply<StoredRun> {
    let flushed = rt.runs().flushed();
    Box::pin(async move {
        flushed.await?;
        run.ok_or_else(|| Error::Unavailable("the run vanished".into()))
    })
}

/// Undeploy: every run in flight and every queued run ends `cancelled` now; the actor stops.
#[derive(Message)]
#[rtype(result = "Result<usize, Error>")]
pub struct Shutdown {
    pub reason: &'static str,
}

impl Handler<Shutdown> for AgentRuntime {
    type Result = Reply<usize>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.closed = true;
        let mut count = 0;
        let in_flight: Vec<Uuid> = self.running.keys().copied().collect();
        for entry in self.running.values() {
            entry.executor.do_send(Abort);
        }
        for rid in in_flight {
            self.end(rid, cancelled(msg.reason));
            count += 1;
        }
        for (_, run) in std::mem::take(&mut self.starting) {
            self.finalize(run, true, None, Instant::now(), cancelled(msg.reason));
            count += 1;
        }
        loop {
            match self.rt.runs().dequeue(self.agent) {
                Ok(Some(run)) => {
                    self.finalize(run, true, None, Instant::now(), cancelled(msg.reason));
                    count += 1;
                }
                Ok(None) => break,
                Err(e) => return fail(e),
            }
        }
        self.queued = 0;
        ctx.stop();
        let flushed = self.rt.runs().flushed();
        Box::pin(async move {
            flushed.await?;
            Ok(count)
        })
    }
}

/// An executor's flow ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finished {
    pub rid: Uuid,
    pub result: Result<Value, FlowError>,
}

impl Handler<Finished> for AgentRuntime {
    type Result = ();

    fn handle(&mut self, msg: Finished, ctx: &mut Self::Context) {
        // A run cancelled meanwhile is no longer in `running`: its result is dropped.
        self.end(msg.rid, outcome(msg.result));
        ctx.notify(Pump);
    }
}

/// A newer agent state (e.g. after a redeploy); also starts queued runs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh(pub Arc<AgentState>);

impl Handler<Refresh> for AgentRuntime {
    type Result = ();

    fn handle(&mut self, msg: Refresh, ctx: &mut Self::Context) {
        self.refresh(msg.0);
        self.pump(ctx);
    }
}

/// Start queued runs if there are free slots.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pump;

impl Handler<Pump> for AgentRuntime {
    type Result = ();

    fn handle(&mut self, _msg: Pump, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}
