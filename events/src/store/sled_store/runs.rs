//! The run stores over sled: [`SledRuns`] implements [`RunStore`], [`RunEventStore`] and
//! [`ThreadStore`] in trees of their own beside the event log (not in the agents' streams: runs are
//! many, short-lived and purged).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `runs` | request id (16) | `StoredRun` JSON |
//! | `run_queue` | agent id (16) ++ request id (16) | empty: request ids are UUID v7, so one agent's queue is FIFO |
//! | `idempotency` | agent id (16) ++ caller ++ 0x00 ++ key | request id (16) ++ accepted at, unix ms (8, BE) |
//! | `push_outbox` | due at, unix ms (8, BE) ++ request id (16) | empty: due deliveries are a prefix scan |
//! | `run_events` | request id (16) ++ seq (8, BE) | `{type, data, at}` JSON |
//! | `thread_turns` | agent id (16) ++ thread id length (1) ++ thread id ++ seq (8, BE) | `Turn` JSON |
//!
//! Every write but [`RunStore::record`] is one logged transaction ([`SledStore::transact`]): it is
//! applied to sled (visible) when the method returns, and its future resolves once the group
//! commit has made it durable. Logged transactions run one at a time under the store's writer
//! lock, so a transaction that scans a tree directly (a claim, a purge, numbering an event) sees
//! every earlier transaction whole and none of a later one.
//!
//! A read a client can observe (a run, a page of runs, a run found by its key, run events, a
//! thread's turns, the push outbox the pusher delivers from) returns what it read only once all
//! of it is durable ([`SledStore::after_read`]): a crash never takes back what a client saw. The
//! counts (`queued`, `queue_len`, `agents_with_queue`) and `running` (read at start, when all is
//! durable) only steer work, whose results go through those reads or through writes, and return
//! at once.

use std::collections::{HashMap, HashSet};
use std::future::ready;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sled::transaction::ConflictableTransactionError;
use sled::Tree;
use uuid::Uuid;

use super::thread_keys::{self, ThreadKeys};
use super::{storage, SledStore};
use crate::run::{
    A2aPushChange, PushStatus, RunError, RunEvent, RunStatus, StoredPush, StoredRun, ThreadOf, Turn,
};
use crate::store::runs::{
    Accepted, DuePush, RunEventStore, RunStore, StoreFuture, ThreadStore, IDEMPOTENCY_WINDOW,
    THREAD_WAIT,
};
use crate::store::Error;

type Result<T> = std::result::Result<T, Error>;

/// Runs (or keys) removed per logged transaction by a purge: few enough that the writer lock is
/// held for well under a millisecond.
const PURGE_BATCH: usize = 128;

/// Runs, queues, idempotency keys, the push outbox, run events and threads in one sled database.
pub struct SledRuns {
    store: Arc<SledStore>,
    runs: Tree,
    queue: Tree,
    idempotency: Tree,
    outbox: Tree,
    run_events: Tree,
    turns: Tree,
    /// What threads say is sealed under these, so that deleting a thread destroys it.
    keys: Arc<ThreadKeys>,
    /// Run slots by agent. One process is the whole of a sled Hangar, so its runtime counts
    /// slots itself and never calls the slot methods; they keep these in memory for the
    /// conformance suite (nothing about a slot outlives the process).
    slots: Mutex<HashMap<Uuid, HashSet<Uuid>>>,
    /// The run holding each (agent, thread) and those waiting for it, the same way.
    threads: Mutex<HashMap<(Uuid, String), ThreadLane>>,
    /// The next event seq of each run whose events are being written ([`SledRuns::reserve_seqs`]).
    event_seqs: Mutex<HashMap<Uuid, u64>>,
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Io(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Io(format!("unencodable record: {e}")))
}

fn pair(a: &Uuid, b: &[u8]) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.extend_from_slice(b);
    k
}

fn idempotency_key(run: &StoredRun) -> Option<Vec<u8>> {
    let key = run.idempotency_key.as_ref()?;
    Some(scoped_key(run.run.agent_id, run.caller.as_deref(), key))
}

