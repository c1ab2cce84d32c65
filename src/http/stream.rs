//! Run events over server-sent events: `POST /invoke/stream` (a sync run, streamed) and
//! `GET /requests/{rid}/events` (any run, resumable with `Last-Event-ID` or `?after=N`).
//!
//! Each event is `id: SEQ`, `event: TYPE`, `data: JSON`; the stream ends after `run.finished`.
//! A comment line every 15 s keeps an idle connection open through proxies. The reading itself
//! is the runtime's ([`actors::runtime::run_events::follow`]): a reader that falls behind
//! catches up from the store and never slows the run; a client that disconnects stops its
//! reader only, never the run.

use std::time::Duration;

use actix_web::http::{header, Method};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::runtime::run_events::follow;
use actors::runtime::{Runtime, StartSignal};
use events::run::RunEvent;
use futures_util::future::{select, Either};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{agent_id, Invoker, OptionalBody, RunHeaders};
use super::invoke::{request, visible_run, InvokeBody};
use super::resource;
use super::responses::{
    BadRequest, Forbidden, NotFound, Overloaded, PayloadTooLarge, RequestTimeout, SseEvent,
    Unauthorized, Unavailable, UnsupportedMediaType,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/invoke/stream",
        [(Method::POST, web::to(invoke_stream))],
    ))
    .service(resource(
        "/v1/agents/{id}/requests/{rid}/events",
        [(Method::GET, web::to(run_events))],
    ));
}

/// How often an idle stream gets a comment line.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event in the SSE wire format.
pub(super) fn sse_event(event: &RunEvent) -> Bytes {
    let data = serde_json::to_string(&event.data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.seq, event.kind
    ))
}

/// The events of run `rid` after `after`, as SSE: each event through `encode` (`None` skips
/// it), then `tail` once the run has finished; a comment every 15 s while nothing happens.
pub(super) fn event_stream(
    rt: &Runtime,
    rid: Uuid,
    after: u64,
    encode: impl Fn(&RunEvent) -> Option<Bytes> + 'static,
    tail: Option<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let events = follow(rt.runs().clone(), rt.run_events().clone(), rid, after);
    futures_util::stream::unfold(
        (events, Some(encode), tail),
        move |(mut events, encode, tail)| async move {
            let encode = encode?;
            loop {
                match actix_web::rt::time::timeout(KEEP_ALIVE, events.recv()).await {
                    Err(_) => {
                        return Some((
                            Ok(Bytes::from_static(b": keep-alive\n\n")),
                            (events, Some(encode), tail),
                        ))
                    }
                    Ok(Some(Ok(event))) => {
                        if let Some(bytes) = encode(&event) {
                            return Some((Ok(bytes), (events, Some(encode), tail)));
                        }
                    }
                    Ok(Some(Err(e))) => {
                        tracing::warn!(request_id = %rid, error = %e, "a run event stream broke off");
                        return None;
                    }
                    // The run finished (or the reader gave up): the tail, then the end.
                    Ok(None) => return tail.map(|t| (Ok(t), (events, None, None))),
                }
            }
        },
    )
}

fn sse_response(
    stream: impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Tells nginx not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

/// Starts a sync run of the live version and answers its id once it exists; a refusal before
/// that (not deployed, overloaded, a reused key…) is the error. The run is detached from the
/// caller: it runs to its end whatever the caller does.
pub(super) async fn start_streamed_run(
    rt: &Runtime,
    agent: Uuid,
    mut request: actors::runtime::Request,
) -> Result<Uuid, ApiError> {
    let (signal, started) = StartSignal::new();
    request.started = Some(signal);
    let runtime = rt.clone();
    let invocation = actix_web::rt::spawn(async move { runtime.invoke(agent, request).await });
    match select(started, invocation).await {
        Either::Left((Ok(rid), _)) => Ok(rid),
        Either::Left((Err(_), invocation)) => match invocation.await {
            Ok(Ok(run)) => Ok(run.run.request_id),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ApiError::from(actors::Error::Unavailable(
                "the run's task stopped".into(),
            ))),
        },
        Either::Right((Ok(Ok(run)), _)) => Ok(run.run.request_id),
        Either::Right((Ok(Err(e)), _)) => Err(e.into()),
        Either::Right((Err(_), _)) => Err(ApiError::from(actors::Error::Unavailable(
            "the run's task stopped".into(),
        ))),
    }
}

