//! The test suite every [`EventStore`] must pass unchanged, after the Akka persistence TCK and
//! KurrentDB's expected-version tests.
//!
//! A store's tests call [`run_all`] with a fresh store (other crates enable the `conformance`
//! feature for it). Each case uses streams of its own, so the cases share one store and may run in
//! any order; the name of the case running is printed first, so a failure names it.

pub mod runs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;

use uuid::Uuid;

use super::{verify_stream, Error, EventStore};
use crate::envelope::{Envelope, NewEvent, GENESIS_HASH};
use crate::event::{Event, Undeployed};

pub type Case = fn(&dyn EventStore);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    (
        "append_to_new_stream_assigns_seqs_from_one",
        append_to_new_stream_assigns_seqs_from_one,
    ),
    (
        "wrong_expected_is_a_conflict_and_writes_nothing",
        wrong_expected_is_a_conflict_and_writes_nothing,
    ),
    (
        "empty_append_checks_expected_and_writes_nothing",
        empty_append_checks_expected_and_writes_nothing,
    ),
    ("batch_is_all_or_nothing", batch_is_all_or_nothing),
    (
        "readers_never_see_part_of_a_batch",
        readers_never_see_part_of_a_batch,
    ),
    ("read_bounds", read_bounds),
    ("seqs_past_255_stay_in_order", seqs_past_255_stay_in_order),
    (
        "streams_lists_every_stream_in_order",
        streams_lists_every_stream_in_order,
    ),
    (
        "adjacent_streams_never_interleave",
        adjacent_streams_never_interleave,
    ),
    (
        "concurrent_appends_to_one_stream_have_one_winner",
        concurrent_appends_to_one_stream_have_one_winner,
    ),
    (
        "concurrent_appends_to_many_streams_all_become_durable",
        concurrent_appends_to_many_streams_all_become_durable,
    ),
    (
        "wait_returns_what_read_returns",
        wait_returns_what_read_returns,
    ),
];

pub fn run_all(store: &dyn EventStore) {
    for (name, case) in CASES {
        eprintln!("event store conformance: {name}");
        case(store);
    }
}

/// Seqs 1..n, the store's envelopes carrying what was appended, a hash chain from genesis that
/// continues across appends.
pub fn append_to_new_stream_assigns_seqs_from_one(store: &dyn EventStore) {
    let s = Uuid::now_v7();
    let first = batch("a", 3);
    let envs = append_durably(store, s, 0, &first);
    assert_eq!(seqs(&envs), [1, 2, 3]);
    for (env, new) in envs.iter().zip(&first) {
        assert_eq!(env.id, new.id);
        assert_eq!(env.agent_id, s);
        assert_eq!(env.event, new.event);
        assert_eq!(env.at, new.at);
    }
    assert_eq!(envs[0].prev_hash, GENESIS_HASH);
    assert_chained(&envs);
    assert_eq!(store.head(s).expect("head"), 3);
    assert_eq!(store.read_all(s).expect("read"), envs);
    assert_eq!(verify_stream(store, s).expect("the chain verifies"), 3);

    let more = append_durably(store, s, 3, &batch("b", 2));
    assert_eq!(seqs(&more), [4, 5]);
    assert_eq!(more[0].prev_hash, envs[2].hash);
    let all: Vec<Envelope> = envs.into_iter().chain(more).collect();
    assert_eq!(store.read_all(s).expect("read"), all);
    assert_eq!(store.head(s).expect("head"), 5);
    assert_eq!(verify_stream(store, s).expect("the chain verifies"), 5);
}

/// Expected too low, too high, or a non-zero expected on a new stream: a conflict that reports
/// the actual seq, and nothing written.
pub fn wrong_expected_is_a_conflict_and_writes_nothing(store: &dyn EventStore) {
    let s = Uuid::now_v7();
    let before = append_durably(store, s, 0, &batch("a", 2));
    for wrong in [0, 1, 3, 10, u64::MAX] {
        assert_conflict(store.append(s, wrong, &batch("x", 2)), s, wrong, 2);
        assert_eq!(store.head(s).expect("head"), 2);
        assert_eq!(store.read_all(s).expect("read"), before);
    }

    let new = Uuid::now_v7();
    assert_conflict(store.append(new, 1, &batch("x", 1)), new, 1, 0);
    assert_eq!(store.head(new).expect("head"), 0);
    assert!(store.read_all(new).expect("read").is_empty());
    assert!(!store.streams().expect("streams").contains(&new));
}

/// An empty append is a check of the expected seq; it creates no stream.
pub fn empty_append_checks_expected_and_writes_nothing(store: &dyn EventStore) {
    let new = Uuid::now_v7();
    let commit = store
        .append(new, 0, &[])
        .expect("expected 0 on a new stream");
    assert!(commit.envelopes().is_empty());
    assert!(commit.wait().expect("durable").is_empty());
    assert_conflict(store.append(new, 1, &[]), new, 1, 0);
    assert_eq!(store.head(new).expect("head"), 0);
    assert!(!store.streams().expect("streams").contains(&new));

    let s = Uuid::now_v7();
    append_durably(store, s, 0, &batch("a", 1));
    assert!(store
        .append(s, 1, &[])
        .expect("expected matches")
        .wait()
        .expect("durable")
        .is_empty());
    assert_conflict(store.append(s, 0, &[]), s, 0, 1);
    assert_eq!(store.read_all(s).expect("read").len(), 1);
}