fn scoped_key(agent: Uuid, caller: Option<&str>, key: &str) -> Vec<u8> {
    let mut k = agent.as_bytes().to_vec();
    k.extend_from_slice(caller.unwrap_or("").as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn outbox_key(due: DateTime<Utc>, rid: Uuid) -> Vec<u8> {
    let mut k = (due.timestamp_millis().max(0) as u64)
        .to_be_bytes()
        .to_vec();
    k.extend_from_slice(rid.as_bytes());
    k
}

fn decode_outbox_key(key: &[u8]) -> Result<DuePush> {
    let ms: [u8; 8] = key
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| io("a push outbox key is too short"))?;
    let rid = Uuid::from_slice(&key[8..]).map_err(io)?;
    let due = DateTime::from_timestamp_millis(u64::from_be_bytes(ms) as i64)
        .ok_or_else(|| io("a push outbox key holds no time"))?;
    Ok(DuePush { due, rid })
}

/// The accept time (unix ms) of an `idempotency` value, and the request it names.
fn decode_idempotency(value: &[u8]) -> Option<(Uuid, i64)> {
    let rid = Uuid::from_slice(value.get(..16)?).ok()?;
    let ms = i64::from_be_bytes(value.get(16..24)?.try_into().ok()?);
    Some((rid, ms))
}

fn thread_prefix(agent: Uuid, thread: &str) -> Vec<u8> {
    let mut k = agent.as_bytes().to_vec();
    // Thread ids are at most 128 bytes (API.md); the length keeps "a" from prefixing "ab".
    k.push(thread.len().min(255) as u8);
    k.extend_from_slice(thread.as_bytes());
    k
}

/// The seq that follows the last key under `prefix` (keys end with a big-endian seq).
fn next_seq(tree: &Tree, prefix: &[u8]) -> Result<u64> {
    let last = tree.scan_prefix(prefix).keys().next_back().transpose();
    let Some(key) = last.map_err(storage)? else {
        return Ok(1);
    };
    let seq: [u8; 8] = key[key.len() - 8..].try_into().map_err(io)?;
    Ok(u64::from_be_bytes(seq) + 1)
}

#[derive(Serialize, Deserialize)]
struct StoredRunEvent {
    #[serde(rename = "type")]
    kind: String,
    data: Value,
    at: DateTime<Utc>,
}

/// Why a logged transaction gave up.
type Abort = ConflictableTransactionError<Error>;

fn abort(e: Error) -> Abort {
    ConflictableTransactionError::Abort(e)
}

/// Marks a run record whose content is sealed under its thread's key ([`thread_keys`]).
const SEALED_RUN: u8 = 1;

/// The part of a thread's run that deleting the thread destroys.
#[derive(Serialize, Deserialize)]
struct RunContent {
    input: Value,
    output: Option<Value>,
    pending: Option<Value>,
    checkpoint: Option<Value>,
}

impl SledRuns {
    /// A run as stored: JSON, or for a run of a thread, [`SEALED_RUN`], the length (u32, BE)
    /// of the JSON of the run without its content, that JSON, then its content sealed under the
    /// thread's key and bound to the request id.
    fn encode_run(&self, run: &StoredRun) -> Result<Vec<u8>> {
        let Some(thread) = run.thread_key() else {
            return encode(run);
        };
        let key = self.keys.get_or_create(run.run.agent_id, &thread)?;
        let mut bare = run.clone();
        let content = RunContent {
            input: std::mem::take(&mut bare.input),
            output: bare.run.output.take(),
            pending: bare.run.pending.take(),
            checkpoint: bare.checkpoint.take(),
        };
        let bare = encode(&bare)?;
        let sealed = thread_keys::seal(&key, run.run.request_id.as_bytes(), &encode(&content)?)?;
        let len = u32::try_from(bare.len()).map_err(io)?;
        let mut out = Vec::with_capacity(5 + bare.len() + sealed.len());
        out.push(SEALED_RUN);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bare);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// A run as [`SledRuns::encode_run`] stored it. A run of a deleted thread reads back with
    /// its content gone: input `{"deleted": true}`, no output.
    fn decode_run(&self, bytes: &[u8]) -> Result<StoredRun> {
        let unreadable = |e: String| Error::Io(format!("unreadable run: {e}"));
        if bytes.first() != Some(&SEALED_RUN) {
            return serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()));
        }
        let len = bytes
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| unreadable("truncated".into()))? as usize;
        let bare = bytes
            .get(5..5 + len)
            .ok_or_else(|| unreadable("truncated".into()))?;
        let sealed = &bytes[5 + len..];
        let mut run: StoredRun =
            serde_json::from_slice(bare).map_err(|e| unreadable(e.to_string()))?;
        let thread = run.thread_key().unwrap_or_default();
        let content = self
            .keys
            .get(run.run.agent_id, &thread)?
            .and_then(|key| thread_keys::open(&key, run.run.request_id.as_bytes(), sealed))
            .and_then(|plain| serde_json::from_slice::<RunContent>(&plain).ok());
        match content {
            Some(c) => {
                run.input = c.input;
                run.run.output = c.output;
                run.run.pending = c.pending;
                run.checkpoint = c.checkpoint;
            }
            None => run.input = serde_json::json!({"deleted": true}),
        }
        Ok(run)
    }

    pub fn open(store: Arc<SledStore>) -> Result<Self> {
        let db = &store.db;
        Ok(SledRuns {
            runs: db.open_tree("runs").map_err(storage)?,
            queue: db.open_tree("run_queue").map_err(storage)?,
            idempotency: db.open_tree("idempotency").map_err(storage)?,
            outbox: db.open_tree("push_outbox").map_err(storage)?,
            run_events: db.open_tree("run_events").map_err(storage)?,
            turns: db.open_tree("thread_turns").map_err(storage)?,
            keys: store.thread_keys.clone(),
            slots: Mutex::default(),
            threads: Mutex::default(),
            event_seqs: Mutex::default(),
            store,
        })
    }

    /// Runs `f` as one logged transaction over `trees`.
    fn transact<R>(
        &self,
        trees: &[&Tree],
        f: impl Fn(&[super::LoggedTree<'_>]) -> std::result::Result<R, Abort>,
    ) -> Result<R> {
        use sled::transaction::TransactionError;
        match self.store.transact(trees, f) {
            Ok(r) => Ok(r),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(storage(e)),
        }
    }

    /// `result` once everything written so far is durable.
    fn durable<T: Send + 'static>(&self, result: Result<T>) -> StoreFuture<T> {
        match result {
            Err(e) => Box::pin(ready(Err(e))),
            Ok(value) => {
                let flushed = self.store.flushed();
                Box::pin(async move {
                    flushed.await?;
                    Ok(value)
                })
            }
        }
    }

    fn accept_now(&self, run: &StoredRun, enqueue: bool) -> Result<Accepted> {
        let agent = run.run.agent_id;
        let rid = run.run.request_id;
        let now_ms = run.run.created_at.timestamp_millis();
        let idem = idempotency_key(run);
        let value = self.encode_run(run)?;
        let trees = [&self.runs, &self.queue, &self.idempotency];
        self.transact(&trees, |t| {
            let (runs, queue, keys) = (&t[0], &t[1], &t[2]);
            if let Some(key) = &idem {
                let found = keys.get(key)?.and_then(|v| decode_idempotency(&v));
                if let Some((existing, at_ms)) = found {
                    let fresh = now_ms - at_ms < IDEMPOTENCY_WINDOW.num_milliseconds();
                    if let (true, Some(bytes)) = (fresh, runs.get(existing.as_bytes())?) {
                        let found = self.decode_run(&bytes).map_err(abort)?;
                        return Ok(Accepted::repeat_of(found, run));
                    }
                }
                let mut v = rid.as_bytes().to_vec();
                v.extend_from_slice(&now_ms.to_be_bytes());
                keys.insert(key.as_slice(), v)?;
            }
            runs.insert(rid.as_bytes(), value.as_slice())?;
            if enqueue {
                queue.insert(pair(&agent, rid.as_bytes()), [])?;
            }
            Ok(Accepted::New)
        })
    }

    fn finish_now(&self, run: &StoredRun, push_due: Option<DateTime<Utc>>) -> Result<()> {
        let rid = run.run.request_id;
        let value = self.encode_run(run)?;
        let qkey = pair(&run.run.agent_id, rid.as_bytes());
        self.transact(&[&self.runs, &self.queue, &self.outbox], |t| {
            // The stored A2A push config stands over the one the runtime held (`RunStore::finish`).
            let stored = t[0].get(rid.as_bytes())?;
            let merged = match &stored {
                Some(bytes) => {
                    let stored = stored_push(bytes).map_err(abort)?;
                    run.with_stored_push(&stored, push_due)
                }
                None => None,
            };
            let push_due = match merged {
                Some((merged, due)) => {
                    t[0].insert(rid.as_bytes(), self.encode_run(&merged).map_err(abort)?)?;
                    due
                }
                None => {
                    t[0].insert(rid.as_bytes(), value.as_slice())?;
                    push_due
                }
            };
            t[1].remove(qkey.as_slice())?;
            if let Some(due) = push_due {
                t[2].insert(outbox_key(due, rid), [])?;
            }
            Ok(())
        })
    }

    fn change_a2a_push_now(&self, rid: Uuid, change: &A2aPushChange) -> Result<Option<StoredRun>> {
        self.transact(&[&self.runs, &self.outbox], |t| {
            let Some(bytes) = t[0].get(rid.as_bytes())? else {
                return Ok(None);
            };
            let mut run = self.decode_run(&bytes).map_err(abort)?;
            let Some(change) = run.change_a2a_push(change.clone()) else {
                return Ok(Some(run));
            };
            if let Some(due) = change.remove {
                t[1].remove(outbox_key(due, rid))?;
            }
            if let Some(due) = change.add {
                t[1].insert(outbox_key(due, rid), [])?;
            }
            t[0].insert(rid.as_bytes(), self.encode_run(&run).map_err(abort)?)?;
            Ok(Some(run))
        })
    }

    fn claim_now(&self, agent: Uuid, max: usize) -> Result<Vec<StoredRun>> {
        self.transact(&[&self.runs, &self.queue], |t| {
            let mut claimed = Vec::new();
            // Scanned outside the transaction's buffer: it holds the writer lock, so no other
            // logged write can add or take queue entries meanwhile.
            for key in self.queue.scan_prefix(agent.as_bytes()).keys() {
                if claimed.len() >= max {
                    break;
                }
                let key = key.map_err(|e| abort(storage(e)))?;
                t[1].remove(&key)?;
                let rid = Uuid::from_slice(&key[16..]).map_err(|e| abort(io(e)))?;
                let Some(bytes) = t[0].get(rid.as_bytes())? else {
                    continue; // a dangling queue entry: dropped
                };
                let Ok(mut run) = self.decode_run(&bytes) else {
                    tracing::error!(request_id = %rid, "an unreadable queued run was dropped");
                    continue;
                };
                if run.run.status != RunStatus::Queued {
                    continue;
                }
                run.run.status = RunStatus::Running;
                run.run.started_at = Some(Utc::now());
                t[0].insert(rid.as_bytes(), self.encode_run(&run).map_err(abort)?)?;
                claimed.push(run);
            }
            Ok(claimed)
        })
    }

    fn cancel_queued_now(
        &self,
        agent: Uuid,
        rid: Uuid,
        error: &RunError,
    ) -> Result<Option<StoredRun>> {
        let qkey = pair(&agent, rid.as_bytes());
        self.transact(&[&self.runs, &self.queue, &self.outbox], |t| {
            if t[1].remove(qkey.as_slice())?.is_none() {
                return Ok(None);
            }
            let Some(bytes) = t[0].get(rid.as_bytes())? else {
                return Ok(None);
            };
            let mut run = self.decode_run(&bytes).map_err(abort)?;
            run.finish(RunStatus::Cancelled, None, Some(error.clone()));
            if let Some(due) = run.schedule_push() {
                t[2].insert(outbox_key(due, rid), [])?;
            }
            t[0].insert(rid.as_bytes(), self.encode_run(&run).map_err(abort)?)?;
            Ok(Some(run))
        })
    }

    fn resume_now(&self, agent: Uuid, rid: Uuid) -> Result<Option<StoredRun>> {
        self.transact(&[&self.runs], |t| {
            let Some(bytes) = t[0].get(rid.as_bytes())? else {
                return Ok(None);
            };
            let mut run = self.decode_run(&bytes).map_err(abort)?;
            if run.run.agent_id != agent || run.run.status != RunStatus::InputRequired {
                return Ok(None);
            }
            run.run.status = RunStatus::Running;
            run.run.pending = None;
            t[0].insert(rid.as_bytes(), self.encode_run(&run).map_err(abort)?)?;
            Ok(Some(run))
        })
    }

    fn running_now(&self) -> Result<Vec<StoredRun>> {
        let mut out = Vec::new();
        for item in self.runs.iter().values() {
            let run = self.decode_run(&item.map_err(storage)?)?;
            if run.run.status == RunStatus::Running {
                out.push(run);
            }
        }
        Ok(out)
    }

    fn purge_now(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let key_cutoff = Utc::now() - IDEMPOTENCY_WINDOW;
        let mut purged = 0;
        let mut batch: Vec<sled::IVec> = Vec::with_capacity(PURGE_BATCH);
        // Request ids are UUID v7, so runs are keyed in creation order, and one created after the
        // cutoff cannot have finished before it: the scan stops there instead of decoding every
        // run kept (a soak at c=32 outran a purge that read them all).
        let mut created_before = [0u8; 16];
        let ms = (cutoff.timestamp_millis().max(0) as u64 + 1).to_be_bytes();
        created_before[..6].copy_from_slice(&ms[2..]);
        for item in self.runs.range(..created_before) {
            let (key, bytes) = item.map_err(storage)?;
            let Ok(run) = self.decode_run(&bytes) else {
                continue;
            };
            let done_before = run.run.finished_at.is_some_and(|f| f < cutoff);
            let push_done = run
                .run
                .push
                .as_ref()
                .is_none_or(|p| p.status != PushStatus::Pending);
            let key_holds_it = run.idempotency_key.is_some() && run.run.created_at > key_cutoff;
            if run.run.status.is_final() && done_before && push_done && !key_holds_it {
                batch.push(key);
                if batch.len() == PURGE_BATCH {
                    purged += self.remove_runs(&mut batch)?;
                }
            }
        }
        purged += self.remove_runs(&mut batch)?;
        let key_cutoff_ms = key_cutoff.timestamp_millis();
        for item in self.idempotency.iter() {
            let (key, v) = item.map_err(storage)?;
            if decode_idempotency(&v).is_some_and(|(_, ms)| ms < key_cutoff_ms) {
                batch.push(key);
                if batch.len() == PURGE_BATCH {
                    self.remove_keys(&self.idempotency, &mut batch)?;
                }
            }
        }
        self.remove_keys(&self.idempotency, &mut batch)?;
        Ok(purged)
    }

    /// Removes the runs `rids` with their run events in one logged transaction, and empties it.
    /// Batched: a transaction per run cost the purge more than the load it had to keep up with.
    fn remove_runs(&self, rids: &mut Vec<sled::IVec>) -> Result<usize> {
        let n = rids.len();
        if n > 0 {
            self.transact(&[&self.runs, &self.run_events], |t| {
                for rid in rids.iter() {
                    t[0].remove(rid)?;
                    for event in self.run_events.scan_prefix(rid).keys() {
                        t[1].remove(event.map_err(|e| abort(storage(e)))?)?;
                    }
                }
                Ok(())
            })?;
            rids.clear();
        }
        Ok(n)
    }

    /// Removes `keys` from `tree` in one logged transaction, and empties it.
    fn remove_keys(&self, tree: &Tree, keys: &mut Vec<sled::IVec>) -> Result<()> {
        if !keys.is_empty() {
            self.transact(&[tree], |t| {
                for key in keys.iter() {
                    t[0].remove(key)?;
                }
                Ok(())
            })?;
            keys.clear();
        }
        Ok(())
    }
}

