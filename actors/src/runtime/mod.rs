//! The runtime: deployed agents answering requests.
//!
//! [`Runtime`] is the cheap, cloneable handle the HTTP layer calls. Each agent that serves runs has
//! one [`AgentRuntime`] actor, which spawns one [`executor`] actor per request. Runs, the async
//! queue, idempotency keys and the push outbox live behind the store traits of
//! [`events::store::runs`], beside the event log.

mod agent_runtime;
mod executor;
mod metrics;
mod quota;
pub mod run_events;
mod threads;
mod waiters;

pub use agent_runtime::{AgentRuntime, Parent, Request, ResumeRun, StartSignal, MAX_PREVIEWS};
pub use events::run::{Mode, PushState, PushStatus, Run, RunError, RunStatus, StoredRun};
pub use events::store::IDEMPOTENCY_WINDOW;
pub use metrics::Metrics;
pub use run_events::RunEventHub;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use events::command::Command;
use events::secret::Cipher;
use events::store::{RunStore, RunStores};
use events::{AgentState, Rejection};
use serde_json::Value;
use uuid::Uuid;

use self::agent_runtime::{Adopt, Cancel, Invoke, Pump, Shutdown, Submit};
use self::waiters::Waiters;
use crate::agent::Outcome;
use crate::flow::{AgentCall, EffectError};
use crate::push::{PushMetrics, Pusher, Schedule, Wake};
use crate::{Error, Registry};

/// How deep agents may call collaborators that call collaborators.
pub const MAX_AGENT_DEPTH: u8 = 4;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Async requests that may wait in one agent's queue; past it, 429.
    pub max_queue: usize,
    /// Final runs older than this are purged.
    pub retention: chrono::Duration,
    /// Bytes of input one agent's queued async requests may hold on this node; past it, 429
    /// (`HANGAR_AGENT_QUOTA_MB`, see `quota`).
    pub agent_quota_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_queue: 10_000,
            retention: chrono::Duration::days(7),
            agent_quota_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How often a long-poll reads a run again on a shared store (cluster mode), where the run may
/// end on another node.
const SHARED_POLL: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs: Arc<dyn RunStores>,
    agents: Mutex<HashMap<Uuid, Addr<AgentRuntime>>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    waiters: Waiters,
    metrics: Arc<Metrics>,
    config: RuntimeConfig,
    /// Tells the push worker a delivery is due; set once the worker runs.
    pusher: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Set on SIGTERM: no queued run starts any more.
    draining: AtomicBool,
    /// Runs executing now, over all agents.
    in_flight: AtomicI64,
    /// The live events of the runs in flight on this node.
    run_events: Arc<RunEventHub>,
}

/// Which endpoint a run came through.
enum Kind {
    Live,
    Preview,
    Async,
}

/// What recovery found after a restart.
#[derive(Debug, Default)]
pub struct Recovery {
    pub interrupted: usize,
    pub agents_with_queue: usize,
}

fn mailbox(e: MailboxError) -> Error {
    match e {
        // The agent's runtime stopped: it was undeployed while the request was on its way.
        MailboxError::Closed => Rejection::NotDeployed.into(),
        MailboxError::Timeout => Error::Unavailable("the agent's runtime did not answer".into()),
    }
}

