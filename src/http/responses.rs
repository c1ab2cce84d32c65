//! The error answers many routes share. Each is the one error shape; the description says which
//! `code`s a client may see under that status.
//!
//! A leaf: route modules take their shared responses from here, and `openapi` gathers the routes,
//! so no module imports back up.
#![allow(dead_code)] // Each field only gives its response the body's schema.

use utoipa::ToResponse;

use super::error::ErrorBody;

/// 400
#[derive(ToResponse)]
#[response(
    description = "invalid_request: the body is not JSON or a field has the wrong type, a query parameter or header is malformed; `details.field` names it"
)]
pub struct BadRequest(ErrorBody<'static>);

/// 401
#[derive(ToResponse)]
#[response(
    description = "unauthorized: no or wrong `Authorization: Bearer` token (or a revoked key)"
)]
pub struct Unauthorized(ErrorBody<'static>);

/// 403
#[derive(ToResponse)]
#[response(
    description = "forbidden: a valid invocation key where it cannot act: on another agent's invocation routes, or on any management route (which needs the admin token)"
)]
pub struct Forbidden(ErrorBody<'static>);

/// 404
#[derive(ToResponse)]
#[response(description = "not_found: no agent with this id (any id that is not a UUID too)")]
pub struct NotFound(ErrorBody<'static>);

/// 409
#[derive(ToResponse)]
#[response(description = "conflict: the agent was changed concurrently; retry")]
pub struct Conflict(ErrorBody<'static>);

/// 412
#[derive(ToResponse)]
#[response(
    description = "conflict: `If-Match` names a seq the agent has moved past (`details: {expected, actual}`); nothing was written"
)]
pub struct PreconditionFailed(ErrorBody<'static>);

/// 408
#[derive(ToResponse)]
#[response(
    description = "request_timeout: the body did not arrive within 30 s (`HANGAR_BODY_TIMEOUT_S`) of the headers; the connection is closed"
)]
pub struct RequestTimeout(ErrorBody<'static>);

/// 413
#[derive(ToResponse)]
#[response(description = "payload_too_large: the body is over 4 MiB")]
pub struct PayloadTooLarge(ErrorBody<'static>);

/// 415
#[derive(ToResponse)]
#[response(
    description = "unsupported_media_type: the body is compressed (`Content-Encoding` other than `identity`); send it uncompressed (`details.field: \"Content-Encoding\"`)"
)]
pub struct UnsupportedMediaType(ErrorBody<'static>);

/// 422
#[derive(ToResponse)]
#[response(
    description = "invalid_request: a value out of range or inconsistent (`details.field` names it)"
)]
pub struct Unprocessable(ErrorBody<'static>);

/// 429
#[derive(ToResponse)]
#[response(
    description = "overloaded: `max_concurrency` runs are in flight, or the async queue is full",
    headers(("Retry-After" = String, description = "Seconds to wait before retrying"))
)]
pub struct Overloaded(ErrorBody<'static>);

/// 502
#[derive(ToResponse)]
#[response(description = "run_failed: a node failed (`details: {request_id, run, error}`)")]
pub struct RunFailed(ErrorBody<'static>);

/// 503
#[derive(ToResponse)]
#[response(
    description = "unavailable or storage_error: retry later",
    headers(("Retry-After" = String, description = "Seconds to wait before retrying"))
)]
pub struct Unavailable(ErrorBody<'static>);

/// 504
#[derive(ToResponse)]
#[response(
    description = "timeout: a time limit fired (`details: {limit: agent|node|model, node, request_id, run}`)"
)]
pub struct RunTimedOut(ErrorBody<'static>);

/// One server-sent event as a client reads it (`text/event-stream`): `id`, `event` and `data`
/// (JSON text) lines. What each route's events hold is in its description.
#[derive(utoipa::ToSchema)]
pub struct SseEvent {
    /// The event's number: send it back as `Last-Event-ID` to resume after it.
    id: Option<String>,
    /// The event's type, e.g. `run.finished`.
    event: Option<String>,
    /// JSON.
    data: String,
}
