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

impl Apply for KeyIssued {
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

impl Apply for KeyRevoked {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.keys.remove(&self.id);
    }
}