/// The A2A push config and push state of a run record as [`SledRuns::encode_run`] stored it,
/// read from its JSON alone (never from sealed content, and without decoding the rest).
fn stored_push(bytes: &[u8]) -> Result<StoredPush> {
    let unreadable = |e: String| Error::Io(format!("unreadable run: {e}"));
    let json = if bytes.first() == Some(&SEALED_RUN) {
        let len = bytes
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| unreadable("truncated".into()))? as usize;
        bytes
            .get(5..5 + len)
            .ok_or_else(|| unreadable("truncated".into()))?
    } else {
        bytes
    };
    serde_json::from_slice(json).map_err(|e| unreadable(e.to_string()))
}

fn now<T: Send + 'static>(result: Result<T>) -> StoreFuture<T> {
    Box::pin(ready(result))
}

/// Who holds a thread, and who waits for it (by request id, so oldest first) since when.
#[derive(Default)]
struct ThreadLane {
    holder: Option<Uuid>,
    waiting: std::collections::BTreeMap<Uuid, DateTime<Utc>>,
}

impl SledRuns {
    fn with_slots<T>(
        &self,
        f: impl FnOnce(&mut HashMap<Uuid, HashSet<Uuid>>) -> Result<T>,
    ) -> Result<T> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| Error::Io("the run slots' lock was poisoned".into()))?;
        f(&mut slots)
    }

    fn free_slot(&self, agent: Uuid, rid: Uuid) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(held) = slots.get_mut(&agent) {
                held.remove(&rid);
                if held.is_empty() {
                    slots.remove(&agent);
                }
            }
        }
    }
}

