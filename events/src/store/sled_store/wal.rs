//! The write-ahead log: what makes a logged write durable with one `fdatasync`.
//!
//! sled 0.34 can only be made durable by `Db::flush`, which seals its write buffer, hands it to
//! its own thread pool, writes it, `sync_file_range`s it and wakes the caller: several thread
//! hand-offs per flush, which a profile of draft writes at c=32 showed costing more than the disk.
//! So every logged transaction ([`super::SledStore::transact`]) is also encoded here, and a group
//! commit writes the pending records to `hangar.wal` and `fdatasync`s that one file. sled is made
//! durable only at a checkpoint (when the log has grown past [`CHECKPOINT_BYTES`], and at open and
//! close), after which the log is emptied.
//!
//! Each logged transaction gets the next log sequence number (lsn) and writes it, after its other
//! writes, to the `hangar_wal` tree. Whatever sled recovers after a crash is a prefix of its
//! writes, so the lsn it recovers says which records it holds whole: recovery applies the records
//! after it, in order (re-writing any part of the next one sled already had, which is harmless).
//! `docs/storage.md` has the format.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use super::super::Error;

/// The log's file name, inside the sled directory.
pub(super) const FILE: &str = "hangar.wal";
/// The tree that holds the lsn of the last logged transaction sled has applied.
pub(super) const META_TREE: &str = "hangar_wal";
pub(super) const LSN_KEY: &[u8] = b"applied_lsn";
/// A checkpoint empties the log once it is this long: about a second of replay at open.
pub(super) const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Record header: body length (u32 LE), then the CRC-32 of the body (u32 LE).
const HEADER: usize = 8;
const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// One write of a logged transaction, naming its tree.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Op {
    Insert {
        tree: Vec<u8>,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Remove {
        tree: Vec<u8>,
        key: Vec<u8>,
    },
}

/// One logged transaction as read back.
#[derive(Debug, PartialEq)]
pub(super) struct Record {
    pub lsn: u64,
    pub ops: Vec<Op>,
}

/// Appends the record of transaction `lsn` to `out`.
///
/// Body: lsn (u64 LE), then per op: kind (u8), tree name length (u16 LE) and name, key length
/// (u32 LE) and key, and for an insert the value length (u32 LE) and value.
pub(super) fn encode(lsn: u64, ops: &[Op], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&lsn.to_le_bytes());
    for op in ops {
        let (kind, tree, key, value) = match op {
            Op::Insert { tree, key, value } => (INSERT, tree, key, Some(value)),
            Op::Remove { tree, key } => (REMOVE, tree, key, None),
        };
        out.push(kind);
        // sled tree names and keys are far below these bounds; the limits of the event and run
        // stores keep them there (a name is a short constant, a key at most a few dozen bytes).
        out.extend_from_slice(&(tree.len() as u16).to_le_bytes());
        out.extend_from_slice(tree);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let Some(value) = value {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    let body_len = (out.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the records at the start of `bytes`, up to the first that is torn or corrupt (a crash
/// mid-write leaves such a tail; it was never acknowledged). Returns them and the length of the
/// valid prefix.
pub(super) fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, len)) = decode_one(&bytes[at..]) {
        records.push(record);
        at += len;
    }
    (records, at)
}

fn decode_one(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..HEADER)?.try_into().ok()?);
    let body = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut r = Reader(body);
    let lsn = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let mut ops = Vec::new();
    while !r.0.is_empty() {
        let kind = r.take(1)?[0];
        let tree_len = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
        let tree = r.take(tree_len)?.to_vec();
        let key = r.take_sized()?.to_vec();
        ops.push(match kind {
            INSERT => Op::Insert {
                tree,
                key,
                value: r.take_sized()?.to_vec(),
            },
            REMOVE => Op::Remove { tree, key },
            _ => return None,
        });
    }
    Some((Record { lsn, ops }, HEADER + len))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A u32 LE length, then that many bytes.
    fn take_sized(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

/// The lsn of the last logged transaction in sled's `meta` tree (0 for none).
pub(super) fn applied_lsn(meta: &sled::Tree) -> Result<u64, Error> {
    match meta.get(LSN_KEY).map_err(|e| Error::Io(e.to_string()))? {
        None => Ok(0),
        Some(v) => v
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt(format!("the applied lsn is {} bytes, not 8", v.len()))),
    }
}

