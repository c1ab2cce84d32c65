//! Runs, the async queue, idempotency keys and the push outbox, in their own sled trees beside the
//! event log (not in the agents' streams: runs are many, short-lived and purged).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `runs` | request id (16) | `StoredRun` JSON |
//! | `run_queue` | agent id (16) ++ request id (16) | empty: request ids are UUID v7, so one agent's queue is FIFO |
//! | `idempotency` | agent id (16) ++ key bytes | request id (16) ++ accepted at, unix ms (8, BE) |
//! | `push_outbox` | due at, unix ms (8, BE) ++ request id (16) | empty: due deliveries are a prefix scan |
//!
//! Writes that must survive a crash (an accepted async request, a final state) are awaited with
//! [`RunStore::flushed`], which shares the event log's group-commit flush.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use events::store::{Error as StoreError, SledStore};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Tree;
use uuid::Uuid;

use super::run::{RunStatus, StoredRun};

/// Runs removed per logged transaction by the purge: few enough that the writer lock is held
/// for well under a millisecond.
const PURGE_BATCH: usize = 128;

/// How long an `Idempotency-Key` names the same request.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::hours(24);

pub struct RunStore {
    store: Arc<SledStore>,
    runs: Tree,
    queue: Tree,
    idempotency: Tree,
    outbox: Tree,
}

/// The outcome of accepting a request.
pub enum Accepted {
    New,
    /// The same `Idempotency-Key` was used within the window: that request, unchanged.
    Existing(Box<StoredRun>),
}

type Result<T> = std::result::Result<T, StoreError>;

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<StoredRun> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Io(format!("unreadable run: {e}")))
}

fn encode(run: &StoredRun) -> Vec<u8> {
    serde_json::to_vec(run).unwrap_or_default()
}

fn pair(a: &Uuid, b: &[u8]) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.extend_from_slice(b);
    k
}

fn outbox_key(due: DateTime<Utc>, rid: Uuid) -> Vec<u8> {
    let mut k = (due.timestamp_millis().max(0) as u64)
        .to_be_bytes()
        .to_vec();
    k.extend_from_slice(rid.as_bytes());
    k
}

impl RunStore {
    pub fn open(store: Arc<SledStore>) -> Result<Self> {
        let db = store.db();
        Ok(RunStore {
            runs: db.open_tree("runs").map_err(io)?,
            queue: db.open_tree("run_queue").map_err(io)?,
            idempotency: db.open_tree("idempotency").map_err(io)?,
            outbox: db.open_tree("push_outbox").map_err(io)?,
            store,
        })
    }

