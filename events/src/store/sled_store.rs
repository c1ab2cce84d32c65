//! The embedded default store, over sled 0.34. `docs/storage.md` states the layout byte by byte
//! and when a write is durable.
//!
//! Two trees: `events` maps `stream uuid (16 bytes) ++ seq (8 bytes, big-endian)` to the stored
//! envelope, so one stream is one contiguous, ordered key range; `heads` maps the stream uuid to
//! `seq (8 bytes, big-endian) ++ hex hash (64 bytes)` of its last event, so an append learns where
//! to chain without scanning. Both change in one logged transaction ([`SledStore::transact`]):
//! durability comes from its record in the write-ahead log ([`wal`]), which the [`group_commit`]
//! flusher writes and syncs for many writers at once.

mod group_commit;
mod runs;
mod thread_keys;
mod wal;

pub use runs::SledRuns;

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionResult, UnabortableTransactionError,
};
use sled::IVec;
use uuid::Uuid;

use self::group_commit::{GroupCommit, Settled};
use self::thread_keys::ThreadKeys;
use super::{Commit, Error, EventStore, StoreFuture};
use crate::envelope::{Envelope, NewEvent, GENESIS_HASH};

const EVENTS_TREE: &str = "events";
const HEADS_TREE: &str = "heads";
/// Key: stream uuid (16); value: seq (8, BE) ++ the folded state's JSON.
const SNAPSHOTS_TREE: &str = "snapshots";
const HASH_LEN: usize = 64;

/// The event log in a sled database directory, which it locks for as long as it is open.
///
/// Offline tools (`hangar verify`) open the directory with [`SledStore::open`] too; a running
/// server's lock makes them fail with [`Error::Locked`] rather than read a log in motion.
pub struct SledStore {
    db: sled::Db,
    /// The keys of conversation threads, beside sled ([`thread_keys`]); synced by the group
    /// commit before the log, shared with the run stores.
    thread_keys: std::sync::Arc<ThreadKeys>,
    events: sled::Tree,
    heads: sled::Tree,
    /// Holds the lsn of the last logged transaction sled applied ([`wal`]).
    wal_meta: sled::Tree,
    /// The lsn the next logged transaction gets. Held for the whole transaction, so that lsns,
    /// sled's order of transactions and the log's order of records all agree.
    writer: Mutex<u64>,
    /// Its drop answers the waiting appends and joins the flusher, whose clone of `db` is the
    /// last one: the directory is unlocked once a `SledStore` is dropped.
    group_commit: GroupCommit,
}

