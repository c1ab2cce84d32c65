//! Domain events: one file per kind, where it is defined, documented and applied to the state.
//!
//! Events are stored as serde-tagged JSON (`{"type": "...", "data": {...}}`) inside an
//! [`Envelope`](crate::Envelope). A field added to an event later must carry `#[serde(default)]`
//! so logs written before it still load; `SCHEMA` counts such changes.

mod connection;
mod created;
mod deployment;
mod endpoint;
mod flow_edited;
mod key;

pub use connection::{ConnectionAdded, ConnectionRemoved, ConnectionUpdated, MemberCredentialSet};
pub use created::Created;
pub use deployment::{Deployed, Redeployed, Snapshot, Undeployed};
pub use endpoint::{EndpointConfigured, SigningSecretRotated};
pub use flow_edited::FlowEdited;
pub use key::{KeyIssued, KeyRevoked};

use serde::{Deserialize, Serialize};

use crate::state::AgentState;

/// The version of the event schema this build writes. Readers accept every earlier version.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    Created(Created),
    FlowEdited(FlowEdited),
    EndpointConfigured(EndpointConfigured),
    SigningSecretRotated(SigningSecretRotated),
    ConnectionAdded(ConnectionAdded),
    ConnectionUpdated(ConnectionUpdated),
    ConnectionRemoved(ConnectionRemoved),
    MemberCredentialSet(MemberCredentialSet),
    Deployed(Deployed),
    Redeployed(Redeployed),
    Undeployed(Undeployed),
    KeyIssued(KeyIssued),
    KeyRevoked(KeyRevoked),
}

/// What an event needs of its envelope to apply itself.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub seq: u64,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Each event kind folds itself into the state. Implementations are pure: no I/O, no clock.
pub trait Apply {
    fn apply(&self, state: &mut AgentState, meta: Meta);
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Created(_) => "Created",
            Event::FlowEdited(_) => "FlowEdited",
            Event::EndpointConfigured(_) => "EndpointConfigured",
            Event::SigningSecretRotated(_) => "SigningSecretRotated",
            Event::ConnectionAdded(_) => "ConnectionAdded",
            Event::ConnectionUpdated(_) => "ConnectionUpdated",
            Event::ConnectionRemoved(_) => "ConnectionRemoved",
            Event::MemberCredentialSet(_) => "MemberCredentialSet",
            Event::Deployed(_) => "Deployed",
            Event::Redeployed(_) => "Redeployed",
            Event::Undeployed(_) => "Undeployed",
            Event::KeyIssued(_) => "KeyIssued",
            Event::KeyRevoked(_) => "KeyRevoked",
        }
    }

    fn as_apply(&self) -> &dyn Apply {
        match self {
            Event::Created(e) => e,
            Event::FlowEdited(e) => e,
            Event::EndpointConfigured(e) => e,
            Event::SigningSecretRotated(e) => e,
            Event::ConnectionAdded(e) => e,
            Event::ConnectionUpdated(e) => e,
            Event::ConnectionRemoved(e) => e,
            Event::MemberCredentialSet(e) => e,
            Event::Deployed(e) => e,
            Event::Redeployed(e) => e,
            Event::Undeployed(e) => e,
            Event::KeyIssued(e) => e,
            Event::KeyRevoked(e) => e,
        }
    }
}

impl Apply for Event {
    fn apply(&self, state: &mut AgentState, meta: Meta) {
        self.as_apply().apply(state, meta)
    }
}
