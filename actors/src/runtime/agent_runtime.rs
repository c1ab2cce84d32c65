//! The runtime of one agent: it owns the agent's runs in flight, one executor actor each, enforces
//! `max_concurrency`, feeds queued async requests to executors as slots free up, and cancels
//! everything at once on undeploy.
//!
//! Every store call is a future, and they run beside the actor: the slots a keyed accept or a
//! claim of queued runs will need are counted in `reserved` until it lands, and one claim at a
//! time is on its way (`claiming`), so a slot is never given twice. Only cancelling a queued run
//! holds the actor (`ctx.wait`): cancels are rare, and one that races a claim is answered when
//! the claim lands (`cancel_on_start`).
//!
//! `lanes`: runs waiting for their conversation thread; `paused`: runs waiting for a person.

use std::collections::HashMap;
use std::future::ready;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use events::connection::Environment;
use events::event::Snapshot;
use events::run::{json_len, request_fingerprint, thread_scope, Turn};
use events::store::Accepted;
use events::{AgentState, Rejection};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::executor::{Abort, Executor, Finished, Job};
use super::quota::QueuedInputs;
use super::run_events::{self, Recorder};
use super::threads::Lanes;

mod lanes;
mod paused;
mod slots;

use super::{Mode, Run, RunError, RunStatus, Runtime, StoredRun};
use crate::flow::{FlowError, Limit, Outcome, Resume};
use crate::Error;
pub use lanes::Adopt;
use lanes::{Held, ThreadFree};
use paused::cancel_paused;
pub use paused::ResumeRun;

/// Draft previews one agent may run at once. They do not take the live endpoint's
/// `max_concurrency` slots (a preview must never make a live call 429), so they have a bound of
/// their own.
pub const MAX_PREVIEWS: usize = 8;

/// Queued runs claimed at once while undeploying.
const DRAIN_BATCH: usize = 256;

/// What a caller sends to an endpoint.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub input: Value,
    /// Whose credentials `member` connections use.
    pub member: Option<String>,
    pub idempotency_key: Option<String>,
    /// Who calls: `"admin"` or the invocation key's id. Idempotency keys are scoped to it.
    pub caller: Option<String>,
    /// How many agents deep this call is (collaborator calls add one).
    pub depth: u8,
    /// For a collaborator's run: the run that called it. The caller holds the sender; when it
    /// is dropped (the calling run ended, was cancelled, timed out or undeployed, so its flow
    /// future was dropped) this run is cancelled at once.
    pub parent: Option<Parent>,
    /// The conversation thread (`thread_id`): its runs run one at a time, in accept order.
    pub thread: Option<String>,
    /// `"multitask": "reject"`: refuse (409 `thread_busy`) rather than wait for the thread.
    pub reject_if_busy: bool,
    /// An A2A client's push config for this task (async runs only), its secrets sealed.
    pub a2a_push: Option<events::run::A2aPush>,
    /// Told the request id once a sync run exists (started, or found by its `Idempotency-Key`),
    /// so that a streaming caller can follow its events while it runs.
    pub started: Option<StartSignal>,
}

/// The other end of [`StartSignal::new`]'s receiver: fired at most once.
#[derive(Debug, Clone, Default)]
pub struct StartSignal(Arc<std::sync::Mutex<Option<oneshot::Sender<Uuid>>>>);