impl RunStore for SledRuns {
    fn accept(&self, run: StoredRun, enqueue: bool) -> StoreFuture<Accepted> {
        // Also for a repeat: the request it found may have been accepted a moment ago by a call
        // whose flush is still on its way.
        self.durable(self.accept_now(&run, enqueue))
    }

    fn get(&self, rid: Uuid) -> StoreFuture<Option<StoredRun>> {
        self.store.after_read(match self.runs.get(rid.as_bytes()) {
            Ok(Some(bytes)) => self.decode_run(&bytes).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(storage(e)),
        })
    }

    fn list_runs(
        &self,
        agent: Uuid,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreFuture<Vec<StoredRun>> {
        // Runs are keyed by request id, UUID v7 in creation order: newest first is a reverse
        // scan. Other agents' runs are skipped, so a page costs the runs made in its span.
        let end = before.map(|rid| rid.as_bytes().to_vec());
        let range = match &end {
            Some(end) => self.runs.range(..end.as_slice()),
            None => self.runs.range::<&[u8], _>(..),
        };
        let mut found = Vec::new();
        for item in range.rev() {
            if found.len() >= limit {
                break;
            }
            let bytes = match item {
                Ok((_, bytes)) => bytes,
                Err(e) => return now(Err(storage(e))),
            };
            match self.decode_run(&bytes) {
                Ok(run) if run.run.agent_id == agent => found.push(run),
                Ok(_) => {}
                Err(e) => return now(Err(e)),
            }
        }
        self.store.after_read(Ok(found))
    }

    fn find_by_key(
        &self,
        agent: Uuid,
        caller: Option<String>,
        key: String,
        at: DateTime<Utc>,
    ) -> StoreFuture<Option<StoredRun>> {
        let key = scoped_key(agent, caller.as_deref(), &key);
        let found = match self.idempotency.get(key) {
            Ok(found) => found.and_then(|v| decode_idempotency(&v)),
            Err(e) => return now(Err(storage(e))),
        };
        match found {
            // `get` waits for what both reads saw: the key and the run.
            Some((rid, ms))
                if at.timestamp_millis() - ms < IDEMPOTENCY_WINDOW.num_milliseconds() =>
            {
                self.get(rid)
            }
            _ => now(Ok(None)),
        }
    }

    fn put(&self, run: StoredRun) -> StoreFuture<()> {
        let rid = run.run.request_id;
        let written = self.encode_run(&run).and_then(|value| {
            self.transact(&[&self.runs], |t| {
                let stored = match t[0].get(rid.as_bytes())? {
                    Some(bytes) => Some(stored_push(&bytes).map_err(abort)?),
                    None => None,
                };
                match stored.filter(|s| s.a2a_push != run.a2a_push) {
                    Some(stored) => {
                        let mut kept = run.clone();
                        kept.a2a_push = stored.a2a_push;
                        t[0].insert(rid.as_bytes(), self.encode_run(&kept).map_err(abort)?)?;
                    }
                    None => {
                        t[0].insert(rid.as_bytes(), value.as_slice())?;
                    }
                }
                Ok(())
            })
        });
        self.durable(written)
    }

    fn finish(&self, run: StoredRun, push_due: Option<DateTime<Utc>>) -> StoreFuture<()> {
        self.free_slot(run.run.agent_id, run.run.request_id);
        self.durable(self.finish_now(&run, push_due))
    }

    fn change_a2a_push(&self, rid: Uuid, change: A2aPushChange) -> StoreFuture<Option<StoredRun>> {
        self.durable(self.change_a2a_push_now(rid, &change))
    }

    fn record(&self, run: StoredRun) -> StoreFuture<()> {
        self.free_slot(run.run.agent_id, run.run.request_id);
        // A plain insert, outside the write-ahead log: sled makes it durable at the next
        // checkpoint. A profile of sync calls at c=32 showed logged writes as the largest cost
        // after the HTTP stack, for a record its caller does not wait for.
        now(self.encode_run(&run).and_then(|value| {
            self.runs
                .insert(run.run.request_id.as_bytes(), value)
                .map(drop)
                .map_err(storage)
        }))
    }

    fn claim(&self, agent: Uuid, max: usize) -> StoreFuture<Vec<StoredRun>> {
        match self.claim_now(agent, max) {
            Ok(claimed) if claimed.is_empty() => now(Ok(claimed)),
            result => self.durable(result),
        }
    }

    fn take_slot(&self, agent: Uuid, rid: Uuid, limit: usize) -> StoreFuture<bool> {
        now(self.with_slots(|slots| {
            let held = slots.entry(agent).or_default();
            Ok(held.contains(&rid) || (held.len() < limit && held.insert(rid)))
        }))
    }

    fn release_slot(&self, agent: Uuid, rid: Uuid) -> StoreFuture<()> {
        self.free_slot(agent, rid);
        now(Ok(()))
    }

    fn take_thread(&self, agent: Uuid, thread: String, rid: Uuid) -> StoreFuture<bool> {
        let Ok(mut threads) = self.threads.lock() else {
            return now(Err(Error::Io("the thread holds' lock was poisoned".into())));
        };
        let lane = threads.entry((agent, thread)).or_default();
        if lane.holder == Some(rid) {
            return now(Ok(true));
        }
        let at = Utc::now();
        lane.waiting.retain(|_, seen| at - *seen < THREAD_WAIT);
        let older_waits = lane.waiting.range(..rid).next().is_some();
        if lane.holder.is_none() && !older_waits {
            lane.holder = Some(rid);
            lane.waiting.remove(&rid);
            return now(Ok(true));
        }
        lane.waiting.insert(rid, at);
        now(Ok(false))
    }

    fn release_thread(&self, agent: Uuid, thread: String, rid: Uuid) -> StoreFuture<()> {
        if let Ok(mut threads) = self.threads.lock() {
            let key = (agent, thread);
            if let Some(lane) = threads.get_mut(&key) {
                if lane.holder == Some(rid) {
                    lane.holder = None;
                }
                lane.waiting.remove(&rid);
                if lane.holder.is_none() && lane.waiting.is_empty() {
                    threads.remove(&key);
                }
            }
        }
        now(Ok(()))
    }

    fn claim_in_slots(&self, agent: Uuid, max: usize, limit: usize) -> StoreFuture<Vec<StoredRun>> {
        // Under the slots' lock: a racing take or claim waits for this one's count.
        let claimed = self.with_slots(|slots| {
            let held = slots.entry(agent).or_default();
            let claimed = self.claim_now(agent, max.min(limit.saturating_sub(held.len())))?;
            held.extend(claimed.iter().map(|run| run.run.request_id));
            Ok(claimed)
        });
        match claimed {
            Ok(claimed) if claimed.is_empty() => now(Ok(claimed)),
            result => self.durable(result),
        }
    }

    fn cancel_queued(
        &self,
        agent: Uuid,
        rid: Uuid,
        error: RunError,
    ) -> StoreFuture<Option<StoredRun>> {
        self.durable(self.cancel_queued_now(agent, rid, &error))
    }

    fn resume(&self, agent: Uuid, rid: Uuid) -> StoreFuture<Option<StoredRun>> {
        self.durable(self.resume_now(agent, rid))
    }

    fn queued(&self, agent: Uuid) -> StoreFuture<usize> {
        now(Ok(self.queue.scan_prefix(agent.as_bytes()).count()))
    }

    fn queue_len(&self) -> StoreFuture<usize> {
        now(Ok(self.queue.len()))
    }

    fn agents_with_queue(&self) -> StoreFuture<Vec<Uuid>> {
        let mut out: Vec<Uuid> = Vec::new();
        for item in self.queue.iter().keys() {
            let agent = item
                .map_err(storage)
                .and_then(|key| Uuid::from_slice(&key[..16]).map_err(io));
            match agent {
                Ok(agent) if out.last() != Some(&agent) => out.push(agent),
                Ok(_) => {}
                Err(e) => return now(Err(e)),
            }
        }
        now(Ok(out))
    }

    fn running(&self) -> StoreFuture<Vec<StoredRun>> {
        now(self.running_now())
    }

    fn due_pushes(&self, at: DateTime<Utc>, limit: usize) -> StoreFuture<Vec<DuePush>> {
        let end = outbox_key(at, Uuid::max());
        self.store.after_read(
            self.outbox
                .range(..=end)
                .keys()
                .take(limit)
                .map(|key| decode_outbox_key(&key.map_err(storage)?))
                .collect(),
        )
    }

    fn next_push_due(&self) -> StoreFuture<Option<DateTime<Utc>>> {
        now(match self.outbox.first() {
            Ok(Some((key, _))) => decode_outbox_key(&key).map(|e| Some(e.due)),
            Ok(None) => Ok(None),
            Err(e) => Err(storage(e)),
        })
    }

    fn reschedule_push(
        &self,
        entry: DuePush,
        run: StoredRun,
        next: Option<DateTime<Utc>>,
    ) -> StoreFuture<()> {
        let rid = run.run.request_id;
        let key = outbox_key(entry.due, entry.rid);
        let next_key = next.map(|due| outbox_key(due, rid));
        let written = self.encode_run(&run).and_then(|value| {
            self.transact(&[&self.runs, &self.outbox], |t| {
                let stored = match t[0].get(rid.as_bytes())? {
                    Some(bytes) => Some(stored_push(&bytes).map_err(abort)?),
                    None => None,
                };
                if let Some(stored) = stored.filter(|s| s.a2a_push != run.a2a_push) {
                    // The config changed during the attempt: it was for a config gone. The
                    // entry goes, unless it is (to the millisecond) the new config's own.
                    if !stored.is_due_at(entry.due) {
                        t[1].remove(key.as_slice())?;
                    }
                    return Ok(());
                }
                t[0].insert(rid.as_bytes(), value.as_slice())?;
                t[1].remove(key.as_slice())?;
                if let Some(k) = &next_key {
                    t[1].insert(k.as_slice(), [])?;
                }
                Ok(())
            })
        });
        self.durable(written)
    }

    fn purge(&self, cutoff: DateTime<Utc>) -> StoreFuture<usize> {
        self.durable(self.purge_now(cutoff))
    }
}

impl SledRuns {
    /// A run event as stored: JSON, or for a run of a thread, [`SEALED_RUN`], the length (u32,
    /// BE) of a JSON header (the thread's agent and scope, the event's kind and time), that
    /// header, then the event's data sealed under the thread's key and bound to the request id:
    /// deleting the thread erases the data, the numbered kinds stay.
    fn encode_run_event(
        &self,
        rid: Uuid,
        thread: Option<&ThreadOf>,
        event: &StoredRunEvent,
    ) -> Result<Vec<u8>> {
        let Some(thread) = thread else {
            return encode(event);
        };
        let key = self.keys.get_or_create(thread.agent, &thread.scope)?;
        let header = encode(&(thread.agent, &thread.scope, &event.kind, event.at))?;
        let sealed = thread_keys::seal(&key, rid.as_bytes(), &encode(&event.data)?)?;
        let len = u32::try_from(header.len()).map_err(io)?;
        let mut out = Vec::with_capacity(5 + header.len() + sealed.len());
        out.push(SEALED_RUN);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Reserves `n` event seqs of run `rid` and returns the first. The caller writes them before
    /// it returns, on the thread that reserved them; a run's writers (its event writer, and the
    /// agent's runtime ending or pausing it) share that thread, so no reader sees a later seq
    /// of a run before an earlier one. Every append of a run takes
    /// its seqs here, logged or not, so two writers of one run (its event writer, and the
    /// runtime ending it) never take the same one; and a run's batches after the first do not
    /// scan the tree for its last key (a profile of sync calls showed that scan at 6 %).
    fn reserve_seqs(&self, rid: Uuid, n: u64) -> Result<u64> {
        let mut seqs = self
            .event_seqs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = match seqs.get(&rid) {
            Some(&next) => next,
            // Most runs are new: a point read of seq 1 tells so without a range scan (the
            // first write of a run always takes seq 1, see `write_run_events`).
            None => match self.run_events.get(pair(&rid, &1u64.to_be_bytes())) {
                Ok(None) => 1,
                Ok(Some(_)) => next_seq(&self.run_events, rid.as_bytes())?,
                Err(e) => return Err(storage(e)),
            },
        };
        seqs.insert(rid, first + n);
        Ok(first)
    }

    /// Forgets run `rid`'s next seq once its last event is written (a run resumed later scans
    /// for it again), so the map holds only runs in flight.
    fn forget_seqs(&self, rid: Uuid) {
        self.event_seqs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&rid);
    }

