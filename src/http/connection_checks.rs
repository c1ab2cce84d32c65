//! Connection checks over HTTP: `POST …/connections/{cid}/check`, and the checks the summary
//! runs first with `?check=true`. The request to the connection's server is made here (through
//! `actors::connection_check`, under the egress policy); what it found is then recorded through
//! the agent's actor like any command (event `ConnectionChecked`, no secret in it).

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::connection_check;
use actors::Registry;
use events::check::Check;
use events::command::{check_checked_member, Command};
use events::connection::{Auth, CredentialMode, Environment};
use events::secret::Sealed;
use events::state::ConnectionState;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{agent_id, if_match, Admin, IfMatchHeader, OptionalBody};
use super::resource;
use super::responses::{
    BadRequest, Forbidden, PayloadTooLarge, PreconditionFailed, RequestTimeout, Unauthorized,
    Unavailable, UnsupportedMediaType,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/connections/{cid}/check",
        [(Method::POST, web::to(check))],
    ));
}

/// Whose credentials to check, for which environment. Empty (or `{}`): the team's, draft.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckBody {
    /// The member whose own credentials to check: required for a `member` connection, refused
    /// for a `team` one.
    #[serde(default)]
    member: Option<String>,
    /// `draft` (default): the credentials previews use. `live`: those live runs use (the live
    /// credentials where set, else the draft ones).
    #[serde(default)]
    environment: Environment,
}

