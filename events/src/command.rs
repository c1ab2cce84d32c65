//! Commands: what a client asks of an agent. [`decide`] checks a command against the current
//! state and turns it into events; it is pure apart from the randomness of sealing, so the actor
//! that owns the agent only has to append what it returns and apply it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

use crate::connection::{admit_member_auth, Auth, Connection};
use crate::endpoint::EndpointInput;
use crate::event::*;
use crate::secret::Cipher;
use crate::spec::AgentSpec;
use crate::state::{AgentState, Status};
use crate::validation::{validate, Directory};
use crate::Rejection;

#[derive(Debug, Clone)]
pub enum Command {
    Create {
        spec: AgentSpec,
    },
    EditDraft {
        spec: AgentSpec,
    },
    ConfigureEndpoint {
        input: EndpointInput,
    },
    RotateSigningSecret,
    AddConnection {
        connection: Connection<String>,
    },
    UpdateConnection {
        id: String,
        connection: Connection<String>,
    },
    RemoveConnection {
        id: String,
    },
    SetMemberCredential {
        connection: String,
        member: String,
        auth: Auth<String>,
    },
    /// Deploy the draft, or with `version` re-deploy that earlier version's snapshot (rollback).
    Deploy {
        version: Option<u32>,
    },
    Undeploy,
}

/// What a command needs besides the state.
pub struct Context<'a> {
    pub cipher: &'a Cipher,
    pub directory: &'a dyn Directory,
}

/// The events a command produced, and a secret to show the client exactly once (a freshly
/// generated push signing secret), which is nowhere else in plaintext.
#[derive(Debug, Default)]
pub struct Decision {
    pub events: Vec<Event>,
    pub revealed_secret: Option<String>,
}

impl Decision {
    fn one(event: Event) -> Self {
        Decision {
            events: vec![event],
            revealed_secret: None,
        }
    }
}

pub fn decide(
    state: &AgentState,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    if let Command::Create { spec } = command {
        if state.exists() {
            return Err(Rejection::Duplicate {
                what: format!("agent {}", state.id),
            });
        }
        if spec.name.trim().is_empty() {
            return Err(Rejection::invalid(
                "name",
                "an agent needs a non-empty name",
            ));
        }
        return Ok(Decision::one(Event::Created(Created {
            spec: spec.clone(),
        })));
    }
    if !state.exists() {
        return Err(Rejection::not_found(format!("agent {}", state.id)));
    }
    match command {
        Command::Create { .. } => unreachable!("handled above"),
        Command::EditDraft { spec } => Ok(Decision::one(Event::FlowEdited(FlowEdited {
            spec: spec.clone(),
        }))),
        Command::ConfigureEndpoint { input } => {
            let settings = input.admit(&state.endpoint, ctx.cipher)?;
            let mut decision = Decision::one(Event::EndpointConfigured(EndpointConfigured {
                settings: settings.clone(),
            }));
            if settings.asynchronous.push_enabled && state.signing_secret.is_none() {
                let (event, secret) = new_signing_secret(ctx.cipher);
                decision.events.push(event);
                decision.revealed_secret = Some(secret);
            }
            Ok(decision)
        }
        Command::RotateSigningSecret => {
            let (event, secret) = new_signing_secret(ctx.cipher);
            Ok(Decision {
                events: vec![event],
                revealed_secret: Some(secret),
            })
        }
        Command::AddConnection { connection } => {
            if state.connections.contains_key(&connection.id) {
                return Err(Rejection::Duplicate {
                    what: format!("connection '{}'", connection.id),
                });
            }
            let connection = connection.admit(ctx.cipher)?;
            Ok(Decision::one(Event::ConnectionAdded(ConnectionAdded {
                connection,
            })))
        }
        Command::UpdateConnection { id, connection } => {
            if !state.connections.contains_key(id) {
                return Err(Rejection::not_found(format!("connection '{id}'")));
            }
            if !connection.id.is_empty() && &connection.id != id {
                return Err(Rejection::invalid(
                    "id",
                    "a connection's id cannot change; remove it and add a new one",
                ));
            }
            let mut connection = connection.clone();
            connection.id = id.clone();
            let connection = connection.admit(ctx.cipher)?;
            Ok(Decision::one(Event::ConnectionUpdated(ConnectionUpdated {
                connection,
            })))
        }
        Command::RemoveConnection { id } => {
            if !state.connections.contains_key(id) {
                return Err(Rejection::not_found(format!("connection '{id}'")));
            }
            Ok(Decision::one(Event::ConnectionRemoved(ConnectionRemoved {
                id: id.clone(),
            })))
        }
        Command::SetMemberCredential {
            connection,
            member,
            auth,
        } => {
            let stored = state
                .connections
                .get(connection)
                .ok_or_else(|| Rejection::not_found(format!("connection '{connection}'")))?;
            if member.is_empty() || member.len() > 128 || member.chars().any(char::is_control) {
                return Err(Rejection::invalid(
                    "member",
                    "a member name is 1-128 printable characters",
                ));
            }
            let auth = admit_member_auth(&stored.connection, auth, ctx.cipher)?;
            Ok(Decision::one(Event::MemberCredentialSet(
                MemberCredentialSet {
                    connection: connection.clone(),
                    member: member.clone(),
                    auth,
                },
            )))
        }
        Command::Deploy { version } => deploy(state, *version, ctx),
        Command::Undeploy => {
            if state.status != Status::Live {
                return Err(Rejection::NotDeployed);
            }
            Ok(Decision::one(Event::Undeployed(Undeployed {
                reason: "requested".into(),
            })))
        }
    }
}

fn deploy(
    state: &AgentState,
    rollback_to: Option<u32>,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let snapshot = match rollback_to {
        None => Snapshot {
            spec: state.draft.clone(),
            endpoint: state.endpoint.clone(),
            connections: state.draft_connections(),
        },
        Some(n) => state
            .version(n)
            .map(|v| v.snapshot.clone())
            .ok_or_else(|| {
                Rejection::invalid(
                    "version",
                    format!("version {n} was never deployed; see GET /versions"),
                )
            })?,
    };
    // A rollback is checked again too: a collaborator it names may no longer be live.
    let report = validate(
        state.id,
        &snapshot.spec,
        &snapshot.connections,
        ctx.directory,
    );
    if !report.ok() {
        return Err(Rejection::ValidationFailed(report));
    }
    let version = state.next_version();
    let event = if state.status == Status::Live {
        Event::Redeployed(Redeployed {
            version,
            rollback_of: rollback_to,
            snapshot,
        })
    } else {
        Event::Deployed(Deployed {
            version,
            rollback_of: rollback_to,
            snapshot,
        })
    };
    Ok(Decision::one(event))
}

/// A Standard Webhooks signing secret: `whsec_` and the base64 of 32 random bytes.
fn new_signing_secret(cipher: &Cipher) -> (Event, String) {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let secret = format!("whsec_{}", B64.encode(key));
    let event = Event::SigningSecretRotated(SigningSecretRotated {
        secret: cipher.seal(&secret),
    });
    (event, secret)
}