    /// Writes `events` of run `rid` numbered after its last seq: in one logged transaction when
    /// `logged`, else as plain sled inserts (durable at the next checkpoint, like
    /// [`RunStore::record`]). Readable once this returns.
    fn write_run_events(
        &self,
        rid: Uuid,
        thread: Option<ThreadOf>,
        events: Vec<(String, Value)>,
        logged: bool,
    ) -> Result<Vec<RunEvent>> {
        let at = Utc::now();
        let last = events
            .iter()
            .any(|(kind, _)| kind == "run.finished" || kind == "run.input_required");
        let stored: Vec<StoredRunEvent> = events
            .into_iter()
            .map(|(kind, data)| StoredRunEvent { kind, data, at })
            .collect();
        // Sealed under the thread's key one by one, so that any one of them opens alone.
        let values = stored
            .iter()
            .map(|e| self.encode_run_event(rid, thread.as_ref(), e))
            .collect::<Result<Vec<Vec<u8>>>>()?;
        let first = self.reserve_seqs(rid, values.len() as u64)?;
        let key = |i: usize| pair(&rid, &(first + i as u64).to_be_bytes());
        let written = if logged {
            self.transact(&[&self.run_events], |t| {
                for (i, value) in values.iter().enumerate() {
                    t[0].insert(key(i), value.as_slice())?;
                }
                Ok(())
            })
        } else {
            // Plain inserts, not a `sled::Batch`: sled 0.34 applies a batch as a transaction,
            // which writes and syncs its write buffer twice (three times the bytes written per
            // sync call, measured). A reader may see the first events of the batch before the
            // last; it reads them by seq, and the live channel gets them once all are in.
            values.iter().enumerate().try_for_each(|(i, value)| {
                self.run_events
                    .insert(key(i), value.as_slice())
                    .map(drop)
                    .map_err(storage)
            })
        };
        // A failed write keeps its seqs reserved (a gap, which readers skip): forgetting them
        // could let a later write start again at 1 below events a concurrent batch wrote.
        if last {
            self.forget_seqs(rid);
        }
        written?;
        Ok(stored
            .into_iter()
            .enumerate()
            .map(|(i, e)| RunEvent {
                seq: first + i as u64,
                kind: e.kind,
                data: e.data,
                at: e.at,
            })
            .collect())
    }