/// Check a connection's credentials: `GET <server><check_path>` with them, 10 s at most, under the egress policy (event ConnectionChecked).
///
/// 401 or 403 from the server is `rejected`; any other answer `authenticated`; no answer, a
/// connect or TLS failure, or a destination the egress policy refuses (no request is made;
/// `detail` names the policy) is `unreachable`. The check is recorded in the log, without any
/// secret, and becomes the connection's status in the summary.
#[utoipa::path(
    post, path = "/v1/agents/{id}/connections/{cid}/check", operation_id = "check_connection", tag = "connections",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("cid" = String, Path, description = "The connection's id"),
        IfMatchHeader,
    ),
    request_body(content = Option<CheckBody>, description = "Optional: `{\"member\", \"environment\"}`"),
    responses(
        (status = 200, description = "What the check found (whatever the server answered)", body = Check),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or connection", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "conflict: the agent was changed concurrently; retry", body = ErrorBody),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "invalid_request: a member named for a team connection, none for a member connection, or a member without credentials (details.field names it), credentials replaced while they were being checked (field `connection`: nothing recorded, check again); credentials_unreadable: the stored credentials do not open (set them again)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn check(
    _: Admin,
    reg: web::Data<Registry>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<CheckBody>,
) -> Result<HttpResponse, ApiError> {
    let (id, cid) = path.into_inner();
    let agent = agent_id(&id)?;
    // Judged when the check is recorded: a stream that moved on meanwhile records nothing.
    let expected = if_match(&req)?;
    let state = reg.state(agent).await?;
    let connection = state
        .connections
        .get(&cid)
        .ok_or_else(|| ApiError::not_found(format!("connection '{cid}'")))?;
    let (member, environment) = (body.member, body.environment);
    check_checked_member(&connection.connection, member.as_deref())?;
    let checked = Checked::of(connection, member.as_deref(), environment);
    let outcome = connection_check::check(
        agent,
        connection,
        member.as_deref(),
        environment,
        reg.cipher(),
    )
    .await
    .map_err(refused)?;
    let found = record(
        &reg,
        agent,
        &cid,
        member,
        environment,
        checked,
        outcome,
        expected,
    )
    .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// What a check sends, taken before it is sent: the record is refused if it changed meanwhile.
struct Checked {
    server: String,
    credentials: Option<Auth<Sealed>>,
}

impl Checked {
    fn of(connection: &ConnectionState, member: Option<&str>, environment: Environment) -> Self {
        Checked {
            server: connection.connection.server.clone(),
            credentials: connection
                .credentials(member, environment)
                .map(|(auth, _)| auth.clone()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    reg: &Registry,
    agent: Uuid,
    cid: &str,
    member: Option<String>,
    environment: Environment,
    checked: Checked,
    outcome: events::check::CheckOutcome,
    expected: Option<u64>,
) -> Result<Check, ApiError> {
    // A check is only made of credentials that exist (`connection_check::check` says so).
    let credentials = checked
        .credentials
        .ok_or_else(|| ApiError::not_found(format!("credentials of connection '{cid}'")))?;
    let command = Command::RecordConnectionCheck {
        connection: cid.to_owned(),
        environment,
        member: member.clone(),
        server: checked.server,
        credentials,
        outcome,
    };
    let out = reg.execute(agent, command, expected).await?;
    out.state
        .connections
        .get(cid)
        .and_then(|c| {
            c.checks
                .iter()
                .find(|k| k.environment == environment && k.member == member)
        })
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("connection '{cid}'")))
}

fn refused(e: connection_check::Error) -> ApiError {
    use actix_web::http::StatusCode;
    match &e {
        connection_check::Error::NoMemberCredentials { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.to_string(),
        )
        .with_details(serde_json::json!({"field": "member"})),
        connection_check::Error::Unreadable { .. } | connection_check::Error::Unsendable(_) => {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "credentials_unreadable",
                e.to_string(),
            )
        }
    }
}

/// Runs, in parallel, the checks of every connection the draft uses (its tools' and its
/// model's): the team's credentials, or each member's who has some; the draft ones, and the
/// live ones too where set (deploying is what puts them to use). Each check is bounded by
/// `connection_check::CHECK_TIMEOUT`, so all of them take about that at most. Each is recorded; one that could
/// not be made (credentials that do not open) is left out, and the summary says so as before.
pub(super) async fn check_draft_connections(reg: &Registry, agent: Uuid) -> Result<(), ApiError> {
    let state = reg.state(agent).await?;
    let mut used: Vec<&str> = state
        .draft
        .tools
        .iter()
        .map(|t| t.connection.as_str())
        .chain(
            state
                .draft
                .model
                .iter()
                .filter_map(|m| m.connection.as_deref()),
        )
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut wanted: Vec<(&ConnectionState, Option<String>, Environment)> = Vec::new();
    for c in used
        .into_iter()
        .filter_map(|cid| state.connections.get(cid))
    {
        match c.connection.credentials {
            CredentialMode::Team => {
                wanted.push((c, None, Environment::Draft));
                if c.connection.live_auth().is_some() {
                    wanted.push((c, None, Environment::Live));
                }
            }
            CredentialMode::Member => {
                for m in c.members.keys() {
                    wanted.push((c, Some(m.clone()), Environment::Draft));
                }
                for m in c.live_members.keys() {
                    wanted.push((c, Some(m.clone()), Environment::Live));
                }
            }
        }
    }
    let checks = wanted.iter().map(|(connection, member, environment)| {
        let state = &state;
        async move {
            connection_check::check(
                state.id,
                connection,
                member.as_deref(),
                *environment,
                reg.cipher(),
            )
            .await
        }
    });
    let found = futures_util::future::join_all(checks).await;
    for ((connection, member, environment), outcome) in wanted.iter().zip(found) {
        let cid = &connection.connection.id;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::info!(agent = %agent, connection = %cid, error = %e, "connection check not made");
                continue;
            }
        };
        let checked = Checked::of(connection, member.as_deref(), *environment);
        let recorded = record(
            reg,
            agent,
            cid,
            member.clone(),
            *environment,
            checked,
            outcome,
            None,
        );
        match recorded.await {
            Ok(_) => {}
            // Changed or removed while it was checked: the summary shows it as it is now.
            Err(e) if e.status.is_client_error() => {
                tracing::info!(agent = %agent, connection = %cid, error = %e, "connection check not recorded");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