impl StartSignal {
    pub fn new() -> (StartSignal, oneshot::Receiver<Uuid>) {
        let (tx, rx) = oneshot::channel();
        (StartSignal(Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    fn fire(&self, rid: Uuid) {
        if let Some(tx) = self.0.lock().ok().and_then(|mut tx| tx.take()) {
            let _ = tx.send(rid);
        }
    }
}

/// Whether a run's events (and its final record) must be durable: all but an unkeyed sync
/// call's, which nobody can find again after its answer, so they are kept as its record is
/// (`RunStore::record`, `RunEventStore::record_run_events`).
fn events_durable(run: &StoredRun) -> bool {
    run.mode != Mode::Sync || run.idempotency_key.is_some()
}

fn fire(signal: &Option<StartSignal>, rid: Uuid) {
    if let Some(signal) = signal {
        signal.fire(rid);
    }
}

/// The run that called a collaborator, and the wire that cancels the collaborator's run with it.
#[derive(Debug, Clone)]
pub struct Parent {
    pub agent: Uuid,
    pub request_id: Uuid,
    pub gone: tokio::sync::watch::Receiver<()>,
}

/// Where a run's final state is sent: the sync caller, or a canceller.
type Answer = oneshot::Sender<Result<StoredRun, Error>>;

struct InFlight {
    executor: Addr<Executor>,
    run: StoredRun,
    /// The sync caller waiting for this run, if any.
    reply: Option<Answer>,
    /// Preview runs of a draft are not stored, and take no live slot.
    persist: bool,
    started: Instant,
}

pub struct AgentRuntime {
    agent: Uuid,
    rt: Runtime,
    /// Deployed versions' snapshots, shared by every run of a version (they never change).
    snapshots: HashMap<u32, Arc<Snapshot>>,
    running: HashMap<Uuid, InFlight>,
    /// Draft previews among `running`.
    previews: usize,
    /// Slots promised to runs not in `running` yet: keyed sync calls whose acceptance is being
    /// made durable, and queued runs being claimed. They count against `max_concurrency`.
    reserved: usize,
    /// Runs on this agent's queue, as far as this actor knows: counted up when a submit is
    /// accepted, down when runs are claimed or cancelled. Bounds the queue (`max_queue`), and
    /// spares a store round trip when it is 0.
    queued: usize,
    /// Bytes of input those queued runs hold, for the agent's quota.
    queued_inputs: QueuedInputs,
    /// Set by undeploy: nothing new starts, and the actor stops.
    closed: bool,
    /// A claim of queued runs is on its way: one at a time, so a slot is never given twice.
    claiming: bool,
    /// Someone asked for a pump while a claim was on its way: pump again when it lands.
    pump_again: bool,
    /// Cancels that found their run neither queued nor running while a claim was on its way:
    /// the claim may hold it. Answered when the claim lands (the run cancelled before it starts).
    cancel_on_start: HashMap<Uuid, Vec<Answer>>,
    /// An undeploy that came while a claim was on its way: carried out when it lands.
    shutdown_after_claim: Option<(&'static str, oneshot::Sender<Result<usize, Error>>)>,
    /// The event recorders of the stored runs in flight; `run.finished` goes through them.
    recorders: HashMap<Uuid, Recorder>,
    /// The runs of each thread, one at a time. A run waiting here holds a slot (`reserved`).
    lanes: Lanes<Held>,
    /// This actor, for what ends outside it (a thread's turn stored) to come back to it.
    me: Option<Addr<AgentRuntime>>,
    /// A claim is due again soon: queued runs wait for a slot another node holds (`slots`).
    slot_poll: bool,
}

fn answer(replies: Vec<Answer>, result: &Result<StoredRun, Error>) {
    for tx in replies {
        let _ = tx.send(result.clone());
    }
}

/// Waits for run `rid`'s turn to be stored in `thread`, then lets the thread pass to its next
/// run (in the store, for a cluster, and in the agent's lanes).
async fn pass_thread_on(
    rt: &Runtime,
    me: Option<Addr<AgentRuntime>>,
    agent: Uuid,
    rid: Uuid,
    (thread, append): (String, events::store::StoreFuture<()>),
) {
    if let Err(e) = append.await {
        tracing::error!(request_id = %rid, error = %e, "cannot store a thread's turn");
    }
    slots::release_thread(rt, agent, &thread, rid).await;
    if let Some(me) = me {
        me.do_send(ThreadFree { thread, rid });
    }
}

/// The reply of a handler whose answer comes through `rx`.
fn reply_from(rx: oneshot::Receiver<Result<StoredRun, Error>>) -> Reply<StoredRun> {
    Box::pin(async move {
        rx.await
            .map_err(|_| Error::Unavailable("the agent's runtime stopped".into()))?
    })
}

impl AgentRuntime {
    pub fn new(agent: Uuid, rt: Runtime) -> Self {
        AgentRuntime {
            agent,
            queued_inputs: QueuedInputs::new(rt.config().agent_quota_bytes),
            rt,
            snapshots: HashMap::new(),
            running: HashMap::new(),
            previews: 0,
            reserved: 0,
            queued: 0,
            closed: false,
            claiming: false,
            pump_again: false,
            cancel_on_start: HashMap::new(),
            shutdown_after_claim: None,
            recorders: HashMap::new(),
            lanes: Lanes::default(),
            me: None,
            slot_poll: false,
        }
    }

    /// The agent as the registry last published it: the one copy of its state. Every request
    /// is sent only once it is published (see `Runtime::send_run`).
    fn state(&self) -> Arc<AgentState> {
        self.rt
            .registry()
            .cached(self.agent)
            .unwrap_or_else(|| Arc::new(AgentState::new(self.agent)))
    }

    /// The snapshot of `version`, shared by every run of that version.
    fn snapshot(&mut self, version: u32) -> Option<Arc<Snapshot>> {
        if let Some(s) = self.snapshots.get(&version) {
            return Some(s.clone());
        }
        let s = Arc::new(self.state().version(version)?.snapshot.clone());
        self.snapshots.insert(version, s.clone());
        Some(s)
    }

    fn live(&mut self) -> Option<(u32, Arc<Snapshot>)> {
        let v = self.state().live_version?;
        Some((v, self.snapshot(v)?))
    }

    fn max_concurrency(&mut self) -> usize {
        self.live()
            .map_or(0, |(_, s)| s.endpoint.max_concurrency as usize)
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
                pending: None,
                parent: request.parent.as_ref().map(|p| events::run::ParentRun {
                    agent_id: p.agent,
                    request_id: p.request_id,
                }),
                thread_id: request.thread.clone(),
            },
            mode,
            input: request.input.clone(),
            member: request.member.clone(),
            fingerprint: request
                .idempotency_key
                .as_ref()
                .map(|_| request_fingerprint(&request.input, request.thread.as_deref())),
            idempotency_key: request.idempotency_key.clone(),
            caller: request.caller.clone(),
            push_enabled: push,
            a2a_push: request.a2a_push.clone(),
            checkpoint: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        run: StoredRun,
        snapshot: Arc<Snapshot>,
        limit: Option<Duration>,
        reply: Option<Answer>,
        persist: bool,
        depth: u8,
        resume: Option<Resume>,
        ctx: &mut Context<Self>,
    ) {
        let rid = run.run.request_id;
        // Stored runs record their events; previews of a draft are not stored at all.
        let recorder = persist.then(|| {
            let recorder = Recorder::start(
                self.rt.runs().clone(),
                self.rt.run_events().clone(),
                rid,
                self.agent,
                run.member.clone(),
                run.thread_of(),
                events_durable(&run),
            );
            recorder.started(run.run.version, rid);
            self.recorders.insert(rid, recorder.clone());
            recorder
        });
        // Templates see the thread id the caller named; its turns are read from its scope.
        let thread = run.thread_key().map(|key| {
            let last = snapshot.spec.memory_turns();
            let turns = if persist && self.rt.runs().slots_are_shared() {
                // In a cluster, a run of another node may hold the thread: its turn comes first.
                slots::turns_in_turn(self.rt.runs().clone(), self.agent, key, rid, last)
            } else {
                self.rt.runs().turns(self.agent, key, last)
            };
            (run.run.thread_id.clone().unwrap_or_default(), turns)
        });
        let job = Job {
            thread,
            resume,
            rid,
            snapshot,
            input: run.input.clone(),
            member: run.member.clone(),
            current: self.state(),
            // A preview runs the draft, with the draft's credentials only.
            environment: if persist {
                Environment::Live
            } else {
                Environment::Draft
            },
            cipher: self.rt.cipher().clone(),
            limit,
            collaborator: self.rt.collaborator_call(self.agent, rid, depth),
            recorder,
        };
        let executor = Executor::new(self.agent, job, ctx.address().recipient()).start();
        if persist {
            self.rt.metrics().run_entered(RunStatus::Running);
        } else {
            self.previews += 1;
        }
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

    /// Records a final state and answers `replies`: at once for a preview and for an unkeyed
    /// sync run ending by itself (its caller is the only one who knows it, so its record need not
    /// be durable first), otherwise once the state is durable (a keyed run's repeat and a
    /// canceller must find what they were told). Long-pollers and the push worker are woken once
    /// the state is stored.
    fn finalize(
        &mut self,
        mut run: StoredRun,
        persist: bool,
        replies: Vec<Answer>,
        started: Instant,
        (status, output, error): Ending,
        durable_answer: bool,
    ) {
        // The turn keeps the whole input the run had, not what an ended run keeps of it.
        let turn = run.thread_key().filter(|_| persist).map(|thread| {
            let turn = Turn {
                request_id: run.run.request_id,
                input: run.input.clone(),
                output: output.clone(),
                at: Utc::now(),
            };
            (thread, turn)
        });
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
        if !persist {
            answer(replies, &Ok(run));
            return;
        }
        self.rt
            .metrics()
            .run_finished(status, started.elapsed().as_secs_f64());
        let rt = self.rt.clone();
        let rid = run.run.request_id;
        let recorder = self.recorders.remove(&rid);
        // After the final state's write: a reader told `run.finished` finds the run final.
        let record_finished = |run: &StoredRun| match &recorder {
            Some(recorder) => recorder.finished(&run.run),
            None => {
                actix::spawn(run_events::record_finished(rt.runs(), run));
            }
        };
        let (me, agent) = (self.me.clone(), self.agent);
        // A thread's turn is stored after the run's final state, and before the thread passes
        // to its next run, which reads it.
        let append_turn = |turn: Option<(String, Turn)>| {
            turn.map(|(thread, turn)| {
                let append = rt.runs().append_turn(agent, thread.clone(), turn);
                (thread, append)
            })
        };
        // In a cluster the run's slot is in the store: the caller is answered once it is free
        // there (its final state stored), so that its next call finds it free on any node.
        if !durable_answer && !events_durable(&run) && !rt.runs().slots_are_shared() {
            // Recorded before the answer, so an engine that writes at once (sled) has it
            // readable by the time the caller learns its id.
            let recorded = rt.runs().record(run.clone());
            record_finished(&run);
            let appended = append_turn(turn);
            let done = Ok(run);
            // Answered at once, or for a thread's run once its turn is durable: the turn is
            // what the conversation keeps of the answer (the record of the run itself need not
            // be durable: nobody can find an unkeyed sync call again).
            let replies = if appended.is_none() {
                answer(replies, &done);
                Vec::new()
            } else {
                replies
            };
            actix::spawn(async move {
                if let Err(e) = recorded.await {
                    tracing::error!(request_id = %rid, error = %e, "cannot record a sync run");
                }
                if let Some(appended) = appended {
                    pass_thread_on(&rt, me, agent, rid, appended).await;
                }
                rt.waiters().wake(rid);
                // The run happened even if its turn could not be stored, as when its final
                // state cannot be.
                answer(replies, &done);
            });
            return;
        }
        let push_due = run.schedule_push();
        let finished = rt.runs().finish(run.clone(), push_due);
        record_finished(&run);
        let appended = append_turn(turn);
        actix::spawn(async move {
            let stored = finished.await;
            if let Err(e) = &stored {
                tracing::error!(request_id = %rid, error = %e, "cannot store a run's final state");
            }
            if let Some(appended) = appended {
                pass_thread_on(&rt, me, agent, rid, appended).await;
            }
            rt.waiters().wake(rid);
            if push_due.is_some() {
                rt.wake_pusher();
            }
            let unavailable = matches!(stored, Err(events::store::Error::Unavailable(_)));
            answer(replies, &stored.map(|()| run.clone()).map_err(Error::from));
            if unavailable {
                store_final_state_later(rt, run, push_due).await;
            }
        });
    }

    /// Ends a run in flight, answering its caller and `also`; false if it was not in flight.
    fn end(&mut self, rid: Uuid, ending: Ending, also: Option<Answer>, durable: bool) -> bool {
        let Some(entry) = self.running.remove(&rid) else {
            return false;
        };
        if !entry.persist {
            self.previews = self.previews.saturating_sub(1);
        }
        self.rt.in_flight_changed(-1);
        let replies = entry.reply.into_iter().chain(also).collect();
        self.finalize(
            entry.run,
            entry.persist,
            replies,
            entry.started,
            ending,
            durable,
        );
        true
    }

    /// Live runs in flight or about to be, for `max_concurrency`.
    fn busy(&self) -> usize {
        self.running.len() - self.previews + self.reserved
    }

    /// Claims queued runs for the free slots and starts them. The claim is durable before any
    /// of them starts: a run must never execute while the store still says `queued`, or a crash
    /// would run it a second time.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        // While the server drains, queued runs stay queued (durable) for the next start.
        if self.closed || self.rt.is_draining() || self.queued == 0 {
            return;
        }
        if self.claiming {
            self.pump_again = true;
            return;
        }
        let free = self.max_concurrency().saturating_sub(self.busy());
        if free == 0 {
            return;
        }
        // Beside the actor, not holding it: a claim waits for a group commit, and holding the
        // actor meanwhile made every accept wait behind it (async accepts fell from 14k/s to
        // 2.4k/s in the benchmark). The slots are reserved until it lands.
        self.reserved += free;
        self.claiming = true;
        let shared = self.rt.runs().slots_are_shared();
        let claim = if shared {
            let limit = self.max_concurrency();
            self.rt.runs().claim_in_slots(self.agent, free, limit)
        } else {
            self.rt.runs().claim(self.agent, free)
        };
        ctx.spawn(claim.into_actor(self).map(move |claimed, act, ctx| {
            act.reserved -= free;
            act.claiming = false;
            match claimed {
                Ok(runs) => {
                    if shared && runs.len() < free.min(act.queued) {
                        // Fewer than this node knows are queued and has room for: the
                        // cluster's slots ran out first (or other nodes claimed them).
                        act.poll_slots(ctx);
                    }
                    act.queued = act.queued.saturating_sub(runs.len());
                    for run in runs {
                        act.queued_inputs.release(run.run.request_id);
                        match act.cancel_on_start.remove(&run.run.request_id) {
                            Some(cancels) => {
                                let ending = cancelled("requested");
                                act.finalize(run, true, cancels, Instant::now(), ending, true);
                            }
                            None => act.start_queued(run, ctx),
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(agent = %act.agent, error = %e, "cannot claim queued runs")
                }
            }
            // Cancels the claim did not answer: their runs were never claimed by it.
            for (rid, cancels) in std::mem::take(&mut act.cancel_on_start) {
                for tx in cancels {
                    act.answer_cancel_from_store(rid, tx);
                }
            }
            if let Some((reason, tx)) = act.shutdown_after_claim.take() {
                let done = act.shut_down(reason, ctx);
                actix::spawn(async move {
                    let _ = tx.send(done.await);
                });
                return;
            }
            if std::mem::take(&mut act.pump_again) {
                act.pump(ctx);
            }
        }));
    }

    /// Answers a cancel of a run that is neither in flight here nor queued: already final,
    /// unknown, or running elsewhere.
    fn answer_cancel_from_store(&self, rid: Uuid, tx: Answer) {
        let agent = self.agent;
        let stored = self.rt.runs().get(rid);
        let rt = self.rt.clone();
        actix::spawn(async move {
            let result = match stored.await {
                Err(e) => Err(e.into()),
                Ok(Some(r))
                    if r.run.agent_id == agent && r.run.status == RunStatus::InputRequired =>
                {
                    cancel_paused(&rt, agent, rid, "requested").await
                }
                Ok(Some(r)) if r.run.agent_id == agent && r.run.status.is_final() => {
                    Err(Error::AlreadyFinished(Box::new(r.run)))
                }
                Ok(Some(r)) if r.run.agent_id == agent => Err(Error::Unavailable(
                    "the run is starting; cancel it again in a moment".into(),
                )),
                Ok(_) => Err(Rejection::not_found(format!("request {rid}")).into()),
            };
            let _ = tx.send(result);
        });
    }

    fn start_queued(&mut self, mut run: StoredRun, ctx: &mut Context<Self>) {
        if self.closed {
            // Undeployed while the claim was on its way.
            let ending = cancelled("undeployed");
            self.finalize(run, true, vec![], Instant::now(), ending, true);
            return;
        }
        if let Some(thread) = run.thread_key() {
            self.lanes.dequeued(&thread);
            if !self.lanes.free(&thread) {
                // Its thread is busy: it waits, holding its slot, stored as not started yet.
                run.run.started_at = None;
                let rid = run.run.request_id;
                let put = self.rt.runs().put(run.clone());
                actix::spawn(async move {
                    if let Err(e) = put.await {
                        tracing::error!(request_id = %rid, error = %e, "cannot store a run waiting for its thread");
                    }
                });
                self.reserved += 1;
                self.lanes.wait(&thread, rid, Held::Claimed { run });
                return;
            }
            self.lanes.enter(&thread, run.run.request_id);
        }
        self.launch_queued(run, None, ctx);
    }

    /// Starts an async run (claimed, or resumed after a pause) under its version's async limit.
    fn launch_queued(&mut self, run: StoredRun, resume: Option<Resume>, ctx: &mut Context<Self>) {
        if self.closed {
            let ending = cancelled("undeployed");
            self.finalize(run, true, vec![], Instant::now(), ending, true);
            return;
        }
        match self.snapshot(run.run.version) {
            Some(snapshot) => {
                let limit = snapshot
                    .endpoint
                    .asynchronous
                    .timeout_s
                    .map(Duration::from_secs);
                self.start(run, snapshot, limit, None, true, 0, resume, ctx);
            }
            None => {
                let error = RunError::new(
                    "version_missing",
                    "the version that accepted this run no longer exists",
                    Value::Null,
                );
                let ending = (RunStatus::Failed, None, Some(error));
                self.finalize(run, true, vec![], Instant::now(), ending, true);
            }
        }
    }

    /// Cancels run `rid` (once it runs) when its parent's call is dropped. Harmless when the run
    /// has ended by then: the parent drops its call right after the answer.
    fn cancel_with(&mut self, parent: Parent, rid: Uuid, ctx: &mut Context<Self>) {
        let mut gone = parent.gone;
        let watch = async move { while gone.changed().await.is_ok() {} };
        ctx.spawn(watch.into_actor(self).map(move |(), act, ctx| {
            if let Some(entry) = act.running.get(&rid) {
                entry.executor.do_send(Abort);
                act.end(rid, cancelled("parent"), None, true);
                act.pump(ctx);
            }
        }));
    }

    /// A request over the limit: answered with the request its `Idempotency-Key` already names
    /// (a repeat is never refused for load), else 429.
    fn overloaded(&self, request: &Request) -> Reply<StoredRun> {
        let Some(key) = request.idempotency_key.clone() else {
            return fail(Error::Overloaded);
        };
        let found = self
            .rt
            .runs()
            .find_by_key(self.agent, request.caller.clone(), key, Utc::now());
        let fingerprint = request_fingerprint(&request.input, request.thread.as_deref());
        Box::pin(async move {
            match found.await? {
                Some(run) if run.fingerprint.as_ref().is_none_or(|f| *f == fingerprint) => Ok(run),
                Some(_) => Err(Error::IdempotencyKeyReused),
                None => Err(Error::Overloaded),
            }
        })
    }
}

impl Actor for AgentRuntime {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.me = Some(ctx.address());
        let queued = self.rt.runs().queued(self.agent);
        ctx.wait(queued.into_actor(self).map(|queued, act, ctx| {
            match queued {
                Ok(n) => act.queued = n,
                Err(e) => tracing::error!(agent = %act.agent, error = %e, "cannot count the queue"),
            }
            act.pump(ctx);
        }));
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
        Err(FlowError::Failed {
            node,
            code,
            message,
        }) if code == "tool_not_approved" => (
            RunStatus::Failed,
            None,
            Some(RunError::new(code, message, json!({ "node": node }))),
        ),
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
    pub request: Request,
    pub draft: bool,
}

impl Handler<Invoke> for AgentRuntime {
    type Result = Reply<StoredRun>;

    fn handle(&mut self, msg: Invoke, ctx: &mut Self::Context) -> Self::Result {
        if self.closed {
            return fail(Rejection::NotDeployed);
        }
        let (version, snapshot) = if msg.draft {
            if self.previews >= MAX_PREVIEWS {
                return fail(Error::Overloaded);
            }
            let s = self.state();
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
        let persist = !msg.draft;
        if persist && self.busy() >= snapshot.endpoint.max_concurrency as usize {
            return self.overloaded(&msg.request);
        }
        let run = self.new_run(version, Mode::Sync, &msg.request, false);
        if persist && self.rt.runs().slots_are_shared() {
            // The cluster's count: a slot in the store, taken before the run starts.
            return self.invoke_in_slot(run, msg.request, snapshot, ctx);
        }
        self.invoke_run(run, msg.request, snapshot, persist, ctx)
    }
}

impl AgentRuntime {
    /// Runs sync call `run` (a slot is free for it), or holds it for its thread.
    fn invoke_run(
        &mut self,
        run: StoredRun,
        request: Request,
        snapshot: Arc<Snapshot>,
        persist: bool,
        ctx: &mut Context<Self>,
    ) -> Reply<StoredRun> {
        let limit = Duration::from_secs(snapshot.endpoint.sync_timeout_s);
        let depth = request.depth;
        let (tx, rx) = oneshot::channel();
        if let Some(parent) = request.parent.clone() {
            self.cancel_with(parent, run.run.request_id, ctx);
        }
        let started = request.started.clone();
        // A thread's runs go one at a time, in the order they come here. A preview reads the
        // thread but is no turn of it.
        let thread = run.thread_key().filter(|_| persist);
        if let Some(thread) = &thread {
            if request.reject_if_busy && self.lanes.busy(thread) {
                let named = request.thread.clone().unwrap_or_default();
                return fail(Error::ThreadBusy(named));
            }
            if !self.lanes.free(thread) {
                if run.idempotency_key.is_some() {
                    // Keyed: found again by its key only once accepted; it waits after that.
                    return self.accept_keyed(run, snapshot, limit, tx, rx, depth, started, ctx);
                }
                // Held for its thread: a streaming caller follows it once it has ended.
                self.reserved += 1;
                let rid = run.run.request_id;
                let held = Held::Sync {
                    run,
                    snapshot,
                    limit,
                    reply: tx,
                    depth,
                };
                self.lanes.wait(thread, rid, held);
                return reply_from(rx);
            }
            self.lanes.enter(thread, run.run.request_id);
        }
        if !persist || run.idempotency_key.is_none() {
            // Nothing to find again: stored when it ends (see `finalize`).
            let rid = run.run.request_id;
            self.start(
                run,
                snapshot,
                Some(limit),
                Some(tx),
                persist,
                depth,
                None,
                ctx,
            );
            fire(&started, rid);
            return reply_from(rx);
        }
        self.accept_keyed(run, snapshot, limit, tx, rx, depth, started, ctx)
    }
}

impl AgentRuntime {
    /// A keyed sync call is durable before it runs, so that a crash can never run it twice:
    /// its repeat finds it (and recovery marks it interrupted), rather than a second run. A run
    /// of a busy thread waits for it once accepted.
    #[allow(clippy::too_many_arguments)]
    fn accept_keyed(
        &mut self,
        run: StoredRun,
        snapshot: Arc<Snapshot>,
        limit: Duration,
        tx: Answer,
        rx: oneshot::Receiver<Result<StoredRun, Error>>,
        depth: u8,
        started: Option<StartSignal>,
        ctx: &mut Context<Self>,
    ) -> Reply<StoredRun> {
        self.reserved += 1;
        let accepted = self.rt.runs().accept(run.clone(), false);
        ctx.spawn(accepted.into_actor(self).map(move |accepted, act, ctx| {
            act.reserved -= 1;
            let rid = run.run.request_id;
            let thread = run.thread_key();
            // Whether this run holds its thread (it entered a free lane before accepting).
            let holds = thread
                .as_ref()
                .is_some_and(|t| !act.lanes.free(t) && act.lanes.active(t) == Some(rid));
            if !matches!(accepted, Ok(Accepted::New)) && holds {
                if let Some(thread) = &thread {
                    act.thread_free(thread, rid, ctx);
                }
            }
            match accepted {
                Ok(Accepted::New) if act.closed => {
                    let rid = run.run.request_id;
                    let ending = cancelled("undeployed");
                    act.finalize(run, true, vec![tx], Instant::now(), ending, true);
                    fire(&started, rid);
                }
                Ok(Accepted::New) => match thread {
                    Some(thread) if !holds => {
                        act.reserved += 1;
                        let held = Held::Sync {
                            run,
                            snapshot,
                            limit,
                            reply: tx,
                            depth,
                        };
                        if act.lanes.free(&thread) {
                            act.lanes.enter(&thread, rid);
                            act.start_held(held, Instant::now(), ctx);
                            fire(&started, rid);
                        } else {
                            act.lanes.wait(&thread, rid, held);
                        }
                    }
                    _ => {
                        act.start(run, snapshot, Some(limit), Some(tx), true, depth, None, ctx);
                        fire(&started, rid);
                    }
                },
                Ok(Accepted::Existing(existing)) => {
                    fire(&started, existing.run.request_id);
                    let rt = act.rt.clone();
                    actix::spawn(async move {
                        let (agent, rid) = (existing.run.agent_id, existing.run.request_id);
                        let _ = tx.send(rt.wait(agent, rid, limit).await);
                    });
                }
                Ok(Accepted::KeyReused(_)) => {
                    let _ = tx.send(Err(Error::IdempotencyKeyReused));
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            }
        }));
        reply_from(rx)
    }
}

/// Accept for background execution (async endpoints); answers once the request is durable.
#[derive(Message)]
#[rtype(result = "Result<StoredRun, Error>")]
pub struct Submit {
    pub request: Request,
}

impl Handler<Submit> for AgentRuntime {
    type Result = Reply<StoredRun>;

    fn handle(&mut self, msg: Submit, ctx: &mut Self::Context) -> Self::Result {
        if self.closed {
            return fail(Rejection::NotDeployed);
        }
        let Some((version, snapshot)) = self.live() else {
            return fail(Rejection::NotDeployed);
        };
        if let Some(thread) = &msg.request.thread {
            let scoped = thread_scope(msg.request.member.as_deref(), thread);
            if msg.request.reject_if_busy && self.lanes.busy(&scoped) {
                return fail(Error::ThreadBusy(thread.clone()));
            }
        }
        let bytes = json_len(&msg.request.input);
        if self.queued >= self.rt.config().max_queue || !self.queued_inputs.admits(bytes) {
            return self.overloaded(&msg.request);
        }
        let run = self.new_run(
            version,
            Mode::Async,
            &msg.request,
            snapshot.endpoint.asynchronous.push_enabled,
        );
        // Counted at once, so that racing submits respect the bound, and a thread is busy from
        // its request's arrival.
        self.queued += 1;
        let thread = run.thread_key();
        if let Some(thread) = &thread {
            self.lanes.queued(thread);
        }
        let rid = run.run.request_id;
        self.queued_inputs.hold(rid, bytes);
        let (tx, rx) = oneshot::channel();
        let thread_of = run.thread_of();
        let accepted = self.rt.runs().accept(run.clone(), true);
        ctx.spawn(accepted.into_actor(self).map(move |accepted, act, ctx| {
            let (result, queued) = match accepted {
                Ok(Accepted::New) => (Ok(run), true),
                Ok(Accepted::Existing(existing)) => (Ok(*existing), false),
                Ok(Accepted::KeyReused(_)) => (Err(Error::IdempotencyKeyReused), false),
                Err(e) => (Err(e.into()), false),
            };
            if queued {
                act.rt.metrics().run_entered(RunStatus::Queued);
                // Before the pump below claims it, so numbered before its `run.started`.
                let written =
                    act.rt
                        .runs()
                        .append_run_event(rid, thread_of, "run.queued".into(), json!({}));
                actix::spawn(async move {
                    if let Err(e) = written.await {
                        tracing::warn!(request_id = %rid, error = %e, "run.queued was not stored");
                    }
                });
            } else {
                act.queued = act.queued.saturating_sub(1);
                act.queued_inputs.release(rid);
                if let Some(thread) = &thread {
                    act.lanes.dequeued(thread);
                }
            }
            let _ = tx.send(result);
            // Start it only once it is durable: a run never has effects before its 202 could.
            act.pump(ctx);
        }));
        reply_from(rx)
    }
}

/// Cancel one request (`DELETE /requests/{rid}`). Answers once the cancelled state is durable.
#[derive(Message)]
#[rtype(result = "Result<StoredRun, Error>")]
pub struct Cancel {
    pub rid: Uuid,
}

impl Handler<Cancel> for AgentRuntime {
    type Result = Reply<StoredRun>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let Some(held) = self.lanes.remove_waiting(msg.rid) {
            // Waiting for its thread: it never started.
            self.reserved = self.reserved.saturating_sub(1);
            let (run, reply) = held.what.into_run();
            let replies = reply.into_iter().chain([tx]).collect();
            let ending = cancelled("requested");
            self.finalize(run, true, replies, Instant::now(), ending, true);
            return reply_from(rx);
        }
        if let Some(entry) = self.running.get(&msg.rid) {
            entry.executor.do_send(Abort);
            self.end(msg.rid, cancelled("requested"), Some(tx), true);
            ctx.notify(Pump);
            return reply_from(rx);
        }
        let (agent, rid) = (self.agent, msg.rid);
        let taken = self
            .rt
            .runs()
            .cancel_queued(agent, rid, RunError::cancelled("requested"));
        // Held until resolved: cancels are rare, and a claim that lands meanwhile is seen.
        ctx.wait(taken.into_actor(self).map(move |taken, act, _| {
            let rt = act.rt.clone();
            match taken {
                Ok(Some(run)) => {
                    act.queued = act.queued.saturating_sub(1);
                    act.queued_inputs.release(rid);
                    if let Some(thread) = &run.thread_key() {
                        act.lanes.dequeued(thread);
                    }
                    rt.metrics().run_entered(RunStatus::Cancelled);
                    actix::spawn(run_events::record_finished(rt.runs(), &run));
                    rt.waiters().wake(rid);
                    if run.run.push.is_some() {
                        rt.wake_pusher();
                    }
                    let _ = tx.send(Ok(run));
                }
                Ok(None) => {
                    if let Some(entry) = act.running.get(&rid) {
                        // Claimed and started while this cancel was on its way.
                        entry.executor.do_send(Abort);
                        act.end(rid, cancelled("requested"), Some(tx), true);
                    } else if act.claiming {
                        act.cancel_on_start.entry(rid).or_default().push(tx);
                    } else {
                        act.answer_cancel_from_store(rid, tx);
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            }
        }));
        reply_from(rx)
    }
}

/// Undeploy: every run in flight and every queued run ends `cancelled` now; the actor stops.
/// Answers once every cancelled state is durable.
#[derive(Message)]
#[rtype(result = "Result<usize, Error>")]
pub struct Shutdown {
    pub reason: &'static str,
}

impl Handler<Shutdown> for AgentRuntime {
    type Result = Reply<usize>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.closed = true;
        if self.claiming {
            // Stopping now would drop the claim on its way, and the runs it took would stay
            // `running` until a restart: shut down once it lands (its runs end cancelled).
            let (tx, rx) = oneshot::channel();
            self.shutdown_after_claim = Some((msg.reason, tx));
            return Box::pin(async move {
                rx.await
                    .map_err(|_| Error::Unavailable("the agent's runtime stopped".into()))?
            });
        }
        self.shut_down(msg.reason, ctx)
    }
}

impl AgentRuntime {
    fn shut_down(&mut self, reason: &'static str, ctx: &mut Context<Self>) -> Reply<usize> {
        let msg = Shutdown { reason };
        let in_flight: Vec<Uuid> = self.running.keys().copied().collect();
        for entry in self.running.values() {
            entry.executor.do_send(Abort);
        }
        let mut ended = Vec::new();
        for rid in in_flight {
            let (tx, rx) = oneshot::channel();
            self.end(rid, cancelled(msg.reason), Some(tx), true);
            ended.push(rx);
        }
        for held in self.lanes.drain() {
            self.reserved = self.reserved.saturating_sub(1);
            let (run, reply) = held.what.into_run();
            let (tx, rx) = oneshot::channel();
            let replies = reply.into_iter().chain([tx]).collect();
            self.finalize(
                run,
                true,
                replies,
                Instant::now(),
                cancelled(msg.reason),
                true,
            );
            ended.push(rx);
        }
        self.queued = 0;
        self.queued_inputs.clear();
        ctx.stop();
        let (rt, agent, reason) = (self.rt.clone(), self.agent, msg.reason);
        Box::pin(async move {
            let mut count = 0;
            for rx in ended {
                rx.await
                    .map_err(|_| Error::Unavailable("a run's end was lost".into()))??;
                count += 1;
            }
            // Claimed and then cancelled: a claim is the one way to take queued runs that
            // another worker cannot take at the same moment.
            loop {
                let batch = rt.runs().claim(agent, DRAIN_BATCH).await?;
                if batch.is_empty() {
                    break;
                }
                for mut run in batch {
                    let (status, output, error) = cancelled(reason);
                    run.finish(status, output, error);
                    let push_due = run.schedule_push();
                    let rid = run.run.request_id;
                    let ended = run.clone();
                    rt.runs().finish(run, push_due).await?;
                    run_events::record_finished(rt.runs(), &ended).await;
                    rt.metrics().run_entered(RunStatus::Cancelled);
                    rt.waiters().wake(rid);
                    count += 1;
                }
                rt.wake_pusher();
            }
            // Runs waiting for a person end too, in the background: finding them reads the
            // agent's runs, which must not hold up the undeploy's answer. One answered before
            // the sweep reaches it is cancelled there (its version is no longer live).
            actix::spawn(cancel_all_paused(rt, agent, reason));
            Ok(count)
        })
    }
}

/// Cancels every paused (`input_required`) run of `agent`.
async fn cancel_all_paused(rt: Runtime, agent: Uuid, reason: &'static str) {
    let mut before = None;
    loop {
        let page = match rt.runs().list_runs(agent, before, DRAIN_BATCH).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(%agent, error = %e, "cannot list paused runs to cancel them");
                return;
            }
        };
        let last = page.len() < DRAIN_BATCH;
        before = page.last().map(|run| run.run.request_id);
        for run in page {
            if run.run.status != RunStatus::InputRequired {
                continue;
            }
            let rid = run.run.request_id;
            if let Err(e) = cancel_paused(&rt, agent, rid, reason).await {
                tracing::warn!(request_id = %rid, error = %e, "cannot cancel a paused run");
            }
        }
        if last {
            return;
        }
    }
}

impl Handler<Finished> for AgentRuntime {
    type Result = ();

    fn handle(&mut self, msg: Finished, ctx: &mut Self::Context) {
        // A run cancelled meanwhile is no longer in `running`: its result is dropped.
        match msg.result {
            Ok(Outcome::Paused {
                pending,
                checkpoint,
            }) => self.pause(msg.rid, pending, checkpoint),
            Ok(Outcome::Done(output)) => {
                self.end(msg.rid, outcome(Ok(output)), None, false);
            }
            Err(e) => {
                self.end(msg.rid, outcome(Err(e)), None, false);
            }
        }
        self.pump(ctx);
    }
}

/// Start queued runs if there are free slots (e.g. after a redeploy raised the limit).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pump;

impl Handler<Pump> for AgentRuntime {
    type Result = ();

    fn handle(&mut self, _msg: Pump, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

/// How long a final state that could not be stored (the store was unreachable: a networked
/// engine restarting) is retried before it is left to the next start's recovery.
const FINISH_RETRY_FOR: Duration = Duration::from_secs(600);

/// Retries storing a run's final state while the store is unreachable, so that a run never
/// stays `running` in the store while this process is alive and well (no other node would
/// take it for a dead node's); backs off from 1 s to 10 s.
async fn store_final_state_later(
    rt: Runtime,
    run: StoredRun,
    push_due: Option<chrono::DateTime<Utc>>,
) {
    let rid = run.run.request_id;
    let started = Instant::now();
    let mut delay = Duration::from_secs(1);
    while started.elapsed() < FINISH_RETRY_FOR {
        tokio::time::sleep(delay).await;
        match rt.runs().finish(run.clone(), push_due).await {
            Ok(()) => {
                tracing::info!(request_id = %rid, "stored a run's final state after the store came back");
                rt.waiters().wake(rid);
                if push_due.is_some() {
                    rt.wake_pusher();
                }
                return;
            }
            Err(events::store::Error::Unavailable(_)) => {
                delay = (delay * 2).min(Duration::from_secs(10))
            }
            Err(e) => {
                tracing::error!(request_id = %rid, error = %e, "cannot store a run's final state");
                return;
            }
        }
    }
    tracing::error!(request_id = %rid, "gave up storing a run's final state; the next start ends it as interrupted");
}