    /// Resolves once every write so far is durable.
    pub fn flushed(&self) -> impl Future<Output = Result<()>> + 'static {
        self.store.flushed()
    }

    /// Records a new request (queued for async, running for sync) and its idempotency key, or
    /// finds the request the key already names. Atomic: two racing requests with one key get one
    /// run.
    pub fn accept(&self, run: &StoredRun, enqueue: bool) -> Result<Accepted> {
        let agent = run.run.agent_id;
        let rid = run.run.request_id;
        let now_ms = run.run.created_at.timestamp_millis();
        let idem_key = run
            .idempotency_key
            .as_ref()
            .map(|k| pair(&agent, k.as_bytes()));
        let value = encode(run);
        if idem_key.is_none() && !enqueue {
            // The common sync call: nothing to check, and nothing to store yet. No one can ask
            // for the run before its caller has its request id, i.e. before it has ended, and a
            // crash meanwhile leaves its caller with a broken connection, not a record to find.
            // Its final state is stored by `finish`. (A profile of sync c=32: sled inserts were
            // the largest cost after the HTTP stack.)
            return Ok(Accepted::New);
        }
        let trees = [&self.runs, &self.queue, &self.idempotency];
        let result = self.store.transact(&trees, |t| {
            let (runs, queue, idem) = (&t[0], &t[1], &t[2]);
            if let Some(key) = &idem_key {
                if let Some(found) = idem.get(key)? {
                    if found.len() == 24 {
                        let mut ms = [0u8; 8];
                        ms.copy_from_slice(&found[16..24]);
                        let age = now_ms - i64::from_be_bytes(ms);
                        if age < IDEMPOTENCY_WINDOW.num_milliseconds() {
                            let existing = Uuid::from_slice(&found[..16]).unwrap_or_default();
                            if let Some(bytes) = runs.get(existing.as_bytes())? {
                                return Ok(Some(bytes));
                            }
                        }
                    }
                }
                let mut v = rid.as_bytes().to_vec();
                v.extend_from_slice(&now_ms.to_be_bytes());
                idem.insert(key.as_slice(), v)?;
            }
            runs.insert(rid.as_bytes(), value.as_slice())?;
            if enqueue {
                queue.insert(pair(&agent, rid.as_bytes()), [])?;
            }
            Ok::<_, ConflictableTransactionError<()>>(None)
        });
        match result {
            Ok(None) => Ok(Accepted::New),
            Ok(Some(bytes)) => Ok(Accepted::Existing(Box::new(decode(&bytes)?))),
            Err(TransactionError::Abort(())) => Err(io("transaction aborted")),
            Err(TransactionError::Storage(e)) => Err(io(e)),
        }
    }

    pub fn get(&self, rid: Uuid) -> Result<Option<StoredRun>> {
        match self.runs.get(rid.as_bytes()).map_err(io)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn put(&self, run: &StoredRun) -> Result<()> {
        self.runs
            .insert(run.run.request_id.as_bytes(), encode(run))
            .map_err(io)?;
        Ok(())
    }

    /// Stores a final state, takes the run off its agent's queue, and schedules its push.
    pub fn finish(&self, run: &StoredRun, push_due: Option<DateTime<Utc>>) -> Result<()> {
        let rid = run.run.request_id;
        let value = encode(run);
        let qkey = pair(&run.run.agent_id, rid.as_bytes());
        let okey = push_due.map(|due| outbox_key(due, rid));
        if okey.is_none() && run.mode == super::run::Mode::Sync {
            // A sync run was never queued and pushes nothing: one insert.
            self.runs.insert(rid.as_bytes(), value).map_err(io)?;
            return Ok(());
        }
        self.store
            .transact(&[&self.runs, &self.queue, &self.outbox], |t| {
                let (runs, queue, outbox) = (&t[0], &t[1], &t[2]);
                runs.insert(rid.as_bytes(), value.as_slice())?;
                queue.remove(qkey.as_slice())?;
                if let Some(k) = &okey {
                    outbox.insert(k.as_slice(), [])?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| io(format!("{e:?}")))
    }

    /// Takes the oldest queued run of `agent` and marks it running, atomically.
    pub fn dequeue(&self, agent: Uuid) -> Result<Option<StoredRun>> {
        loop {
            let Some((key, _)) = self
                .queue
                .scan_prefix(agent.as_bytes())
                .next()
                .transpose()
                .map_err(io)?
            else {
                return Ok(None);
            };
            let rid = Uuid::from_slice(&key[16..]).map_err(io)?;
            let taken = self.store.transact(&[&self.runs, &self.queue], |t| {
                let (runs, queue) = (&t[0], &t[1]);
                if queue.remove(&key)?.is_none() {
                    return Ok(None); // taken by someone else meanwhile
                }
                let Some(bytes) = runs.get(rid.as_bytes())? else {
                    return Ok(Some(None)); // a dangling queue entry: dropped
                };
                let Ok(mut run) = serde_json::from_slice::<StoredRun>(&bytes) else {
                    return Ok(Some(None));
                };
                if run.run.status != RunStatus::Queued {
                    return Ok(Some(None));
                }
                run.run.status = RunStatus::Running;
                run.run.started_at = Some(Utc::now());
                runs.insert(rid.as_bytes(), encode(&run))?;
                Ok::<_, ConflictableTransactionError<()>>(Some(Some(run)))
            });
            match taken.map_err(|e| io(format!("{e:?}")))? {
                Some(Some(run)) => return Ok(Some(run)),
                _ => continue,
            }
        }
    }

    /// Takes a queued run off the queue; false if it was not queued.
    pub fn unqueue(&self, agent: Uuid, rid: Uuid) -> Result<bool> {
        let key = pair(&agent, rid.as_bytes());
        self.store
            .transact(&[&self.queue], |t| {
                Ok::<_, ConflictableTransactionError<()>>(t[0].remove(key.as_slice())?.is_some())
            })
            .map_err(|e| io(format!("{e:?}")))
    }

    pub fn queued(&self, agent: Uuid) -> usize {
        self.queue.scan_prefix(agent.as_bytes()).count()
    }

    /// Requests waiting in every agent's queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Agents with queued runs, each once.
    pub fn agents_with_queue(&self) -> Result<Vec<Uuid>> {
        let mut out: Vec<Uuid> = Vec::new();
        for item in self.queue.iter().keys() {
            let key = item.map_err(io)?;
            let agent = Uuid::from_slice(&key[..16]).map_err(io)?;
            if out.last() != Some(&agent) {
                out.push(agent);
            }
        }
        Ok(out)
    }

    /// Runs left `running` by a previous process.
    pub fn running(&self) -> Result<Vec<StoredRun>> {
        let mut out = Vec::new();
        for item in self.runs.iter().values() {
            let run = decode(&item.map_err(io)?)?;
            if run.run.status == RunStatus::Running {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// Outbox entries due by `now`, oldest first: (entry key, request id).
    pub fn due_pushes(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(Vec<u8>, Uuid)>> {
        let end = outbox_key(now, Uuid::max());
        let mut out = Vec::new();
        for item in self.outbox.range(..=end).keys().take(limit) {
            let key = item.map_err(io)?;
            let rid = Uuid::from_slice(&key[8..]).map_err(io)?;
            out.push((key.to_vec(), rid));
        }
        Ok(out)
    }

    /// When the earliest delivery is due, if any is scheduled.
    pub fn next_push_due(&self) -> Result<Option<DateTime<Utc>>> {
        let Some(key) = self.outbox.first().map_err(io)?.map(|(k, _)| k) else {
            return Ok(None);
        };
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&key[..8]);
        Ok(DateTime::from_timestamp_millis(
            u64::from_be_bytes(ms) as i64
        ))
    }

    /// Replaces outbox entry `key` by one due at `next` (or none), storing the run's push state.
    pub fn reschedule_push(
        &self,
        key: &[u8],
        run: &StoredRun,
        next: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let value = encode(run);
        let rid = run.run.request_id;
        let next_key = next.map(|due| outbox_key(due, rid));
        self.store
            .transact(&[&self.runs, &self.outbox], |t| {
                let (runs, outbox) = (&t[0], &t[1]);
                runs.insert(rid.as_bytes(), value.as_slice())?;
                outbox.remove(key)?;
                if let Some(k) = &next_key {
                    outbox.insert(k.as_slice(), [])?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| io(format!("{e:?}")))
    }

    /// Deletes final runs that finished before `cutoff`, and expired idempotency keys.
    pub fn purge(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let mut purged = 0;
        let mut batch = Vec::with_capacity(PURGE_BATCH);
        // Request ids are UUID v7, so runs are keyed in creation order, and one created after the
        // cutoff cannot have finished before it: the scan stops there instead of decoding every
        // run kept (a soak at 24k runs/s outran a purge that read them all).
        let mut created_before = [0u8; 16];
        let ms = (cutoff.timestamp_millis().max(0) as u64 + 1).to_be_bytes();
        created_before[..6].copy_from_slice(&ms[2..]);
        for item in self.runs.range(..created_before) {
            let (key, bytes) = item.map_err(io)?;
            let Ok(run) = decode(&bytes) else { continue };
            let done_before = run.run.finished_at.is_some_and(|f| f < cutoff);
            let push_done = run
                .run
                .push
                .as_ref()
                .is_none_or(|p| p.status != super::run::PushStatus::Pending);
            if run.run.status.is_final() && done_before && push_done {
                batch.push(key);
                if batch.len() == PURGE_BATCH {
                    purged += self.remove(&self.runs, &mut batch)?;
                }
            }
        }
        purged += self.remove(&self.runs, &mut batch)?;
        let idem_cutoff = (Utc::now() - IDEMPOTENCY_WINDOW).timestamp_millis();
        for item in self.idempotency.iter() {
            let (key, v) = item.map_err(io)?;
            if v.len() == 24 {
                let mut ms = [0u8; 8];
                ms.copy_from_slice(&v[16..24]);
                if i64::from_be_bytes(ms) < idem_cutoff {
                    batch.push(key);
                    if batch.len() == PURGE_BATCH {
                        self.remove(&self.idempotency, &mut batch)?;
                    }
                }
            }
        }
        self.remove(&self.idempotency, &mut batch)?;
        Ok(purged)
    }

    /// Removes `keys` (and empties it) in one logged transaction, durable like the logged writes
    /// it undoes (a plain removal is not). Batched: one transaction per run cost the purge more
    /// than the load it kept up with.
    fn remove(&self, tree: &sled::Tree, keys: &mut Vec<sled::IVec>) -> Result<usize> {
        let n = keys.len();
        if n > 0 {
            self.store
                .transact(&[tree], |t| {
                    keys.iter().try_for_each(|key| t[0].remove(key).map(drop))?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| io(format!("{e:?}")))?;
            keys.clear();
        }
        Ok(n)
    }
}
