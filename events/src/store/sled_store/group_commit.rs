//! Group commit: one background thread makes logged writes durable, many writes per fsync.
//!
//! An fsync costs the same whatever it carries, so writers do not sync on their own thread: each
//! leaves its write-ahead record ([`super::wal`]) and a waiter here, and the flusher thread takes
//! every record and waiter that has gathered, writes the records to the log, `fdatasync`s it once,
//! and answers them all. The same thread checkpoints (makes sled itself durable and empties the
//! log) when the log has grown long.
//!
//! It also keeps readers from seeing what is not durable yet. sled shows a logged write to
//! readers as soon as it is applied, before its record is synced, so the store tracks two lsns:
//! `visible`, raised *before* sled applies a transaction, and `durable`, raised once the
//! transaction's record is synced. A read reads sled first and then asks [`GroupCommit::settled`],
//! which compares the two: equal (nothing in flight, the common case for reads) costs two atomic
//! loads; otherwise the read waits until `durable` reaches the `visible` it saw, which the flush in
//! flight (or the next one, which the writers' own waiters ask for anyway) brings about. Raising
//! `visible` before applying and loading it after reading is what makes this sound: anything the
//! read saw was applied after its lsn was published, so the lsn loaded covers it. (Loading it
//! *before* the read would not: a write applied between the load and the read would be returned
//! unguarded.)

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::super::Error;
use super::thread_keys::ThreadKeys;
use super::wal;

type Waiter = oneshot::Sender<Result<(), Error>>;

/// How many bytes of records may wait in memory for a flush that no writer asked for.
const UNWAITED_BYTES: usize = 1 << 20;

/// The flusher thread and the queue of appends waiting for it.
pub(super) struct GroupCommit {
    shared: Arc<Shared>,
    /// Joined on drop, so that every waiter is answered and the thread's handle on the db is gone
    /// before the db closes (a reopen of the directory must find it unlocked).
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The lsn of the last logged transaction sled may show to readers: raised before sled
    /// applies it ([`GroupCommit::applying`]).
    visible: AtomicU64,
    /// The lsn of the last logged transaction whose record is synced. Raised only under the
    /// queue's lock, so that a reader registering under it cannot miss the raise.
    durable: AtomicU64,
    /// Holds the flusher before it writes a batch, so that a test can look at the store with a
    /// write applied and not yet durable; or fails its next write.
    #[cfg(test)]
    hold: TestHold,
}

/// See `Shared::hold`.
#[cfg(test)]
#[derive(Default)]
struct TestHold {
    held: Mutex<bool>,
    released: Condvar,
    fail_next: std::sync::atomic::AtomicBool,
}

/// See [`GroupCommit::hold`].
#[cfg(test)]
pub(super) struct HeldFlusher<'a>(&'a GroupCommit);

#[cfg(test)]
impl Drop for HeldFlusher<'_> {
    fn drop(&mut self) {
        let hold = &self.0.shared.hold;
        *hold.held.lock().unwrap_or_else(PoisonError::into_inner) = false;
        hold.released.notify_all();
    }
}

/// What a read must wait for before it returns what it read ([`GroupCommit::settled`]).
pub(super) enum Settled {
    /// Everything sled shows is durable.
    Now,
    /// Some of what sled shows is not durable yet: resolves once it is, or with the error that
    /// kept it from becoming durable.
    Later(oneshot::Receiver<Result<(), Error>>),
    /// The store failed: what sled shows may never become durable.
    Failed(Error),
}

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    /// Reads waiting until the lsn they saw `visible` at is durable. They do not make the
    /// flusher write on their own unless records are queued (`Queue::records`): a read needs no
    /// flush of its own, only the one that carries the writes it saw.
    readers: Vec<(u64, Waiter)>,
    /// The lsn of the last record queued (in `records` or already written).
    queued_lsn: u64,
    /// Waiting for a checkpoint (sled durable, log emptied), e.g. at a graceful shutdown.
    checkpoints: Vec<Waiter>,
    /// Encoded write-ahead records not yet written to the log, in lsn order.
    records: Vec<u8>,
    stopping: bool,
    /// Set by the first failed flush and never cleared. After a failed fsync the kernel may have
    /// dropped the dirty pages it could not write, so a later successful fsync proves nothing about
    /// them: the only safe course is to refuse further writes until a restart re-reads the disk.
    failed: Option<Error>,
    /// Set when sled failed to apply a logged transaction halfway: its record is queued, so the
    /// next flush still writes it (a restart then completes the transaction from the log), and
    /// only then does the store turn `failed`. No new writes are taken meanwhile.
    poisoned: Option<Error>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds no invariant a panicking holder could break halfway.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Queue {
    /// Whether the flusher has something to do.
    fn has_work(&self) -> bool {
        !self.waiters.is_empty()
            || !self.checkpoints.is_empty()
            || (!self.readers.is_empty() && !self.records.is_empty())
    }
}

