//! Invocation keys: issue (shown once), list (ids only), revoke.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::Registry;
use events::command::Command;
use events::Event;
use serde_json::json;

use super::error::ApiError;
use super::extract::{agent_id, if_match, Admin};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents/{id}/keys", web::post().to(issue))
        .route("/v1/agents/{id}/keys", web::get().to(list))
        .route("/v1/agents/{id}/keys/{kid}", web::delete().to(revoke));
}

async fn issue(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let out = reg
        .execute(agent, Command::IssueKey, if_match(&req)?)
        .await?;
    let kid = out.events.iter().find_map(|e| match &e.event {
        Event::KeyIssued(k) => Some(k.id.clone()),
        _ => None,
    });
    match (kid, out.revealed_secret) {
        (Some(kid), Some(key)) => Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/v1/agents/{agent}/keys/{kid}")))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({"id": kid, "key": key}))),
        _ => Err(actors::Error::Unavailable("the key was not issued".into()).into()),
    }
}

async fn list(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    let keys: Vec<_> = state
        .keys
        .iter()
        .map(|(id, k)| json!({"id": id, "created_at": k.created_at}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "keys": keys })))
}

async fn revoke(
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
