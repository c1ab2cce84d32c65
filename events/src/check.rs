//! Connection checks: what one check of a connection's credentials found, and what a
//! connection's latest checks say of it (the summary's `status`).
//!
//! A check itself is I/O (`GET <server><check_path>` with the credentials, under the egress
//! policy) and happens outside this crate; what it found comes back as a command and is recorded
//! as a `ConnectionChecked` event, with no secret in it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::connection::{CredentialMode, Environment};
use crate::state::ConnectionState;

/// What the server made of the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// The server answered with anything but 401 or 403.
    Authenticated,
    /// The server answered 401 or 403: it refused the credentials.
    Rejected,
    /// No answer: refused by the egress policy, no connection, TLS failure, or none in 10 s.
    Unreachable,
}

impl CheckStatus {
    /// The status an HTTP answer means: 401 and 403 refuse the credentials, anything else
    /// (a 404 at the check path included) shows they were accepted or not looked at.
    pub fn of_answer(http_status: u16) -> CheckStatus {
        match http_status {
            401 | 403 => CheckStatus::Rejected,
            _ => CheckStatus::Authenticated,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            CheckStatus::Authenticated => "authenticated",
            CheckStatus::Rejected => "rejected",
            CheckStatus::Unreachable => "unreachable",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckOutcome {
    pub status: CheckStatus,
    /// The answer's status; `null` when there was none.
    pub http_status: Option<u16>,
    /// From sending the request to the answer's head (or to giving up).
    pub latency_ms: u64,
    /// Why there was no answer (the egress policy's reason, a connect or TLS error), for
    /// `unreachable`. Never holds a secret: it names hosts and addresses, not headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A check as the state keeps it: the latest one per environment and member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    pub environment: Environment,
    /// Whose credentials were checked; `null` for the team's.
    pub member: Option<String>,
    #[serde(flatten)]
    pub outcome: CheckOutcome,
    pub checked_at: DateTime<Utc>,
}

/// A connection's status in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Authenticated,
    Rejected,
    Unreachable,
    /// Never checked since its credentials were last set.
    Unchecked,
    /// A member connection no member has credentials for yet (and no check).
    NeedsMemberCredentials,
}

/// What the latest checks say of a connection, and when the one that says it was made. Each
/// set of credentials (per environment and member) counts by its latest check, and the worst of
/// them is the connection's status: one member's rejected credentials are not hidden by
/// another's that passed.
pub fn status(c: &ConnectionState) -> (ConnectionStatus, Option<DateTime<Utc>>) {
    for wanted in [
        CheckStatus::Rejected,
        CheckStatus::Unreachable,
        CheckStatus::Authenticated,
    ] {
        let latest = c
            .checks
            .iter()
            .filter(|check| check.outcome.status == wanted)
            .map(|check| check.checked_at)
            .max();
        if let Some(at) = latest {
            let status = match wanted {
                CheckStatus::Rejected => ConnectionStatus::Rejected,
                CheckStatus::Unreachable => ConnectionStatus::Unreachable,
                CheckStatus::Authenticated => ConnectionStatus::Authenticated,
            };
            return (status, Some(at));
        }
    }
    let waiting = c.connection.credentials == CredentialMode::Member
        && c.members.is_empty()
        && c.live_members.is_empty();
    if waiting {
        (ConnectionStatus::NeedsMemberCredentials, None)
    } else {
        (ConnectionStatus::Unchecked, None)
    }
}

impl ConnectionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionStatus::Authenticated => "authenticated",
            ConnectionStatus::Rejected => "rejected",
            ConnectionStatus::Unreachable => "unreachable",
            ConnectionStatus::Unchecked => "unchecked",
            ConnectionStatus::NeedsMemberCredentials => "needs_member_credentials",
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::connection::{Auth, Connection};
    use crate::secret::Sealed;

    fn connection(credentials: CredentialMode) -> ConnectionState {
        ConnectionState::new(Connection::<Sealed> {
            id: "crm".into(),
            display_name: "CRM".into(),
            server: "https://crm.example".into(),
            sso: false,
            credentials,
            auth: Auth::Bearer { token: None },
            environments: None,
            check_path: None,
        })
    }

    fn checked(member: &str, status: CheckStatus, minute: u32) -> Check {
        Check {
            environment: Environment::Draft,
            member: Some(member.into()),
            outcome: CheckOutcome {
                status,
                http_status: None,
                latency_ms: 1,
                detail: None,
            },
            checked_at: Utc.with_ymd_and_hms(2025, 1, 1, 0, minute, 0).unwrap(),
        }
    }

    #[test]
    fn only_401_and_403_reject() {
        for code in [200, 204, 301, 404, 500, 503] {
            assert_eq!(
                CheckStatus::of_answer(code),
                CheckStatus::Authenticated,
                "{code}"
            );
        }
        for code in [401, 403] {
            assert_eq!(
                CheckStatus::of_answer(code),
                CheckStatus::Rejected,
                "{code}"
            );
        }
    }

    #[test]
    fn the_worst_latest_check_is_the_status() {
        let mut c = connection(CredentialMode::Member);
        assert_eq!(status(&c), (ConnectionStatus::NeedsMemberCredentials, None));
        c.members.insert("bob".into(), Auth::Bearer { token: None });
        assert_eq!(status(&c), (ConnectionStatus::Unchecked, None));
        c.checks
            .push(checked("alice", CheckStatus::Authenticated, 1));
        assert_eq!(status(&c).0, ConnectionStatus::Authenticated);
        // Bob's refused credentials are not hidden by alice's later success.
        c.checks.push(checked("bob", CheckStatus::Rejected, 2));
        c.checks
            .push(checked("carol", CheckStatus::Authenticated, 3));
        assert_eq!(
            status(&c),
            (ConnectionStatus::Rejected, Some(c.checks[1].checked_at))
        );
        c.checks.remove(1);
        c.checks.push(checked("dan", CheckStatus::Unreachable, 4));
        assert_eq!(status(&c).0, ConnectionStatus::Unreachable);
        assert_eq!(
            status(&connection(CredentialMode::Team)),
            (ConnectionStatus::Unchecked, None)
        );
    }
}
