//! Agent routes: create, list, read, edit the draft and endpoint settings, validation, summary.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::Registry;
use events::command::Command;
use events::endpoint::EndpointInput;
use events::spec::AgentSpec;
use events::state::Status;
use events::view::{self, AgentView};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{agent_id, if_match, Admin, Body};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents", web::post().to(create))
        .route("/v1/agents", web::get().to(list))
        .route("/v1/agents/{id}", web::get().to(get))
        .route("/v1/agents/{id}/draft", web::put().to(edit_draft))
        .route("/v1/agents/{id}/endpoint", web::get().to(get_endpoint))
        .route(
            "/v1/agents/{id}/endpoint",
            web::put().to(configure_endpoint),
        )
        .route(
            "/v1/agents/{id}/endpoint/rotate-secret",
            web::post().to(rotate_secret),
        )
        .route("/v1/agents/{id}/validation", web::get().to(validation))
        .route("/v1/agents/{id}/summary", web::get().to(summary));
}

/// The agent as JSON with its `ETag`.
pub fn agent_response(
    mut res: actix_web::HttpResponseBuilder,
    state: &events::AgentState,
) -> HttpResponse {
    res.insert_header((header::ETAG, format!("\"{}\"", state.seq)))
        .json(AgentView::of(state))
}

async fn create(
    _: Admin,
    reg: web::Data<Registry>,
    Body(spec): Body<AgentSpec>,
) -> Result<HttpResponse, ApiError> {
    let out = reg.create(spec).await?;
    let mut res = HttpResponse::Created();
    res.insert_header((header::LOCATION, format!("/v1/agents/{}", out.state.id)));
    Ok(agent_response(res, &out.state))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    q: Option<String>,
}

async fn list(
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
    Ok(HttpResponse::Ok().json(json!({ "agents": agents })))
}

async fn get(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    Ok(agent_response(HttpResponse::Ok(), &state))
}

async fn edit_draft(
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

async fn get_endpoint(
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

async fn configure_endpoint(
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

async fn rotate_secret(
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

async fn validation(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(view::validation(&state, &reg.directory())))
}

async fn summary(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(view::summary(&state, &reg.directory())))
}