    /// A run event as [`SledRuns::encode_run_event`] stored it; one of a deleted thread reads
    /// back with its data `{"deleted": true}`.
    fn decode_run_event(&self, rid: Uuid, bytes: &[u8]) -> Result<StoredRunEvent> {
        if bytes.first() != Some(&SEALED_RUN) {
            return serde_json::from_slice(bytes).map_err(io);
        }
        let truncated = || Error::Io("unreadable run event: truncated".into());
        let len = bytes
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(truncated)? as usize;
        let header = bytes.get(5..5 + len).ok_or_else(truncated)?;
        let (agent, scope, kind, at): (Uuid, String, String, DateTime<Utc>) =
            serde_json::from_slice(header).map_err(io)?;
        let data = self
            .keys
            .get(agent, &scope)?
            .and_then(|key| thread_keys::open(&key, rid.as_bytes(), &bytes[5 + len..]))
            .and_then(|plain| serde_json::from_slice::<Value>(&plain).ok())
            .unwrap_or_else(|| serde_json::json!({"deleted": true}));
        Ok(StoredRunEvent { kind, data, at })
    }
}

impl RunEventStore for SledRuns {
    fn append_run_event(
        &self,
        rid: Uuid,
        thread: Option<ThreadOf>,
        kind: String,
        data: Value,
    ) -> StoreFuture<RunEvent> {
        let written = self.append_run_events(rid, thread, vec![(kind, data)]);
        Box::pin(async move {
            written
                .await?
                .pop()
                .ok_or_else(|| Error::Io("an appended run event went missing".into()))
        })
    }