impl GroupCommit {
    /// Starts the flusher for the sled db in `dir`, after a checkpoint: whatever recovery replayed
    /// into sled is durable, and the log starts empty. `last_lsn`: the lsn of the last logged
    /// transaction sled holds.
    pub(super) fn start(
        db: sled::Db,
        dir: &Path,
        last_lsn: u64,
        keys: Arc<ThreadKeys>,
    ) -> Result<Self, Error> {
        // sled 0.34 ends its own writes with sync_file_range on Linux, which writes the pages but
        // does not flush the disk's volatile cache; fdatasync on a descriptor of the same file
        // does. Our own descriptor does not touch sled's lock (flock is per open file).
        let log = OpenOptions::new()
            .write(true)
            .open(dir.join("db"))
            .map_err(|e| io_error("opening the db file for fsync", &e))?;
        // The directory entries of the files sled just created must survive a power loss too.
        sync_dir(dir).map_err(|e| io_error("syncing the data directory", &e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|e| io_error("syncing the data directory's parent", &e))?;
        }

        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                queued_lsn: last_lsn,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            visible: AtomicU64::new(last_lsn),
            durable: AtomicU64::new(last_lsn),
            #[cfg(test)]
            hold: TestHold::default(),
        });
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(wal::FILE))
            .map_err(|e| io_error("opening the write-ahead log", &e))?;
        let mut flusher = Flusher {
            db,
            log,
            wal,
            wal_len: 0,
            blobs: BlobSync::new(dir.join("blobs")),
            keys,
            shared: shared.clone(),
        };
        flusher.checkpoint()?;
        // The log's directory entry, if it was just created.
        sync_dir(dir).map_err(|e| io_error("syncing the data directory", &e))?;
        let thread = std::thread::Builder::new()
            .name("hangar-group-commit".into())
            .spawn(move || flusher.run())
            .map_err(|e| io_error("starting the flusher thread", &e))?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Fails if an earlier flush failed: the store takes no more writes until restarted.
    pub(super) fn check_healthy(&self) -> Result<(), Error> {
        let queue = self.shared.lock();
        match queue.failed.as_ref().or(queue.poisoned.as_ref()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Asks for a checkpoint after the records queued so far; the receiver resolves once sled
    /// itself is durable and the log empty, so that the next open has nothing to replay.
    pub(super) fn checkpoint(&self) -> oneshot::Receiver<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        let mut queue = self.shared.lock();
        queue.checkpoints.push(tx);
        self.shared.wake.notify_one();
        rx
    }

    /// Says that sled is about to apply logged transaction `lsn`, so that readers who may see its
    /// writes wait for its record ([`GroupCommit::settled`]). Called under the store's writer
    /// lock, before the first write reaches sled.
    pub(super) fn applying(&self, lsn: u64) {
        self.shared.visible.store(lsn, Ordering::SeqCst);
    }

    /// Called by a read *after* it read sled: whether what it read is durable, or what to wait
    /// for until it is. Costs two atomic loads when no logged write is in flight.
    pub(super) fn settled(&self) -> Settled {
        let seen = self.shared.visible.load(Ordering::SeqCst);
        if self.shared.durable.load(Ordering::SeqCst) >= seen {
            return Settled::Now;
        }
        let mut queue = self.shared.lock();
        // `durable` is raised under this lock: checked again, no raise can slip between the
        // check and the registration.
        if self.shared.durable.load(Ordering::SeqCst) >= seen {
            return Settled::Now;
        }
        if let Some(e) = queue.failed.as_ref().or(queue.poisoned.as_ref()) {
            return Settled::Failed(e.clone());
        }
        let (tx, rx) = oneshot::channel();
        queue.readers.push((seen, tx));
        if queue.has_work() {
            self.shared.wake.notify_one();
        }
        Settled::Later(rx)
    }

    /// [`GroupCommit::settled`], blocking the calling thread until it is (tests only: on an
    /// async executor's thread it would panic).
    #[cfg(test)]
    pub(super) fn settled_blocking(&self) -> Result<(), Error> {
        match self.settled() {
            Settled::Now => Ok(()),
            Settled::Failed(e) => Err(e),
            Settled::Later(rx) => rx.blocking_recv().map_err(|_| Error::Closed)?,
        }
    }

    /// Holds the flusher before its next write, until the guard is dropped (a failing test
    /// releases it too: the store's drop joins the flusher).
    #[cfg(test)]
    pub(super) fn hold(&self) -> HeldFlusher<'_> {
        *self
            .shared
            .hold
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        HeldFlusher(self)
    }

    /// Makes the flusher's next write of the log fail, as a failing disk would.
    #[cfg(test)]
    pub(super) fn fail_next_write(&self) {
        self.shared.hold.fail_next.store(true, Ordering::SeqCst);
    }

    /// Queues the write-ahead record of a transaction sled has just applied. Called in lsn order
    /// (under the store's writer lock), so the log keeps that order.
    pub(super) fn log(&self, lsn: u64, ops: &[wal::Op]) {
        let mut queue = self.shared.lock();
        wal::encode(lsn, ops, &mut queue.records);
        queue.queued_lsn = lsn;
        // A reader that saw this transaction may be waiting for it.
        if !queue.readers.is_empty() {
            self.shared.wake.notify_one();
        }
        // Records nobody waits for (a purge's removals under sync-only load) would pile up in
        // memory without bound: past UNWAITED_BYTES they are written for a waiter nobody awaits.
        if queue.records.len() >= UNWAITED_BYTES && queue.waiters.is_empty() {
            queue.waiters.push(oneshot::channel().0);
            self.shared.wake.notify_one();
        }
    }

    /// [`GroupCommit::log`] for a transaction sled failed to apply whole; refuses further writes
    /// once the record is written (see `poisoned`). One lock for both, so that no flush can write
    /// the record and then checkpoint before the store knows it is poisoned.
    pub(super) fn log_poisoned(&self, lsn: u64, ops: &[wal::Op], e: Error) {
        // A waiter nobody awaits, so that the flusher wakes and writes the record.
        let (tx, _) = oneshot::channel();
        let mut queue = self.shared.lock();
        wal::encode(lsn, ops, &mut queue.records);
        queue.queued_lsn = lsn;
        queue.poisoned.get_or_insert(e);
        queue.waiters.push(tx);
        self.shared.wake.notify_one();
    }

    /// Asks for a flush of every record logged so far; the receiver resolves once it is durable.
    pub(super) fn request(&self) -> oneshot::Receiver<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        let mut queue = self.shared.lock();
        match &queue.failed {
            Some(e) => {
                let _ = tx.send(Err(e.clone()));
            }
            None => {
                queue.waiters.push(tx);
                self.shared.wake.notify_one();
            }
        }
        rx
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the group-commit flusher thread panicked");
            }
        }
    }
}

