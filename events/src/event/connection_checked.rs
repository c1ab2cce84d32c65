use serde::{Deserialize, Serialize};

use super::{Apply, Meta};
use crate::check::{Check, CheckOutcome};
use crate::connection::Environment;
use crate::state::AgentState;

/// A connection's credentials were checked (`POST …/connections/{cid}/check`, or the summary's
/// `?check=true`): who proved what, and when (the envelope's time). It holds what the server
/// answered, never a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionChecked {
    pub connection: String,
    /// Which credentials were asked for: `draft` (what previews use) or `live` (what live runs
    /// use: the live ones where set, else the draft ones).
    pub environment: Environment,
    /// Whose credentials: a member's, or the team's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(flatten)]
    pub outcome: CheckOutcome,
}

impl Apply<AgentState> for ConnectionChecked {
    fn apply(&self, state: &mut AgentState, meta: Meta) {
        if let Some(c) = state.connections.get_mut(&self.connection) {
            c.checks.retain(|check| {
                (check.environment, check.member.as_deref())
                    != (self.environment, self.member.as_deref())
            });
            c.checks.push(Check {
                environment: self.environment,
                member: self.member.clone(),
                outcome: self.outcome.clone(),
                checked_at: meta.at,
            });
        }
    }
}

#[cfg(test)]
impl super::Sample for ConnectionChecked {
    fn sample() -> Self {
        ConnectionChecked {
            connection: "crm".into(),
            environment: Environment::Live,
            member: Some("alice@example.com".into()),
            outcome: CheckOutcome {
                status: crate::check::CheckStatus::Rejected,
                http_status: Some(401),
                latency_ms: 42,
                detail: None,
            },
        }
    }
}