/// Run the live version and stream its events (`text/event-stream`) until `run.finished`.
///
/// Body and auth as `invoke`. Refusals before the run exists are JSON errors; once it runs,
/// the answer is 200 and the run's outcome is in `run.finished`'s `run`. Disconnecting does not
/// cancel the run: follow it again with `GET /requests/{rid}/events` (the request id is in
/// `run.finished`, and every event's data belongs to it).
#[utoipa::path(
    post, path = "/v1/agents/{id}/invoke/stream", operation_id = "invoke_stream", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        RunHeaders,
    ),
    request_body(content = Option<InvokeBody>, description = "`{\"input\": ...}`; may be empty"),
    responses(
        (status = 200, description = "The run's events: `id: N`, `event: TYPE`, `data: JSON`, ending with `run.finished`; a `: keep-alive` comment every 15 s", body = SseEvent, content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "not_deployed: the agent has no live version", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "idempotency_key_reused: this caller used the Idempotency-Key for a different body", body = ErrorBody),
        (status = 429, response = Overloaded),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn invoke_stream(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<InvokeBody>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let rid = start_streamed_run(&rt, agent, request(&req, &invoker, body)?).await?;
    Ok(sse_response(event_stream(
        &rt,
        rid,
        0,
        |e| Some(sse_event(e)),
        None,
    )))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Resume after this event (as `Last-Event-ID`, which wins when both are sent).
    after: Option<u64>,
}

/// Where a reader resumes: `Last-Event-ID`, else `?after=`, else from the first event.
fn resume_after(req: &HttpRequest) -> Result<u64, ApiError> {
    if let Some(value) = req.headers().get("Last-Event-ID") {
        let text = value.to_str().unwrap_or_default().trim();
        // An empty Last-Event-ID is what EventSource sends before any event had an id.
        if text.is_empty() {
            return Ok(0);
        }
        return text.parse().map_err(|_| {
            ApiError::bad_field(
                "Last-Event-ID",
                "Last-Event-ID must be an event id (an integer)",
            )
        });
    }
    let q = web::Query::<EventsQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::bad_field("after", "after must be an event id (an integer)"))?;
    Ok(q.after.unwrap_or(0))
}

/// A run's events as SSE, from the first or after `Last-Event-ID` / `?after=N`; a final run's
/// stream replays and closes.
#[utoipa::path(
    get, path = "/v1/agents/{id}/requests/{rid}/events", operation_id = "request_events", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("rid" = Uuid, Path, description = "The request id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "The run's events after the one named, ending with `run.finished`", body = SseEvent, content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or request, or a request this caller may not see (another member's)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn run_events(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, rid) = path.into_inner();
    let agent = agent_id(&id)?;
    let rid: Uuid = rid
        .parse()
        .map_err(|_| ApiError::not_found(format!("request {rid}")))?;
    let after = resume_after(&req)?;
    ensure_visible(&rt, &invoker, agent, rid).await?;
    Ok(sse_response(event_stream(
        &rt,
        rid,
        after,
        |e| Some(sse_event(e)),
        None,
    )))
}

/// Whether the caller may follow run `rid` of `agent`: a stored run it may see, or a sync run
/// in flight here that is not stored until it ends.
pub(super) async fn ensure_visible(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    rid: Uuid,
) -> Result<(), ApiError> {
    match visible_run(rt, invoker, agent, rid).await {
        Ok(_) => Ok(()),
        Err(e) => match rt.run_events().subscribe(rid) {
            Some(live) if live.agent == agent && invoker.may_see(live.member.as_deref()) => Ok(()),
            _ => Err(e),
        },
    }
}