impl SledStore {
    /// Opens with sled's default page cache bound, 1 GiB: for the offline tools, which run briefly.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with(path, 1 << 30)
    }

    /// Opens with sled's page cache bounded to `cache_bytes`. A server passes its `--cache-mb`:
    /// sled's default lets a busy server's page cache grow to 1 GiB.
    pub fn open_with(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let db = open_db(path, cache_bytes)?;
        let events = db.open_tree(EVENTS_TREE).map_err(storage)?;
        let heads = db.open_tree(HEADS_TREE).map_err(storage)?;
        let wal_meta = db.open_tree(wal::META_TREE).map_err(storage)?;
        let recovered = wal::recover(&db, &wal_meta, path)?;
        if recovered.replayed > 0 || recovered.torn_bytes > 0 {
            tracing::info!(
                replayed = recovered.replayed,
                torn_bytes = recovered.torn_bytes,
                "recovered writes from the write-ahead log"
            );
        }
        let thread_keys = std::sync::Arc::new(ThreadKeys::open(path)?);
        let group_commit =
            GroupCommit::start(db.clone(), path, recovered.last_lsn, thread_keys.clone())?;
        Ok(SledStore {
            db,
            thread_keys,
            events,
            heads,
            wal_meta,
            writer: Mutex::new(recovered.last_lsn + 1),
            group_commit,
        })
    }

    /// Runs `f` over `trees` (of [`SledStore::db`]) as one logged transaction: its writes are
    /// visible once it returns and durable once a later [`SledStore::flushed`] resolves, all or
    /// none of them, even across a crash. Every write that must survive a crash goes through here;
    /// a plain `Tree::insert` is lost at a crash unless a checkpoint happened to flush it first.
    ///
    /// Logged transactions run one at a time (under the writer lock), so what `f` reads cannot
    /// change under it. Its writes are buffered (later reads in `f` see them) and applied to sled
    /// only if `f` returns `Ok`; then their record is queued for the log. They are not a sled
    /// transaction: every sled 0.34 transaction rolls sled's write buffer twice, i.e. writes and
    /// `sync_file_range`s it, which a profile showed dominating async accepts; atomicity across a
    /// crash comes from the log instead (`docs/storage.md`). A reader outside a logged
    /// transaction may see some of its writes before the others, so callers write data before
    /// the index entries that point at it.
    pub fn transact<R, E, F>(&self, trees: &[&sled::Tree], f: F) -> TransactionResult<R, E>
    where
        F: Fn(&[LoggedTree<'_>]) -> ConflictableTransactionResult<R, E>,
    {
        let unhealthy = |e: Error| {
            TransactionError::Storage(sled::Error::Io(std::io::Error::other(e.to_string())))
        };
        self.group_commit.check_healthy().map_err(unhealthy)?;
        let mut next_lsn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let names: Vec<IVec> = trees.iter().map(|t| t.name()).collect();
        let ops = RefCell::new(Vec::new());
        let logged: Vec<LoggedTree<'_>> = trees
            .iter()
            .zip(&names)
            .map(|(tree, name)| LoggedTree {
                tree,
                name,
                ops: &ops,
            })
            .collect();
        let result = match f(&logged) {
            Ok(result) => result,
            Err(ConflictableTransactionError::Abort(e)) => return Err(TransactionError::Abort(e)),
            Err(ConflictableTransactionError::Storage(e)) => {
                return Err(TransactionError::Storage(e))
            }
            // Only sled's own transactions report conflicts; nothing else writes these trees.
            Err(_) => return Err(unhealthy(Error::Io("an unexpected conflict".into()))),
        };
        drop(logged);
        let ops = ops.into_inner();
        if ops.is_empty() {
            return Ok(result);
        }
        let lsn = *next_lsn;
        *next_lsn += 1;
        // Before sled shows any of it: a reader that sees one of these writes then waits for
        // this lsn to be durable (`group_commit::GroupCommit::settled`).
        self.group_commit.applying(lsn);
        let applied = apply(&self.db, trees, &names, &self.wal_meta, lsn, &ops);
        // Queued only once applied: a checkpoint makes what sled holds durable and then empties
        // the log, so a record queued earlier could be dropped with its writes not yet in sled.
        // If sled failed halfway, the record is queued all the same and the store refuses
        // everything after it (no more checkpoints either): a restart completes the transaction.
        match applied {
            Ok(()) => {
                self.group_commit.log(lsn, &ops);
                Ok(result)
            }
            Err(e) => {
                let e = storage(e);
                self.group_commit.log_poisoned(lsn, &ops, e.clone());
                Err(unhealthy(e))
            }
        }
    }

    /// Makes everything written so far durable, through the same flusher appends use. Blocks the
    /// calling thread: for offline tools, never on an async executor's thread.
    pub fn flush_blocking(&self) -> Result<(), Error> {
        self.group_commit
            .request()
            .blocking_recv()
            .map_err(|_| Error::Closed)?
    }

    /// Makes sled itself durable and empties the write-ahead log, after every write so far, so
    /// that the next open has nothing to replay. Blocks the calling thread (for the end of
    /// `hangar serve` and offline tools, never on an async executor's thread). Dropping the last
    /// handle does the same; this is for when handles may outlive the caller's interest.
    pub fn checkpoint_blocking(&self) -> Result<(), Error> {
        self.group_commit
            .checkpoint()
            .blocking_recv()
            .map_err(|_| Error::Closed)?
    }

    /// Resolves once every transaction logged so far ([`SledStore::transact`]) is durable. Shares
    /// the group commit with appends, so it costs nothing extra under load.
    pub fn flushed(&self) -> impl std::future::Future<Output = Result<(), Error>> + 'static {
        let rx = self.group_commit.request();
        async move { rx.await.map_err(|_| Error::Closed)? }
    }

    /// Resolves once everything sled showed to reads made before this call is durable: what a
    /// read returns to a client is passed on only then, so that a crash cannot take back what
    /// a client has seen (`docs/storage.md`, "What a reader sees"). Call it *after* the read.
    /// Resolves at once (two atomic loads) when no logged write is in flight; otherwise it waits
    /// for the group commit already carrying the writes the read may have seen, and fails if the
    /// store failed before they became durable.
    pub fn settled(&self) -> StoreFuture<()> {
        self.after_read(Ok(()))
    }

    /// `read`, the result of reading sled, once all it can hold is durable ([`SledStore::settled`]).
    /// `read` is evaluated by the caller, i.e. before the barrier is taken, as it must be.
    fn after_read<T: Send + 'static>(&self, read: Result<T, Error>) -> StoreFuture<T> {
        match self.group_commit.settled() {
            Settled::Now => Box::pin(std::future::ready(read)),
            Settled::Failed(e) => Box::pin(std::future::ready(Err(e))),
            Settled::Later(durable) => Box::pin(async move {
                durable.await.map_err(|_| Error::Closed)??;
                read
            }),
        }
    }

    fn read_head(&self, stream: Uuid) -> Result<Head, Error> {
        let stored = self.heads.get(stream.as_bytes()).map_err(storage)?;
        Head::decode(stream, stored.as_deref())
    }
}

