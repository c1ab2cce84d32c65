//! Deleting a thread for real on sled: what a thread says is stored encrypted under a key of its
//! own, kept outside sled, and deletion destroys the key.
//!
//! sled 0.34 removes a deleted value from its log files only when it happens to rewrite their
//! segment, and the write-ahead log (`hangar.wal`) keeps every write until the next checkpoint:
//! a deleted turn's text could be read back from the data directory for a long time. So the
//! turns of a thread, and the content of its runs (input, output, what a paused run waits for
//! and where it resumes), are sealed with XChaCha20-Poly1305 under a random 32-byte key per
//! (agent, thread), and only ciphertext reaches sled and the log. The key lives in a file of its
//! own, `thread-keys/<sha256(agent ++ thread)>`, written and fsynced (with its directory) before
//! anything is sealed with it; deleting the thread unlinks that file (and fsyncs the directory)
//! before it removes the turns. Once it is gone, whatever copies of the ciphertext sled still
//! holds cannot be opened by anyone, the server included: a run of a deleted thread reads back
//! with its content replaced by `{"deleted": true}`, and leftover turns are skipped.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::Error;

/// The key directory's name, inside the sled directory.
pub(super) const DIR: &str = "thread-keys";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// The per-thread keys of one store directory.
pub(super) struct ThreadKeys {
    dir: PathBuf,
    /// Keys read or made so far. The lock is never held across file I/O: new threads (an A2A
    /// message without a context makes one) would otherwise wait for each other's fsyncs. Two
    /// first writes of one thread racing to make its key are settled by the file system instead
    /// (`get_or_create`).
    cache: Mutex<HashMap<String, [u8; KEY_LEN]>>,
    /// Deletions so far (counted under the cache's lock): a key read from its file while a
    /// deletion ran is not cached, so a deleted thread's key never lingers in memory.
    deletions: AtomicU64,
}

fn io_error(what: &str, e: io::Error) -> Error {
    Error::Io(format!("thread keys: {what}: {e}"))
}

impl ThreadKeys {
    pub fn open(store_dir: &Path) -> Result<Self, Error> {
        let dir = store_dir.join(DIR);
        fs::create_dir_all(&dir).map_err(|e| io_error("cannot create the directory", e))?;
        Ok(ThreadKeys {
            dir,
            cache: Mutex::new(HashMap::new()),
            deletions: AtomicU64::new(0),
        })
    }

    fn file_name(agent: Uuid, thread: &str) -> String {
        let mut h = Sha256::new();
        h.update(agent.as_bytes());
        h.update(thread.as_bytes());
        hex::encode(h.finalize())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u8; KEY_LEN]>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self, name: &str) -> Result<Option<[u8; KEY_LEN]>, Error> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => <[u8; KEY_LEN]>::try_from(bytes.as_slice())
                .map(Some)
                .map_err(|_| Error::Io(format!("thread key {name} is not {KEY_LEN} bytes"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("cannot read a key", e)),
        }
    }

    /// The thread's key, if it has one (it has none before its first write, or once deleted).
    pub fn get(&self, agent: Uuid, thread: &str) -> Result<Option<[u8; KEY_LEN]>, Error> {
        let name = Self::file_name(agent, thread);
        if let Some(key) = self.lock().get(&name) {
            return Ok(Some(*key));
        }
        let deletions = self.deletions.load(Ordering::SeqCst);
        let key = self.read(&name)?;
        if let Some(key) = key {
            let mut cache = self.lock();
            if self.deletions.load(Ordering::SeqCst) == deletions {
                cache.insert(name, key);
            }
        }
        Ok(key)
    }

    /// The thread's key, made (durably) if it has none yet.
    pub fn get_or_create(&self, agent: Uuid, thread: &str) -> Result<[u8; KEY_LEN], Error> {
        if let Some(key) = self.get(agent, thread)? {
            return Ok(key);
        }
        let name = Self::file_name(agent, thread);
        let deletions = self.deletions.load(Ordering::SeqCst);
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        // Written whole under a name of its own, then linked to the thread's name, which fails
        // if another writer linked its key first: the first link wins, and the loser takes the
        // winner's key, so a thread never has two.
        let tmp = self
            .dir
            .join(format!("{name}.{}.tmp", hex::encode(&key[..8])));
        let write = || -> io::Result<bool> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&key)?;
            f.sync_all()?;
            let linked = match fs::hard_link(&tmp, self.dir.join(&name)) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            fs::remove_file(&tmp)?;
            fs::File::open(&self.dir)?.sync_all()?;
            Ok(linked)
        };
        if write().map_err(|e| io_error("cannot write a key", e))? {
            let mut cache = self.lock();
            if self.deletions.load(Ordering::SeqCst) == deletions {
                cache.insert(name, key);
            }
            return Ok(key);
        }
        self.get(agent, thread)?
            .ok_or_else(|| Error::Io("thread keys: a thread's key vanished as it was made".into()))
    }

    /// Destroys the thread's key, durably; false if it had none.
    pub fn destroy(&self, agent: Uuid, thread: &str) -> Result<bool, Error> {
        let name = Self::file_name(agent, thread);
        let mut cache = self.lock();
        self.deletions.fetch_add(1, Ordering::SeqCst);
        cache.remove(&name);
        let existed = match fs::remove_file(self.dir.join(&name)) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_error("cannot delete a key", e)),
        };
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("cannot sync the directory", e))?;
        Ok(existed)
    }
}

/// `plaintext` sealed under `key`, bound to `aad` (where it is stored): nonce ++ ciphertext.
pub(super) fn seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
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
pub(super) fn open(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
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
        let keys = ThreadKeys::open(dir.path()).expect("opens");
        assert_eq!(keys.get(agent, "t").expect("reads"), None);
        let key = keys.get_or_create(agent, "t").expect("made");
        assert_eq!(keys.get_or_create(agent, "t").expect("same"), key);
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
}
