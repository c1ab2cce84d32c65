//! The deployed endpoints: sync invoke, preview of the draft, async submit, poll (long-poll),
//! cancel. Answers as the contract's "Invocation" section says.

use std::time::Duration;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actors::runtime::{Request, Run, RunStatus, Runtime, StoredRun};
use events::validation::check_runnable;
use events::Rejection;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{
    agent_id, token_header, Admin, Invoker, OptionalBody, RunHeaders, MEMBER_HEADER,
};
use super::resource;
use super::responses::{
    BadRequest, Forbidden, NotFound, Overloaded, PayloadTooLarge, RequestTimeout, RunFailed,
    RunTimedOut, Unauthorized, Unavailable, UnsupportedMediaType,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/invoke",
        [(Method::POST, web::to(invoke))],
    ))
    .service(resource(
        "/v1/agents/{id}/preview",
        [(Method::POST, web::to(preview))],
    ))
    .service(resource(
        "/v1/agents/{id}/invoke/async",
        [(Method::POST, web::to(submit))],
    ))
    .service(resource(
        "/v1/agents/{id}/requests/{rid}",
        [
            (Method::GET, web::to(poll)),
            (Method::DELETE, web::to(cancel)),
        ],
    ));
}

/// Longest long-poll, in seconds.
const MAX_WAIT_S: u64 = 30;

/// What a run is called with. An empty body is `{"input": {}}`.
#[derive(Deserialize, ToSchema)]
pub(super) struct InvokeBody {
    /// The flow's `input`: any JSON, usually an object (default `{}`).
    #[serde(default = "empty_object")]
    input: Value,
    /// The conversation thread (1-128 of `A-Za-z0-9._:-`; or the `X-Hangar-Thread` header):
    /// its runs run one at a time, in the order accepted, and see its earlier turns.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9._:-]{1,128}$"
    )]
    thread_id: Option<String>,
    /// What to do when the thread has a run in flight or waiting: `wait` (the default) for
    /// its turn, or `reject` with 409 `thread_busy`.
    #[serde(default)]
    multitask: Multitask,
}

#[derive(Deserialize, ToSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Multitask {
    #[default]
    Wait,
    Reject,
}

impl Default for InvokeBody {
    fn default() -> Self {
        InvokeBody {
            input: empty_object(),
            thread_id: None,
            multitask: Multitask::Wait,
        }
    }
}

/// The header that names a run's thread, as `thread_id` in the body does.
pub(super) const THREAD_HEADER: &str = "X-Hangar-Thread";

/// A thread id as a client sent it, or 400 naming `field`.
pub(super) fn thread_id(field: &str, id: &str) -> Result<String, ApiError> {
    if events::run::is_thread_id(id) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::bad_field(
            field,
            format!(
                "{field} must be 1-{} characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
                events::run::MAX_THREAD_ID
            ),
        ))
    }
}

/// The request's thread: `thread_id` in the body or the `X-Hangar-Thread` header (the same
/// one if both are sent).
pub(super) fn request_thread(
    req: &HttpRequest,
    body: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let header = match req.headers().get(THREAD_HEADER) {
        None => None,
        Some(v) => Some(thread_id(
            THREAD_HEADER,
            v.to_str().map_err(|_| {
                ApiError::bad_field(THREAD_HEADER, "X-Hangar-Thread must be printable ASCII")
            })?,
        )?),
    };
    let body = body.map(|id| thread_id("thread_id", id)).transpose()?;
    match (body, header) {
        (Some(b), Some(h)) if b != h => Err(ApiError::bad_field(
            "thread_id",
            "thread_id and the X-Hangar-Thread header name different threads: send one",
        )),
        (b, h) => Ok(b.or(h)),
    }
}

fn empty_object() -> Value {
    json!({})
}

/// A run request from `invoker`. Its `Idempotency-Key` is scoped to the caller (the key's id, or
/// `admin`) by the run store, so two callers sending the same key get two requests, never each
/// other's run.
pub(super) fn request(
    req: &HttpRequest,
    invoker: &Invoker,
    body: InvokeBody,
) -> Result<Request, ApiError> {
    Ok(Request {
        thread: request_thread(req, body.thread_id.as_deref())?,
        reject_if_busy: body.multitask == Multitask::Reject,
        input: body.input,
        member: invoker.member.clone(),
        idempotency_key: token_header(req, "Idempotency-Key")?,
        caller: Some(invoker.scope().to_owned()),
        ..Request::default()
    })
}

