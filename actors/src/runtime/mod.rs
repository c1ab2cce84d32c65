//! The runtime: deployed agents answering requests.
//!
//! [`Runtime`] is the cheap, cloneable handle the HTTP layer calls. Each agent that serves runs has
//! one [`AgentRuntime`] actor, which spawns one [`executor`] actor per request. Runs, the async
//! queue, idempotency keys and the push outbox live in [`RunStore`], beside the event log.

mod agent_runtime;
mod executor;
mod metrics;
mod run;
mod run_store;
mod waiters;

pub use agent_runtime::{AgentRuntime, Request};
pub use metrics::Metrics;
pub use run::{Mode, PushState, PushStatus, Run, RunError, RunStatus, StoredRun};
pub use run_store::{Accepted, RunStore, IDEMPOTENCY_WINDOW};

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use actix::prelude::*;
use events::command::Command;
use events::secret::Cipher;
use events::store::SledStore;
use events::{AgentState, Rejection};
use serde_json::Value;
use uuid::Uuid;

use self::agent_runtime::{Cancel, Invoke, Refresh, Shutdown, Submit};
use self::waiters::Waiters;
use crate::agent::Outcome;
use crate::flow::{AgentCall, EffectError};
use crate::{Error, Registry};

/// How deep agents may call collaborators that call collaborators.
pub const MAX_AGENT_DEPTH: u8 = 4;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Async requests that may wait in one agent's queue; past it, 429.
    pub max_queue: usize,
    /// Final runs older than this are purged.
    pub retention: chrono::Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_queue: 10_000,
            retention: chrono::Duration::days(7),
        }
    }
}

