//! The audit routes: the event log (secrets redacted), the agent as it stood at any seq, and the
//! check of its hash chain.

use super::view::AgentView;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actors::Registry;
use events::store;
use events::AgentState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::extract::{agent_id, Admin};
use super::resource;
use super::responses::{BadRequest, Forbidden, NotFound, Unauthorized, Unavailable};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/events",
        [(Method::GET, web::to(events))],
    ))
    .service(resource(
        "/v1/agents/{id}/history",
        [(Method::GET, web::to(history))],
    ))
    .service(resource(
        "/v1/agents/{id}/verify",
        [(Method::GET, web::to(verify))],
    ));
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only events after this seq (default 0: from the first).
    after: Option<u64>,
    /// At most this many events, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct EventList {
    /// Oldest first.
    #[schema(value_type = Vec<StoredEvent>)]
    events: Vec<Value>,
}

/// An event as stored in the agent's log, sealed values shown as `***`.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON of `Envelope::redacted_json` for the OpenAPI document.
pub(super) struct StoredEvent {
    /// 1, 2, 3… within the agent's log, without gaps.
    seq: u64,
    /// The event's own id.
    id: uuid::Uuid,
    agent_id: uuid::Uuid,
    /// The event kind: `Created`, `FlowEdited`, `Deployed`, …
    #[schema(rename = "type")]
    kind: String,
    /// The event's payload, by kind.
    data: Value,
    at: chrono::DateTime<chrono::Utc>,
    /// The event schema version that wrote it.
    schema: u32,
    /// The previous event's `hash` (64 zeros for the first).
    prev_hash: String,
    /// Hex SHA-256 over `prev_hash` and the canonical JSON of this event without `hash`.
    hash: String,
}

/// The agent's event log, oldest first, secrets redacted.
#[utoipa::path(
    get, path = "/v1/agents/{id}/events", operation_id = "list_events", tag = "audit",
    params(("id" = Uuid, Path, description = "The agent's id"), EventsQuery),
    responses(
        (status = 200, description = "A page of the log", body = EventList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn events(
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
    // Shown only once durable: the page may hold an append whose commit is on its way.
    store.settled().await?;
    let events: Vec<_> = page.iter().map(|e| e.redacted_json()).collect();
    Ok(HttpResponse::Ok().json(EventList { events }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// The seq to stand at, 1 to the agent's last (default: the last).
    #[param(minimum = 1)]
    at: Option<u64>,
}

/// The agent as it stood after event `at`.
#[utoipa::path(
    get, path = "/v1/agents/{id}/history", operation_id = "get_history", tag = "audit",
    params(("id" = Uuid, Path, description = "The agent's id"), HistoryQuery),
    responses(
        (status = 200, description = "The agent replayed up to `at`", body = AgentView, headers(
            ("ETag" = String, description = "\"<at>\""),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn history(
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
    store.settled().await?;
    let state = AgentState::replay(id, &log);
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::ETAG, format!("\"{}\"", state.seq)))
        .json(AgentView::of(&state)))
}

/// What the check of one agent's hash chain found.
#[derive(Serialize, ToSchema)]
pub(super) struct Verification {
    /// Every event's hash matches its content and names the event before it, seqs 1.. without
    /// gaps, up to the agent's last seq when the check began.
    ok: bool,
    /// The events found intact: the whole log when `ok`, else those before `first_bad`.
    events: u64,
    /// `"<agent id>#<seq>"` of the first bad event, or null when `ok`. Seq 0 is the stream's head
    /// record (its last seq and hash) rather than an event.
    #[schema(example = "0190a6a2-6d4e-7c3a-9d51-4b6f0e2a1c3d#3")]
    first_bad: Option<String>,
    /// What is wrong with it, or null when `ok`.
    reason: Option<String>,
}

/// Check the agent's hash chain in the running server, as `hangar verify` does offline.
#[utoipa::path(
    get, path = "/v1/agents/{id}/verify", operation_id = "verify_log", tag = "audit",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The check ran: `ok` says whether the chain is intact", body = Verification),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn verify(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = agent_id(&id)?;
    let log = reg.store().clone();
    // It reads and hashes the whole log: on the blocking pool, so the workers keep serving.
    let checked = web::block(move || store::verify_stream_online(log.as_ref(), id))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the check could not run: {e}"),
            )
        })?;
    // The count it reports may include an append whose commit is on its way.
    reg.store().settled().await?;
    let answer = match checked {
        // Every agent's log starts with its Created event: an empty one is no agent.
        Ok(0) => return Err(ApiError::not_found(format!("agent {id}"))),
        Ok(events) => Verification {
            ok: true,
            events,
            first_bad: None,
            reason: None,
        },
        Err(store::Error::Corrupt {
            stream,
            seq,
            reason,
        }) => Verification {
            ok: false,
            events: seq.saturating_sub(1),
            first_bad: Some(format!("{stream}#{seq}")),
            reason: Some(reason),
        },
        Err(e) => return Err(e.into()),
    };
    Ok(HttpResponse::Ok().json(answer))
}