/// Why a transaction gave up; turned into an [`Error`] once outside it.
#[derive(Debug)]
enum Abort {
    /// The head is not the one the batch was sealed against; it is now at this seq.
    Moved(u64),
    Corrupt(Error),
}

impl EventStore for SledStore {
    /// A logged write, durable with the next group commit: a snapshot lost in a crash would make
    /// the next activation fold up to every event since the one before.
    fn save_snapshot(&self, stream: Uuid, seq: u64, state: &[u8]) -> Result<(), Error> {
        let mut value = seq.to_be_bytes().to_vec();
        value.extend_from_slice(state);
        let tree = self.db.open_tree(SNAPSHOTS_TREE).map_err(storage)?;
        self.transact(&[&tree], |t| {
            t[0].insert(stream.as_bytes(), value.as_slice())?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(|e| Error::Io(format!("saving a snapshot: {e:?}")))
    }

    fn load_snapshot(&self, stream: Uuid) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let found = self
            .db
            .open_tree(SNAPSHOTS_TREE)
            .and_then(|t| t.get(stream.as_bytes()))
            .map_err(storage)?;
        Ok(found.and_then(|v| {
            let seq = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            Some((seq, v[8..].to_vec()))
        }))
    }

    fn append(&self, stream: Uuid, expected: u64, events: &[NewEvent]) -> Result<Commit, Error> {
        self.group_commit.check_healthy()?;
        let conflict = |actual| Error::Conflict {
            stream,
            expected,
            actual,
        };
        if events.is_empty() {
            let actual = self.head(stream)?;
            return if actual == expected {
                Ok(Commit::durable_now(vec![]))
            } else {
                Err(conflict(actual))
            };
        }

        let envelopes = loop {
            let head = self.read_head(stream)?;
            if head.seq != expected {
                return Err(conflict(head.seq));
            }
            // Seal outside the transaction: sled 0.34 runs every transaction under one global
            // lock, and hashing a large batch there would stall appends to all other streams.
            // The transaction then only checks that the head is still the one sealed against.
            let sealed = seal_batch(stream, &head, events)?;
            let new_head = match sealed.last() {
                Some((env, _)) => Head::encode(env.seq, &env.hash),
                // `events` is not empty; handled above.
                None => return Ok(Commit::durable_now(vec![])),
            };

            let outcome = self.transact(&[&self.events, &self.heads], |trees| {
                let (events_tx, heads_tx) = (&trees[0], &trees[1]);
                let stored = heads_tx.get(stream.as_bytes())?;
                let now = Head::decode(stream, stored.as_deref())
                    .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e)))?;
                if now != head {
                    return Err(ConflictableTransactionError::Abort(Abort::Moved(now.seq)));
                }
                for (env, bytes) in &sealed {
                    events_tx.insert(&event_key(stream, env.seq)[..], bytes.as_slice())?;
                }
                heads_tx.insert(stream.as_bytes(), new_head.as_slice())?;
                Ok(())
            });
            match outcome {
                Ok(()) => break sealed.into_iter().map(|(env, _)| env).collect(),
                // Someone appended between our read and the transaction.
                Err(TransactionError::Abort(Abort::Moved(actual))) if actual != expected => {
                    return Err(conflict(actual))
                }
                // Same seq, different hash: the head was rewritten under us. Seal again.
                Err(TransactionError::Abort(Abort::Moved(_))) => continue,
                Err(TransactionError::Abort(Abort::Corrupt(e))) => return Err(e),
                Err(TransactionError::Storage(e)) => return Err(storage(e)),
            }
        };
        Ok(Commit::pending(envelopes, self.group_commit.request()))
    }

    fn read_raw(
        &self,
        stream: Uuid,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        // Up to the head, not the end of the key range: an append inserts its events before it
        // moves the head (a logged transaction is not atomic to readers), so events past the
        // head belong to a batch still being written.
        let head = self.read_head(stream)?.seq;
        let from = from.max(1);
        if from > head {
            return Ok(Vec::new());
        }
        let start = event_key(stream, from);
        let end = event_key(stream, head);
        self.events
            .range(start..=end)
            .take(limit)
            .map(|item| {
                let (key, value) = item.map_err(storage)?;
                let seq = decode_event_key(stream, &key)?;
                Ok((seq, value.to_vec()))
            })
            .collect()
    }

    fn head(&self, stream: Uuid) -> Result<u64, Error> {
        Ok(self.read_head(stream)?.seq)
    }

    fn settled(&self) -> StoreFuture<()> {
        SledStore::settled(self)
    }

    fn streams(&self) -> Result<Vec<Uuid>, Error> {
        self.heads
            .iter()
            .keys()
            .map(|key| {
                let key = key.map_err(storage)?;
                Uuid::from_slice(&key).map_err(|_| Error::Corrupt {
                    stream: Uuid::nil(),
                    seq: 0,
                    reason: format!("a key of the heads tree is {} bytes, not 16", key.len()),
                })
            })
            .collect()
    }
}

