//! The registry: a cheap, cloneable handle that finds an agent's actor, activating it on first
//! use. Lookups go through a shared map rather than a registry actor's mailbox, so a busy server
//! does not funnel every request through one thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use actix::prelude::*;
use events::command::Command;
use events::secret::Cipher;
use events::spec::AgentSpec;
use events::store::EventStore;
use events::AgentState;
use uuid::Uuid;

use crate::agent::{AgentActor, Execute, GetState, Outcome, Refresh};
use crate::directory::StoreDirectory;
use crate::Error;
use events::Rejection;

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    cipher: Arc<Cipher>,
    agents: Mutex<HashMap<Uuid, Addr<AgentActor>>>,
    /// The newest state each agent's actor published: the one place every reader (handlers, the
    /// runtime, the pusher) takes an agent's state from, without a round trip to its actor. Kept
    /// current one way: every command's outcome replaces it (newest seq wins), and a miss asks
    /// the actor once.
    states: RwLock<HashMap<Uuid, Arc<AgentState>>>,
    /// Agent actors are spread over these threads, round robin.
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    /// Whether other processes append to the store too (cluster nodes on one PostgreSQL): then
    /// a read checks the stream's head first, since the published state may be behind it.
    shared: bool,
}

impl Registry {
    /// Must be called inside a running actix `System`. `threads` arbiters host the agent actors.
    pub fn new(store: Arc<dyn EventStore>, cipher: Arc<Cipher>, threads: usize) -> Self {
        Self::build(store, cipher, threads, false)
    }

    /// A registry over a store that other nodes write as well (`docs/cluster.md`): reads check
    /// the log's head and catch the actor up when another node moved it.
    pub fn new_shared(store: Arc<dyn EventStore>, cipher: Arc<Cipher>, threads: usize) -> Self {
        Self::build(store, cipher, threads, true)
    }

    fn build(
        store: Arc<dyn EventStore>,
        cipher: Arc<Cipher>,
        threads: usize,
        shared: bool,
    ) -> Self {
        let arbiters = (0..threads.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        Registry {
            inner: Arc::new(Inner {
                store,
                cipher,
                agents: Mutex::new(HashMap::new()),
                states: RwLock::new(HashMap::new()),
                arbiters,
                next_arbiter: AtomicUsize::new(0),
                shared,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    pub fn cipher(&self) -> &Arc<Cipher> {
        &self.inner.cipher
    }

    fn changed(&self, out: Result<Outcome, Error>) -> Result<Outcome, Error> {
        if let Ok(out) = &out {
            self.publish(out.state.clone());
        }
        out
    }

    fn publish(&self, state: Arc<AgentState>) {
        if let Ok(mut states) = self.inner.states.write() {
            let newer = states.get(&state.id).is_none_or(|s| s.seq <= state.seq);
            if newer {
                states.insert(state.id, state);
            }
        }
    }

    /// The agent's state as last published, if it was read or changed since this process
    /// started. For actors that must not wait; `state` fills it.
    pub fn cached(&self, id: Uuid) -> Option<Arc<AgentState>> {
        self.inner.states.read().ok()?.get(&id).cloned()
    }

    pub fn directory(&self) -> StoreDirectory {
        StoreDirectory::new(self.inner.store.clone())
    }

    /// Creates a new agent from `spec`.
    pub async fn create(&self, spec: AgentSpec) -> Result<Outcome, Error> {
        let id = Uuid::now_v7();
        let addr = self.activate(id, true)?;
        let out = send(
            &addr,
            Execute {
                command: Command::Create { spec },
                if_match: None,
            },
        )
        .await;
        self.changed(out)
    }

    pub async fn execute(
        &self,
        id: Uuid,
        command: Command,
        if_match: Option<u64>,
    ) -> Result<Outcome, Error> {
        let addr = self.activate(id, false)?;
        let out = send(&addr, Execute { command, if_match }).await;
        self.changed(out)
    }

    /// The agent's current state: as last published, else from its actor.
    pub async fn state(&self, id: Uuid) -> Result<Arc<AgentState>, Error> {
        if self.inner.shared {
            return self.fresh_state(id).await;
        }
        if let Some(state) = self.cached(id) {
            return Ok(state);
        }
        let addr = self.activate(id, false)?;
        let state = addr.send(GetState).await.map_err(mailbox)??;
        self.publish(state.clone());
        Ok(state)
    }

    /// On a shared store: the state as of the log's head now, caught up by the actor if
    /// another node appended since it was published. The head is read off this thread (the
    /// store's call blocks for a round trip).
    async fn fresh_state(&self, id: Uuid) -> Result<Arc<AgentState>, Error> {
        let store = self.inner.store.clone();
        let head = tokio::task::spawn_blocking(move || store.head(id))
            .await
            .map_err(|e| Error::Unavailable(format!("reading the log's head: {e}")))??;
        if head == 0 {
            return Err(Rejection::not_found(format!("agent {id}")).into());
        }
        if let Some(state) = self.cached(id).filter(|s| s.seq >= head) {
            return Ok(state);
        }
        let addr = self.activate(id, false)?;
        let state = addr.send(Refresh { seq: head }).await.map_err(mailbox)??;
        self.publish(state.clone());
        Ok(state)
    }

    /// Whether other processes write the store too.
    pub fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// Every agent's state, activating each.
    pub async fn list(&self) -> Result<Vec<Arc<AgentState>>, Error> {
        let mut out = Vec::new();
        for id in self.inner.store.streams()? {
            out.push(self.state(id).await?);
        }
        Ok(out)
    }

    /// The actor of agent `id`, started if it is not running. Unless `new`, the agent must have a
    /// log. The map's lock makes check-and-start atomic, so one agent never gets two writers.
    fn activate(&self, id: Uuid, new: bool) -> Result<Addr<AgentActor>, Error> {
        let mut agents = self
            .inner
            .agents
            .lock()
            .map_err(|_| Error::Unavailable("registry lock poisoned".into()))?;
        if let Some(addr) = agents.get(&id) {
            if addr.connected() {
                return Ok(addr.clone());
            }
        }
        if !new && self.inner.store.head(id)? == 0 {
            return Err(Rejection::not_found(format!("agent {id}")).into());
        }
        let i = self.inner.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.inner.arbiters.len();
        let (store, cipher) = (self.inner.store.clone(), self.inner.cipher.clone());
        let addr = Supervisor::start_in_arbiter(&self.inner.arbiters[i], move |_| {
            AgentActor::new(id, store, cipher)
        });
        agents.insert(id, addr.clone());
        Ok(addr)
    }
}

async fn send(addr: &Addr<AgentActor>, msg: Execute) -> Result<Outcome, Error> {
    addr.send(msg).await.map_err(mailbox)?
}

fn mailbox(e: MailboxError) -> Error {
    Error::Unavailable(format!("agent actor did not answer: {e}"))
}
