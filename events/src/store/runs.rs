//! The run stores: everything the runtime keeps besides the agents' event logs.
//!
//! - [`RunStore`]: runs, each agent's queue of accepted async runs, idempotency keys, paused runs
//!   and the push outbox.
//! - [`RunEventStore`]: the numbered progress events of each run.
//! - [`ThreadStore`]: the turns of each conversation thread.
//!
//! Every method returns a `'static` future, so that an actor can hand it to its context and a
//! networked engine can do its I/O inside it. **A write is durable when its future resolves
//! `Ok`** (committed and flushed: it survives `kill -9`), and visible to every reader from then on;
//! an engine may show it earlier, but never before it is durable: what a reader was shown survives
//! a crash (sled: its reads wait for the group commit, `docs/storage.md`). Each write is atomic:
//! all of it or none, also across a crash. The conformance suites ([`super::conformance`]) hold
//! every implementation to this.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::Error;
use crate::run::{A2aPushChange, RunError, RunEvent, StoredRun, ThreadOf, Turn};

/// What a store method resolves to: `'static` and `Send`, so it can be spawned anywhere.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'static>>;

/// How long an `Idempotency-Key` names the same request, whatever the run retention: runs that a
/// key still names are kept for the key's sake.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::hours(24);

/// How long a run that tried to take its thread and failed counts as waiting for it: the runs
/// that wait try again well within it, so one that stopped (cancelled, or its process died)
/// stops holding younger runs back after it.
pub const THREAD_WAIT: Duration = Duration::seconds(3);

/// The outcome of [`RunStore::accept`].
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Recorded: a new request.
    New,
    /// The caller used the same `Idempotency-Key` for the same body within the window: that
    /// request, as it stands now; nothing was written.
    Existing(Box<StoredRun>),
    /// The caller used the same key for a different body within the window: nothing was written.
    KeyReused(Box<StoredRun>),
}

impl Accepted {
    /// What an accept of `run` is when its key names `found`, fresh within the window: the
    /// same request if the bodies match, else a reused key. A run stored before bodies were
    /// fingerprinted counts as a repeat.
    pub fn repeat_of(found: StoredRun, run: &StoredRun) -> Accepted {
        let same = match (&found.fingerprint, &run.fingerprint) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if same {
            Accepted::Existing(Box::new(found))
        } else {
            Accepted::KeyReused(Box::new(found))
        }
    }
}

/// An entry of the push outbox: the delivery of run `rid`'s final state, due at `due`
/// (millisecond precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DuePush {
    pub due: DateTime<Utc>,
    pub rid: Uuid,
}

