//! Property tests of the event decoder. They guard against a stored log — damaged on disk,
//! edited by hand, or written by another build — crashing the server that reads it: whatever the
//! bytes, `Envelope::decode` and `Envelope::open_verified` return an error, never panic; a
//! document edited anywhere fails the hash check; and every event sealed decodes back to itself.
//!
//! `PROPTEST_CASES` sets the cases per property (2,000 by default). docs/reliability.md records
//! what they found.

mod fuzz_common;

use std::collections::BTreeSet;

use events::envelope::GENESIS_HASH;
use events::{Envelope, Event, NewEvent};
use fuzz_common::{event, garbage, instant, json, property};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::Value;
use uuid::Uuid;

/// A sealed envelope and its stored bytes, at a random place in a random stream.
fn sealed() -> impl Strategy<Value = (Envelope, Vec<u8>)> {
    (
        any::<u128>(),
        any::<u128>(),
        1..u64::MAX,
        prop_oneof![Just(GENESIS_HASH.to_owned()), "[0-9a-f]{64}", garbage()],
        instant(),
        event(),
    )
        .prop_map(|(agent, id, seq, prev, at, event)| {
            let new = NewEvent {
                id: Uuid::from_u128(id),
                at,
                event,
            };
            Envelope::seal(Uuid::from_u128(agent), seq, &prev, &new).expect("seals")
        })
}

/// One edit somewhere in a JSON document: a value replaced, a key removed or added.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    Add(String, Value),
}

fn edit() -> impl Strategy<Value = (usize, Edit)> {
    (
        any::<usize>(),
        prop_oneof![
            json().prop_map(Edit::Replace),
            Just(Edit::Remove),
            (garbage(), json()).prop_map(|(k, v)| Edit::Add(k, v)),
        ],
    )
}

/// Applies `edit` to the `n`-th node of `doc` (depth first, modulo the number of nodes).
fn apply(doc: &mut Value, n: usize, edit: Edit) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(map) => map.values().map(count).sum(),
            _ => 0,
        }
    }
    fn visit(v: &mut Value, target: &mut usize, edit: &mut Option<Edit>) {
        if *target == 0 {
            match edit.take() {
                Some(Edit::Replace(new)) => *v = new,
                Some(Edit::Add(k, new)) => match v {
                    Value::Object(map) => {
                        map.insert(k, new);
                    }
                    Value::Array(items) => items.push(new),
                    other => *other = new,
                },
                Some(Edit::Remove) => match v {
                    Value::Object(map) => {
                        let first = map.keys().next().cloned();
                        if let Some(k) = first {
                            map.remove(&k);
                        }
                    }
                    Value::Array(items) => {
                        items.pop();
                    }
                    other => *other = Value::Null,
                },
                None => {}
            }
            return;
        }
        *target -= 1;
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| visit(i, target, edit)),
            Value::Object(map) => map.values_mut().for_each(|i| visit(i, target, edit)),
            _ => {}
        }
    }
    let mut target = n % count(doc);
    visit(doc, &mut target, &mut Some(edit));
}

/// Bytes off a damaged disk.
#[test]
fn arbitrary_bytes_never_panic() {
    property(
        || (prop::collection::vec(any::<u8>(), 0..2048), any::<u64>()),
        |(bytes, seq)| {
            let _ = Envelope::decode(&bytes);
            let _ = Envelope::open_verified(&bytes, Uuid::nil(), seq, GENESIS_HASH);
            Ok(())
        },
    );
}

/// Well-formed JSON of any shape.
#[test]
fn arbitrary_json_never_panics() {
    property(
        || (json(), any::<u64>()),
        |(doc, seq)| {
            let bytes = serde_json::to_vec(&doc).expect("serializes");
            let _ = Envelope::decode(&bytes);
            let _ = Envelope::open_verified(&bytes, Uuid::nil(), seq, GENESIS_HASH);
            Ok(())
        },
    );
}

