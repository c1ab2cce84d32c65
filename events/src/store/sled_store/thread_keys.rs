//! Deleting a thread for real on sled: what a thread says is stored encrypted under a key of its
//! own, kept outside sled, and deletion destroys the key.
//!
//! sled 0.34 removes a deleted value from its log files only when it happens to rewrite their
//! segment, and the write-ahead log (`hangar.wal`) keeps every write until the next checkpoint:
//! a deleted turn's text could be read back from the data directory for a long time. So the
//! turns of a thread, and the content of its runs (input, output, what a paused run waits for
//! and where it resumes), are sealed with XChaCha20-Poly1305 under a random 32-byte key per
//! (agent, thread), and only ciphertext reaches sled and the log.
//!
//! The keys live in one file beside sled, `thread-keys/keys`: a 64-byte header, then 64-byte
//! slots, each `sha256(agent ++ thread)` then the key; an all-zero slot is free. Why one file:
//! an A2A message without a `contextId` starts a thread, and a file per key cost two fsyncs
//! (the file and its directory) on the agent's actor for every such message. Now a new key is
//! written into a slot (into the page cache only) and made durable by the group commit, which
//! syncs this file before the write-ahead log ([`ThreadKeys::sync_if_dirty`]): everything sealed
//! under a key reaches the log after the key was written, so a write acknowledged as durable
//! never names a key a crash could lose.
//!
//! Deleting a thread overwrites its slot with zeros in place and syncs the file before it
//! answers. Once that is done, whatever copies of the ciphertext sled still holds cannot be
//! opened by anyone, the server included: a run of a deleted thread reads back with its content
//! replaced by `{"deleted": true}`, and leftover turns are skipped. (An overwrite in place
//! reaches the same disk blocks on ext4 and XFS; on a copy-on-write file system such as btrfs
//! or ZFS the old block lingers until it is reused, as an unlinked file's blocks do everywhere.)

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::Error;

/// The key directory's name, inside the sled directory.
pub(super) const DIR: &str = "thread-keys";
/// The file of slots, inside [`DIR`].
const FILE: &str = "keys";
const MAGIC: &[u8] = b"hangar thread keys v1\n";
const KEY_LEN: usize = 32;
const NAME_LEN: usize = 32;
const SLOT_LEN: u64 = (NAME_LEN + KEY_LEN) as u64;
/// The header takes the place of slot 0, so slot `n`'s offset is `n * SLOT_LEN`.
const FIRST_SLOT: u32 = 1;
const NONCE_LEN: usize = 24;

type Name = [u8; NAME_LEN];
type Key = [u8; KEY_LEN];

/// The per-thread keys of one store directory. One per open [`super::SledStore`]: the slots are
/// allocated in memory, so two of them over one file would hand out the same slot.
pub(super) struct ThreadKeys {
    file: File,
    slots: Mutex<Slots>,
    /// A key was written since the last sync ([`ThreadKeys::sync_if_dirty`]).
    dirty: AtomicBool,
}

/// Where each thread's key is. Only slot numbers are held in memory (about 50 bytes a thread):
/// the keys themselves are read from the file (the page cache) when needed.
#[derive(Default)]
struct Slots {
    by_name: HashMap<Name, u32>,
    /// Slots zeroed by a deletion, taken again before the file grows.
    free: Vec<u32>,
    /// One past the last slot in the file.
    end: u32,
    /// The keys of threads used lately, so that sealing a run's events does not read the file
    /// for each (a profile of thread runs showed those reads); emptied when it reaches
    /// [`RECENT_KEYS`], so it stays small whatever the number of threads.
    recent: HashMap<Name, Key>,
}

/// Keys kept in memory at most.
const RECENT_KEYS: usize = 4096;

impl Slots {
    fn remember(&mut self, name: Name, key: Key) {
        if self.recent.len() >= RECENT_KEYS {
            self.recent.clear();
        }
        self.recent.insert(name, key);
    }
}

fn io_error(what: &str, e: io::Error) -> Error {
    Error::Io(format!("thread keys: {what}: {e}"))
}

fn name_of(agent: Uuid, thread: &str) -> Name {
    let mut h = Sha256::new();
    h.update(agent.as_bytes());
    h.update(thread.as_bytes());
    h.finalize().into()
}

