use serde::{Deserialize, Serialize};

use super::{Apply, Meta};
use crate::endpoint::EndpointSettings;
use crate::secret::Sealed;
use crate::state::AgentState;

/// The draft's endpoint settings were replaced; they go live with the next deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointConfigured {
    pub settings: EndpointSettings,
}

impl Apply for EndpointConfigured {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.endpoint = self.settings.clone();
    }
}

/// A new push signing secret (`whsec_...`, sealed). It takes effect at once, live version
/// included: receivers verify with whatever secret the agent has now, not with a deploy's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningSecretRotated {
    pub secret: Sealed,
}

impl Apply for SigningSecretRotated {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.signing_secret = Some(self.secret.clone());
    }
}
