//! Connection routes: add, list, update, remove, and members' own credentials. Secrets go in;
//! only `***` comes out.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::Registry;
use events::command::Command;
use events::connection::{Auth, Connection};
use events::view::ConnectionView;
use serde_json::json;

use super::error::ApiError;
use super::extract::{agent_id, if_match, Admin, Body};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents/{id}/connections", web::post().to(add))
        .route("/v1/agents/{id}/connections", web::get().to(list))
        .route("/v1/agents/{id}/connections/{cid}", web::get().to(get))
        .route("/v1/agents/{id}/connections/{cid}", web::put().to(update))
        .route(
            "/v1/agents/{id}/connections/{cid}",
            web::delete().to(remove),
        )
        .route(
            "/v1/agents/{id}/connections/{cid}/members/{member}",
            web::put().to(set_member),
        );
}

fn shown(state: &events::AgentState, cid: &str) -> Result<ConnectionView, ApiError> {
    state
        .connections
        .get(cid)
        .map(ConnectionView::of)
        .ok_or_else(|| ApiError::not_found(format!("connection '{cid}'")))
}

async fn add(
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

async fn list(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    let connections: Vec<ConnectionView> =
        state.connections.values().map(ConnectionView::of).collect();
    Ok(HttpResponse::Ok().json(json!({ "connections": connections })))
}

async fn get(
    _: Admin,
    reg: web::Data<Registry>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, cid) = path.into_inner();
    let state = reg.state(agent_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(shown(&state, &cid)?))
}

async fn update(
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

async fn remove(
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

async fn set_member(
    _: Admin,
    reg: web::Data<Registry>,
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
    Body(auth): Body<Auth<String>>,
) -> Result<HttpResponse, ApiError> {
    let (id, cid, member) = path.into_inner();
    let command = Command::SetMemberCredential {
        connection: cid.clone(),
        member: member.clone(),
        auth,
    };
    let out = reg
        .execute(agent_id(&id)?, command, if_match(&req)?)
        .await?;
    let stored = out
        .state
        .connections
        .get(&cid)
        .and_then(|c| c.members.get(&member))
        .ok_or_else(|| ApiError::not_found(format!("member '{member}' of connection '{cid}'")))?;
    Ok(HttpResponse::Ok()
        .json(json!({"connection": cid, "member": member, "auth": stored.redacted()})))
}