fn offset(slot: u32) -> u64 {
    u64::from(slot) * SLOT_LEN
}

impl ThreadKeys {
    /// Opens (or makes) `thread-keys/keys` under `store_dir`, and moves into it the key files a
    /// version before it kept one per thread.
    pub fn open(store_dir: &Path) -> Result<Self, Error> {
        let dir = store_dir.join(DIR);
        fs::create_dir_all(&dir).map_err(|e| io_error("cannot create the directory", e))?;
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("cannot open the key file", e))?;
        let keys = ThreadKeys {
            slots: Mutex::new(Self::load(&file)?),
            file,
            dirty: AtomicBool::new(false),
        };
        if keys.lock().end == 0 {
            let mut header = [0u8; SLOT_LEN as usize];
            header[..MAGIC.len()].copy_from_slice(MAGIC);
            keys.file
                .write_all_at(&header, 0)
                .and_then(|()| keys.file.sync_all())
                .map_err(|e| io_error("cannot write the key file's header", e))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("cannot sync the directory", e))?;
            keys.lock().end = FIRST_SLOT;
        }
        keys.import_key_files(&dir)?;
        Ok(keys)
    }

    /// The slots of an existing file (an empty one has none, not even its header).
    fn load(file: &File) -> Result<Slots, Error> {
        let len = file
            .metadata()
            .map_err(|e| io_error("cannot read the key file's size", e))?
            .len();
        if len == 0 {
            return Ok(Slots::default());
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| io_error("cannot read the key file", e))?;
        if !bytes.starts_with(MAGIC) {
            return Err(Error::Io(format!(
                "thread keys: {DIR}/{FILE} is not a Hangar key file"
            )));
        }
        let mut slots = Slots::default();
        // A slot torn by a crash as the file grew is shorter than SLOT_LEN: its key was never
        // synced, so nothing durable was sealed under it. It is overwritten by the next key.
        let whole = (len / SLOT_LEN) as u32;
        for slot in FIRST_SLOT..whole {
            let at = offset(slot) as usize;
            let name: Name = bytes[at..at + NAME_LEN]
                .try_into()
                .map_err(|_| Error::Io("thread keys: a slot is cut short".into()))?;
            if name == [0u8; NAME_LEN] {
                slots.free.push(slot);
            } else {
                slots.by_name.insert(name, slot);
            }
        }
        slots.end = whole.max(FIRST_SLOT);
        Ok(slots)
    }

    /// Moves each `thread-keys/<hex name>` file (the layout before this file) into a slot, syncs
    /// the file, then removes the old files. A crash halfway leaves files that the next open
    /// moves again (a name already in a slot is only removed).
    fn import_key_files(&self, dir: &Path) -> Result<(), Error> {
        let entries = fs::read_dir(dir).map_err(|e| io_error("cannot list the directory", e))?;
        let mut old: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot list the directory", e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.ends_with(".tmp") {
                // A key file a crash left half made; it was never linked to a thread.
                old.push(entry.path());
                continue;
            }
            let Some(name) = hex::decode(file_name)
                .ok()
                .and_then(|b| Name::try_from(b.as_slice()).ok())
            else {
                continue;
            };
            let key = fs::read(entry.path()).map_err(|e| io_error("cannot read a key file", e))?;
            let key = Key::try_from(key.as_slice())
                .map_err(|_| Error::Io(format!("thread key {file_name} is not {KEY_LEN} bytes")))?;
            let mut slots = self.lock();
            if !slots.by_name.contains_key(&name) {
                self.write_slot(&mut slots, name, &key)?;
            }
            old.push(entry.path());
        }
        if old.is_empty() {
            return Ok(());
        }
        self.sync_if_dirty()
            .map_err(|e| io_error("cannot sync the key file", e))?;
        for path in &old {
            fs::remove_file(path).map_err(|e| io_error("cannot remove an old key file", e))?;
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("cannot sync the directory", e))
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every change to `Slots` is complete before the file is touched, or undone by the
        // caller's error: a panicking holder leaves nothing half done.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `name`'s key into a free slot (or a new one at the end), in the page cache.
    fn write_slot(&self, slots: &mut Slots, name: Name, key: &Key) -> Result<(), Error> {
        let (slot, grown) = match slots.free.pop() {
            Some(slot) => (slot, false),
            None => (slots.end, true),
        };
        let mut record = [0u8; SLOT_LEN as usize];
        record[..NAME_LEN].copy_from_slice(&name);
        record[NAME_LEN..].copy_from_slice(key);
        if let Err(e) = self.file.write_all_at(&record, offset(slot)) {
            if !grown {
                slots.free.push(slot);
            }
            return Err(io_error("cannot write a key", e));
        }
        if grown {
            slots.end += 1;
        }
        slots.by_name.insert(name, slot);
        slots.remember(name, *key);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// The key in `slot`, checked to be `name`'s.
    fn read_slot(&self, slot: u32, name: &Name) -> Result<Key, Error> {
        let mut record = [0u8; SLOT_LEN as usize];
        self.file
            .read_exact_at(&mut record, offset(slot))
            .map_err(|e| io_error("cannot read a key", e))?;
        if &record[..NAME_LEN] != name {
            return Err(Error::Io(format!(
                "thread keys: slot {slot} holds another thread's key"
            )));
        }
        record[NAME_LEN..]
            .try_into()
            .map_err(|_| Error::Io("thread keys: a slot is cut short".into()))
    }

    /// The thread's key, if it has one (it has none before its first write, or once deleted).
    pub fn get(&self, agent: Uuid, thread: &str) -> Result<Option<Key>, Error> {
        let name = name_of(agent, thread);
        // Read under the lock: a slot freed by a deletion may be given to another thread.
        let mut slots = self.lock();
        self.known(&mut slots, name)
    }

    /// `name`'s key from memory, or read from its slot (and remembered); `None` if it has none.
    fn known(&self, slots: &mut Slots, name: Name) -> Result<Option<Key>, Error> {
        if let Some(key) = slots.recent.get(&name) {
            return Ok(Some(*key));
        }
        let Some(&slot) = slots.by_name.get(&name) else {
            return Ok(None);
        };
        let key = self.read_slot(slot, &name)?;
        slots.remember(name, key);
        Ok(Some(key))
    }

    /// The thread's key, made if it has none yet. A new key is in the page cache when this
    /// returns; the group commit makes it durable before any write sealed under it
    /// ([`ThreadKeys::sync_if_dirty`]).
    pub fn get_or_create(&self, agent: Uuid, thread: &str) -> Result<Key, Error> {
        let name = name_of(agent, thread);
        let mut slots = self.lock();
        if let Some(key) = self.known(&mut slots, name)? {
            return Ok(key);
        }
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        self.write_slot(&mut slots, name, &key)?;
        Ok(key)
    }

    /// Destroys the thread's key, durably (its slot zeroed and synced); false if it had none.
    pub fn destroy(&self, agent: Uuid, thread: &str) -> Result<bool, Error> {
        let name = name_of(agent, thread);
        let slot = {
            let mut slots = self.lock();
            slots.recent.remove(&name);
            let Some(slot) = slots.by_name.remove(&name) else {
                return Ok(false);
            };
            if let Err(e) = self
                .file
                .write_all_at(&[0u8; SLOT_LEN as usize], offset(slot))
            {
                slots.by_name.insert(name, slot);
                return Err(io_error("cannot erase a key", e));
            }
            slot
        };
        // Synced before the slot is handed out again: until then a crash could bring the key
        // back, and a new thread's key written over it would be lost with it.
        self.file
            .sync_data()
            .map_err(|e| io_error("cannot sync the key file", e))?;
        self.lock().free.push(slot);
        Ok(true)
    }

    /// Makes every key written so far durable, if any was. The group commit calls it before it
    /// syncs the write-ahead log or sled, so no durable write is sealed under a lost key.
    pub(super) fn sync_if_dirty(&self) -> io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.file.sync_data() {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl ThreadKeys {
    /// Whether a key was written and not synced since.
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }
}

/// `plaintext` sealed under `key`, bound to `aad` (where it is stored): nonce ++ ciphertext.
pub(super) fn seal(key: &Key, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    // A nonce must never repeat under one key; 192 random bits from the thread's CSPRNG (seeded
    // from the OS) make that certain without a system call per record, which a profile of
    // thread runs showed (every run event of a thread is sealed).
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let sealed = XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Io("sealing a thread's record failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// What [`seal`] sealed; `None` when it does not open with `key` and `aad`.
pub(super) fn open(key: &Key, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_read_back_and_destroyed_for_good() {
        let dir = tempfile::tempdir().expect("temp dir");
        let agent = Uuid::now_v7();
        let key = {
            let keys = ThreadKeys::open(dir.path()).expect("opens");
            assert_eq!(keys.get(agent, "t").expect("reads"), None);
            let key = keys.get_or_create(agent, "t").expect("made");
            assert_eq!(keys.get_or_create(agent, "t").expect("same"), key);
            keys.sync_if_dirty().expect("syncs");
            key
        };
        let again = ThreadKeys::open(dir.path()).expect("opens");
        assert_eq!(again.get(agent, "t").expect("reads"), Some(key));
        let sealed = seal(&key, b"here", b"hello").expect("seals");
        assert_eq!(open(&key, b"here", &sealed).as_deref(), Some(&b"hello"[..]));
        assert_eq!(open(&key, b"elsewhere", &sealed), None);
        assert!(again.destroy(agent, "t").expect("destroys"));
        assert!(!again.destroy(agent, "t").expect("idempotent"));
        assert_eq!(again.get(agent, "t").expect("reads"), None);
        let other = again.get_or_create(agent, "t").expect("a new key");
        assert_ne!(other, key);
    }

    #[test]
    fn a_destroyed_key_is_gone_from_the_file_and_its_slot_is_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let agent = Uuid::now_v7();
        let keys = ThreadKeys::open(dir.path()).expect("opens");
        let doomed = keys.get_or_create(agent, "doomed").expect("made");
        let kept = keys.get_or_create(agent, "kept").expect("made");
        keys.sync_if_dirty().expect("syncs");
        let path = dir.path().join(DIR).join(FILE);
        let before = fs::read(&path).expect("reads");
        let holds = |bytes: &[u8], key: &Key| bytes.windows(KEY_LEN).any(|w| w == key);
        assert!(holds(&before, &doomed) && holds(&before, &kept));

        assert!(keys.destroy(agent, "doomed").expect("destroys"));
        let after = fs::read(&path).expect("reads");
        assert!(!holds(&after, &doomed), "the key's bytes are overwritten");
        assert!(holds(&after, &kept), "the other thread's key stays");
        assert_eq!(after.len(), before.len());

        let newer = keys.get_or_create(agent, "newer").expect("made");
        keys.sync_if_dirty().expect("syncs");
        assert_eq!(
            fs::read(&path).expect("reads").len(),
            before.len(),
            "the freed slot is taken before the file grows"
        );
        drop(keys);
        let reopened = ThreadKeys::open(dir.path()).expect("opens");
        assert_eq!(reopened.get(agent, "kept").expect("reads"), Some(kept));
        assert_eq!(reopened.get(agent, "newer").expect("reads"), Some(newer));
        assert_eq!(reopened.get(agent, "doomed").expect("reads"), None);
    }

    #[test]
    fn key_files_of_the_earlier_layout_are_moved_into_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let agent = Uuid::now_v7();
        let key_dir = dir.path().join(DIR);
        fs::create_dir_all(&key_dir).expect("mkdir");
        let key = [7u8; KEY_LEN];
        let old = key_dir.join(hex::encode(name_of(agent, "t")));
        fs::write(&old, key).expect("writes");
        fs::write(key_dir.join("abc.0011.tmp"), [1u8; 3]).expect("writes");

        let keys = ThreadKeys::open(dir.path()).expect("opens");
        assert_eq!(keys.get(agent, "t").expect("reads"), Some(key));
        let left: Vec<_> = fs::read_dir(&key_dir)
            .expect("lists")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(FILE)]);
        drop(keys);
        let reopened = ThreadKeys::open(dir.path()).expect("opens");
        assert_eq!(reopened.get(agent, "t").expect("reads"), Some(key));
    }

    #[test]
    fn a_file_that_is_not_a_key_file_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join(DIR)).expect("mkdir");
        fs::write(dir.path().join(DIR).join(FILE), b"something else entirely").expect("writes");
        let err = ThreadKeys::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("not a Hangar key file"), "{err}");
    }
}