#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs: Arc<RunStore>,
    agents: Mutex<HashMap<Uuid, Addr<AgentRuntime>>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    waiters: Waiters,
    metrics: Arc<Metrics>,
    config: RuntimeConfig,
    /// Tells the push worker a delivery is due; set once the worker runs.
    pusher: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The newest state of each agent that serves runs, kept current by the registry's change
    /// hook, so a call costs no round trip to the agent's actor.
    states: RwLock<HashMap<Uuid, Arc<AgentState>>>,
    /// Set on SIGTERM: no queued run starts any more.
    draining: AtomicBool,
    /// Runs executing now, over all agents.
    in_flight: AtomicI64,
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
        store: Arc<SledStore>,
        threads: usize,
        config: RuntimeConfig,
    ) -> Result<Self, Error> {
        let runs = Arc::new(RunStore::open(store)?);
        let hooked = registry.clone();
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
                states: RwLock::new(HashMap::new()),
                draining: AtomicBool::new(false),
                in_flight: AtomicI64::new(0),
            }),
        };
        let cache = rt.clone();
        hooked.set_on_change(Box::new(move |state| cache.remember(state.clone())));
        Ok(rt)
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
    pub fn runs(&self) -> &Arc<RunStore> {
        &self.inner.runs
    }
    pub fn cipher(&self) -> &Arc<Cipher> {
        self.inner.registry.cipher()
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

    /// Registers how to wake the push worker.
    pub fn set_pusher(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.inner.pusher.set(wake);
    }

    pub(crate) fn wake_pusher(&self) {
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
    /// runs after `max` ends `interrupted` at the next start.
    pub async fn quiesce(&self, max: Duration) -> Result<usize, Error> {
        let deadline = tokio::time::Instant::now() + max;
        while self.inner.in_flight.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.inner.runs.flushed().await?;
        Ok(self.inner.in_flight.load(Ordering::Relaxed).max(0) as usize)
    }

    pub fn metrics_text(&self) -> String {
        self.inner.metrics.render(self.inner.runs.queue_len())
    }

    fn remember(&self, state: Arc<AgentState>) {
        if let Ok(mut states) = self.inner.states.write() {
            let newer = states.get(&state.id).is_none_or(|s| s.seq <= state.seq);
            if newer {
                states.insert(state.id, state);
            }
        }
    }

    /// The agent's current state: from the cache, else from its actor.
    pub async fn state(&self, agent: Uuid) -> Result<Arc<AgentState>, Error> {
        let cached = self
            .inner
            .states
            .read()
            .ok()
            .and_then(|s| s.get(&agent).cloned());
        if let Some(state) = cached {
            return Ok(state);
        }
        let state = self.inner.registry.state(agent).await?;
        self.remember(state.clone());
        Ok(state)
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
        // The runtime actor first, then the state: an undeploy that lands in between is then
        // either seen in the state or cancels this run (see `undeploy`).
        let addr = self.agent_runtime(agent)?;
        let state = self.state(agent).await?;
        if state.live_version.is_none() {
            return Err(Rejection::NotDeployed.into());
        }
        addr.send(Invoke {
            state,
            request,
            draft: false,
        })
        .await
        .map_err(mailbox)?
    }

    /// Run the draft as the sync endpoint would; the run is not stored.
    pub async fn preview(&self, agent: Uuid, request: Request) -> Result<StoredRun, Error> {
        let addr = self.agent_runtime(agent)?;
        let state = self.state(agent).await?;
        addr.send(Invoke {
            state,
            request,
            draft: true,
        })
        .await
        .map_err(mailbox)?
    }

    /// Async endpoints: accept durably, run in the background.
    pub async fn submit(&self, agent: Uuid, request: Request) -> Result<StoredRun, Error> {
        let addr = self.agent_runtime(agent)?;
        let state = self.state(agent).await?;
        if state.live_version.is_none() {
            return Err(Rejection::NotDeployed.into());
        }
        addr.send(Submit { state, request })
            .await
            .map_err(mailbox)?
    }

    /// A request of `agent`.
    pub fn run(&self, agent: Uuid, rid: Uuid) -> Result<StoredRun, Error> {
        match self.inner.runs.get(rid)? {
            Some(run) if run.run.agent_id == agent => Ok(run),
            _ => Err(Rejection::not_found(format!("request {rid}")).into()),
        }
    }

    /// The request once final, or as it is when `max` has passed (long-poll).
    pub async fn wait(&self, agent: Uuid, rid: Uuid, max: Duration) -> Result<StoredRun, Error> {
        let woken = self.inner.waiters.register(rid);
        let run = self.run(agent, rid);
        if !matches!(&run, Ok(r) if !r.run.status.is_final() && !max.is_zero()) {
            // Unregistered, or every poll of a finished or unknown run would leave an entry.
            drop(woken);
            self.inner.waiters.forget(rid);
            return run;
        }
        let _ = tokio::time::timeout(max, woken).await;
        self.inner.waiters.forget(rid);
        self.run(agent, rid)
    }

    pub async fn cancel(&self, agent: Uuid, rid: Uuid) -> Result<StoredRun, Error> {
        let run = self.run(agent, rid)?;
        if run.run.status.is_final() {
            return Err(Error::AlreadyFinished(Box::new(run.run)));
        }
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
            addr.do_send(Refresh(out.state.clone()));
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
        let mut report = Recovery::default();
        for mut run in self.inner.runs.running()? {
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
            self.inner.runs.finish(&run, push_due)?;
            self.inner.metrics.run_entered(RunStatus::Failed);
            report.interrupted += 1;
        }
        self.inner.runs.flushed().await?;
        for agent in self.inner.runs.agents_with_queue()? {
            report.agents_with_queue += 1;
            let live = match self.inner.registry.state(agent).await {
                Ok(state) => state.live_version.is_some().then_some(state),
                Err(_) => None,
            };
            let addr = self.agent_runtime(agent)?;
            match live {
                Some(state) => addr.do_send(Refresh(state)),
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
        if report.interrupted > 0 {
            self.wake_pusher();
        }
        Ok(report)
    }

    /// How an `agent` node calls a collaborator: a sync run of its live version.
    pub(crate) fn collaborator_call(&self, depth: u8) -> AgentCall {
        let rt = self.clone();
        Rc::new(move |agent: Uuid, input: Value| {
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
                let request = Request {
                    input,
                    member: None,
                    idempotency_key: None,
                    depth: depth + 1,
                };
                let run = rt.invoke(agent, request).await.map_err(|e| EffectError {
                    code: "collaborator_failed".into(),
                    message: format!("collaborator {agent}: {e}"),
                })?;
                match (run.run.status, run.run.output) {
                    (RunStatus::Succeeded, Some(output)) => Ok(output),
                    (status, _) => Err(EffectError {
                        code: "collaborator_failed".into(),
                        message: format!(
                            "collaborator {agent} ended {}: {}",
                            status.as_str(),
                            run.run.error.map(|e| e.message).unwrap_or_default()
                        ),
                    }),
                }
            })
        })
    }

    /// Deletes old final runs now and every half retention (at most hourly, so a short retention
    /// is kept to within 1.5×), on a thread of its own (sled scans block).
    pub fn start_retention(&self) {
        let runs = self.inner.runs.clone();
        let keep = self.inner.config.retention;
        let every = (keep / 2).to_std().unwrap_or_default();
        let every = every.clamp(Duration::from_secs(1), Duration::from_secs(3600));
        std::thread::spawn(move || loop {
            match runs.purge(chrono::Utc::now() - keep) {
                Ok(n) if n > 0 => tracing::info!(purged = n, "purged old runs"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging old runs failed"),
            }
            std::thread::sleep(every);
        });
    }
}
