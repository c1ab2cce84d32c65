//! One actor per agent. It is the only writer of its agent's stream: commands are checked against
//! its state, turned into events by [`events::command::decide`], appended with the expected seq,
//! and applied. Replies wait for durability off the actor's thread, so the next command can be
//! decided while the previous one's flush is in progress (group commit gathers them).

use std::future::ready;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::prelude::*;
use events::command::{decide, Command, Context as DecideContext};
use events::secret::Cipher;
use events::store::{self, Commit, EventStore};
use events::{AgentState, Envelope, Rejection};
use uuid::Uuid;

use crate::directory::StoreDirectory;
use crate::Error;

pub struct AgentActor {
    id: Uuid,
    store: Arc<dyn EventStore>,
    cipher: Arc<Cipher>,
    /// Shared with readers: a `GetState` is an `Arc` clone, and a write copies only when a
    /// reader still holds the previous state.
    state: Arc<AgentState>,
    /// Why the log could not be read, if it could not; every message is answered with it until a
    /// restart succeeds, rather than serving a state that is not the fold of the log.
    broken: Option<String>,
    /// The seq of the latest snapshot saved or loaded.
    snapshot_seq: u64,
}

impl AgentActor {
    pub fn new(id: Uuid, store: Arc<dyn EventStore>, cipher: Arc<Cipher>) -> Self {
        AgentActor {
            id,
            store,
            cipher,
            state: Arc::new(AgentState::new(id)),
            broken: None,
            snapshot_seq: 0,
        }
    }

    /// Events between snapshots of the state; activation replays at most this many.
    const SNAPSHOT_EVERY: u64 = 1000;

    fn rebuild(&mut self) {
        match store::current_state_and_snapshot(&*self.store, self.id) {
            Ok((state, snapshot_seq)) => {
                // The stored snapshot's seq, not the head's: the next snapshot is due 1,000 events
                // after the one activation will start from, however many were folded on top.
                self.snapshot_seq = snapshot_seq;
                self.state = Arc::new(state);
                self.broken = None;
            }
            Err(e) => {
                tracing::error!(agent = %self.id, error = %e, "cannot rebuild agent from its log");
                self.state = Arc::new(AgentState::new(self.id));
                self.broken = Some(e.to_string());
            }
        }
    }

    /// Saves a snapshot once enough events have passed since the last one.
    fn maybe_snapshot(&mut self) {
        if self.state.seq < self.snapshot_seq + Self::SNAPSHOT_EVERY {
            return;
        }
        match serde_json::to_vec(&*self.state) {
            Ok(bytes) => match self.store.save_snapshot(self.id, self.state.seq, &bytes) {
                Ok(()) => self.snapshot_seq = self.state.seq,
                Err(e) => tracing::warn!(agent = %self.id, error = %e, "cannot save a snapshot"),
            },
            Err(e) => tracing::warn!(agent = %self.id, error = %e, "cannot encode a snapshot"),
        }
    }

    /// Appends that found the stream moved (another node wrote it) are decided again on the
    /// log as it now is, at most this many times.
    const CONFLICT_RETRIES: usize = 10;

    fn execute(&mut self, msg: Execute) -> Result<(Commit, Option<String>), Error> {
        let mut attempt = 0;
        loop {
            match self.try_execute(&msg) {
                Err(Error::Store(store::Error::Conflict { .. }))
                    if attempt < Self::CONFLICT_RETRIES =>
                {
                    // Someone else appended to this stream (another node of a cluster on a
                    // shared store): our state is stale. Read it again and decide again, so a
                    // stale If-Match is refused and a command without one applies to the
                    // current state; the log never forks (the append was fenced).
                    self.catch_up();
                    attempt += 1;
                }
                Err(e @ Error::Store(store::Error::Conflict { .. })) => {
                    self.rebuild();
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// Brings the state up to the log's head, if another writer moved it (a cluster node).
    fn catch_up(&mut self) {
        if self.broken.is_some() {
            return self.rebuild();
        }
        match self.store.read(self.id, self.state.seq + 1, usize::MAX) {
            Ok(newer) if newer.is_empty() => {}
            Ok(newer) => {
                let state = Arc::make_mut(&mut self.state);
                for env in &newer {
                    state.apply(env);
                }
            }
            Err(e) => {
                tracing::warn!(agent = %self.id, error = %e, "cannot catch up with the log");
            }
        }
    }

    fn try_execute(&mut self, msg: &Execute) -> Result<(Commit, Option<String>), Error> {
        if let Some(why) = &self.broken {
            return Err(Error::Unavailable(why.clone()));
        }
        if let Some(expected) = msg.if_match {
            if expected > self.state.seq {
                // The client saw a newer seq than ours: another node wrote since we read.
                self.catch_up();
            }
            if expected != self.state.seq {
                return Err(Rejection::Stale {
                    expected,
                    actual: self.state.seq,
                }
                .into());
            }
        }
        let directory = StoreDirectory::new(self.store.clone());
        let decision = decide(
            &self.state,
            &msg.command,
            &DecideContext {
                cipher: &self.cipher,
                directory: &directory,
            },
        )?;
        let new: Vec<_> = decision
            .events
            .into_iter()
            .map(events::NewEvent::now)
            .collect();
        let commit = self.store.append(self.id, self.state.seq, &new)?;
        let state = Arc::make_mut(&mut self.state);
        for env in commit.envelopes() {
            state.apply(env);
        }
        self.maybe_snapshot();
        Ok((commit, decision.revealed_secret))
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Writers wait for one another through the mailbox; keep it bounded so a flood of
        // requests to one agent pushes back instead of growing without limit.
        ctx.set_mailbox_capacity(1024);
        self.rebuild();
    }
}

impl Supervised for AgentActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!(agent = %self.id, "agent actor restarting; rebuilding from its log");
        self.state = Arc::new(AgentState::new(self.id));
    }
}

/// Run a command against the agent. `if_match` is the seq the client last saw (`If-Match`).
#[derive(Message)]
#[rtype(result = "Result<Outcome, Error>")]
pub struct Execute {
    pub command: Command,
    pub if_match: Option<u64>,
}

/// The state after a durable command, the events it wrote, and a secret to show once.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub state: Arc<AgentState>,
    pub events: Vec<Envelope>,
    pub revealed_secret: Option<String>,
}

impl Handler<Execute> for AgentActor {
    type Result = ResponseFuture<Result<Outcome, Error>>;

