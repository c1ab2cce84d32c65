//! The agent as the fold of its events. `apply` is pure, so replaying a log always rebuilds
//! exactly the state the live actor had after the same events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::check::Check;
use crate::connection::{Auth, Connection, Environment};
use crate::endpoint::EndpointSettings;
use crate::event::{Apply, Meta, Snapshot};
use crate::secret::Sealed;
use crate::spec::AgentSpec;
use crate::Envelope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Draft,
    Live,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionState {
    pub connection: Connection<Sealed>,
    /// Each member's own credentials, for `member` connections.
    pub members: BTreeMap<String, Auth<Sealed>>,
    /// Each member's own live-environment credentials (`?environment=live`), used by live runs
    /// in place of `members`.
    #[serde(default)]
    pub live_members: BTreeMap<String, Auth<Sealed>>,
    /// The latest check of each set of credentials (per environment and member) since they were
    /// last set: credentials set anew are unchecked.
    #[serde(default)]
    pub checks: Vec<Check>,
}

impl ConnectionState {
    pub fn new(connection: Connection<Sealed>) -> Self {
        ConnectionState {
            connection,
            members: BTreeMap::new(),
            live_members: BTreeMap::new(),
            checks: Vec::new(),
        }
    }

    /// The credentials a call in `environment` uses, and the environment they were sealed for:
    /// the team's (`member: None`) or that member's, live ones in the live environment where
    /// they exist, else the draft ones (today's behaviour for live runs without live
    /// credentials). `None`: a member without credentials.
    pub fn credentials(
        &self,
        member: Option<&str>,
        environment: Environment,
    ) -> Option<(&Auth<Sealed>, Environment)> {
        let live = environment == Environment::Live;
        let found = match member {
            None => live
                .then(|| self.connection.live_auth())
                .flatten()
                .map(|auth| (auth, Environment::Live)),
            Some(m) => live
                .then(|| self.live_members.get(m))
                .flatten()
                .map(|auth| (auth, Environment::Live)),
        };
        found.or_else(|| match member {
            None => Some((&self.connection.auth, Environment::Draft)),
            Some(m) => self.members.get(m).map(|auth| (auth, Environment::Draft)),
        })
    }
}

/// One deployment, kept whole so a rollback can re-deploy it and a run can keep using it after a
/// redeploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: u32,
    pub deployed_at: DateTime<Utc>,
    /// The seq of the event that made this version live.
    pub seq: u64,
    pub rollback_of: Option<u32>,
    pub snapshot: Snapshot,
}

/// An invocation key, known only by its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationKey {
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    /// The member this key acts as: it authenticates the caller as that member, where v1 took
    /// the member's name from a header anyone could send.
    #[serde(default)]
    pub member: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentState {
    pub id: Uuid,
    /// The seq of the last applied event; 0 before `Created`.
    pub seq: u64,
    pub draft: AgentSpec,
    pub endpoint: EndpointSettings,
    pub signing_secret: Option<Sealed>,
    pub connections: BTreeMap<String, ConnectionState>,
    pub status: Status,
    pub live_version: Option<u32>,
    /// Every deployment in order; version numbers only grow, across undeploys too.
    pub versions: Vec<Version>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Live invocation keys by id (revoked ones are gone).
    #[serde(default)]
    pub keys: BTreeMap<String, InvocationKey>,
}

impl AgentState {
    pub fn new(id: Uuid) -> Self {
        AgentState {
            id,
            ..Default::default()
        }
    }

    /// Folds a whole log.
    pub fn replay<'a>(id: Uuid, log: impl IntoIterator<Item = &'a Envelope>) -> Self {
        let mut state = AgentState::new(id);
        for env in log {
            state.apply(env);
        }
        state
    }

    pub fn apply(&mut self, env: &Envelope) {
        env.event.apply(
            self,
            Meta {
                seq: env.seq,
                at: env.at,
            },
        );
        self.seq = env.seq;
        self.updated_at = Some(env.at);
    }

    pub fn exists(&self) -> bool {
        self.seq > 0
    }

    pub fn live(&self) -> Option<&Version> {
        let v = self.live_version?;
        self.version(v)
    }

    pub fn version(&self, version: u32) -> Option<&Version> {
        self.versions.iter().find(|x| x.version == version)
    }

    pub fn next_version(&self) -> u32 {
        self.versions.last().map_or(1, |v| v.version + 1)
    }

    /// The connections of the draft, in id order.
    pub fn draft_connections(&self) -> Vec<Connection<Sealed>> {
        self.connections
            .values()
            .map(|c| c.connection.clone())
            .collect()
    }
}