/// Applies a logged transaction's writes to sled ([`wal::apply`]), finding trees among `trees`.
fn apply(
    db: &sled::Db,
    trees: &[&sled::Tree],
    names: &[IVec],
    meta: &sled::Tree,
    lsn: u64,
    ops: &[wal::Op],
) -> Result<(), sled::Error> {
    wal::apply(meta, lsn, ops, |name| {
        match names.iter().position(|n| n.as_ref() == name) {
            Some(at) => Ok(trees[at].clone()),
            None => db.open_tree(name),
        }
    })
}

/// One tree inside [`SledStore::transact`]: reads see the transaction's own writes, which are
/// buffered for the write-ahead log and applied when the transaction ends well.
pub struct LoggedTree<'a> {
    tree: &'a sled::Tree,
    name: &'a IVec,
    ops: &'a RefCell<Vec<wal::Op>>,
}

impl LoggedTree<'_> {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>, UnabortableTransactionError> {
        let key = key.as_ref();
        let own = self.ops.borrow().iter().rev().find_map(|op| match op {
            wal::Op::Insert {
                tree,
                key: k,
                value,
            } if *tree == self.name[..] && k == key => Some(Some(IVec::from(value.as_slice()))),
            wal::Op::Remove { tree, key: k } if *tree == self.name[..] && k == key => Some(None),
            _ => None,
        });
        match own {
            Some(value) => Ok(value),
            None => self
                .tree
                .get(key)
                .map_err(UnabortableTransactionError::Storage),
        }
    }

    /// Returns the value the key had before, as `Tree::insert` does.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<IVec>, UnabortableTransactionError> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let old = self.get(key)?;
        self.ops.borrow_mut().push(wal::Op::Insert {
            tree: self.name.to_vec(),
            key: key.to_vec(),
            value: value.to_vec(),
        });
        Ok(old)
    }

    /// Returns the value the key had, as `Tree::remove` does.
    pub fn remove(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<IVec>, UnabortableTransactionError> {
        let key = key.as_ref();
        let old = self.get(key)?;
        self.ops.borrow_mut().push(wal::Op::Remove {
            tree: self.name.to_vec(),
            key: key.to_vec(),
        });
        Ok(old)
    }
}

