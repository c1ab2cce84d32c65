use serde::{Deserialize, Serialize};

use super::{Apply, Meta};
use crate::state::{AgentState, InvocationKey};

/// An invocation key was issued. Only its SHA-256 is recorded: the key itself was shown to the
/// client once and exists nowhere else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyIssued {
    pub id: String,
    /// Hex SHA-256 of the whole key.
    pub sha256: String,
    /// The member the key acts as, if any. Absent in logs written before member keys, and left
    /// out when `None`, so a key without a member is stored exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

impl Apply<AgentState> for KeyIssued {
    fn apply(&self, state: &mut AgentState, meta: Meta) {
        state.keys.insert(
            self.id.clone(),
            InvocationKey {
                sha256: self.sha256.clone(),
                created_at: meta.at,
                member: self.member.clone(),
            },
        );
    }
}

/// An invocation key was revoked; from now on it is refused with 401.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRevoked {
    pub id: String,
}

impl Apply<AgentState> for KeyRevoked {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.keys.remove(&self.id);
    }
}

#[cfg(test)]
impl super::Sample for KeyIssued {
    fn sample() -> Self {
        KeyIssued {
            id: "key_0123456789ab".into(),
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            member: Some("alice".into()),
        }
    }
}

#[cfg(test)]
impl super::Sample for KeyRevoked {
    fn sample() -> Self {
        KeyRevoked {
            id: "key_0123456789ab".into(),
        }
    }
}
