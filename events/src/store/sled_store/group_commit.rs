//! Group commit: one background thread makes logged writes durable, many writes per fsync.
//!
//! An fsync costs the same whatever it carries, so writers do not sync on their own thread: each
//! leaves its write-ahead record ([`super::wal`]) and a waiter here, and the flusher thread takes
//! every record and waiter that has gathered, writes the records to the log, `fdatasync`s it once,
//! and answers them all. The same thread checkpoints (makes sled itself durable and empties the
//! log) when the log has grown long.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
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
}

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
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

impl GroupCommit {
    /// Starts the flusher for the sled db in `dir`, after a checkpoint: whatever recovery replayed
    /// into sled is durable, and the log starts empty.
    pub(super) fn start(db: sled::Db, dir: &Path, keys: Arc<ThreadKeys>) -> Result<Self, Error> {
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
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
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

    /// Queues the write-ahead record of a transaction sled has just applied. Called in lsn order
    /// (under the store's writer lock), so the log keeps that order.
    pub(super) fn log(&self, lsn: u64, ops: &[wal::Op]) {
        let mut queue = self.shared.lock();
        wal::encode(lsn, ops, &mut queue.records);
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
            let (batch, records, checkpoints, failed) = {
                let mut queue = self.shared.lock();
                while queue.waiters.is_empty() && queue.checkpoints.is_empty() && !queue.stopping {
                    queue = self
                        .shared
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                // Stopping still answers whoever is waiting; it ends only on an empty queue.
                if queue.waiters.is_empty() && queue.checkpoints.is_empty() {
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
                    std::mem::take(&mut queue.checkpoints),
                    queue.failed.clone(),
                )
            };
            let result = match failed {
                Some(e) => Err(e),
                None => self.write_log(&records),
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, "writing the write-ahead log failed; refusing further writes");
                self.shared.lock().failed.get_or_insert_with(|| e.clone());
            }
            {
                let mut queue = self.shared.lock();
                if let Some(e) = queue.poisoned.take() {
                    tracing::error!(error = %e, "sled failed to apply a logged write; refusing further writes");
                    queue.failed.get_or_insert(e);
                }
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

    /// Makes `records` durable: one write, one fdatasync.
    fn write_log(&mut self, records: &[u8]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
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