/// A multi-event append appears entirely; a conflicting one leaves nothing behind.
pub fn batch_is_all_or_nothing(store: &dyn EventStore) {
    let s = Uuid::now_v7();
    let envs = append_durably(store, s, 0, &batch("a", 5));
    assert_eq!(store.read_all(s).expect("read"), envs);

    assert_conflict(store.append(s, 0, &batch("x", 4)), s, 0, 5);
    assert_conflict(store.append(s, 4, &batch("x", 4)), s, 4, 5);
    assert_eq!(store.read_all(s).expect("read"), envs);
    assert_eq!(store.head(s).expect("head"), 5);
    assert_eq!(verify_stream(store, s).expect("the chain verifies"), 5);
}

/// A reader racing a writer of 4-event batches sees whole batches only, in reads and in heads.
pub fn readers_never_see_part_of_a_batch(store: &dyn EventStore) {
    const BATCH: u64 = 4;
    const BATCHES: u64 = 30;
    let s = Uuid::now_v7();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let commits: Vec<_> = (0..BATCHES)
                .map(|i| {
                    store
                        .append(s, i * BATCH, &batch("a", BATCH as usize))
                        .expect("the only writer")
                })
                .collect();
            for commit in commits {
                commit.wait().expect("durable");
            }
            done.store(true, Ordering::Release);
        });
        while !done.load(Ordering::Acquire) {
            let head = store.head(s).expect("head");
            assert_eq!(head % BATCH, 0, "head {head} is inside a batch");
            let read = store.read_all(s).expect("read");
            assert_eq!(read.len() as u64 % BATCH, 0, "read {} events", read.len());
            assert_eq!(seqs(&read), (1..=read.len() as u64).collect::<Vec<_>>());
        }
    });
    assert_eq!(store.head(s).expect("head"), BATCH * BATCHES);
    assert_eq!(
        verify_stream(store, s).expect("the chain verifies"),
        BATCH * BATCHES
    );
}

/// `from` in the middle, past the end, or 0 (read as 1); `limit` caps the count.
pub fn read_bounds(store: &dyn EventStore) {
    let s = Uuid::now_v7();
    let envs = append_durably(store, s, 0, &batch("e", 10));
    let read = |from, limit| seqs(&store.read(s, from, limit).expect("read"));

    assert_eq!(read(4, 3), [4, 5, 6]);
    assert_eq!(read(0, 2), [1, 2]);
    assert_eq!(read(1, usize::MAX), (1..=10).collect::<Vec<_>>());
    assert_eq!(read(10, 5), [10]);
    assert!(read(11, 5).is_empty());
    assert!(read(u64::MAX, 5).is_empty());
    assert!(read(3, 0).is_empty());
    assert_eq!(store.read(s, 7, 2).expect("read"), envs[6..8]);

    let raw = store.read_raw(s, 9, 10).expect("read_raw");
    assert_eq!(raw.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [9, 10]);
    for ((_, bytes), env) in raw.iter().zip(&envs[8..]) {
        assert_eq!(&Envelope::decode(bytes).expect("stored bytes decode"), env);
    }
    assert!(store
        .read_raw(Uuid::now_v7(), 0, 10)
        .expect("read_raw")
        .is_empty());
}

/// Seqs are ordered as numbers, not as bytes of a little-endian or decimal encoding.
pub fn seqs_past_255_stay_in_order(store: &dyn EventStore) {
    let s = Uuid::now_v7();
    append_durably(store, s, 0, &batch("e", 300));
    assert_eq!(
        seqs(&store.read(s, 250, 10).expect("read")),
        (250..260).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&store.read_all(s).expect("read")),
        (1..=300).collect::<Vec<_>>()
    );
    assert_eq!(verify_stream(store, s).expect("the chain verifies"), 300);
}

/// Every stream with events is listed once, in id order, whatever order they were written in.
pub fn streams_lists_every_stream_in_order(store: &dyn EventStore) {
    let ids = [
        Uuid::new_v4(),
        Uuid::now_v7(),
        Uuid::new_v4(),
        Uuid::now_v7(),
        Uuid::new_v4(),
    ];
    for id in ids.iter().rev() {
        append_durably(store, *id, 0, &batch("a", 1));
    }
    append_durably(store, ids[0], 1, &batch("b", 1));
    let listed = store.streams().expect("streams");
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "streams are not strictly ascending: {listed:?}"
    );
    for id in ids {
        assert!(listed.contains(&id), "{id} is not listed");
    }
}

