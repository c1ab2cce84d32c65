//! Invocation keys: `hgk_<agent id, 32 hex>_<43 chars of base64url randomness>`.
//!
//! The agent id inside the key lets the server find the one agent whose key list to check, and
//! tell "a key of another agent" (403) from "not a key" (401) without a global index. Keys carry
//! 256 random bits, so a plain SHA-256 is the right way to store them (a slow password hash
//! would only add latency to every call).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const PREFIX: &str = "hgk_";

/// A new key for `agent`: (key id, the key, its hash).
pub fn generate(agent: Uuid) -> (String, String, String) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key = format!(
        "{PREFIX}{}_{}",
        agent.simple(),
        URL_SAFE_NO_PAD.encode(secret)
    );
    let mut id_bytes = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut id_bytes);
    let id = format!("key_{}", hex::encode(id_bytes));
    let hash = hash(&key);
    (id, key, hash)
}

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The agent a presented key claims to belong to, if it looks like a key at all.
pub fn agent_of(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(PREFIX)?;
    let (agent, secret) = rest.split_once('_')?;
    if secret.len() < 40 {
        return None;
    }
    Uuid::try_parse(agent).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_agent_and_hash_stably() {
        let agent = Uuid::now_v7();
        let (id, key, h) = generate(agent);
        assert!(id.starts_with("key_"));
        assert_eq!(agent_of(&key), Some(agent));
        assert_eq!(hash(&key), h);
        assert_ne!(generate(agent).1, key);
        assert_eq!(agent_of("hgk_nope"), None);
        assert_eq!(agent_of("Bearer x"), None);
    }
}
