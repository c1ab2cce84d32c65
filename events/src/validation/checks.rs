//! What connection checks add to validation: a connection whose latest check was rejected is a
//! warning, so it blocks deploy until a check passes (or its credentials are set anew).

use std::collections::BTreeMap;

use super::Report;
use crate::check::{status, ConnectionStatus};
use crate::connection::Connection;
use crate::secret::Sealed;
use crate::state::ConnectionState;

/// `connection_rejected` for each of `connections` (the ones being deployed) whose latest
/// checks, as the agent holds them now, say its credentials were refused.
pub fn check_rejected(
    connections: &[Connection<Sealed>],
    current: &BTreeMap<String, ConnectionState>,
    report: &mut Report,
) {
    for c in connections {
        let Some(state) = current.get(&c.id) else {
            continue;
        };
        if let (ConnectionStatus::Rejected, Some(at)) = status(state) {
            let whose = state
                .checks
                .iter()
                .filter(|check| check.checked_at == at)
                .map(|check| match &check.member {
                    Some(m) => format!("member '{m}' ({})", check.environment.as_str()),
                    None => format!("team ({})", check.environment.as_str()),
                })
                .next()
                .unwrap_or_default();
            report.warning(
                "connection_rejected",
                format!("connections.{}", c.id),
                format!(
                    "{} refused the {whose} credentials of connection '{}' at its last check \
                     ({at}): set working credentials, then POST \
                     .../connections/{}/check until it is authenticated",
                    c.server, c.id, c.id
                ),
            );
        }
    }
}