/// A real envelope, truncated or with bytes flipped: never a panic, and never accepted as
/// verified unless the bytes still hold the original document.
#[test]
fn damaged_envelopes_never_panic_nor_verify() {
    property(
        || {
            (
                sealed(),
                any::<usize>(),
                prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            )
        },
        |((env, bytes), cut, flips)| {
            let mut damaged = bytes.clone();
            damaged.truncate(cut % (bytes.len() + 1));
            for (at, x) in flips {
                if !damaged.is_empty() {
                    let i = at % damaged.len();
                    damaged[i] ^= x;
                }
            }
            let _ = Envelope::decode(&damaged);
            let opened = Envelope::open_verified(&damaged, env.agent_id, env.seq, &env.prev_hash);
            if let Ok(got) = opened {
                let same = serde_json::from_slice::<Value>(&damaged).ok()
                    == serde_json::from_slice::<Value>(&bytes).ok();
                prop_assert!(same, "damaged bytes verified");
                prop_assert_eq!(got, env);
            }
            Ok(())
        },
    );
}

/// A document edited anywhere — a value changed, a field dropped or added — fails the hash
/// check (or no longer parses), and never panics.
#[test]
fn edited_documents_never_verify() {
    property(
        || (sealed(), edit()),
        |((env, bytes), (at, edit))| {
            let original: Value = serde_json::from_slice(&bytes).expect("stored bytes are JSON");
            let mut doc = original.clone();
            apply(&mut doc, at, edit);
            let edited = serde_json::to_vec(&doc).expect("serializes");
            let _ = Envelope::decode(&edited);
            let opened = Envelope::open_verified(&edited, env.agent_id, env.seq, &env.prev_hash);
            if doc == original {
                prop_assert_eq!(opened.expect("unchanged verifies"), env);
            } else {
                prop_assert!(opened.is_err(), "an edited document verified: {}", doc);
            }
            Ok(())
        },
    );
}

/// What `seal` stores, `decode` and `open_verified` read back as the same envelope, and only
/// in its own place of its own stream.
#[test]
fn sealed_envelopes_decode_to_themselves() {
    property(sealed, |(env, bytes)| {
        prop_assert_eq!(&Envelope::decode(&bytes).expect("decodes"), &env);
        let opened = Envelope::open_verified(&bytes, env.agent_id, env.seq, &env.prev_hash)
            .expect("verifies");
        prop_assert_eq!(&opened, &env);
        prop_assert_eq!(env.hash.len(), 64);
        let elsewhere = Uuid::from_u128(env.agent_id.as_u128() ^ 1);
        prop_assert!(Envelope::open_verified(&bytes, elsewhere, env.seq, &env.prev_hash).is_err());
        let later = env.seq.wrapping_add(1);
        prop_assert!(Envelope::open_verified(&bytes, env.agent_id, later, &env.prev_hash).is_err());
        let other_prev = format!("{}0", env.prev_hash);
        prop_assert!(Envelope::open_verified(&bytes, env.agent_id, env.seq, &other_prev).is_err());
        // Redaction never panics either.
        let _ = env.redacted_json();
        Ok(())
    });
}

/// The generator's "every kind" is the registry's: a kind left out of `fuzz_common::event` would
/// never be fuzzed, and nothing else would say so.
#[test]
fn the_event_generator_covers_every_kind() {
    // Generating recurses deeply in a debug build (see `fuzz_common::property`).
    let seen = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let strategy = event();
            let mut seen = BTreeSet::new();
            for _ in 0..1_000 {
                if seen.len() == Event::KINDS.len() {
                    break;
                }
                let tree = strategy.new_tree(&mut runner).expect("generates");
                seen.insert(tree.current().type_name());
            }
            seen
        })
        .expect("the generator thread starts")
        .join()
        .expect("generates");
    let all: BTreeSet<&str> = Event::KINDS.iter().copied().collect();
    assert_eq!(seen, all);
}

/// Found by the spec round-trip: serde_json's default float parser is not exact, so this
/// number read back as 1.633499422900279e104 and an event holding it no longer matched its own
/// hash. `float_roundtrip` (events/Cargo.toml) fixed it.
#[test]
fn a_float_that_did_not_round_trip_verifies() {
    let spec = serde_json::from_value(serde_json::json!({
        "name": "f", "voice": {"": 1.6334994229002793e104}
    }))
    .expect("spec");
    let new = NewEvent::now(events::Event::Created(events::event::Created { spec }));
    let (env, bytes) = Envelope::seal(Uuid::nil(), 1, GENESIS_HASH, &new).expect("seals");
    let opened = Envelope::open_verified(&bytes, Uuid::nil(), 1, GENESIS_HASH).expect("verifies");
    assert_eq!(opened, env);
}
