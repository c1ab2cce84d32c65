//! Connection routes: add, list, update, remove, and members' own credentials. Secrets go in;
//! only `***` comes out.

use super::view::ConnectionView;
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use actors::Registry;
use events::command::Command;
use events::connection::{Auth, Connection, Environment};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{agent_id, if_match, Admin, Body, IfMatchHeader};
use super::resource;
use super::responses::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, RequestTimeout,
    Unauthorized, Unavailable, UnsupportedMediaType,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/connections",
        [(Method::POST, web::to(add)), (Method::GET, web::to(list))],
    ))
    .service(resource(
        "/v1/agents/{id}/connections/{cid}",
        [
            (Method::GET, web::to(get)),
            (Method::PUT, web::to(update)),
            (Method::DELETE, web::to(remove)),
        ],
    ))
    .service(resource(
        "/v1/agents/{id}/connections/{cid}/members/{member}",
        [(Method::PUT, web::to(set_member))],
    ));
}

fn shown(state: &events::AgentState, cid: &str) -> Result<ConnectionView, ApiError> {
    state
        .connections
        .get(cid)
        .map(ConnectionView::of)
        .ok_or_else(|| ApiError::not_found(format!("connection '{cid}'")))
}

/// Add a connection (event ConnectionAdded); its secrets are sealed and never shown again.
#[utoipa::path(
    post, path = "/v1/agents/{id}/connections", operation_id = "add_connection", tag = "connections",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        IfMatchHeader,
    ),
    request_body = Connection<String>,
    responses(
        (status = 201, description = "Added; secrets shown as `***`", body = ConnectionView, headers(
            ("Location" = String, description = "/v1/agents/{id}/connections/{cid}"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "duplicate: the connection id is in use (or `conflict`: a concurrent change; retry)", body = ErrorBody),
        (status = 412, response = PreconditionFailed),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "invalid_request: a bad id or server, missing team secrets, `key_value` with member credentials (details.field names it)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn add(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
    Body(connection): Body<Connection<String>>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let cid = connection.id.clone();
    let out = reg
        .execute(
            agent,
            Command::AddConnection { connection },
            if_match(&req)?,
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/v1/agents/{agent}/connections/{cid}"),
        ))
        .json(shown(&out.state, &cid)?))
}

#[derive(Serialize, ToSchema)]
pub(super) struct ConnectionList {
    connections: Vec<ConnectionView>,
}

/// The agent's connections with their status, secrets redacted.
#[utoipa::path(
    get, path = "/v1/agents/{id}/connections", operation_id = "list_connections", tag = "connections",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The connections, in id order", body = ConnectionList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn list(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    let connections: Vec<ConnectionView> =
        state.connections.values().map(ConnectionView::of).collect();
    Ok(HttpResponse::Ok().json(ConnectionList { connections }))
}

/// One connection, secrets redacted.
#[utoipa::path(
    get, path = "/v1/agents/{id}/connections/{cid}", operation_id = "get_connection", tag = "connections",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("cid" = String, Path, description = "The connection's id"),
    ),
    responses(
        (status = 200, description = "The connection", body = ConnectionView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or connection", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn get(
    _: Admin,
    reg: web::Data<Registry>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, cid) = path.into_inner();
    let state = reg.state(agent_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(shown(&state, &cid)?))
}