/// What [`recover`] found.
#[derive(Debug, PartialEq)]
pub(super) struct Recovered {
    /// The lsn of the last logged transaction sled now holds; the next one gets this + 1.
    pub last_lsn: u64,
    /// Records applied because sled had lost them.
    pub replayed: usize,
    /// Bytes of torn tail cut off the log.
    pub torn_bytes: usize,
}

/// Applies to sled, in order, the records of `dir`'s log that sled does not have, and cuts off a
/// torn tail so that new records follow the last valid one. The caller makes sled durable (a
/// checkpoint) before it trusts the log to be emptied.
pub(super) fn recover(db: &sled::Db, meta: &sled::Tree, dir: &Path) -> Result<Recovered, Error> {
    let path = dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::Io(format!("reading {}: {e}", path.display()))),
    };
    let (records, valid) = decode_all(&bytes);
    let mut last = applied_lsn(meta)?;
    let mut replayed = 0;
    let mut opened: HashMap<Vec<u8>, sled::Tree> = HashMap::new();
    for record in records {
        if record.lsn <= last {
            continue; // sled has it
        }
        if record.lsn != last + 1 {
            return Err(corrupt(format!(
                "the write-ahead log jumps from lsn {last} to {}: records in between are missing",
                record.lsn
            )));
        }
        apply(meta, record.lsn, &record.ops, |name| {
            if let Some(tree) = opened.get(name) {
                return Ok(tree.clone());
            }
            let tree = db.open_tree(name)?;
            opened.insert(name.to_vec(), tree.clone());
            Ok(tree)
        })
        .map_err(|e| Error::Io(format!("replaying the write-ahead log: {e}")))?;
        last = record.lsn;
        replayed += 1;
    }
    let torn_bytes = bytes.len() - valid;
    if torn_bytes > 0 {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(valid as u64).and_then(|()| f.sync_all()));
        file.map_err(|e| Error::Io(format!("cutting the torn tail of {}: {e}", path.display())))?;
    }
    Ok(Recovered {
        last_lsn: last,
        replayed,
        torn_bytes,
    })
}

/// Applies a logged transaction's writes to sled, in order, then its lsn (last: sled recovers a
/// prefix of its writes, so if it has the lsn, it has every write before it). Plain writes, not a
/// sled transaction: every sled 0.34 transaction writes and syncs sled's buffer twice. Writing a
/// record's writes again is harmless (each puts or removes a whole value), which is what makes a
/// recovery interrupted by another crash safe to run again.
pub(super) fn apply(
    meta: &sled::Tree,
    lsn: u64,
    ops: &[Op],
    mut tree_of: impl FnMut(&[u8]) -> Result<sled::Tree, sled::Error>,
) -> Result<(), sled::Error> {
    for op in ops {
        match op {
            Op::Insert { tree, key, value } => {
                tree_of(tree)?.insert(key.as_slice(), value.as_slice())?;
            }
            Op::Remove { tree, key } => {
                tree_of(tree)?.remove(key.as_slice())?;
            }
        }
    }
    meta.insert(LSN_KEY, &lsn.to_be_bytes()[..])?;
    Ok(())
}

