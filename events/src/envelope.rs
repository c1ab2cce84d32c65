//! The envelope every event is stored in, and the SHA-256 hash chain that makes an edit of the log
//! detectable.
//!
//! `hash = hex(SHA-256(prev_hash || "\n" || canonical JSON of the envelope without "hash"))`, where
//! canonical JSON sorts object keys and has no whitespace. The first event's `prev_hash` is 64
//! zeros. Hashing the canonical form of the *stored* document (not of the typed event) means a
//! change to any byte that matters — even in a field this build does not know — breaks the chain.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::Event;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// 1, 2, 3… within the agent's stream, without gaps.
    pub seq: u64,
    /// The event's own id (UUID v7).
    pub id: Uuid,
    /// The agent (stream) the event belongs to; hashed, so an event cannot be moved to another log.
    pub agent_id: Uuid,
    #[serde(flatten)]
    pub event: Event,
    pub at: DateTime<Utc>,
    /// The event schema version that wrote it (see [`crate::event::SCHEMA`]).
    pub schema: u32,
    pub prev_hash: String,
    pub hash: String,
}

/// An event on its way into the log: everything but the position, which the store assigns.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub event: Event,
}

impl NewEvent {
    pub fn now(event: Event) -> Self {
        NewEvent {
            id: Uuid::now_v7(),
            at: Utc::now(),
            event,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("event is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("event has no hash field")]
    NoHash,
    #[error("prev_hash {found} does not match the previous event's hash {expected}")]
    BrokenLink { expected: String, found: String },
    #[error("hash {found} does not match the content (expected {expected})")]
    BadHash { expected: String, found: String },
    #[error("seq {found} where {expected} was expected")]
    BadSeq { expected: u64, found: u64 },
    #[error("event belongs to agent {found}, not {expected}")]
    WrongStream { expected: Uuid, found: Uuid },
}

impl Envelope {
    /// Places `new` at `seq` after `prev_hash` and returns the envelope with its stored bytes.
    pub fn seal(
        agent_id: Uuid,
        seq: u64,
        prev_hash: &str,
        new: &NewEvent,
    ) -> Result<(Envelope, Vec<u8>), serde_json::Error> {
        let mut env = Envelope {
            seq,
            id: new.id,
            agent_id,
            event: new.event.clone(),
            at: new.at,
            schema: crate::event::SCHEMA,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        let mut doc = serde_json::to_value(&env)?;
        if let Some(map) = doc.as_object_mut() {
            map.remove("hash");
        }
        let hash = content_hash(&doc, prev_hash);
        if let Some(map) = doc.as_object_mut() {
            map.insert("hash".into(), Value::String(hash.clone()));
        }
        env.hash = hash;
        Ok((env, serde_json::to_vec(&doc)?))
    }

    /// Decodes stored bytes, checking the envelope's own hash and its link to `prev_hash`.
    pub fn open_verified(
        bytes: &[u8],
        agent_id: Uuid,
        seq: u64,
        prev_hash: &str,
    ) -> Result<Envelope, ChainError> {
        let mut doc: Value = serde_json::from_slice(bytes)?;
        let found = match &mut doc {
            Value::Object(map) => match map.remove("hash") {
                Some(Value::String(h)) => h,
                _ => return Err(ChainError::NoHash),
            },
            _ => return Err(ChainError::NoHash),
        };
        let expected = content_hash(&doc, prev_hash);
        if expected != found {
            return Err(ChainError::BadHash { expected, found });
        }
        if let Value::Object(map) = &mut doc {
            map.insert("hash".into(), Value::String(found));
        }
        let env: Envelope = serde_json::from_value(doc)?;
        if env.prev_hash != prev_hash {
            return Err(ChainError::BrokenLink {
                expected: prev_hash.to_owned(),
                found: env.prev_hash,
            });
        }
        if env.seq != seq {
            return Err(ChainError::BadSeq {
                expected: seq,
                found: env.seq,
            });
        }
        if env.agent_id != agent_id {
            return Err(ChainError::WrongStream {
                expected: agent_id,
                found: env.agent_id,
            });
        }
        Ok(env)
    }

    /// Decodes a stored envelope. Not through the derived `Deserialize`: its flattened, tagged
    /// `event` makes serde buffer the whole document into an intermediate tree, and the stored
    /// key order puts `data` before `type`, so the event would be buffered again (the top entry
    /// of a `hangar replay` profile). Here the event's `data` is kept as raw text and decoded
    /// once, with its tag in front.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, serde_json::Error> {
        let stored: StoredEnvelope<'_> = serde_json::from_slice(bytes)?;
        let mut tagged = String::with_capacity(
            stored.kind.len() + stored.data.map_or(4, |d| d.get().len()) + 24,
        );
        tagged.push_str("{\"type\":");
        tagged.push_str(&serde_json::to_string(&stored.kind)?);
        if let Some(data) = stored.data {
            tagged.push_str(",\"data\":");
            tagged.push_str(data.get());
        }
        tagged.push('}');
        Ok(Envelope {
            seq: stored.seq,
            id: stored.id,
            agent_id: stored.agent_id,
            event: serde_json::from_str(&tagged)?,
            at: stored.at,
            schema: stored.schema,
            prev_hash: stored.prev_hash,
            hash: stored.hash,
        })
    }

    /// The envelope as a client sees it: every sealed secret replaced by `***`.
    pub fn redacted_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        crate::secret::redact_json(&mut v);
        v
    }
}

/// The stored document's fields, for [`Envelope::decode`]; unknown fields are ignored, as the
/// derived decoder ignores them.
#[derive(Deserialize)]
struct StoredEnvelope<'a> {
    seq: u64,
    id: Uuid,
    agent_id: Uuid,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    at: DateTime<Utc>,
    schema: u32,
    prev_hash: String,
    hash: String,
}

fn content_hash(doc_without_hash: &Value, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    let mut buf = Vec::with_capacity(512);
    write_canonical(doc_without_hash, &mut buf);
    h.update(&buf);
    hex::encode(h.finalize())
}

/// JSON with sorted keys and no whitespace, whatever map order serde_json was built with. The
/// hash chain's form, and the run body's fingerprint.
pub(crate) fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String((*k).clone()), out);
                out.push(b':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // Scalars have one serde_json rendering already.
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Created, Undeployed};

    fn new(event: Event) -> NewEvent {
        NewEvent::now(event)
    }

    #[test]
    fn chain_links_and_detects_edits() {
        let agent = Uuid::now_v7();
        let (e1, b1) = Envelope::seal(
            agent,
            1,
            GENESIS_HASH,
            &new(Event::Created(Created {
                spec: Default::default(),
            })),
        )
        .expect("seals");
        let (e2, b2) = Envelope::seal(
            agent,
            2,
            &e1.hash,
            &new(Event::Undeployed(Undeployed { reason: "x".into() })),
        )
        .expect("seals");
        assert_eq!(
            Envelope::open_verified(&b1, agent, 1, GENESIS_HASH).expect("ok"),
            e1
        );
        assert_eq!(
            Envelope::open_verified(&b2, agent, 2, &e1.hash).expect("ok"),
            e2
        );
        let text = String::from_utf8(b2.clone())
            .expect("utf8")
            .replace("\"x\"", "\"y\"");
        assert!(matches!(
            Envelope::open_verified(text.as_bytes(), agent, 2, &e1.hash),
            Err(ChainError::BadHash { .. })
        ));
        assert!(Envelope::open_verified(&b2, agent, 2, GENESIS_HASH).is_err());
        assert!(Envelope::open_verified(&b2, Uuid::now_v7(), 2, &e1.hash).is_err());
    }

    #[test]
    fn canonical_form_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,"x"],"x":null}}"#).expect("json");
        let mut out = Vec::new();
        write_canonical(&a, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#
        );
    }
}
