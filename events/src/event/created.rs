use serde::{Deserialize, Serialize};

use super::{Apply, Meta};
use crate::spec::AgentSpec;
use crate::state::AgentState;

/// The agent came into being with this draft. Always the first event of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub spec: AgentSpec,
}

impl Apply<AgentState> for Created {
    fn apply(&self, state: &mut AgentState, meta: Meta) {
        state.draft = self.spec.clone();
        state.created_at = Some(meta.at);
    }
}

#[cfg(test)]
impl super::Sample for Created {
    fn sample() -> Self {
        Created {
            spec: AgentSpec {
                name: "Weather helper".into(),
                ..Default::default()
            },
        }
    }
}
