use serde::{Deserialize, Serialize};

use super::{Apply, Meta};
use crate::connection::Connection;
use crate::endpoint::EndpointSettings;
use crate::secret::Sealed;
use crate::spec::AgentSpec;
use crate::state::{AgentState, Status, Version};

/// Everything a deployed version runs with, frozen at deploy time. Member credentials are not
/// part of it: members set and rotate their own at any time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub spec: AgentSpec,
    pub endpoint: EndpointSettings,
    #[serde(default)]
    pub connections: Vec<Connection<Sealed>>,
}

/// A draft agent went live with `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    pub version: u32,
    /// The earlier version whose snapshot this is, for a deploy of `{"version": N}`.
    #[serde(default)]
    pub rollback_of: Option<u32>,
    pub snapshot: Snapshot,
}

impl Apply<AgentState> for Deployed {
    fn apply(&self, state: &mut AgentState, meta: Meta) {
        go_live(state, meta, self.version, self.rollback_of, &self.snapshot);
    }
}

/// A live agent's version was replaced by `version`: the draft, or, with `rollback_of`, an earlier
/// version's snapshot. Runs in flight keep the version that accepted them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redeployed {
    pub version: u32,
    #[serde(default)]
    pub rollback_of: Option<u32>,
    pub snapshot: Snapshot,
}

impl Apply<AgentState> for Redeployed {
    fn apply(&self, state: &mut AgentState, meta: Meta) {
        go_live(state, meta, self.version, self.rollback_of, &self.snapshot);
    }
}

fn go_live(
    state: &mut AgentState,
    meta: Meta,
    version: u32,
    rollback_of: Option<u32>,
    snapshot: &Snapshot,
) {
    state.versions.push(Version {
        version,
        deployed_at: meta.at,
        seq: meta.seq,
        rollback_of,
        snapshot: snapshot.clone(),
    });
    state.status = Status::Live;
    state.live_version = Some(version);
}

/// The agent stopped serving; every run in flight was cancelled and it is back to draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Undeployed {
    #[serde(default)]
    pub reason: String,
}

impl Apply<AgentState> for Undeployed {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.status = Status::Draft;
        state.live_version = None;
    }
}

#[cfg(test)]
fn sample_snapshot() -> Snapshot {
    use super::Sample;
    Snapshot {
        spec: super::FlowEdited::sample().spec,
        endpoint: super::EndpointConfigured::sample().settings,
        connections: vec![super::ConnectionAdded::sample().connection],
    }
}

#[cfg(test)]
impl super::Sample for Deployed {
    fn sample() -> Self {
        Deployed {
            version: 1,
            rollback_of: None,
            snapshot: sample_snapshot(),
        }
    }
}

#[cfg(test)]
impl super::Sample for Redeployed {
    fn sample() -> Self {
        Redeployed {
            version: 3,
            rollback_of: Some(1),
            snapshot: sample_snapshot(),
        }
    }
}

#[cfg(test)]
impl super::Sample for Undeployed {
    fn sample() -> Self {
        Undeployed {
            reason: "requested".into(),
        }
    }
}
