//! The audit routes: the event log (secrets redacted) and the agent as it stood at any seq.

use actix_web::{web, HttpRequest, HttpResponse};
use actors::Registry;
use events::view::AgentView;
use events::AgentState;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{agent_id, Admin};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents/{id}/events", web::get().to(events))
        .route("/v1/agents/{id}/history", web::get().to(history));
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = agent_id(&id)?;
    let q = web::Query::<EventsQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::bad_field(
            "after",
            format!("after and limit must be non-negative integers: {e}"),
        )
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_field(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let store = reg.store();
    if store.head(id)? == 0 {
        return Err(ApiError::not_found(format!("agent {id}")));
    }
    let from = q.after.unwrap_or(0).saturating_add(1);
    let page = store.read(id, from, limit)?;
    let events: Vec<_> = page.iter().map(|e| e.redacted_json()).collect();
    Ok(HttpResponse::Ok().json(json!({ "events": events })))
}

#[derive(Deserialize)]
struct HistoryQuery {
    at: Option<u64>,
}

async fn history(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = agent_id(&id)?;
    let q = web::Query::<HistoryQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_field("at", format!("at must be a positive integer: {e}")))?;
    let store = reg.store();
    let head = store.head(id)?;
    if head == 0 {
        return Err(ApiError::not_found(format!("agent {id}")));
    }
    let at = q.at.unwrap_or(head);
    if at == 0 || at > head {
        return Err(ApiError::bad_field(
            "at",
            format!("at must be between 1 and {head}, the agent's last seq"),
        ));
    }
    let log = store.read(id, 1, at as usize)?;
    let state = AgentState::replay(id, &log);
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::ETAG, format!("\"{}\"", state.seq)))
        .json(AgentView::of(&state)))
}