    fn handle(&mut self, msg: Execute, ctx: &mut Self::Context) -> Self::Result {
        // A panic would otherwise kill the actor's task with its supervisor. Catch it on purpose,
        // answer this request with an error, and stop: the supervisor restarts the actor, which
        // rebuilds from its log — the only state that was ever acknowledged.
        match catch_unwind(AssertUnwindSafe(|| self.execute(msg))) {
            Ok(Ok((commit, revealed_secret))) => {
                let state = self.state.clone();
                Box::pin(async move {
                    let events = commit.durable().await?;
                    Ok(Outcome {
                        state,
                        events,
                        revealed_secret,
                    })
                })
            }
            Ok(Err(e)) => Box::pin(ready(Err(e))),
            Err(_) => {
                tracing::error!(agent = %self.id, "agent actor panicked; restarting it from its log");
                ctx.stop();
                Box::pin(ready(Err(Error::Unavailable(
                    "the agent's actor failed and is being rebuilt from its log; retry".into(),
                ))))
            }
        }
    }
}

/// Catch up with the log if it moved past `seq` (another node wrote it), and answer the state.
#[derive(Message)]
#[rtype(result = "Result<Arc<AgentState>, Error>")]
pub struct Refresh {
    pub seq: u64,
}

impl Handler<Refresh> for AgentActor {
    type Result = Result<Arc<AgentState>, Error>;

    fn handle(&mut self, msg: Refresh, _ctx: &mut Self::Context) -> Self::Result {
        if msg.seq > self.state.seq || self.broken.is_some() {
            self.catch_up();
        }
        match &self.broken {
            Some(why) => Err(Error::Unavailable(why.clone())),
            None => Ok(self.state.clone()),
        }
    }
}

/// The agent's current state.
#[derive(Message)]
#[rtype(result = "Result<Arc<AgentState>, Error>")]
pub struct GetState;

impl Handler<GetState> for AgentActor {
    type Result = ResponseFuture<Result<Arc<AgentState>, Error>>;

    fn handle(&mut self, _msg: GetState, _ctx: &mut Self::Context) -> Self::Result {
        match &self.broken {
            Some(why) => Box::pin(ready(Err(Error::Unavailable(why.clone())))),
            None => {
                // The state may hold an append whose commit is still on its way (its command is
                // not answered yet): answered once that is durable, off the actor's thread, so
                // that a reader never sees what a crash could take back. At once when nothing
                // is in flight.
                let state = self.state.clone();
                let settled = self.store.settled();
                Box::pin(async move {
                    settled.await?;
                    Ok(state)
                })
            }
        }
    }
}

/// Makes the actor panic inside command handling, to prove a crash is contained.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Crash;

#[cfg(test)]
impl Handler<Crash> for AgentActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, _msg: Crash, ctx: &mut Self::Context) -> Self::Result {
        let caught = catch_unwind(AssertUnwindSafe(|| {
            // Corrupt the in-memory state first, as a real bug might, then fail.
            Arc::make_mut(&mut self.state).seq = 999_999;
            panic!("injected failure");
        }));
        if caught.is_err() {
            ctx.stop();
        }
        Err(Error::Unavailable("crashed".into()))
    }
}