/// The stream's last event as the `heads` tree records it.
#[derive(Debug, Clone, PartialEq)]
struct Head {
    seq: u64,
    hash: String,
}

impl Head {
    fn encode(seq: u64, hash: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + hash.len());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(hash.as_bytes());
        out
    }

    fn decode(stream: Uuid, stored: Option<&[u8]>) -> Result<Head, Error> {
        let Some(bytes) = stored else {
            return Ok(Head {
                seq: 0,
                hash: GENESIS_HASH.to_owned(),
            });
        };
        let corrupt = |reason: String| Error::Corrupt {
            stream,
            seq: 0,
            reason: format!("the stream's head record: {reason}"),
        };
        if bytes.len() != 8 + HASH_LEN {
            return Err(corrupt(format!(
                "{} bytes, not {}",
                bytes.len(),
                8 + HASH_LEN
            )));
        }
        let (seq, hash) = bytes.split_at(8);
        let seq = u64::from_be_bytes(seq.try_into().map_err(|_| corrupt("no seq".into()))?);
        let hash = std::str::from_utf8(hash)
            .ok()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| corrupt("the hash is not hex".into()))?;
        Ok(Head {
            seq,
            hash: hash.to_owned(),
        })
    }
}

fn seal_batch(
    stream: Uuid,
    head: &Head,
    events: &[NewEvent],
) -> Result<Vec<(Envelope, Vec<u8>)>, Error> {
    let mut sealed: Vec<(Envelope, Vec<u8>)> = Vec::with_capacity(events.len());
    for (seq, new) in (head.seq + 1..).zip(events) {
        let prev_hash = sealed
            .last()
            .map_or(head.hash.as_str(), |(env, _)| &env.hash);
        let pair = Envelope::seal(stream, seq, prev_hash, new)
            .map_err(|e| Error::Io(format!("encoding event {stream}#{seq}: {e}")))?;
        sealed.push(pair);
    }
    Ok(sealed)
}

