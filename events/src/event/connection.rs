use serde::{Deserialize, Serialize};

use super::{Apply, Meta};
use crate::connection::{Auth, Connection, Environment};
use crate::secret::Sealed;
use crate::state::{AgentState, ConnectionState};

/// A connection was added to the draft; its secrets are sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionAdded {
    pub connection: Connection<Sealed>,
}

impl Apply<AgentState> for ConnectionAdded {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.connections.insert(
            self.connection.id.clone(),
            ConnectionState::new(self.connection.clone()),
        );
    }
}

/// A connection was replaced. Members' own credentials survive unless the auth type changed,
/// since credentials of another type could never be used. Its checks are forgotten: they were
/// of the credentials it had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionUpdated {
    pub connection: Connection<Sealed>,
}

impl Apply<AgentState> for ConnectionUpdated {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        let entry = state
            .connections
            .entry(self.connection.id.clone())
            .or_insert_with(|| ConnectionState::new(self.connection.clone()));
        if entry.connection.auth.type_name() != self.connection.auth.type_name() {
            entry.members.clear();
            entry.live_members.clear();
        }
        entry.connection = self.connection.clone();
        entry.checks.clear();
    }
}

/// A connection and every member credential stored for it were removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRemoved {
    pub id: String,
}

impl Apply<AgentState> for ConnectionRemoved {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        state.connections.remove(&self.id);
    }
}

/// A member stored its own credentials for a `member` connection (sealed), for the draft
/// environment or the live one. That member's checks are forgotten: they were of other
/// credentials (a live run without live credentials uses the draft ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberCredentialSet {
    pub connection: String,
    pub member: String,
    pub auth: Auth<Sealed>,
    /// Absent in logs written before environments, and left out for the draft, so draft
    /// credentials are stored exactly as before.
    #[serde(default, skip_serializing_if = "Environment::is_draft")]
    pub environment: Environment,
}

impl Apply<AgentState> for MemberCredentialSet {
    fn apply(&self, state: &mut AgentState, _meta: Meta) {
        if let Some(c) = state.connections.get_mut(&self.connection) {
            let members = match self.environment {
                Environment::Draft => &mut c.members,
                Environment::Live => &mut c.live_members,
            };
            members.insert(self.member.clone(), self.auth.clone());
            c.checks
                .retain(|check| check.member.as_deref() != Some(self.member.as_str()));
        }
    }
}

#[cfg(test)]
impl super::Sample for ConnectionAdded {
    fn sample() -> Self {
        ConnectionAdded {
            connection: Connection {
                id: "weather".into(),
                display_name: "Weather API".into(),
                server: "https://api.weather.example.com".into(),
                sso: false,
                credentials: crate::connection::CredentialMode::Team,
                auth: Auth::ApiKey {
                    header: "X-Api-Key".into(),
                    key: Some(super::sealed_sample("weather-key")),
                },
                environments: Some(crate::connection::Environments {
                    live: Some(crate::connection::EnvironmentCredentials {
                        auth: Auth::ApiKey {
                            header: "X-Api-Key".into(),
                            key: Some(super::sealed_sample("weather-live-key")),
                        },
                    }),
                }),
                check_path: Some("/v1/me".into()),
            },
        }
    }
}

#[cfg(test)]
impl super::Sample for ConnectionUpdated {
    fn sample() -> Self {
        ConnectionUpdated {
            connection: Connection {
                id: "crm".into(),
                display_name: "CRM".into(),
                server: "https://crm.example.com".into(),
                sso: true,
                credentials: crate::connection::CredentialMode::Member,
                auth: Auth::Bearer { token: None },
                environments: None,
                check_path: None,
            },
        }
    }
}

#[cfg(test)]
impl super::Sample for ConnectionRemoved {
    fn sample() -> Self {
        ConnectionRemoved { id: "crm".into() }
    }
}

#[cfg(test)]
impl super::Sample for MemberCredentialSet {
    fn sample() -> Self {
        MemberCredentialSet {
            connection: "crm".into(),
            member: "alice@example.com".into(),
            auth: Auth::Bearer {
                token: Some(super::sealed_sample("alice-token")),
            },
            environment: Environment::Live,
        }
    }
}