struct Flusher {
    db: sled::Db,
    /// Our own descriptor of `<dir>/db`, for fdatasync at a checkpoint.
    log: File,
    /// The write-ahead log, opened for appending.
    wal: File,
    /// Its length since the last checkpoint.
    wal_len: u64,
    blobs: BlobSync,
    /// Synced before the log and before sled: a record sealed under a new thread key must never
    /// be durable without the key (`thread_keys`).
    keys: Arc<ThreadKeys>,
    shared: Arc<Shared>,
}

impl Flusher {
    fn run(mut self) {
        loop {
            let (batch, records, batch_lsn, checkpoints, failed) = {
                let mut queue = self.shared.lock();
                while !queue.has_work() && !queue.stopping {
                    queue = self
                        .shared
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                // Stopping still answers whoever is waiting; it ends only on an empty queue.
                if !queue.has_work() {
                    let healthy = queue.failed.is_none() && queue.poisoned.is_none();
                    drop(queue);
                    // A clean close leaves sled durable and the log empty.
                    if healthy {
                        if let Err(e) = self.checkpoint() {
                            tracing::error!(error = %e, "the closing checkpoint failed; the next open replays the log");
                        }
                    }
                    return;
                }
                (
                    std::mem::take(&mut queue.waiters),
                    std::mem::take(&mut queue.records),
                    queue.queued_lsn,
                    std::mem::take(&mut queue.checkpoints),
                    queue.failed.clone(),
                )
            };
            #[cfg(test)]
            self.wait_while_held();
            let result = match failed {
                Some(e) => Err(e),
                None => self.write_log(&records),
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, "writing the write-ahead log failed; refusing further writes");
            }
            let (readers, answer): (Vec<(u64, Waiter)>, Result<(), Error>) = {
                let mut queue = self.shared.lock();
                if let Err(e) = &result {
                    queue.failed.get_or_insert_with(|| e.clone());
                }
                if let Some(e) = queue.poisoned.take() {
                    tracing::error!(error = %e, "sled failed to apply a logged write; refusing further writes");
                    queue.failed.get_or_insert(e);
                }
                match queue.failed.clone() {
                    // Readers who saw a write of this batch or an earlier one may go on; the
                    // others wait for the next batch.
                    None => {
                        self.shared.durable.store(batch_lsn, Ordering::SeqCst);
                        let (done, waiting) = std::mem::take(&mut queue.readers)
                            .into_iter()
                            .partition(|(lsn, _)| *lsn <= batch_lsn);
                        queue.readers = waiting;
                        (done, Ok(()))
                    }
                    // What they saw may never be durable (or, poisoned, was only half applied):
                    // they get the error rather than the state.
                    Some(e) => (std::mem::take(&mut queue.readers), Err(e)),
                }
            };
            for (_, reader) in readers {
                let _ = reader.send(answer.clone());
            }
            for waiter in batch {
                // A dropped receiver only means the caller stopped caring.
                let _ = waiter.send(result.clone());
            }
            let due = !checkpoints.is_empty() || self.wal_len >= wal::CHECKPOINT_BYTES;
            // Never after a failure: a poisoned transaction's writes may be half in sled, and
            // only its record in the log can complete them at the next start.
            let failed = self.shared.lock().failed.clone();
            let checkpointed = match (&result, failed.as_ref()) {
                (Err(e), _) | (Ok(()), Some(e)) => Err(e.clone()),
                (Ok(()), None) if due => {
                    let done = self.checkpoint();
                    if let Err(e) = &done {
                        tracing::error!(error = %e, "a checkpoint failed; refusing further writes");
                        self.shared.lock().failed.get_or_insert(e.clone());
                    }
                    done
                }
                (Ok(()), None) => Ok(()),
            };
            for waiter in checkpoints {
                let _ = waiter.send(checkpointed.clone());
            }
        }
    }