/// Streams whose ids differ only in the last bit stay apart, however they are laid out.
pub fn adjacent_streams_never_interleave(store: &dyn EventStore) {
    // a ends in 0xff, so b = a + 1 carries into the byte before.
    let a = Uuid::from_u128(Uuid::now_v7().as_u128() | 0xff);
    let b = Uuid::from_u128(a.as_u128() + 1);
    let c = Uuid::from_u128(a.as_u128() - 1);
    append_durably(store, b, 0, &batch("b", 3));
    append_durably(store, a, 0, &batch("a", 2));
    append_durably(store, c, 0, &batch("c", 1));

    for (stream, n) in [(a, 2), (b, 3), (c, 1)] {
        let read = store.read_all(stream).expect("read");
        assert_eq!(seqs(&read), (1..=n).collect::<Vec<_>>());
        assert!(read.iter().all(|env| env.agent_id == stream));
        assert!(store.read(stream, n + 1, 10).expect("read").is_empty());
        assert_eq!(store.head(stream).expect("head"), n);
        assert_eq!(verify_stream(store, stream).expect("verifies"), n);
    }
    let listed = store.streams().expect("streams");
    let at = listed.iter().position(|id| *id == c).expect("c is listed");
    assert_eq!(listed[at..at + 3], [c, a, b]);
}

/// Eight writers with the same expected seq: exactly one wins, the others learn the seq it left.
pub fn concurrent_appends_to_one_stream_have_one_winner(store: &dyn EventStore) {
    const WRITERS: usize = 8;
    let s = Uuid::now_v7();
    for round in 0..10u64 {
        let expected = round * 2;
        let start = Barrier::new(WRITERS);
        let results: Vec<(String, Result<Vec<Envelope>, Error>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let start = &start;
                    scope.spawn(move || {
                        let name = format!("r{round}w{w}");
                        start.wait();
                        let result = store
                            .append(s, expected, &batch(&name, 2))
                            .and_then(|commit| commit.wait());
                        (name, result)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("writer thread"))
                .collect()
        });

        let winners: Vec<&String> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(name, _)| name)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        for (_, result) in &results {
            if let Err(e) = result {
                assert_eq!(
                    *e,
                    Error::Conflict {
                        stream: s,
                        expected,
                        actual: expected + 2
                    }
                );
            }
        }
        let tail = store.read(s, expected + 1, 10).expect("read");
        assert_eq!(seqs(&tail), [expected + 1, expected + 2]);
        assert!(tail.iter().all(|env| label(env).starts_with(winners[0])));
    }
    assert_eq!(verify_stream(store, s).expect("the chain verifies"), 20);
}

/// Writers on different streams never conflict, and every commit becomes durable.
pub fn concurrent_appends_to_many_streams_all_become_durable(store: &dyn EventStore) {
    const WRITERS: usize = 8;
    const APPENDS: u64 = 10;
    let streams: Vec<Uuid> = (0..WRITERS).map(|_| Uuid::now_v7()).collect();
    std::thread::scope(|scope| {
        for s in &streams {
            scope.spawn(move || {
                for i in 0..APPENDS {
                    let envs = store
                        .append(*s, i, &batch("a", 1))
                        .expect("no one else writes this stream")
                        .wait()
                        .expect("durable");
                    assert_eq!(seqs(&envs), [i + 1]);
                }
            });
        }
    });
    for s in streams {
        assert_eq!(store.head(s).expect("head"), APPENDS);
        assert_eq!(verify_stream(store, s).expect("verifies"), APPENDS);
    }
}

/// What a commit hands back is exactly what a later read returns.
pub fn wait_returns_what_read_returns(store: &dyn EventStore) {
    let s = Uuid::now_v7();
    let commit = store.append(s, 0, &batch("a", 3)).expect("append");
    let visible = commit.envelopes().to_vec();
    let durable = commit.wait().expect("durable");
    assert_eq!(visible, durable);
    assert_eq!(store.read_all(s).expect("read"), durable);

    let more = append_durably(store, s, 3, &batch("b", 2));
    assert_eq!(store.read(s, 4, 10).expect("read"), more);
}

fn event(label: &str) -> NewEvent {
    NewEvent::now(Event::Undeployed(Undeployed {
        reason: label.to_owned(),
    }))
}

/// `n` events labelled `prefix0`, `prefix1`, …
fn batch(prefix: &str, n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| event(&format!("{prefix}{i}"))).collect()
}

fn label(env: &Envelope) -> &str {
    match &env.event {
        Event::Undeployed(e) => &e.reason,
        _ => "",
    }
}

fn seqs(envs: &[Envelope]) -> Vec<u64> {
    envs.iter().map(|env| env.seq).collect()
}

fn append_durably(
    store: &dyn EventStore,
    stream: Uuid,
    expected: u64,
    events: &[NewEvent],
) -> Vec<Envelope> {
    store
        .append(stream, expected, events)
        .expect("append")
        .wait()
        .expect("durable")
}

fn assert_chained(envs: &[Envelope]) {
    for pair in envs.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "seq {}", pair[1].seq);
    }
}

#[track_caller]
fn assert_conflict(result: Result<super::Commit, Error>, stream: Uuid, expected: u64, actual: u64) {
    match result {
        Ok(commit) => panic!(
            "expected a conflict, got a commit of seqs {:?}",
            seqs(commit.envelopes())
        ),
        Err(e) => assert_eq!(
            e,
            Error::Conflict {
                stream,
                expected,
                actual
            }
        ),
    }
}