    fn append_run_events(
        &self,
        rid: Uuid,
        thread: Option<ThreadOf>,
        events: Vec<(String, Value)>,
    ) -> StoreFuture<Vec<RunEvent>> {
        let written = self.write_run_events(rid, thread, events, true);
        match written {
            Ok(events) => self.durable(Ok(events)),
            Err(e) => now(Err(e)),
        }
    }

    fn record_run_events(
        &self,
        rid: Uuid,
        thread: Option<ThreadOf>,
        events: Vec<(String, Value)>,
    ) -> StoreFuture<Vec<RunEvent>> {
        now(self.write_run_events(rid, thread, events, false))
    }

    fn run_events(&self, rid: Uuid, after: u64, limit: usize) -> StoreFuture<Vec<RunEvent>> {
        let start = pair(&rid, &after.saturating_add(1).to_be_bytes());
        let end = pair(&rid, &u64::MAX.to_be_bytes());
        self.store.after_read(
            self.run_events
                .range(start..=end)
                .take(limit)
                .map(|item| {
                    let (key, value) = item.map_err(storage)?;
                    let seq = u64::from_be_bytes(key[16..24].try_into().map_err(io)?);
                    let e = self.decode_run_event(rid, &value)?;
                    Ok(RunEvent {
                        seq,
                        kind: e.kind,
                        data: e.data,
                        at: e.at,
                    })
                })
                .collect(),
        )
    }
}

impl ThreadStore for SledRuns {
    fn append_turn(&self, agent: Uuid, thread: String, turn: Turn) -> StoreFuture<()> {
        let prefix = thread_prefix(agent, &thread);
        let sealed = self.keys.get_or_create(agent, &thread).and_then(|key| {
            let plain = encode(&turn)?;
            thread_keys::seal(&key, &prefix, &plain)
        });
        let written = sealed.and_then(|value| {
            self.transact(&[&self.turns], |t| {
                let seq = next_seq(&self.turns, &prefix).map_err(abort)?;
                let mut key = prefix.clone();
                key.extend_from_slice(&seq.to_be_bytes());
                t[0].insert(key, value.as_slice())?;
                Ok(())
            })
        });
        self.durable(written)
    }