fn corrupt(reason: String) -> Error {
    Error::Corrupt {
        stream: uuid::Uuid::nil(),
        seq: 0,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(tree: &str, key: &[u8], value: &[u8]) -> Op {
        Op::Insert {
            tree: tree.as_bytes().to_vec(),
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn remove(tree: &str, key: &[u8]) -> Op {
        Op::Remove {
            tree: tree.as_bytes().to_vec(),
            key: key.to_vec(),
        }
    }

    /// A sled db in a temporary directory, and its lsn tree.
    fn fresh_db() -> (tempfile::TempDir, sled::Db, sled::Tree) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("open sled");
        let meta = db.open_tree(META_TREE).expect("meta tree");
        (dir, db, meta)
    }

    #[test]
    fn records_read_back_as_written() {
        let mut log = Vec::new();
        encode(
            1,
            &[insert("runs", b"a", b"1"), remove("queue", b"b")],
            &mut log,
        );
        encode(2, &[insert("runs", b"", &[0; 1000])], &mut log);
        let (records, valid) = decode_all(&log);
        assert_eq!(valid, log.len());
        assert_eq!(
            records,
            vec![
                Record {
                    lsn: 1,
                    ops: vec![insert("runs", b"a", b"1"), remove("queue", b"b")]
                },
                Record {
                    lsn: 2,
                    ops: vec![insert("runs", b"", &[0; 1000])]
                },
            ]
        );
    }

    #[test]
    fn reading_stops_at_a_torn_or_corrupt_record() {
        let mut log = Vec::new();
        encode(1, &[insert("t", b"k", b"v1")], &mut log);
        let first = log.len();
        encode(2, &[insert("t", b"k", b"v2")], &mut log);
        for cut in first..log.len() {
            let (records, valid) = decode_all(&log[..cut]);
            assert_eq!((records.len(), valid), (1, first), "cut at {cut}");
        }
        let mut flipped = log.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(decode_all(&flipped).1, first);
    }

    #[test]
    fn recovery_applies_only_what_sled_lacks_and_cuts_a_torn_tail() {
        let (dir, db, meta) = fresh_db();
        let t = db.open_tree("t").expect("tree");
        // sled already holds lsn 1 (k = v1); the log holds 1 (stale), 2 and 3, then a torn tail.
        t.insert(b"k", b"v1".as_slice()).expect("insert");
        meta.insert(LSN_KEY, &1u64.to_be_bytes()[..])
            .expect("insert");
        let mut log = Vec::new();
        encode(1, &[insert("t", b"k", b"stale")], &mut log);
        encode(
            2,
            &[insert("t", b"k", b"v2"), insert("u", b"x", b"y")],
            &mut log,
        );
        encode(3, &[remove("t", b"k")], &mut log);
        let valid = log.len();
        encode(4, &[insert("t", b"k", b"torn")], &mut log);
        log.truncate(log.len() - 3);
        fs::write(dir.path().join(FILE), &log).expect("write log");

        let found = recover(&db, &meta, dir.path()).expect("recover");
        assert_eq!(
            found,
            Recovered {
                last_lsn: 3,
                replayed: 2,
                torn_bytes: log.len() - valid
            }
        );
        assert_eq!(t.get(b"k").expect("get"), None, "lsn 3 removed it");
        let u = db.open_tree("u").expect("tree");
        assert_eq!(u.get(b"x").expect("get").as_deref(), Some(&b"y"[..]));
        assert_eq!(applied_lsn(&meta).expect("lsn"), 3);
        let on_disk = fs::metadata(dir.path().join(FILE)).expect("log").len();
        assert_eq!(on_disk, valid as u64, "the torn tail is cut off");
    }

    #[test]
    fn a_gap_in_the_log_is_refused_not_skipped() {
        let (dir, db, meta) = fresh_db();
        let mut log = Vec::new();
        encode(1, &[insert("t", b"a", b"1")], &mut log);
        encode(3, &[insert("t", b"b", b"3")], &mut log);
        fs::write(dir.path().join(FILE), &log).expect("write log");
        let err = recover(&db, &meta, dir.path()).expect_err("a gap");
        assert!(err.to_string().contains("jumps from lsn 1 to 3"), "{err}");
    }
}
