//! Agent routes: create, list, read, edit the draft and endpoint settings, validation, summary.

use super::view::{self, AgentView, EndpointView, Summary, ValidationView};
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use actors::Registry;
use events::command::Command;
use events::endpoint::EndpointInput;
use events::spec::AgentSpec;
use events::state::Status;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{agent_id, if_match, Admin, Body, IfMatchHeader};
use super::resource;
use super::responses::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, RequestTimeout,
    Unauthorized, Unavailable, Unprocessable, UnsupportedMediaType,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents",
        [
            (Method::POST, web::to(create)),
            (Method::GET, web::to(list)),
        ],
    ))
    .service(resource("/v1/agents/{id}", [(Method::GET, web::to(get))]))
    .service(resource(
        "/v1/agents/{id}/draft",
        [(Method::PUT, web::to(edit_draft))],
    ))
    .service(resource(
        "/v1/agents/{id}/endpoint",
        [
            (Method::GET, web::to(get_endpoint)),
            (Method::PUT, web::to(configure_endpoint)),
        ],
    ))
    .service(resource(
        "/v1/agents/{id}/endpoint/rotate-secret",
        [(Method::POST, web::to(rotate_secret))],
    ))
    .service(resource(
        "/v1/agents/{id}/validation",
        [(Method::GET, web::to(validation))],
    ))
    .service(resource(
        "/v1/agents/{id}/summary",
        [(Method::GET, web::to(summary))],
    ));
}

/// The agent as JSON with its `ETag`.
pub fn agent_response(
    mut res: actix_web::HttpResponseBuilder,
    state: &events::AgentState,
) -> HttpResponse {
    res.insert_header((header::ETAG, format!("\"{}\"", state.seq)))
        .json(AgentView::of(state))
}

/// Create an agent from an AgentSpec (only `name` is required).
#[utoipa::path(
    post, path = "/v1/agents", operation_id = "create_agent", tag = "agents",
    request_body(content = AgentSpec, description = "The draft; only `name` is required, validation blocks deploy rather than saving"),
    responses(
        (status = 201, description = "Created: the agent, in draft", body = AgentView, headers(
            ("Location" = String, description = "/v1/agents/{id}"),
            ("ETag" = String, description = "\"<seq>\": send it back as If-Match"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "invalid_request: `name` is empty (details.field names it)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn create(
    _: Admin,
    reg: web::Data<Registry>,
    Body(spec): Body<AgentSpec>,
) -> Result<HttpResponse, ApiError> {
    let out = reg.create(spec).await?;
    let mut res = HttpResponse::Created();
    res.insert_header((header::LOCATION, format!("/v1/agents/{}", out.state.id)));
    Ok(agent_response(res, &out.state))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `live`: only deployed agents (the live search); `draft`: only undeployed ones; empty or
    /// absent: all.
    #[param(pattern = "^(live|draft)?$")]
    status: Option<String>,
    /// Matches name and description, case-insensitively.
    q: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct AgentList {
    agents: Vec<AgentView>,
}

/// List agents; `q` matches name and description, `status=live` is the live search.
#[utoipa::path(
    get, path = "/v1/agents", operation_id = "list_agents", tag = "agents",
    params(ListQuery),
    responses(
        (status = 200, description = "The agents", body = AgentList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn list(
    _: Admin,
    reg: web::Data<Registry>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_field("query", format!("bad query string: {e}")))?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some("live") => Some(Status::Live),
        Some("draft") => Some(Status::Draft),
        Some(other) => {
            return Err(ApiError::bad_field(
                "status",
                format!("status must be 'live' or 'draft', not '{other}'"),
            ))
        }
    };
    let needle = query
        .q
        .as_deref()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let agents: Vec<AgentView> = reg
        .list()
        .await?
        .iter()
        .filter(|s| status.is_none_or(|st| s.status == st))
        .filter(|s| {
            needle.as_ref().is_none_or(|n| {
                s.draft.name.to_lowercase().contains(n)
                    || s.draft.description.to_lowercase().contains(n)
            })
        })
        .map(|s| AgentView::of(s))
        .collect();
    Ok(HttpResponse::Ok().json(AgentList { agents }))
}

/// The agent: draft, status, live version.
#[utoipa::path(
    get, path = "/v1/agents/{id}", operation_id = "get_agent", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The agent", body = AgentView, headers(
            ("ETag" = String, description = "\"<seq>\": send it back as If-Match"),
        )),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn get(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    Ok(agent_response(HttpResponse::Ok(), &state))
}

/// Replace the draft (event FlowEdited).
#[utoipa::path(
    put, path = "/v1/agents/{id}/draft", operation_id = "edit_draft", tag = "agents",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        IfMatchHeader,
    ),
    request_body(content = AgentSpec, description = "The whole new draft"),
    responses(
        (status = 200, description = "The agent with its new draft", body = AgentView, headers(
            ("ETag" = String, description = "\"<seq>\""),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn edit_draft(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
    Body(spec): Body<AgentSpec>,
) -> Result<HttpResponse, ApiError> {
    let out = reg
        .execute(agent_id(&id)?, Command::EditDraft { spec }, if_match(&req)?)
        .await?;
    Ok(agent_response(HttpResponse::Ok(), &out.state))
}

/// The endpoint settings of the draft (live at the next deploy).
#[utoipa::path(
    get, path = "/v1/agents/{id}/endpoint", operation_id = "get_endpoint", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The endpoint settings; the push token shown as `***`", body = EndpointView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn get_endpoint(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(view::endpoint_view(
        &state.endpoint,
        state.signing_secret.is_some(),
        None,
    )))
}