impl Runtime {
    /// Must be called inside a running actix `System`.
    pub fn new(
        registry: Registry,
        runs: Arc<dyn RunStores>,
        threads: usize,
        config: RuntimeConfig,
    ) -> Result<Self, Error> {
        let arbiters = (0..threads.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        let rt = Runtime {
            inner: Arc::new(Inner {
                registry,
                runs,
                agents: Mutex::new(HashMap::new()),
                arbiters,
                next_arbiter: AtomicUsize::new(0),
                waiters: Waiters::default(),
                metrics: Arc::new(Metrics::default()),
                config,
                pusher: OnceLock::new(),
                draining: AtomicBool::new(false),
                in_flight: AtomicI64::new(0),
                run_events: Arc::new(RunEventHub::default()),
            }),
        };
        Ok(rt)
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
    pub fn runs(&self) -> &Arc<dyn RunStores> {
        &self.inner.runs
    }
    pub fn cipher(&self) -> &Arc<Cipher> {
        self.inner.registry.cipher()
    }
    pub fn run_events(&self) -> &Arc<RunEventHub> {
        &self.inner.run_events
    }
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
    pub(crate) fn waiters(&self) -> &Waiters {
        &self.inner.waiters
    }
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Starts the push worker, on an arbiter of its own (its HTTP client is not `Send`), and
    /// wakes it whenever a final run has a push due. Call once.
    pub fn start_pusher(&self, schedule: Schedule) {
        let runs: Arc<dyn RunStore> = self.inner.runs.clone();
        let registry = self.inner.registry.clone();
        let cipher = self.cipher().clone();
        let metrics: Arc<dyn PushMetrics> = self.inner.metrics.clone();
        let arbiter = Arbiter::new();
        let pusher = Pusher::start_in_arbiter(&arbiter.handle(), move |_| {
            Pusher::new(runs, registry, cipher, schedule, metrics)
        });
        let _ = self
            .inner
            .pusher
            .set(Box::new(move || pusher.do_send(Wake)));
    }

    /// Tells this process's pusher to look at the outbox now (it also looks every 200 ms): after
    /// a write that made a push due, such as a push config created on a task that has ended.
    pub fn wake_pusher(&self) {
        if let Some(wake) = self.inner.pusher.get() {
            wake();
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight_changed(&self, delta: i64) {
        self.inner.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Graceful shutdown, first step: queued runs stay queued from now on.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Graceful shutdown, last step: waits up to `max` for the runs still executing (async ones:
    /// sync ones ended with their HTTP requests), then makes everything durable. Whatever still
    /// runs after `max` ends `interrupted` at the next start. Every store write the runtime
    /// acknowledged is durable already (the store traits resolve only then).
    pub async fn quiesce(&self, max: Duration) -> Result<usize, Error> {
        let deadline = tokio::time::Instant::now() + max;
        while self.inner.in_flight.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(self.inner.in_flight.load(Ordering::Relaxed).max(0) as usize)
    }

    pub async fn metrics_text(&self) -> Result<String, Error> {
        let depth = self.inner.runs.queue_len().await?;
        let mut text = self.inner.metrics.render(depth);
        text.push_str(
            "# HELP hangar_long_polls_waiting Runs that a long-poll is waiting on now.\n\
             # TYPE hangar_long_polls_waiting gauge\n",
        );
        text.push_str(&format!(
            "hangar_long_polls_waiting {}\n",
            self.inner.waiters.runs_waited_on()
        ));
        Ok(text)
    }

    /// The agent's current state (the registry's published one).
    pub async fn state(&self, agent: Uuid) -> Result<Arc<AgentState>, Error> {
        self.inner.registry.state(agent).await
    }

    /// The runtime actor of `agent`, started if needed.
    fn agent_runtime(&self, agent: Uuid) -> Result<Addr<AgentRuntime>, Error> {
        let mut agents = self
            .inner
            .agents
            .lock()
            .map_err(|_| Error::Unavailable("runtime lock poisoned".into()))?;
        if let Some(addr) = agents.get(&agent) {
            if addr.connected() {
                return Ok(addr.clone());
            }
        }
        // Only agents with a log get a runtime: probing random ids must not leave actors behind.
        if self.inner.registry.store().head(agent)? == 0 {
            return Err(Rejection::not_found(format!("agent {agent}")).into());
        }
        let i = self.inner.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.inner.arbiters.len();
        let rt = self.clone();
        let addr = AgentRuntime::start_in_arbiter(&self.inner.arbiters[i], move |_| {
            AgentRuntime::new(agent, rt)
        });
        agents.insert(agent, addr.clone());
        Ok(addr)
    }

    /// Sync endpoint: run the live version and wait for the final Run.
    pub async fn invoke(&self, agent: Uuid, request: Request) -> Result<StoredRun, Error> {
        self.send_run(agent, request, Kind::Live).await
    }

    /// Run the draft as the sync endpoint would; the run is not stored.
    pub async fn preview(&self, agent: Uuid, request: Request) -> Result<StoredRun, Error> {
        self.send_run(agent, request, Kind::Preview).await
    }

    /// Async endpoints: accept durably, run in the background.
    pub async fn submit(&self, agent: Uuid, request: Request) -> Result<StoredRun, Error> {
        self.send_run(agent, request, Kind::Async).await
    }

    async fn send_run(
        &self,
        agent: Uuid,
        request: Request,
        kind: Kind,
    ) -> Result<StoredRun, Error> {
        // The runtime actor first, then the state: an undeploy that lands in between is then
        // either seen in the state or cancels this run (see `undeploy`). Reading the state here
        // makes sure the registry has it published for the actor, which does not wait.
        let addr = self.agent_runtime(agent)?;
        self.state(agent).await?;
        let sent = match kind {
            Kind::Live => addr.send(Invoke {
                request,
                draft: false,
            }),
            Kind::Preview => addr.send(Invoke {
                request,
                draft: true,
            }),
            Kind::Async => return addr.send(Submit { request }).await.map_err(mailbox)?,
        };
        sent.await.map_err(mailbox)?
    }

    /// A request of `agent`.
    pub async fn run(&self, agent: Uuid, rid: Uuid) -> Result<StoredRun, Error> {
        match self.inner.runs.get(rid).await? {
            Some(run) if run.run.agent_id == agent => Ok(run),
            _ => Err(Rejection::not_found(format!("request {rid}")).into()),
        }
    }

    /// The request once final (or paused), or as it is when `max` has passed (long-poll). Only
    /// a request that exists and is still on its way registers a waiter, and the waiter goes
    /// when this returns, however it returns: polling must not cost memory.
    pub async fn wait(&self, agent: Uuid, rid: Uuid, max: Duration) -> Result<StoredRun, Error> {
        let run = self.run(agent, rid).await?;
        if settled(&run) || max.is_zero() {
            return Ok(run);
        }
        let mut woken = self.inner.waiters.register(rid);
        // Read again once registered: a finish between the first read and the registration
        // would otherwise be missed until `max`.
        let run = self.run(agent, rid).await?;
        if settled(&run) {
            return Ok(run);
        }
        if !self.inner.registry.is_shared() {
            let _ = tokio::time::timeout(max, woken).await;
            return self.run(agent, rid).await;
        }
        // Cluster mode: the run may end on another node, whose wake-up never comes here; the
        // store is read again every SHARED_POLL as well.
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left.min(SHARED_POLL), &mut woken)
                    .await
                    .is_ok()
            {
                return self.run(agent, rid).await;
            }
            let run = self.run(agent, rid).await?;
            if settled(&run) {
                return Ok(run);
            }
        }
    }

    /// A person's answer to paused request `rid`: it goes on in the background. Answers with
    /// the run as resumed; [`Error::NotWaiting`] when it is not paused.
    pub async fn resume(
        &self,
        agent: Uuid,
        rid: Uuid,
        answer: crate::flow::Answer,
    ) -> Result<StoredRun, Error> {
        let addr = self.agent_runtime(agent)?;
        self.state(agent).await?;
        addr.send(ResumeRun { rid, answer })
            .await
            .map_err(mailbox)?
    }

    /// The last `last` turns of thread `thread` of `agent`, oldest first.
    pub async fn thread(
        &self,
        agent: Uuid,
        thread: String,
        last: usize,
    ) -> Result<Vec<events::run::Turn>, Error> {
        Ok(self.inner.runs.turns(agent, thread, last).await?)
    }

    /// Deletes thread `thread` of `agent` from storage; false if it had no turns.
    pub async fn delete_thread(&self, agent: Uuid, thread: String) -> Result<bool, Error> {
        Ok(self.inner.runs.delete_thread(agent, thread).await?)
    }

    /// Cancels a request; the agent's runtime decides what that means for it.
    pub async fn cancel(&self, agent: Uuid, rid: Uuid) -> Result<StoredRun, Error> {
        let addr = self.agent_runtime(agent)?;
        addr.send(Cancel { rid }).await.map_err(mailbox)?
    }

    /// Deploy (or roll back); queued runs of the agent may start on the new limits.
    pub async fn deploy(
        &self,
        agent: Uuid,
        version: Option<u32>,
        if_match: Option<u64>,
    ) -> Result<Outcome, Error> {
        let out = self
            .inner
            .registry
            .execute(agent, Command::Deploy { version }, if_match)
            .await?;
        let existing = self
            .inner
            .agents
            .lock()
            .ok()
            .and_then(|m| m.get(&agent).cloned());
        if let Some(addr) = existing {
            addr.do_send(Pump);
        }
        Ok(out)
    }

    /// Undeploy: back to draft, then every run of the agent — in flight or queued — is cancelled
    /// before this returns.
    pub async fn undeploy(&self, agent: Uuid, if_match: Option<u64>) -> Result<Outcome, Error> {
        let out = self
            .inner
            .registry
            .execute(agent, Command::Undeploy, if_match)
            .await?;
        let addr = self.agent_runtime(agent)?;
        if let Ok(mut agents) = self.inner.agents.lock() {
            agents.remove(&agent);
        }
        addr.send(Shutdown {
            reason: "undeployed",
        })
        .await
        .map_err(mailbox)??;
        Ok(out)
    }

    /// After a restart: runs a previous process left `running` end `failed` (`interrupted`) —
    /// they may have called tools already, so running them again could repeat side effects —
    /// and queued runs start again (or are cancelled if their agent is no longer live).
    pub async fn recover(&self) -> Result<Recovery, Error> {
        let mut left = Vec::new();
        let mut held: HashMap<Uuid, Vec<StoredRun>> = HashMap::new();
        for run in self.inner.runs.running().await? {
            if run.mode == Mode::Async && run.run.started_at.is_none() {
                // Claimed, then held back for its thread: it never started.
                held.entry(run.run.agent_id).or_default().push(run);
            } else {
                left.push(run);
            }
        }
        let mut report = Recovery {
            interrupted: self.interrupt(left).await?,
            ..Recovery::default()
        };
        for (agent, mut runs) in held {
            runs.sort_by_key(|r| r.run.request_id);
            // The runtime reads the agent's published state, which must be there first.
            let addr = self.agent_runtime(agent)?;
            self.state(agent).await?;
            addr.do_send(Adopt { runs });
        }
        report.agents_with_queue = self.restart_queues().await?;
        Ok(report)
    }

    /// Ends `runs` `failed` (`interrupted`): runs whose process is gone (this one's before a
    /// restart, or a dead cluster node's). Returns how many.
    pub async fn interrupt(&self, runs: Vec<StoredRun>) -> Result<usize, Error> {
        let mut interrupted = 0;
        for mut run in runs {
            run.finish(
                RunStatus::Failed,
                None,
                Some(RunError::new(
                    "interrupted",
                    "the server stopped while this run was in flight; submit it again",
                    Value::Null,
                )),
            );
            let push_due = run.schedule_push();
            let rid = run.run.request_id;
            let ended = run.clone();
            self.inner.runs.finish(run, push_due).await?;
            run_events::record_finished(&self.inner.runs, &ended).await;
            self.inner.metrics.run_entered(RunStatus::Failed);
            self.inner.waiters.wake(rid);
            interrupted += 1;
        }
        if interrupted > 0 {
            self.wake_pusher();
        }
        Ok(interrupted)
    }

    /// Starts the runtime of every agent with queued runs, which claims them as its limits
    /// allow (or cancels them if the agent is no longer live). Returns how many agents.
    pub async fn restart_queues(&self) -> Result<usize, Error> {
        let mut agents_with_queue = 0;
        for agent in self.inner.runs.agents_with_queue().await? {
            agents_with_queue += 1;
            let live = match self.inner.registry.state(agent).await {
                Ok(state) => state.live_version.is_some().then_some(state),
                Err(_) => None,
            };
            let addr = self.agent_runtime(agent)?;
            match live {
                Some(_) => addr.do_send(Pump),
                None => {
                    if let Ok(mut agents) = self.inner.agents.lock() {
                        agents.remove(&agent);
                    }
                    addr.send(Shutdown {
                        reason: "undeployed",
                    })
                    .await
                    .map_err(mailbox)??;
                }
            }
        }
        Ok(agents_with_queue)
    }

    /// Another node changed `agent` (cluster mode): if this node serves it, catch up, and act
    /// on what changed as the node that made the change did: an undeploy cancels the runs
    /// this node runs or holds queued; a deploy lets queued runs start.
    pub async fn changed_elsewhere(&self, agent: Uuid) -> Result<(), Error> {
        let existing = self
            .inner
            .agents
            .lock()
            .ok()
            .and_then(|m| m.get(&agent).cloned());
        // An agent this node does not serve has nothing here to act on; its next read here
        // checks the log anyway.
        let Some(addr) = existing else {
            return Ok(());
        };
        let state = self.inner.registry.state(agent).await?;
        if state.live_version.is_some() {
            addr.do_send(Pump);
            return Ok(());
        }
        if let Ok(mut agents) = self.inner.agents.lock() {
            agents.remove(&agent);
        }
        addr.send(Shutdown {
            reason: "undeployed",
        })
        .await
        .map_err(mailbox)??;
        Ok(())
    }

    /// How an `agent` node of run `rid` (of `agent`) calls a collaborator: a sync run of its
    /// live version, a child of `rid`: when the call is dropped unanswered (the parent was
    /// cancelled, timed out or undeployed), the child is cancelled with it.
    pub(crate) fn collaborator_call(&self, agent: Uuid, rid: Uuid, depth: u8) -> AgentCall {
        let rt = self.clone();
        Rc::new(move |collaborator: Uuid, input: Value| {
            let rt = rt.clone();
            Box::pin(async move {
                if depth + 1 > MAX_AGENT_DEPTH {
                    return Err(EffectError {
                        code: "collaborator_depth".into(),
                        message: format!(
                            "agents may call collaborators at most {MAX_AGENT_DEPTH} deep"
                        ),
                    });
                }
                // Held for the whole call: dropping it (with this future) cancels the child.
                let (_alive, gone) = tokio::sync::watch::channel(());
                let request = Request {
                    input,
                    depth: depth + 1,
                    parent: Some(Parent {
                        agent,
                        request_id: rid,
                        gone,
                    }),
                    ..Request::default()
                };
                let run = rt
                    .invoke(collaborator, request)
                    .await
                    .map_err(|e| EffectError {
                        code: "collaborator_failed".into(),
                        message: format!("collaborator {collaborator}: {e}"),
                    })?;
                match (run.run.status, run.run.output) {
                    (RunStatus::Succeeded, Some(output)) => Ok(output),
                    (status, _) => Err(EffectError {
                        code: "collaborator_failed".into(),
                        message: format!(
                            "collaborator {collaborator} ended {}: {}",
                            status.as_str(),
                            run.run.error.map(|e| e.message).unwrap_or_default()
                        ),
                    }),
                }
            })
        })
    }

    /// Deletes old final runs now and then every `retention / 2` (at most hourly), on a thread
    /// of its own: a purge scans every run, and must not hold up an arbiter's actors.
    pub fn start_retention(&self) {
        let runs = self.inner.runs.clone();
        let keep = self.inner.config.retention;
        let every = keep
            .to_std()
            .map(|d| (d / 2).clamp(Duration::from_secs(1), Duration::from_secs(3600)))
            .unwrap_or(Duration::from_secs(3600));
        let spawned = std::thread::Builder::new()
            .name("hangar-retention".into())
            .spawn(move || {
                let executor = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(executor) => executor,
                    Err(e) => {
                        tracing::error!(error = %e, "old runs will not be purged");
                        return;
                    }
                };
                loop {
                    match executor.block_on(runs.purge(chrono::Utc::now() - keep)) {
                        Ok(n) if n > 0 => tracing::info!(purged = n, "purged old runs"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "purging old runs failed"),
                    }
                    std::thread::sleep(every);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "old runs will not be purged");
        }
    }
}

/// Whether a long-poll has nothing more to wait for.
fn settled(run: &StoredRun) -> bool {
    run.run.status.is_final() || run.run.status == RunStatus::InputRequired
}
