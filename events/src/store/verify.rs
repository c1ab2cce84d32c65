//! Hash-chain verification of whole logs, for operators (`hangar verify`) and tests.

use uuid::Uuid;

use super::{Error, EventStore};
use crate::envelope::{Envelope, GENESIS_HASH};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    pub streams: u64,
    pub events: u64,
}

/// Checks one stream: seqs 1.. without gaps, each hash matching its content, each `prev_hash`
/// matching the previous event. Returns the number of events, or the first bad one as
/// [`Error::Corrupt`].
pub fn verify_stream(store: &dyn EventStore, stream: Uuid) -> Result<u64, Error> {
    const PAGE: usize = 4096;
    let mut prev = GENESIS_HASH.to_owned();
    let mut expected_seq = 1;
    loop {
        let page = store.read_raw(stream, expected_seq, PAGE)?;
        let n = page.len();
        for (seq, bytes) in page {
            let env =
                Envelope::open_verified(&bytes, stream, expected_seq, &prev).map_err(|e| {
                    Error::Corrupt {
                        stream,
                        seq,
                        reason: e.to_string(),
                    }
                })?;
            prev = env.hash;
            expected_seq += 1;
        }
        if n < PAGE {
            break;
        }
    }
    let head = store.head(stream)?;
    if head != expected_seq - 1 {
        return Err(Error::Corrupt {
            stream,
            seq: expected_seq,
            reason: format!(
                "the stream's head says seq {head}, but the log ends at {}",
                expected_seq - 1
            ),
        });
    }
    Ok(expected_seq - 1)
}

/// [`verify_stream`] for a running server, whose agents append while it reads: it answers for the
/// stream as it stood when the check began. An append made meanwhile would otherwise fail the
/// final head comparison (the log outgrew the head read before it); past the first head, faults
/// are the next check's.
pub fn verify_stream_online(store: &dyn EventStore, stream: Uuid) -> Result<u64, Error> {
    let head = store.head(stream)?;
    match verify_stream(store, stream) {
        Err(Error::Corrupt { seq, .. }) if seq > head => Ok(head),
        checked => checked,
    }
}

/// Checks every stream; stops at the first bad event.
pub fn verify_all(store: &dyn EventStore) -> Result<VerifyReport, Error> {
    let mut report = VerifyReport::default();
    for stream in store.streams()? {
        report.events += verify_stream(store, stream)?;
        report.streams += 1;
    }
    Ok(report)
}