/// Set the endpoint settings: part of the draft, live at the next deploy.
///
/// Absent fields take their defaults; an absent or `"***"` `async.token` keeps the stored one,
/// `""` clears it; a new `async.url` needs the token again. Enabling push the first time makes
/// the signing secret, shown in full once.
#[utoipa::path(
    put, path = "/v1/agents/{id}/endpoint", operation_id = "configure_endpoint", tag = "agents",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        IfMatchHeader,
    ),
    request_body = EndpointInput,
    responses(
        (status = 200, description = "The settings as stored", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 422, description = "invalid_request: a value out of range or inconsistent, e.g. `sync_timeout_s` 59 or push without a url (details.field names it); secret_required: a new `async.url` without `async.token` (the stored token never follows a new url)", body = ErrorBody),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn configure_endpoint(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
    Body(input): Body<EndpointInput>,
) -> Result<HttpResponse, ApiError> {
    let out = reg
        .execute(
            agent_id(&id)?,
            Command::ConfigureEndpoint { input },
            if_match(&req)?,
        )
        .await?;
    let s = &out.state;
    Ok(HttpResponse::Ok().json(view::endpoint_view(
        &s.endpoint,
        s.signing_secret.is_some(),
        out.revealed_secret.as_deref(),
    )))
}

/// Make a new push signing secret, shown in full in this answer only.
#[utoipa::path(
    post, path = "/v1/agents/{id}/endpoint/rotate-secret", operation_id = "rotate_signing_secret", tag = "agents",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        IfMatchHeader,
    ),
    responses(
        (status = 200, description = "The settings with the new `signing_secret` in full", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn rotate_secret(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let out = reg
        .execute(
            agent_id(&id)?,
            Command::RotateSigningSecret,
            if_match(&req)?,
        )
        .await?;
    let s = &out.state;
    Ok(HttpResponse::Ok().json(view::endpoint_view(
        &s.endpoint,
        true,
        out.revealed_secret.as_deref(),
    )))
}

/// The problems of the draft: any error or warning blocks deploy.
#[utoipa::path(
    get, path = "/v1/agents/{id}/validation", operation_id = "get_validation", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "`ok` is true when there is no error and no warning", body = ValidationView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn validation(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(view::validation(&state, &reg.directory())))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SummaryQuery {
    /// `true`: first check every connection the draft uses (in parallel, 10 s in all; each
    /// check is recorded), then answer with their fresh statuses.
    check: Option<bool>,
}

/// The pre-deployment summary: profile, knowledge, tools, collaborators, connections, problems.
#[utoipa::path(
    get, path = "/v1/agents/{id}/summary", operation_id = "get_summary", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent's id"), SummaryQuery),
    responses(
        (status = 200, description = "The summary", body = Summary),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn summary(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let query = web::Query::<SummaryQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_field("check", format!("bad query string: {e}")))?;
    if query.check == Some(true) {
        super::connection_checks::check_draft_connections(&reg, agent).await?;
    }
    let state = reg.state(agent).await?;
    Ok(HttpResponse::Ok().json(view::summary(&state, &reg.directory())))
}
