//! Invocation keys: issue (shown once), list (ids only), revoke.

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use actors::Registry;
use chrono::{DateTime, Utc};
use events::command::Command;
use events::Event;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{agent_id, if_match, Admin, IfMatchHeader, OptionalBody};
use super::resource;
use super::responses::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, RequestTimeout,
    Unauthorized, Unavailable, UnsupportedMediaType,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/keys",
        [(Method::POST, web::to(issue)), (Method::GET, web::to(list))],
    ))
    .service(resource(
        "/v1/agents/{id}/keys/{kid}",
        [(Method::DELETE, web::to(revoke))],
    ));
}

/// What a key is issued for. An empty body issues a key without a member.
#[derive(Deserialize, Default, ToSchema)]
// A misspelt `member` must not silently issue a key that acts as nobody in particular.
#[serde(deny_unknown_fields)]
pub(super) struct IssueKeyBody {
    /// The member the key acts as (1-128 printable characters): its runs use that member's
    /// credentials on `member` connections, and it sees and cancels only that member's runs.
    #[serde(default)]
    member: Option<String>,
}

/// Issue an invocation key: shown in this answer only, stored as its SHA-256.
#[utoipa::path(
    post, path = "/v1/agents/{id}/keys", operation_id = "issue_key", tag = "keys",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        IfMatchHeader,
    ),
    request_body(content = Option<IssueKeyBody>, description = "`{\"member\": NAME}` for a member's key; may be empty"),
    responses(
        (status = 201, description = "The new key, shown once", body = IssuedKey, headers(
            ("Location" = String, description = "/v1/agents/{id}/keys/{kid}"),
            ("Cache-Control" = String, description = "no-store"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "invalid_request: a bad member name (details.field: \"member\")", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn issue(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<IssueKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let command = Command::IssueKey {
        member: body.member,
    };
    let out = reg.execute(agent, command, if_match(&req)?).await?;
    let issued = out.events.iter().find_map(|e| match &e.event {
        Event::KeyIssued(k) => Some((k.id.clone(), k.member.clone())),
        _ => None,
    });
    match (issued, out.revealed_secret) {
        (Some((kid, member)), Some(key)) => Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/v1/agents/{agent}/keys/{kid}")))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(IssuedKey {
                id: kid,
                key,
                member,
            })),
        _ => Err(actors::Error::Unavailable("the key was not issued".into()).into()),
    }
}

/// A key as issued: the only time `key` is ever shown.
#[derive(Serialize, ToSchema)]
pub(super) struct IssuedKey {
    /// `key_…`: names the key to revoke it.
    id: String,
    /// `hgk_…`: send it as `Authorization: Bearer <key>` to the agent's invocation routes.
    key: String,
    /// The member the key acts as, or `null`.
    member: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct KeyList {
    keys: Vec<KeyEntry>,
}

/// A live key, known by its id only.
#[derive(Serialize, ToSchema)]
pub(super) struct KeyEntry {
    id: String,
    created_at: DateTime<Utc>,
    /// The member the key acts as, or `null`.
    member: Option<String>,
}

/// The agent's live invocation keys (ids and members, never the keys).
#[utoipa::path(
    get, path = "/v1/agents/{id}/keys", operation_id = "list_keys", tag = "keys",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The keys, by id", body = KeyList),
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
    let keys = state
        .keys
        .iter()
        .map(|(id, k)| KeyEntry {
            id: id.clone(),
            created_at: k.created_at,
            member: k.member.clone(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(KeyList { keys }))
}

/// Revoke an invocation key: calls with it answer 401 from now on.
#[utoipa::path(
    delete, path = "/v1/agents/{id}/keys/{kid}", operation_id = "revoke_key", tag = "keys",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("kid" = String, Path, description = "The key's id (`key_…`)"),
        IfMatchHeader,
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or key", body = ErrorBody),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn revoke(
    _: Admin,
    reg: web::Data<Registry>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, kid) = path.into_inner();
    reg.execute(
        agent_id(&id)?,
        Command::RevokeKey { id: kid },
        if_match(&req)?,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
