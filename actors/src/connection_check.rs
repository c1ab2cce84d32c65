//! Connection checks: one `GET <server><check_path>` with a connection's credentials, to prove
//! they authenticate before a deploy relies on them.
//!
//! The request goes through the same client as tool calls, so through the egress policy: a
//! destination the policy refuses is `unreachable`, with the policy's reason, and no request is
//! made. 401 and 403 are `rejected`; any other answer is `authenticated`; no answer within
//! [`CHECK_TIMEOUT`] (or no connection, or a TLS failure) is `unreachable`. The answer's body is
//! never read. What the check found is recorded by the caller as a command, like any change.

use std::time::{Duration, Instant};

use awc::http::Method;
use events::check::{CheckOutcome, CheckStatus};
use events::connection::{Auth, Environment};
use events::secret::Cipher;
use events::state::ConnectionState;
use uuid::Uuid;

use crate::egress;
use crate::flow::http_effects::{auth_headers, client};

/// The most one check waits, connecting included.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a check could not be made at all: nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The member has no credentials for the connection (in that environment, or the draft).
    #[error(
        "member '{member}' has no credentials for connection '{connection}': set them with \
         PUT .../connections/{connection}/members/{member}"
    )]
    NoMemberCredentials { connection: String, member: String },
    /// The stored credentials do not open with this server's key at their place.
    #[error(
        "the credentials of connection '{connection}' cannot be opened: they were sealed with \
         another secret key, or for another agent, connection, member or server: set them again"
    )]
    Unreadable { connection: String },
    /// The stored credentials cannot be sent as headers (a bad header name or value).
    #[error("{0}")]
    Unsendable(String),
}

/// Checks connection `connection` of agent `agent` with `member`'s credentials (or the team's),
/// those a call in `environment` would use: the live ones where set for the live environment,
/// else the draft ones.
pub async fn check(
    agent: Uuid,
    connection: &ConnectionState,
    member: Option<&str>,
    environment: Environment,
    cipher: &Cipher,
) -> Result<CheckOutcome, Error> {
    let c = &connection.connection;
    let (sealed, sealed_in) =
        connection
            .credentials(member, environment)
            .ok_or_else(|| Error::NoMemberCredentials {
                connection: c.id.clone(),
                member: member.unwrap_or_default().to_owned(),
            })?;
    let opened = sealed
        .open(cipher, |field| c.place_in(agent, member, sealed_in, field))
        .map_err(|_| Error::Unreadable {
            connection: c.id.clone(),
        })?;
    let fallback_header = match &c.auth {
        Auth::ApiKey { header, .. } => header.as_str(),
        _ => "",
    };
    let headers =
        auth_headers(&c.id, &opened, fallback_header).map_err(|e| Error::Unsendable(e.message))?;
    let url = format!("{}{}", c.server, c.check_path());
    let mut request = client().request(Method::GET, &url);
    for header in headers {
        request = request.insert_header(header);
    }
    let started = Instant::now();
    let answer = tokio::time::timeout(CHECK_TIMEOUT, request.timeout(CHECK_TIMEOUT).send()).await;
    let latency_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    let unreachable = |detail: String| CheckOutcome {
        status: CheckStatus::Unreachable,
        http_status: None,
        latency_ms,
        detail: Some(detail),
    };
    Ok(match answer {
        Ok(Ok(response)) => {
            let http_status = response.status().as_u16();
            CheckOutcome {
                status: CheckStatus::of_answer(http_status),
                http_status: Some(http_status),
                latency_ms,
                detail: None,
            }
        }
        Ok(Err(e)) => match egress::denied(&e) {
            Some(denied) => unreachable(denied.to_string()),
            None if matches!(e, awc::error::SendRequestError::Timeout) => unreachable(format!(
                "no answer from {} within {} s",
                c.server,
                CHECK_TIMEOUT.as_secs()
            )),
            None => unreachable(format!("{}: {e}", c.server)),
        },
        Err(_) => unreachable(format!(
            "no answer from {} within {} s",
            c.server,
            CHECK_TIMEOUT.as_secs()
        )),
    })
}
