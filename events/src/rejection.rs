//! Why a command was refused. Every variant is something a client can fix; the HTTP layer maps
//! each to one status and one stable code, in one place.

use crate::validation::Report;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// A field of the request is out of range or inconsistent.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A change would send a stored secret to a new destination (a connection's `server`, the
    /// push `url`): the secret named by `field` must be sent again with it.
    #[error("{field}: {message}")]
    SecretRequired { field: String, message: String },
    /// A connection's `server` cannot change while members hold credentials given for the old
    /// one: those were never sent with this request, so they cannot be sent again.
    #[error("connection '{connection}' holds the credentials of {} member(s), given for its current server", .members.len())]
    MembersHoldCredentials {
        connection: String,
        members: Vec<String>,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    Duplicate { what: String },
    #[error("the agent is not deployed")]
    NotDeployed,
    /// `If-Match` named a sequence number the stream has moved past.
    #[error("the agent changed: expected seq {expected}, it is at {actual}")]
    Stale { expected: u64, actual: u64 },
    #[error("the draft has {} error(s) and {} warning(s)", .0.errors.len(), .0.warnings.len())]
    ValidationFailed(Report),
    /// The draft cannot run (`validation::check_runnable`): the errors that keep it from it.
    #[error("the draft cannot run: it has {} error(s)", .0.errors.len())]
    NotRunnable(Report),
}

impl Rejection {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn secret_required(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection::SecretRequired {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Rejection::NotFound { what: what.into() }
    }

    /// The request field a client should fix, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Rejection::Invalid { field, .. } | Rejection::SecretRequired { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }
}