/// Replace a connection (its id cannot change); members' credentials survive unless the auth type changes.
///
/// A new `server` needs the team secrets in the same request, and is refused while members hold
/// credentials for the connection: stored secrets never follow a new server.
#[utoipa::path(
    put, path = "/v1/agents/{id}/connections/{cid}", operation_id = "update_connection", tag = "connections",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("cid" = String, Path, description = "The connection's id"),
        IfMatchHeader,
    ),
    request_body = Connection<String>,
    responses(
        (status = 200, description = "The connection as stored, secrets redacted", body = ConnectionView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or connection", body = ErrorBody),
        (status = 409, description = "member_credentials_stored: a new `server` while members hold credentials for the connection (details.members names them; remove and add the connection to move it); conflict: a concurrent change, retry", body = ErrorBody),
        (status = 412, response = PreconditionFailed),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 422, description = "invalid_request: a changed id, a bad server, missing team secrets (details.field names it); secret_required: a new `server` without its team secrets (absent or `***`), or `***` where no such secret is stored to keep (details.field names the secret)", body = ErrorBody),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn update(
    _: Admin,
    reg: web::Data<Registry>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    Body(connection): Body<Connection<String>>,
) -> Result<HttpResponse, ApiError> {
    let (id, cid) = path.into_inner();
    let command = Command::UpdateConnection {
        id: cid.clone(),
        connection,
    };
    let out = reg
        .execute(agent_id(&id)?, command, if_match(&req)?)
        .await?;
    Ok(HttpResponse::Ok().json(shown(&out.state, &cid)?))
}

/// Remove a connection (event ConnectionRemoved).
#[utoipa::path(
    delete, path = "/v1/agents/{id}/connections/{cid}", operation_id = "remove_connection", tag = "connections",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("cid" = String, Path, description = "The connection's id"),
        IfMatchHeader,
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or connection", body = ErrorBody),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn remove(
    _: Admin,
    reg: web::Data<Registry>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, cid) = path.into_inner();
    reg.execute(
        agent_id(&id)?,
        Command::RemoveConnection { id: cid },
        if_match(&req)?,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MemberQuery {
    /// `draft` (default): the credentials previews use, and live runs while there are no live
    /// ones. `live`: the ones live runs use.
    environment: Option<Environment>,
}

/// Store a member's own credentials for a `member` connection (used by runs of that member's invocation keys); `?environment=live` for those of live runs.
#[utoipa::path(
    put, path = "/v1/agents/{id}/connections/{cid}/members/{member}", operation_id = "set_member_credentials", tag = "connections",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("cid" = String, Path, description = "The connection's id"),
        ("member" = String, Path, description = "The member's name, as a member invocation key names it (1-128 printable characters)"),
        MemberQuery,
        IfMatchHeader,
    ),
    request_body(content = Auth<String>, description = "An auth object of the connection's type; for `api_key` only `key` counts (the header is the connection's)"),
    responses(
        (status = 200, description = "Stored, secrets redacted", body = MemberCredential),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or connection", body = ErrorBody),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "invalid_request: a team connection, another auth type, a missing secret or a bad member name (details.field names it)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn set_member(
    _: Admin,
    reg: web::Data<Registry>,
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
    Body(auth): Body<Auth<String>>,
) -> Result<HttpResponse, ApiError> {
    let (id, cid, member) = path.into_inner();
    let query = web::Query::<MemberQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::bad_field(
            "environment",
            format!("bad query string: {e} (environment is draft or live)"),
        )
    })?;
    let environment = query.environment.unwrap_or_default();
    let command = Command::SetMemberCredential {
        connection: cid.clone(),
        member: member.clone(),
        environment,
        auth,
    };
    let out = reg
        .execute(agent_id(&id)?, command, if_match(&req)?)
        .await?;
    let stored = out
        .state
        .connections
        .get(&cid)
        .and_then(|c| match environment {
            Environment::Draft => c.members.get(&member),
            Environment::Live => c.live_members.get(&member),
        })
        .ok_or_else(|| ApiError::not_found(format!("member '{member}' of connection '{cid}'")))?;
    Ok(HttpResponse::Ok().json(MemberCredential {
        connection: cid,
        member,
        environment,
        auth: stored.redacted(),
    }))
}

/// A member's stored credentials, as answered: secrets redacted.
#[derive(Serialize, ToSchema)]
pub(super) struct MemberCredential {
    connection: String,
    member: String,
    environment: Environment,
    #[schema(value_type = Auth<String>)]
    auth: Auth<&'static str>,
}
