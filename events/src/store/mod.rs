//! Everything durable: the store traits and their implementations.
//!
//! - [`EventStore`] (here): the agents' event logs and their snapshots.
//! - [`runs`]: [`RunStore`], [`RunEventStore`] and [`ThreadStore`]: runs with their queue,
//!   idempotency keys, paused runs and push outbox; run events; threads.
//!
//! sled implements them all ([`SledStore`], [`SledRuns`]); each trait has one conformance suite
//! ([`conformance`]) that every implementation runs unchanged.
//!
//! A stream is one agent's log. Appends name the seq they expect the stream to be at, so two
//! writers racing on one stream cannot both win; they are atomic (all events of one command or
//! none) and the returned [`Commit`] resolves only once the events are durable.

mod fold;
pub mod pg;
pub mod runs;
mod sled_store;
mod verify;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use fold::{current_state, current_state_and_snapshot};
pub use pg::PgStore;
pub use runs::{
    Accepted, DuePush, RunEventStore, RunStore, RunStores, StoreFuture, ThreadStore,
    IDEMPOTENCY_WINDOW,
};
pub use sled_store::{SledRuns, SledStore};
pub use verify::{verify_all, verify_stream, verify_stream_online, VerifyReport};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::envelope::{Envelope, NewEvent};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The stream is not at the expected seq: someone else appended first.
    #[error("stream {stream} is at seq {actual}, not {expected}")]
    Conflict {
        stream: Uuid,
        expected: u64,
        actual: u64,
    },
    #[error("stored event {stream}#{seq} is unreadable: {reason}")]
    Corrupt {
        stream: Uuid,
        seq: u64,
        reason: String,
    },
    #[error("the data directory {0} is locked by a running server; stop it, or copy the directory and use the copy")]
    Locked(String),
    #[error("storage error: {0}")]
    Io(String),
    #[error("the store is shutting down")]
    Closed,
    /// The store cannot be reached now (a networked engine's server is down or restarting);
    /// the request may be retried.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// Appended events on their way to disk. The events are visible to reads at once; they are
/// durable (they survive a crash) when [`Commit::durable`] or [`Commit::wait`] returns `Ok`.
#[must_use = "an append is not durable until its Commit is awaited"]
pub struct Commit {
    envelopes: Vec<Envelope>,
    flushed: Option<oneshot::Receiver<Result<(), Error>>>,
}

impl Commit {
    /// A commit that is already durable (or a store without a separate flush step).
    pub fn durable_now(envelopes: Vec<Envelope>) -> Self {
        Commit {
            envelopes,
            flushed: None,
        }
    }

    pub fn pending(
        envelopes: Vec<Envelope>,
        flushed: oneshot::Receiver<Result<(), Error>>,
    ) -> Self {
        Commit {
            envelopes,
            flushed: Some(flushed),
        }
    }

    pub fn envelopes(&self) -> &[Envelope] {
        &self.envelopes
    }

    pub async fn durable(self) -> Result<Vec<Envelope>, Error> {
        if let Some(rx) = self.flushed {
            rx.await.map_err(|_| Error::Closed)??;
        }
        Ok(self.envelopes)
    }

    /// Blocks the calling thread; never call it on an async executor's thread.
    pub fn wait(self) -> Result<Vec<Envelope>, Error> {
        if let Some(rx) = self.flushed {
            rx.blocking_recv().map_err(|_| Error::Closed)??;
        }
        Ok(self.envelopes)
    }
}

pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if its last seq is `expected` (0: the stream must be new).
    /// All or nothing; on success the events carry seq `expected+1..`.
    fn append(&self, stream: Uuid, expected: u64, events: &[NewEvent]) -> Result<Commit, Error>;

    /// The stored bytes of events with `seq >= from`, oldest first, at most `limit` of them.
    fn read_raw(&self, stream: Uuid, from: u64, limit: usize)
        -> Result<Vec<(u64, Vec<u8>)>, Error>;

    /// The seq of the stream's last event; 0 for a stream that does not exist.
    fn head(&self, stream: Uuid) -> Result<u64, Error>;

    /// Every stream id, in id order.
    fn streams(&self) -> Result<Vec<Uuid>, Error>;

    /// Resolves once everything the reads made before this call could have returned is durable.
    /// The reads above return what the store holds, which may include appends whose [`Commit`]
    /// has not resolved yet (sled applies before it syncs, `docs/storage.md`); whoever shows what
    /// it read to a client awaits this first, so that a crash never takes back what a client saw.
    /// Stores whose reads see only durable writes resolve at once.
    fn settled(&self) -> StoreFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Decoded events with `seq >= from`, oldest first, at most `limit` of them.
    fn read(&self, stream: Uuid, from: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        self.read_raw(stream, from, limit)?
            .into_iter()
            .map(|(seq, bytes)| {
                Envelope::decode(&bytes).map_err(|e| Error::Corrupt {
                    stream,
                    seq,
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// The whole stream.
    fn read_all(&self, stream: Uuid) -> Result<Vec<Envelope>, Error> {
        self.read(stream, 1, usize::MAX)
    }

    /// Keeps a snapshot of a stream's folded state as of `seq`, so activation need not replay the
    /// whole log. A cache, not a record: it may be lost, and it is never flushed on its own.
    /// Stores without one keep nothing.
    fn save_snapshot(&self, _stream: Uuid, _seq: u64, _state: &[u8]) -> Result<(), Error> {
        Ok(())
    }

    /// The latest snapshot of a stream: its seq and bytes.
    fn load_snapshot(&self, _stream: Uuid) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Ok(None)
    }
}