    fn turns(&self, agent: Uuid, thread: String, last: usize) -> StoreFuture<Vec<Turn>> {
        let prefix = thread_prefix(agent, &thread);
        let key = match self.keys.get(agent, &thread) {
            Ok(Some(key)) => key,
            Ok(None) => return now(Ok(Vec::new())),
            Err(e) => return now(Err(e)),
        };
        // A turn sealed under a key destroyed since (written while the thread was being
        // deleted) does not open: it is gone, and skipped.
        let newest: Result<Vec<Turn>> = self
            .turns
            .scan_prefix(&prefix)
            .values()
            .rev()
            .filter_map(|v| match v {
                Ok(v) => thread_keys::open(&key, &prefix, &v)
                    .map(|plain| serde_json::from_slice(&plain).map_err(io)),
                Err(e) => Some(Err(storage(e))),
            })
            .take(last)
            .collect();
        self.store.after_read(newest.map(|mut turns| {
            turns.reverse();
            turns
        }))
    }

    fn delete_thread(&self, agent: Uuid, thread: String) -> StoreFuture<bool> {
        let prefix = thread_prefix(agent, &thread);
        // The key first: once it is gone, every copy of the thread's turns (and of its runs'
        // content) sled or its log may still hold is unreadable; removing the turns then only
        // frees the space.
        let had_key = match self.keys.destroy(agent, &thread) {
            Ok(had) => had,
            Err(e) => return now(Err(e)),
        };
        let deleted = self.transact(&[&self.turns], |t| {
            let mut any = false;
            for key in self.turns.scan_prefix(&prefix).keys() {
                t[0].remove(key.map_err(|e| abort(storage(e)))?)?;
                any = true;
            }
            Ok(any || had_key)
        });
        self.durable(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use serde_json::json;

    use super::*;
    use crate::run::Mode;
    use crate::store::conformance::runs as conformance;
    use crate::store::conformance::runs::{keyed, new_run};

    /// Polls `f` once: its output if it is ready now.
    fn ready_now<T>(f: &mut StoreFuture<T>) -> Option<Result<T>> {
        match Pin::new(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        }
    }

    /// Guards against a client being shown a write that a crash can take back (a run read as
    /// `input_required` that comes back `running`, then interrupted): sled shows a logged write
    /// at once, so every read a client observes holds what it read until the group commit has
    /// made it durable.
    #[tokio::test]
    async fn reads_answer_only_once_what_they_read_is_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SledStore::open(dir.path()).expect("opens"));
        let runs = SledRuns::open(store.clone()).expect("run trees open");
        let agent = Uuid::now_v7();
        let run = new_run(agent, Mode::Sync, json!({"q": 1}));
        let rid = run.run.request_id;
        runs.put(run.clone()).await.expect("durable");
        let mut get = runs.get(rid);
        assert_eq!(
            ready_now(&mut get).map(|r| r.expect("get")),
            Some(Some(run.clone())),
            "with nothing in flight a read answers at once"
        );

        let held = store.group_commit.hold();
        let mut paused = run.clone();
        paused.run.status = RunStatus::InputRequired;
        paused.run.pending = Some(json!({"kind": "input", "prompt": "Which city?"}));
        let put = runs.put(paused.clone());
        let event = runs.append_run_event(rid, None, "run.paused".into(), json!({}));
        let turn = Turn {
            request_id: rid,
            input: json!("hi"),
            output: Some(json!("hello")),
            at: Utc::now(),
        };
        let said = runs.append_turn(agent, "t".into(), turn.clone());
        let key_run = keyed(new_run(agent, Mode::Async, json!({"q": 2})), "admin", "k");
        let accepted = runs.accept(key_run.clone(), true);

        // Each read has read sled (which shows the writes above) before the flush.
        let mut get = runs.get(rid);
        let mut list = runs.list_runs(agent, None, 10);
        let mut by_key = runs.find_by_key(agent, Some("admin".into()), "k".into(), Utc::now());
        let mut events = runs.run_events(rid, 0, 10);
        let mut turns = runs.turns(agent, "t".into(), 10);
        assert!(
            ready_now(&mut get).is_none(),
            "get answered before the flush"
        );
        assert!(
            ready_now(&mut list).is_none(),
            "list_runs answered before the flush"
        );
        assert!(
            ready_now(&mut by_key).is_none(),
            "find_by_key answered before the flush"
        );
        assert!(
            ready_now(&mut events).is_none(),
            "run_events answered before the flush"
        );
        assert!(
            ready_now(&mut turns).is_none(),
            "turns answered before the flush"
        );

        drop(held);
        put.await.expect("durable");
        event.await.expect("durable");
        said.await.expect("durable");
        assert_eq!(accepted.await.expect("durable"), Accepted::New);
        assert_eq!(get.await.expect("get"), Some(paused.clone()));
        assert_eq!(
            list.await.expect("list"),
            vec![key_run.clone(), paused],
            "newest first"
        );
        assert_eq!(by_key.await.expect("found"), Some(key_run));
        let events = events.await.expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "run.paused");
        assert_eq!(turns.await.expect("turns"), vec![turn]);
    }

    #[tokio::test]
    async fn passes_the_run_store_conformance_suites() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SledStore::open(dir.path()).expect("opens"));
        let runs = SledRuns::open(store).expect("run trees open");
        conformance::run_all(Arc::new(runs)).await;
    }
}
