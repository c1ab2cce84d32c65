//! Domain events: one file per kind, where it is defined, documented and applied to the state.
//!
//! Events are stored as serde-tagged JSON (`{"type": "...", "data": {...}}`) inside an
//! [`Envelope`](crate::Envelope). A field added to an event later must carry `#[serde(default)]`
//! so logs written before it still load; `SCHEMA` counts such changes.
//!
//! The `kinds!` list below is the one place that names every kind: the [`Event`] enum, its stored
//! names, [`Event::KINDS`] and the fold's dispatch are derived from it, so adding a kind is its
//! file (with its `mod` line if the file is new) plus one line there. The tests that must see
//! every kind iterate the list rather than keep their own: a new kind without a sample does not
//! compile under test, and one without a compat fixture or a row in `docs/architecture.md`'s
//! catalogue fails them.
//!
//! This module does not know the state: [`Apply`] is generic over what it folds into, each kind's
//! file names the state it changes, and `state.rs` asks for `Event: Apply<AgentState>`. So the
//! state depends on the events, not the other way round.

mod connection;
mod connection_checked;
mod created;
mod deployment;
mod endpoint;
mod flow_edited;
mod key;

pub use deployment::Snapshot;

use serde::{Deserialize, Serialize};

/// The version of the event schema this build writes. Readers accept every earlier version.
pub const SCHEMA: u32 = 1;

/// What an event needs of its envelope to apply itself.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub seq: u64,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Each event kind folds itself into the state `S` (the agent's state: `crate::state::AgentState`).
/// Implementations are pure: no I/O, no clock.
pub trait Apply<S> {
    fn apply(&self, state: &mut S, meta: Meta);
}

/// A typical event of one kind, for the tests that must see every kind. It sits in the kind's
/// file, beside the kind; the registry asks each kind for one, so a kind without it does not
/// compile under test.
#[cfg(test)]
pub(crate) trait Sample {
    fn sample() -> Self;
}

/// A secret as the samples store it: sealed, with a key used nowhere else. Where it is sealed
/// for does not matter to a sample: only its stored form is checked.
#[cfg(test)]
fn sealed_sample(plaintext: &str) -> crate::secret::Sealed {
    let place = crate::secret::Place::signing_secret(uuid::Uuid::nil());
    crate::secret::Cipher::from_key(&[7; 32]).seal(plaintext, &place)
}

/// Derives everything that has to name every kind from one list of `StoredName => file::Type`.
///
/// The stored name is the event's `type` in the log, and the variant's name: it can never change,
/// or logs on disk stop decoding (the compat fixtures would fail). The Rust type may be renamed.
macro_rules! kinds {
    ($($name:ident => $file:ident :: $kind:ident,)+) => {
        $(pub use $file::$kind;)+

        /// Every domain event, as stored in the log (the kinds are listed by `kinds!` in
        /// `event/mod.rs`).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum Event {
            $($name($kind),)+
        }

        impl Event {
            /// Every kind's stored name, in registry order.
            pub const KINDS: &'static [&'static str] = &[$(stringify!($name)),+];

            /// The stored name of this event's kind (its `type` in the log).
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Event::$name(_) => stringify!($name),)+
                }
            }

            /// One sample of every kind, in registry order.
            #[cfg(test)]
            pub(crate) fn samples() -> Vec<Event> {
                vec![$(Event::$name(<$kind as Sample>::sample())),+]
            }
        }

        // Bounded by every kind, so a kind that does not apply itself to the state fails to
        // compile where the state folds events.
        impl<S> Apply<S> for Event
        where
            $($kind: Apply<S>,)+
        {
            fn apply(&self, state: &mut S, meta: Meta) {
                match self {
                    $(Event::$name(e) => e.apply(state, meta),)+
                }
            }
        }
    };
}

kinds! {
    Created => created::Created,
    FlowEdited => flow_edited::FlowEdited,
    EndpointConfigured => endpoint::EndpointConfigured,
    SigningSecretRotated => endpoint::SigningSecretRotated,
    ConnectionAdded => connection::ConnectionAdded,
    ConnectionUpdated => connection::ConnectionUpdated,
    ConnectionRemoved => connection::ConnectionRemoved,
    MemberCredentialSet => connection::MemberCredentialSet,
    ConnectionChecked => connection_checked::ConnectionChecked,
    Deployed => deployment::Deployed,
    Redeployed => deployment::Redeployed,
    Undeployed => deployment::Undeployed,
    KeyIssued => key::KeyIssued,
    KeyRevoked => key::KeyRevoked,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use uuid::Uuid;

    use super::*;
    use crate::envelope::GENESIS_HASH;
    use crate::{AgentState, Envelope, NewEvent};

    /// Guards the stored format of every kind: a sample's stored `type` is its registry name, it
    /// comes back from the stored bytes, through the hash chain, as the event that was sealed,
    /// and sealing what came back gives the same hash (so decoding loses nothing the hash covers).
    #[test]
    fn every_kind_round_trips_through_the_envelope() {
        let agent = Uuid::now_v7();
        let mut prev = GENESIS_HASH.to_owned();
        let mut state = AgentState::new(agent);
        let samples = Event::samples();
        assert_eq!(samples.len(), Event::KINDS.len());
        for (i, (event, name)) in samples.into_iter().zip(Event::KINDS).enumerate() {
            let seq = i as u64 + 1;
            assert_eq!(event.type_name(), *name);
            let (env, bytes) =
                Envelope::seal(agent, seq, &prev, &NewEvent::now(event.clone())).expect("seals");
            let doc: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(doc["type"], *name, "the stored type is the registry's name");
            assert_eq!(Envelope::decode(&bytes).expect("decodes").event, event);
            let opened = Envelope::open_verified(&bytes, agent, seq, &prev)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(opened, env, "{name}");
            let again = NewEvent {
                id: opened.id,
                at: opened.at,
                event: opened.event.clone(),
            };
            let (resealed, _) = Envelope::seal(agent, seq, &prev, &again).expect("seals");
            assert_eq!(resealed.hash, env.hash, "{name}");
            state.apply(&opened);
            assert_eq!(state.seq, seq, "{name} was folded");
            prev = env.hash;
        }
    }

    /// The catalogue in `docs/architecture.md` has one row per kind, in registry order, so that
    /// a kind cannot be added without saying there what emits it and what it changes.
    #[test]
    fn the_architecture_catalogue_lists_every_kind() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/architecture.md");
        let doc = std::fs::read_to_string(path).expect("docs/architecture.md");
        let (_, section) = doc.split_once("## Event catalogue").expect("a catalogue");
        let section = section.split("\n## ").next().unwrap_or(section);
        let rows: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once('`'))
            .map(|(kind, _)| kind)
            .collect();
        assert_eq!(
            rows,
            Event::KINDS,
            "one catalogue row per kind, in registry order"
        );
    }
}