/// Runs and what hangs on them. Run ids are UUID v7 taken when the run is created (its
/// `created_at`), so a queue ordered by id is first in, first out, and a purge may stop at the
/// first id made after its cutoff.
pub trait RunStore: Send + Sync + 'static {
    /// Records a new request (`queued` and on its agent's queue when `enqueue`, else as it is,
    /// e.g. a keyed sync run `running`) with its idempotency key if it has one, scoped to
    /// (agent, `caller`, key). When the key already names a request within
    /// [`IDEMPOTENCY_WINDOW`], nothing is written and that request is returned. Two racing
    /// accepts with one key record one request.
    fn accept(&self, run: StoredRun, enqueue: bool) -> StoreFuture<Accepted>;

    /// A run by request id.
    fn get(&self, rid: Uuid) -> StoreFuture<Option<StoredRun>>;

    /// `agent`'s runs, newest first, created before run `before` when given (a page's last id),
    /// at most `limit`: what A2A's `ListTasks` pages through.
    fn list_runs(
        &self,
        agent: Uuid,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreFuture<Vec<StoredRun>>;

    /// The request that `caller`'s `key` names on `agent`, if it was accepted within
    /// [`IDEMPOTENCY_WINDOW`] of `at`: so a repeat can be answered without a free slot.
    fn find_by_key(
        &self,
        agent: Uuid,
        caller: Option<String>,
        key: String,
        at: DateTime<Utc>,
    ) -> StoreFuture<Option<StoredRun>>;

    /// Stores `run` as it is now (e.g. paused in `input_required` with its `pending`), whatever
    /// was stored before but its A2A push config (kept as [`RunStore::finish`] keeps it). For
    /// runs the caller owns, i.e. that no queue or claim can race for.
    fn put(&self, run: StoredRun) -> StoreFuture<()>;

    /// Stores a run's final state (or its pause), takes it off its agent's queue, lets go of its
    /// slot and, when `push_due` is set, schedules its push in the outbox: one atomic write.
    /// The A2A push config is the stored one, not `run`'s: one set or deleted meanwhile
    /// ([`RunStore::change_a2a_push`]) stands, and decides the push
    /// ([`StoredRun::with_stored_push`]). [`RunStore::put`] keeps it the same way.
    fn finish(&self, run: StoredRun, push_due: Option<DateTime<Utc>>) -> StoreFuture<()>;

    /// Applies `change` to run `rid`'s A2A push config, with the outbox change
    /// [`StoredRun::change_a2a_push`] says (a final run given a config is pushed now; a pending
    /// push of a config deleted is cancelled): one atomic write, whatever state the run is in
    /// and whichever process runs it; no write when nothing changes. Returns the run as stored
    /// now; `None` when there is no such run.
    fn change_a2a_push(&self, rid: Uuid, change: A2aPushChange) -> StoreFuture<Option<StoredRun>>;

    /// Stores the final state of a sync run that nothing durable refers to yet (no key, never
    /// queued, no push), so that a later read finds it. Unlike every other write it need not be
    /// durable when it resolves: its caller already has the answer, and a crash may lose the
    /// record (`docs/storage.md`). Engines may make it as durable as they like. Lets go of the
    /// run's slot.
    fn record(&self, run: StoredRun) -> StoreFuture<()>;

    /// Whether `max_concurrency` and the threads' turns are kept here, for every process sharing
    /// this store (a cluster), through the slot and thread methods below. When false (one
    /// process: sled) the runtime keeps them in memory, and those methods are only held to the
    /// conformance suite.
    fn slots_are_shared(&self) -> bool {
        false
    }

    /// Takes one of `agent`'s `limit` run slots for run `rid`, if fewer than `limit` are held
    /// (slots of processes no longer alive do not count): true when taken. Racing takes never
    /// hold more than `limit` between them. The slot is held until [`RunStore::release_slot`],
    /// or until the run is stored final or paused ([`RunStore::finish`], [`RunStore::record`]).
    fn take_slot(&self, agent: Uuid, rid: Uuid, limit: usize) -> StoreFuture<bool>;

    /// Lets go of run `rid`'s slot, if it holds one.
    fn release_slot(&self, agent: Uuid, rid: Uuid) -> StoreFuture<()>;

    /// [`RunStore::claim`] within `agent`'s `limit` slots: claims at most `max` runs and no more
    /// than the slots free, and each claimed run holds a slot, taken in the same atomic write.
    fn claim_in_slots(&self, agent: Uuid, max: usize, limit: usize) -> StoreFuture<Vec<StoredRun>>;

    /// Takes `agent`'s conversation thread `thread` (its scoped key) for run `rid` if no other
    /// run holds it (a hold of a process no longer alive counts as none) and no older run (a
    /// smaller id: accepted earlier) waits for it: true when `rid` holds it now. A take that
    /// fails leaves `rid` waiting, for [`THREAD_WAIT`] unless it tries again. Racing takes give
    /// it to one run. The hold lasts until [`RunStore::release_thread`].
    fn take_thread(&self, agent: Uuid, thread: String, rid: Uuid) -> StoreFuture<bool>;

    /// Lets go of `thread` if `rid` holds it, and of `rid`'s wait for it.
    fn release_thread(&self, agent: Uuid, thread: String, rid: Uuid) -> StoreFuture<()>;

    /// Takes up to `max` of `agent`'s oldest queued runs off its queue and marks them `running`
    /// (with `started_at`), atomically per run. Two workers claiming at once never get the same
    /// run.
    fn claim(&self, agent: Uuid, max: usize) -> StoreFuture<Vec<StoredRun>>;

    /// If `rid` is on `agent`'s queue: takes it off and stores it `cancelled` with `error`
    /// (scheduling its push as [`StoredRun::schedule_push`] says), atomically, and returns it.
    /// `None` when it was not queued (claimed, finished, or unknown).
    fn cancel_queued(
        &self,
        agent: Uuid,
        rid: Uuid,
        error: RunError,
    ) -> StoreFuture<Option<StoredRun>>;

    /// If `rid` of `agent` is paused (`input_required`): marks it `running` again (its `pending`
    /// cleared) and returns it. Two resumes racing get it once.
    fn resume(&self, agent: Uuid, rid: Uuid) -> StoreFuture<Option<StoredRun>>;

    /// How many runs wait on `agent`'s queue.
    fn queued(&self, agent: Uuid) -> StoreFuture<usize>;

    /// How many runs wait on every queue.
    fn queue_len(&self) -> StoreFuture<usize>;

    /// The agents with a non-empty queue, each once, in id order.
    fn agents_with_queue(&self) -> StoreFuture<Vec<Uuid>>;

    /// Runs in state `running`: after a restart, those a previous process left behind.
    fn running(&self) -> StoreFuture<Vec<StoredRun>>;

    /// Outbox entries due by `now`, earliest first, at most `limit`.
    fn due_pushes(&self, now: DateTime<Utc>, limit: usize) -> StoreFuture<Vec<DuePush>>;

    /// When the earliest outbox entry is due, if there is one.
    fn next_push_due(&self) -> StoreFuture<Option<DateTime<Utc>>>;

    /// Replaces outbox entry `entry` by one due at `next` (or by none) and stores `run` with its
    /// new push state: one atomic write. When the stored A2A push config is no longer `run`'s
    /// (set or deleted during the attempt), the attempt is moot: only `entry` goes, and the
    /// stored run (with the delivery its new config scheduled, if any) stays as it is.
    fn reschedule_push(
        &self,
        entry: DuePush,
        run: StoredRun,
        next: Option<DateTime<Utc>>,
    ) -> StoreFuture<()>;

    /// Deletes final runs that finished before `cutoff` (with their run events), unless a push is
    /// still pending or an idempotency key younger than [`IDEMPOTENCY_WINDOW`] names them, and
    /// idempotency keys older than the window. Returns how many runs went.
    fn purge(&self, cutoff: DateTime<Utc>) -> StoreFuture<usize>;
}