fn event_key(stream: Uuid, seq: u64) -> [u8; 24] {
    let mut key = [0; 24];
    key[..16].copy_from_slice(stream.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn decode_event_key(stream: Uuid, key: &[u8]) -> Result<u64, Error> {
    key.get(16..)
        .and_then(|seq| <[u8; 8]>::try_from(seq).ok())
        .filter(|_| key[..16] == stream.as_bytes()[..])
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::Corrupt {
            stream,
            seq: 0,
            reason: format!("a key of the events tree is malformed: {key:02x?}"),
        })
}

fn storage(e: sled::Error) -> Error {
    Error::Io(e.to_string())
}

/// sled 0.34 reports a held lock as `Io(Other, "could not acquire lock on \"<dir>/db\": …")`,
/// wrapping the `WouldBlock` of the non-blocking flock; the kind is matched for later versions.
/// How long an open waits for a lock that a store closing in this process may still hold.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// sled's db in `path`. A store just dropped releases its lock only once sled's own background
/// threads let go of the file, a few milliseconds later (seen as a reopen refused about once in
/// 20 tries under load), so a locked directory is tried again for [`LOCK_GRACE`] before it is
/// refused: a directory another process holds is still refused, that much later.
fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, Error> {
    let since = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| open_error(path, e))
        {
            Err(Error::Locked(_)) if since.elapsed() < LOCK_GRACE => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

fn open_error(path: &Path, e: sled::Error) -> Error {
    match &e {
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            Error::Locked(path.display().to_string())
        }
        _ => storage(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::event::{Event, Undeployed};
    use crate::store::{conformance, verify_all, verify_stream, VerifyReport};

    #[tokio::test]
    async fn a_new_thread_key_is_durable_once_a_write_sealed_under_it_is() {
        use crate::run::Turn;
        use crate::store::ThreadStore;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = std::sync::Arc::new(SledStore::open(dir.path()).expect("opens"));
        let runs = SledRuns::open(store.clone()).expect("run trees open");
        let turn = Turn {
            request_id: Uuid::now_v7(),
            input: serde_json::json!({"q": "hello"}),
            output: None,
            at: chrono::Utc::now(),
        };
        // The key is made (in the page cache only) by this call; without the group commit's
        // sync it would still be dirty once the write is durable.
        let written = runs.append_turn(Uuid::now_v7(), "t".into(), turn);
        written.await.expect("durable");
        assert!(
            !store.thread_keys.is_dirty(),
            "the group commit synced the key before it answered"
        );
    }

    fn event(reason: &str) -> NewEvent {
        NewEvent::now(Event::Undeployed(Undeployed {
            reason: reason.to_owned(),
        }))
    }

    fn open(dir: &Path) -> SledStore {
        SledStore::open(dir).expect("a fresh directory opens")
    }

    #[test]
    fn passes_the_event_store_conformance_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        conformance::run_all(&open(dir.path()));
    }

    /// Guards against acknowledging a write that a restart does not find.
    #[test]
    fn durable_events_survive_drop_and_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Uuid::now_v7();
        let written = {
            let store = open(dir.path());
            let first = store
                .append(s, 0, &[event("a"), event("b")])
                .expect("append")
                .wait()
                .expect("durable");
            // Not waited for: dropping the store must still flush it.
            let _pending = store.append(s, 2, &[event("c")]).expect("append");
            first
        };
        let store = open(dir.path());
        assert_eq!(store.head(s).expect("head"), 3);
        assert_eq!(store.read(s, 1, 2).expect("read"), written);
        assert_eq!(verify_stream(&store, s).expect("verifies"), 3);
        let more = store
            .append(s, 3, &[event("d")])
            .expect("appends continue the chain after a reopen")
            .wait()
            .expect("durable");
        assert_eq!(more[0].seq, 4);
    }

    #[test]
    fn a_logged_transaction_reads_its_own_writes_and_an_abort_writes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let a = store.db.open_tree("a").expect("tree");
        let b = store.db.open_tree("b").expect("tree");
        let seen = store
            .transact(&[&a, &b], |t| {
                t[0].insert("k", "1")?;
                let first = t[0].get("k")?;
                let old = t[0].insert("k", "2")?;
                t[1].insert("x", "y")?;
                let removed = t[1].remove("x")?;
                Ok::<_, ConflictableTransactionError<()>>((first, old, removed, t[1].get("x")?))
            })
            .expect("commits");
        let one = Some(IVec::from("1"));
        assert_eq!(seen, (one.clone(), one, Some(IVec::from("y")), None));
        assert_eq!(a.get("k").expect("get"), Some(IVec::from("2")));
        assert_eq!(b.get("x").expect("get"), None);

        let aborted = store.transact(&[&a], |t| {
            t[0].insert("k", "3")?;
            Err::<(), _>(ConflictableTransactionError::Abort("no"))
        });
        assert!(matches!(aborted, Err(TransactionError::Abort("no"))));
        assert_eq!(a.get("k").expect("get"), Some(IVec::from("2")));
    }

    /// A reopen checkpoints: whatever the log held is in sled, and the log starts empty.
    #[test]
    fn logged_writes_survive_reopen_and_the_log_starts_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = open(dir.path());
            let t = store.db.open_tree("t").expect("tree");
            for i in 0..100u32 {
                store
                    .transact(&[&t], |tx| {
                        tx[0].insert(i.to_be_bytes(), vec![7; 100])?;
                        Ok::<_, ConflictableTransactionError<()>>(())
                    })
                    .expect("commits");
            }
            store.flush_blocking().expect("durable");
            assert!(fs_len(dir.path()) > 0, "the records are in the log");
        }
        let store = open(dir.path());
        let t = store.db.open_tree("t").expect("tree");
        assert_eq!(t.len(), 100);
        assert_eq!(fs_len(dir.path()), 0);
        let lsn = wal::applied_lsn(&store.wal_meta).expect("lsn");
        assert_eq!(lsn, 100, "one lsn per logged transaction");
    }

    /// Guards against logged writes that no one waits for (a purge's removals) piling up in
    /// memory: past a bound, the flusher writes them on its own.
    #[test]
    fn unwaited_records_are_written_without_a_waiter() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let t = store.db.open_tree("t").expect("tree");
        for i in 0..3_000u32 {
            store
                .transact(&[&t], |tx| {
                    tx[0].insert(i.to_be_bytes(), vec![7; 1000])?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .expect("commits");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs_len(dir.path()) < 1 << 20 {
            assert!(std::time::Instant::now() < deadline, "nothing written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Polls `f` once: its output if it is ready now.
    fn ready_now<T>(f: &mut StoreFuture<T>) -> Option<Result<T, Error>> {
        use std::task::{Context, Poll, Waker};
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        }
    }

    /// Guards against a client being shown an append a crash can take back: sled shows it at
    /// once, and `settled` (which a read awaits before it answers) resolves only once the
    /// append's record is synced.
    #[test]
    fn settled_waits_for_the_appends_a_reader_can_see() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let s = Uuid::now_v7();
        store
            .append(s, 0, &[event("a")])
            .expect("append")
            .wait()
            .expect("durable");
        let mut settled = EventStore::settled(&store);
        assert!(
            matches!(ready_now(&mut settled), Some(Ok(()))),
            "with nothing in flight a read is settled at once"
        );

        let held = store.group_commit.hold();
        let commit = store.append(s, 1, &[event("b")]).expect("append");
        assert_eq!(store.head(s).expect("head"), 2, "sled shows the append");
        let mut settled = EventStore::settled(&store);
        assert!(
            ready_now(&mut settled).is_none(),
            "settled before the append is durable"
        );
        drop(held);
        commit.wait().expect("durable");
        // Readers are answered before the writers of the same flush.
        assert!(matches!(ready_now(&mut settled), Some(Ok(()))));
    }

    /// Guards against a reader being shown a write that failed to become durable: it gets the
    /// store's error instead, and so does every later read while the store holds such a write.
    #[test]
    fn a_reader_gets_the_error_when_what_it_saw_cannot_be_made_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let s = Uuid::now_v7();
        let held = store.group_commit.hold();
        let commit = store.append(s, 0, &[event("a")]).expect("append");
        let mut settled = EventStore::settled(&store);
        assert!(ready_now(&mut settled).is_none());
        store.group_commit.fail_next_write();
        drop(held);
        assert!(matches!(commit.wait(), Err(Error::Io(_))));
        assert!(matches!(ready_now(&mut settled), Some(Err(Error::Io(_)))));
        assert!(matches!(
            store.group_commit.settled_blocking(),
            Err(Error::Io(_))
        ));
    }

    fn fs_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(wal::FILE)).map_or(0, |m| m.len())
    }

    /// Guards against sled's blob files (pages over ~128 KiB), which sled itself never fsyncs.
    #[test]
    fn large_events_survive_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Uuid::now_v7();
        let big = "x".repeat(300 * 1024);
        {
            let store = open(dir.path());
            store
                .append(s, 0, &[event(&big), event(&big)])
                .expect("append")
                .wait()
                .expect("durable");
        }
        let store = open(dir.path());
        assert_eq!(verify_stream(&store, s).expect("verifies"), 2);
        let read = store.read_all(s).expect("read");
        assert!(matches!(&read[1].event, Event::Undeployed(u) if u.reason == big));
    }

    #[test]
    fn a_second_open_of_a_locked_directory_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _running = open(dir.path());
        match SledStore::open(dir.path()) {
            Err(Error::Locked(path)) => assert_eq!(path, dir.path().display().to_string()),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("two stores opened one directory"),
        }
    }

    /// An edit of the stored log, even of one character, is found and named by its seq.
    #[test]
    fn an_edited_event_fails_verification_at_its_seq() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let s = Uuid::now_v7();
        let other = Uuid::now_v7();
        store
            .append(s, 0, &[event("first"), event("second"), event("third")])
            .expect("append")
            .wait()
            .expect("durable");
        store
            .append(other, 0, &[event("elsewhere")])
            .expect("append")
            .wait()
            .expect("durable");
        assert_eq!(
            verify_all(&store).expect("an intact store verifies"),
            VerifyReport {
                streams: 2,
                events: 4
            }
        );

        let events = store.db.open_tree(EVENTS_TREE).expect("events tree");
        let key = event_key(s, 2);
        let stored = events.get(key).expect("get").expect("seq 2 is stored");
        let edited = String::from_utf8(stored.to_vec())
            .expect("stored JSON")
            .replace("\"second\"", "\"Second\"");
        events.insert(key, edited.as_bytes()).expect("insert");

        let corrupt_at_2 =
            |e: Error| matches!(e, Error::Corrupt { stream, seq: 2, .. } if stream == s);
        assert!(corrupt_at_2(
            verify_stream(&store, s).expect_err("edit found")
        ));
        assert!(corrupt_at_2(verify_all(&store).expect_err("edit found")));
        assert_eq!(verify_stream(&store, other).expect("untouched"), 1);
    }

    #[test]
    fn an_undecodable_head_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let s = Uuid::now_v7();
        let heads = store.db.open_tree(HEADS_TREE).expect("heads tree");
        heads.insert(s.as_bytes(), &b"short"[..]).expect("insert");
        assert!(matches!(store.head(s), Err(Error::Corrupt { .. })));
        assert!(matches!(
            store.append(s, 0, &[event("a")]),
            Err(Error::Corrupt { .. })
        ));
        heads.insert(&b"not a uuid"[..], &b""[..]).expect("insert");
        assert!(matches!(store.streams(), Err(Error::Corrupt { .. })));
    }

    /// Thirty-two appenders at once, each on its own stream: the flusher serves them in groups and
    /// every commit resolves durable.
    #[test]
    fn group_commit_makes_concurrent_appends_durable() {
        const WRITERS: usize = 32;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let start = Barrier::new(WRITERS);
        let streams: Vec<Uuid> = (0..WRITERS).map(|_| Uuid::now_v7()).collect();
        std::thread::scope(|scope| {
            for s in &streams {
                let (store, start) = (&store, &start);
                scope.spawn(move || {
                    start.wait();
                    store
                        .append(*s, 0, &[event("a")])
                        .expect("append")
                        .wait()
                        .expect("durable");
                });
            }
        });
        store.flush_blocking().expect("flush");
        drop(store);
        let store = open(dir.path());
        for s in streams {
            assert_eq!(store.head(s).expect("head"), 1);
        }
    }
}