    #[cfg(test)]
    fn wait_while_held(&self) {
        let hold = &self.shared.hold;
        let mut held = hold.held.lock().unwrap_or_else(PoisonError::into_inner);
        while *held {
            held = hold
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Makes `records` durable: one write, one fdatasync.
    fn write_log(&mut self, records: &[u8]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if self.shared.hold.fail_next.swap(false, Ordering::SeqCst) {
            return Err(Error::Io(
                "writing the write-ahead log: a test failed it".into(),
            ));
        }
        self.keys
            .sync_if_dirty()
            .map_err(|e| io_error("syncing the thread keys", &e))?;
        self.wal
            .write_all(records)
            .and_then(|()| self.wal.sync_data())
            .map_err(|e| io_error("writing the write-ahead log", &e))?;
        self.wal_len += records.len() as u64;
        Ok(())
    }

    /// Makes sled durable, then empties the log: every record in it is in sled by now (a record
    /// is queued only after sled applied its transaction).
    fn checkpoint(&mut self) -> Result<(), Error> {
        self.keys
            .sync_if_dirty()
            .map_err(|e| io_error("syncing the thread keys", &e))?;
        self.db
            .flush()
            .map_err(|e| Error::Io(format!("flushing sled: {e}")))?;
        // Blobs before the log: a log record that survives without its blob is a hole sled cannot
        // read back; a blob without its record is garbage sled removes on recovery.
        self.blobs
            .sync_new()
            .map_err(|e| io_error("syncing sled's blob files", &e))?;
        self.log
            .sync_data()
            .map_err(|e| io_error("fsyncing the db file", &e))?;
        // Records queued meanwhile are still in `records`; they follow in the emptied log, and a
        // replay skips the ones sled already has by their lsn.
        self.wal
            .set_len(0)
            .and_then(|()| self.wal.sync_all())
            .map_err(|e| io_error("emptying the write-ahead log", &e))?;
        self.wal_len = 0;
        Ok(())
    }
}

/// sled 0.34 writes any page larger than a quarter segment (~128 KiB: a large event, or a leaf of
/// 16 medium ones) to its own file under `blobs/` and never fsyncs it or the directory. We do.
struct BlobSync {
    dir: PathBuf,
    /// The blobs synced so far, with the length they had when synced. A blob being written while
    /// we look is synced again once its length changes (blobs are written once, appending).
    synced: HashMap<OsString, u64>,
}

impl BlobSync {
    fn new(dir: PathBuf) -> Self {
        BlobSync {
            dir,
            synced: HashMap::new(),
        }
    }

    fn sync_new(&mut self) -> io::Result<()> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashMap::with_capacity(self.synced.len());
        let mut synced_any = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            // sled removes blobs it no longer needs, possibly between our listing and our look.
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if self.synced.get(&name) != Some(&len) {
                match OpenOptions::new().write(true).open(entry.path()) {
                    Ok(file) => file.sync_data()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced_any = true;
            }
            present.insert(name, len);
        }
        if synced_any {
            sync_dir(&self.dir)?;
        }
        // Forget removed blobs, so the map stays the size of the directory.
        self.synced = present;
        Ok(())
    }
}

/// Makes a directory's entries (files created or renamed in it) durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory for fsync; NTFS journals its metadata instead.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn io_error(doing: &str, e: &io::Error) -> Error {
    Error::Io(format!("{doing}: {e}"))
}
