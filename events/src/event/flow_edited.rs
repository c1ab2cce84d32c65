use serde::{Deserialize, Serialize};

use super::{Apply, Meta};
use crate::spec::AgentSpec;
use crate::state::AgentState;

/// The draft was replaced whole (`PUT /draft`). The live version, if any, is untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowEdited {
    pub spec: AgentSpec,
}

impl Apply<AgentState> for FlowEdited {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.draft = self.spec.clone();
    }
}

#[cfg(test)]
impl super::Sample for FlowEdited {
    fn sample() -> Self {
        FlowEdited {
            spec: AgentSpec {
                name: "Weather helper".into(),
                description: "Answers weather questions".into(),
                instructions: "You answer briefly.".into(),
                ..Default::default()
            },
        }
    }
}