/// The request `rid` of `agent` if this caller may see it. Another member's request is the same
/// 404 as one that does not exist: that it exists is nobody else's business.
pub(super) async fn visible_run(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    rid: Uuid,
) -> Result<StoredRun, ApiError> {
    let run = rt.run(agent, rid).await?;
    if invoker.may_see(run.member.as_deref()) {
        Ok(run)
    } else {
        Err(ApiError::not_found(format!("request {rid}")))
    }
}

/// A finished sync run as the contract answers it.
fn sync_answer(run: &Run) -> Result<HttpResponse, ApiError> {
    let error = run.error.clone();
    let details = |extra: Value| {
        let mut d = json!({"request_id": run.request_id, "run": run});
        if let (Some(map), Value::Object(more)) = (d.as_object_mut(), extra) {
            map.extend(more);
        }
        d
    };
    let message = error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    match run.status {
        // A paused run is an answer too: the Run says what it waits for (`pending`).
        RunStatus::Succeeded | RunStatus::InputRequired => Ok(HttpResponse::Ok().json(run)),
        RunStatus::TimedOut => Err(
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
                .with_details(details(error.map(|e| e.details).unwrap_or_default())),
        ),
        RunStatus::Cancelled => Err(ApiError::new(StatusCode::CONFLICT, "cancelled", message)
            .with_details(details(error.map(|e| e.details).unwrap_or_default()))),
        RunStatus::Failed => Err(
            ApiError::new(StatusCode::BAD_GATEWAY, "run_failed", message)
                .with_details(details(json!({ "error": error }))),
        ),
        // An idempotent repeat of a sync request still in flight after the sync timeout.
        RunStatus::Queued | RunStatus::Running => Ok(HttpResponse::Accepted().json(run)),
    }
}

/// Run the live version and wait for its result (the sync endpoint).
#[utoipa::path(
    post, path = "/v1/agents/{id}/invoke", operation_id = "invoke", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        RunHeaders,
    ),
    request_body(content = Option<InvokeBody>, description = "`{\"input\": ...}`; may be empty"),
    responses(
        (status = 200, description = "The run succeeded, or paused for a person (`status: input_required`, `pending` says what it waits for: answer with POST .../requests/{rid}/input)", body = Run),
        (status = 202, description = "An idempotent repeat of a sync request still running after the sync timeout: poll it", body = Run),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "not_deployed: the agent has no live version; cancelled: an undeploy cancelled the run (details: request_id, run); thread_busy: `multitask: reject` and the thread has a run in flight or waiting", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "idempotency_key_reused: this caller used the Idempotency-Key for a different body", body = ErrorBody),
        (status = 429, response = Overloaded),
        (status = 502, response = RunFailed),
        (status = 503, response = Unavailable),
        (status = 504, response = RunTimedOut),
    ),
)]
pub(super) async fn invoke(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<InvokeBody>,
) -> Result<HttpResponse, ApiError> {
    let run = rt
        .invoke(agent_id(&id)?, request(&req, &invoker, body)?)
        .await?;
    sync_answer(&run.run)
}

/// Run the **draft** synchronously, as the sync endpoint would; the run is not stored.
///
/// A management route: it needs the admin token (an invocation key may call only what is live).
/// A draft with a validation error that keeps it from running is refused with 422; warnings do
/// not stop a preview.
#[utoipa::path(
    post, path = "/v1/agents/{id}/preview", operation_id = "preview", tag = "agents",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("X-Hangar-Member" = Option<String>, Header, max_length = 255, pattern = r"^[\t -~]*[!-~][\t -~]*$",
            description = "The member to act for, whose own credentials `member` connections use"),
    ),
    request_body(content = Option<InvokeBody>, description = "`{\"input\": ...}`; may be empty"),
    responses(
        (status = 200, description = "The run succeeded (version 0: the draft)", body = Run),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "not_deployed: the agent's runtime is closing after an undeploy; cancelled: an undeploy cancelled the run", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 422, description = "validation_failed: the draft cannot run (`details: {errors, warnings}`, Problems: the errors that block it, `warnings` empty); nothing ran", body = ErrorBody),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = Overloaded),
        (status = 502, response = RunFailed),
        (status = 503, response = Unavailable),
        (status = 504, response = RunTimedOut),
    ),
)]
pub(super) async fn preview(
    _: Admin,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<InvokeBody>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    // The admin acts for whichever member the header names (e.g. to try their credentials).
    let admin = Invoker {
        key: None,
        member: token_header(&req, MEMBER_HEADER)?,
    };
    let request = request(&req, &admin, body)?;
    // A draft that cannot run is the caller's to fix, not a failed run: refused before one starts.
    let state = rt.state(agent).await?;
    check_runnable(
        state.id,
        &state.draft,
        &state.draft_connections(),
        &rt.registry().directory(),
    )
    .map_err(Rejection::NotRunnable)?;
    let run = rt.preview(agent, request).await?;
    sync_answer(&run.run)
}