/// The progress events of runs, numbered from 1 per run.
pub trait RunEventStore: Send + Sync + 'static {
    /// Appends one event of `kind` to run `rid` and returns it with its seq (the run's last seq
    /// plus one). Appends to one run are numbered in the order their futures were created.
    /// `thread`: the run's thread, if it has one; deleting that thread erases the event's data
    /// (a reader then gets `{"deleted": true}` in its place).
    fn append_run_event(
        &self,
        rid: Uuid,
        thread: Option<ThreadOf>,
        kind: String,
        data: Value,
    ) -> StoreFuture<RunEvent>;

    /// Appends `events` to run `rid` in order, numbered after its last seq, and returns them:
    /// what a run's event writer does with the events that queued up meanwhile. An engine
    /// should make it one write (sled: one logged transaction); the default appends them one by
    /// one (created in order, so numbered in order).
    fn append_run_events(
        &self,
        rid: Uuid,
        thread: Option<ThreadOf>,
        events: Vec<(String, Value)>,
    ) -> StoreFuture<Vec<RunEvent>> {
        let appends: Vec<_> = events
            .into_iter()
            .map(|(kind, data)| self.append_run_event(rid, thread.clone(), kind, data))
            .collect();
        Box::pin(async move {
            let mut out = Vec::with_capacity(appends.len());
            for append in appends {
                out.push(append.await?);
            }
            Ok(out)
        })
    }

    /// [`RunEventStore::append_run_events`] for a run whose own record is kept the way
    /// [`RunStore::record`] keeps it (a sync call nobody can find again): numbered and readable
    /// at once, durable when the engine gets to it (sled: at its next checkpoint), so that a
    /// run's events cost no more than the run. The default appends them.
    fn record_run_events(
        &self,
        rid: Uuid,
        thread: Option<ThreadOf>,
        events: Vec<(String, Value)>,
    ) -> StoreFuture<Vec<RunEvent>> {
        self.append_run_events(rid, thread, events)
    }

    /// Events of `rid` with seq > `after`, oldest first, at most `limit`.
    fn run_events(&self, rid: Uuid, after: u64, limit: usize) -> StoreFuture<Vec<RunEvent>>;
}

/// The three run stores as one, as the runtime holds them: one engine implements them all.
pub trait RunStores: RunStore + RunEventStore + ThreadStore {}
impl<T: RunStore + RunEventStore + ThreadStore> RunStores for T {}

/// Conversation threads: the turns of each (agent, thread id).
pub trait ThreadStore: Send + Sync + 'static {
    /// Appends a turn to the thread (created by its first turn).
    fn append_turn(&self, agent: Uuid, thread: String, turn: Turn) -> StoreFuture<()>;

    /// The thread's last `last` turns, oldest first; empty for a thread that does not exist.
    fn turns(&self, agent: Uuid, thread: String, last: usize) -> StoreFuture<Vec<Turn>>;

    /// Deletes the thread and every turn of it from storage; false if it did not exist.
    fn delete_thread(&self, agent: Uuid, thread: String) -> StoreFuture<bool>;
}
