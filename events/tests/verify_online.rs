//! `verify_stream_online`: guards against the online audit (`GET /v1/agents/{id}/verify`) calling
//! a healthy log corrupt because its agent appended an event while the check was reading.

use std::sync::atomic::{AtomicBool, Ordering};

use events::event::{Event, Undeployed};
use events::store::{self, EventStore, SledStore};
use events::NewEvent;
use uuid::Uuid;

fn event(label: &str) -> NewEvent {
    NewEvent::now(Event::Undeployed(Undeployed {
        reason: label.to_owned(),
    }))
}

/// A store whose stream gets one more event right after the first read of it, as an agent actor
/// appending between the check's read of the log and its read of the head would.
struct AppendDuringRead {
    inner: SledStore,
    appended: AtomicBool,
}

impl EventStore for AppendDuringRead {
    fn append(
        &self,
        stream: Uuid,
        expected: u64,
        events: &[NewEvent],
    ) -> Result<store::Commit, store::Error> {
        self.inner.append(stream, expected, events)
    }

    fn read_raw(
        &self,
        stream: Uuid,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, store::Error> {
        let page = self.inner.read_raw(stream, from, limit)?;
        if !self.appended.swap(true, Ordering::SeqCst) {
            let head = self.inner.head(stream)?;
            self.inner
                .append(stream, head, &[event("meanwhile")])?
                .wait()?;
        }
        Ok(page)
    }

    fn head(&self, stream: Uuid) -> Result<u64, store::Error> {
        self.inner.head(stream)
    }

    fn streams(&self) -> Result<Vec<Uuid>, store::Error> {
        self.inner.streams()
    }
}

fn store_with_three_events(dir: &std::path::Path) -> (AppendDuringRead, Uuid) {
    let inner = SledStore::open(&dir.join("store")).expect("opens");
    let stream = Uuid::now_v7();
    inner
        .append(stream, 0, &[event("a"), event("b"), event("c")])
        .expect("append")
        .wait()
        .expect("durable");
    let store = AppendDuringRead {
        inner,
        appended: AtomicBool::new(false),
    };
    (store, stream)
}

#[test]
fn an_append_during_the_check_is_not_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, stream) = store_with_three_events(dir.path());
    assert_eq!(
        store::verify_stream_online(&store, stream).expect("intact"),
        3,
        "the log as it stood when the check began"
    );
    assert_eq!(store.head(stream).expect("head"), 4);
    assert_eq!(
        store::verify_stream_online(&store, stream).expect("intact"),
        4
    );
}

/// Why the online variant exists: the offline check, which owns the directory, takes the same
/// race for a log that outgrew its head.
#[test]
fn the_offline_check_would_call_it_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, stream) = store_with_three_events(dir.path());
    assert!(matches!(
        store::verify_stream(&store, stream),
        Err(store::Error::Corrupt { seq: 4, .. })
    ));
}

/// A store whose event 2 reads back edited, as if someone with disk access had changed it.
struct EditedSecond(SledStore);

impl EventStore for EditedSecond {
    fn append(
        &self,
        stream: Uuid,
        expected: u64,
        events: &[NewEvent],
    ) -> Result<store::Commit, store::Error> {
        self.0.append(stream, expected, events)
    }

    fn read_raw(
        &self,
        stream: Uuid,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, store::Error> {
        let mut page = self.0.read_raw(stream, from, limit)?;
        for (seq, bytes) in &mut page {
            if *seq == 2 {
                let text = String::from_utf8_lossy(bytes).replace("\"b\"", "\"B\"");
                *bytes = text.into_bytes();
            }
        }
        Ok(page)
    }

    fn head(&self, stream: Uuid) -> Result<u64, store::Error> {
        self.0.head(stream)
    }

    fn streams(&self) -> Result<Vec<Uuid>, store::Error> {
        self.0.streams()
    }
}

/// An edited event is named by seq.
#[test]
fn an_edited_event_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, stream) = store_with_three_events(dir.path());
    let store = EditedSecond(store.inner);
    assert!(matches!(
        store::verify_stream_online(&store, stream),
        Err(store::Error::Corrupt { seq: 2, .. })
    ));
}