/// Accept a run of the live version and run it in the background; durable before the 202.
#[utoipa::path(
    post, path = "/v1/agents/{id}/invoke/async", operation_id = "submit_async", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        RunHeaders,
    ),
    request_body(content = Option<InvokeBody>, description = "`{\"input\": ...}`; may be empty"),
    responses(
        (status = 202, description = "Accepted: poll `poll_url` (or wait for the push)", body = Accepted, headers(
            ("Location" = String, description = "The poll URL"),
            ("Retry-After" = String, description = "Seconds before the first poll"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "not_deployed: the agent has no live version; thread_busy: `multitask: reject` and the thread has a run in flight, waiting or queued", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "idempotency_key_reused: this caller used the Idempotency-Key for a different body", body = ErrorBody),
        (status = 429, response = Overloaded),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn submit(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<InvokeBody>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let run = rt.submit(agent, request(&req, &invoker, body)?).await?;
    let poll_url = format!("/v1/agents/{agent}/requests/{}", run.run.request_id);
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, poll_url.clone()))
        .insert_header((header::RETRY_AFTER, "1"))
        .json(Accepted {
            request_id: run.run.request_id,
            status: run.run.status,
            poll_url,
        }))
}

/// The answer to an async submit.
#[derive(Serialize, ToSchema)]
pub(super) struct Accepted {
    request_id: Uuid,
    /// `queued`, or the request's current status for an idempotent repeat.
    status: RunStatus,
    /// Where to poll: `/v1/agents/{id}/requests/{request_id}`.
    poll_url: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PollQuery {
    /// Long-poll: wait up to this many seconds (0-30) for the run to end.
    #[param(maximum = 30)]
    wait: Option<u64>,
}

/// Poll an async request; `wait` long-polls.
#[utoipa::path(
    get, path = "/v1/agents/{id}/requests/{rid}", operation_id = "poll_request", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("rid" = Uuid, Path, description = "The request id"),
        PollQuery,
    ),
    responses(
        (status = 200, description = "The run as it is now", body = Run, headers(
            ("Retry-After" = String, description = "Sent while the run is not final: seconds before polling again"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or request (requests are kept for the retention period), or a request this caller may not see (another member's)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn poll(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, rid) = path.into_inner();
    let agent = agent_id(&id)?;
    let rid = rid
        .parse()
        .map_err(|_| ApiError::not_found(format!("request {rid}")))?;
    let q = web::Query::<PollQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::bad_field("wait", format!("wait must be 0-{MAX_WAIT_S} seconds")))?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_S {
        return Err(ApiError::bad_field(
            "wait",
            format!("wait must be 0-{MAX_WAIT_S} seconds"),
        ));
    }
    // Checked before waiting: a long-poll must not tell a caller when someone else's run ends.
    let found = visible_run(&rt, &invoker, agent, rid).await?;
    let run = if wait == 0 || found.run.status.is_final() {
        found
    } else {
        rt.wait(agent, rid, Duration::from_secs(wait)).await?
    };
    let mut res = HttpResponse::Ok();
    if !run.run.status.is_final() {
        res.insert_header((header::RETRY_AFTER, "1"));
    }
    Ok(res.json(run.run))
}

/// Cancel a queued or running request.
#[utoipa::path(
    delete, path = "/v1/agents/{id}/requests/{rid}", operation_id = "cancel_request", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("rid" = Uuid, Path, description = "The request id"),
    ),
    responses(
        (status = 200, description = "The run, `cancelled`", body = Run),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or request, or a request this caller may not see (another member's)", body = ErrorBody),
        (status = 409, description = "already_finished: the run had already ended (details.run is the Run); not_deployed: the agent's runtime is closing", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn cancel(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, rid) = path.into_inner();
    let agent = agent_id(&id)?;
    let rid = rid
        .parse()
        .map_err(|_| ApiError::not_found(format!("request {rid}")))?;
    visible_run(&rt, &invoker, agent, rid).await?;
    let run = rt.cancel(agent, rid).await?;
    Ok(HttpResponse::Ok().json(run.run))
}
