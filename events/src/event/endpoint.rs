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

impl Apply<AgentState> for EndpointConfigured {
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

impl Apply<AgentState> for SigningSecretRotated {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.signing_secret = Some(self.secret.clone());
    }
}

#[cfg(test)]
impl super::Sample for EndpointConfigured {
    fn sample() -> Self {
        EndpointConfigured {
            settings: EndpointSettings {
                max_concurrency: 4,
                asynchronous: crate::endpoint::AsyncSettings {
                    push_enabled: true,
                    url: Some("https://hooks.example.com/hangar".into()),
                    token: Some(super::sealed_sample("push-token")),
                    timeout_s: None,
                },
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
impl super::Sample for SigningSecretRotated {
    fn sample() -> Self {
        SigningSecretRotated {
            secret: super::sealed_sample("whsec_c2FtcGxlIHNpZ25pbmcgc2VjcmV0"),
        }
    }
}
