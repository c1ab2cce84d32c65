//! Conversation threads and paused runs: read or delete a thread's turns, and answer a run that
//! waits for a person (`input_required`). Answers as the contract's "Threads" and "Agentic model
//! nodes and human input" sections say.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use actors::flow::Answer;
use actors::runtime::{Run, RunStatus, Runtime};
use events::run::{thread_scope, Turn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{agent_id, Body, Invoker};
use super::invoke::thread_id;
use super::resource;
use super::responses::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, RequestTimeout, Unauthorized, Unavailable,
    UnsupportedMediaType,
};

/// The most turns a read of a thread returns: the newest ones.
const MAX_TURNS_READ: usize = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/threads/{tid}",
        [
            (Method::GET, web::to(get_thread)),
            (Method::DELETE, web::to(delete_thread)),
        ],
    ))
    .service(resource(
        "/v1/agents/{id}/requests/{rid}/input",
        [(Method::POST, web::to(input))],
    ));
}

/// A thread as its reader sees it.
#[derive(Serialize, ToSchema)]
pub(super) struct ThreadView {
    thread_id: String,
    /// Oldest first: `{request_id, input, output, at}` of each run that ended in the thread.
    #[schema(value_type = Vec<Object>)]
    turns: Vec<Turn>,
}

/// The agent and the thread's scope for this caller: a caller acting as a member (its key's, or
/// the admin's `X-Hangar-Member`) has threads of its own.
fn scope(invoker: &Invoker, id: &str, tid: &str) -> Result<(Uuid, String, String), ApiError> {
    let agent = agent_id(id)?;
    let tid = thread_id("tid", tid)?;
    Ok((agent, thread_scope(invoker.member.as_deref(), &tid), tid))
}

/// A thread's turns, oldest first (the newest 1000 at most).
#[utoipa::path(
    get, path = "/v1/agents/{id}/threads/{tid}", operation_id = "get_thread", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The thread id", pattern = r"^[A-Za-z0-9._:-]{1,128}$"),
    ),
    responses(
        (status = 200, description = "The thread (no turns: a thread that has none, or none yet)", body = ThreadView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn get_thread(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (agent, scoped, tid) = scope(&invoker, &path.0, &path.1)?;
    rt.state(agent).await?;
    let turns = rt.thread(agent, scoped, MAX_TURNS_READ).await?;
    Ok(HttpResponse::Ok().json(ThreadView {
        thread_id: tid,
        turns,
    }))
}

/// Deletes a thread: its turns are gone from storage, and its runs' inputs and outputs with them.
#[utoipa::path(
    delete, path = "/v1/agents/{id}/threads/{tid}", operation_id = "delete_thread", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The thread id", pattern = r"^[A-Za-z0-9._:-]{1,128}$"),
    ),
    responses(
        (status = 204, description = "Deleted (also when the thread had no turns)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn delete_thread(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (agent, scoped, _) = scope(&invoker, &path.0, &path.1)?;
    rt.state(agent).await?;
    rt.delete_thread(agent, scoped).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A person's answer to a paused run: `{"approve": true|false}` to an approval, `{"input":
/// {...}}` to an input node.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InputBody {
    /// Whether the call waiting for approval may go ahead (`pending.kind == "approval"`).
    approve: Option<bool>,
    /// The input node's output (`pending.kind == "input"`): any JSON.
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
}

/// Answers a run that waits for a person (`input_required`): it goes on in the background.
#[utoipa::path(
    post, path = "/v1/agents/{id}/requests/{rid}/input", operation_id = "answer_request", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("rid" = Uuid, Path, description = "The request id"),
    ),
    request_body(content = InputBody, description = "`{\"approve\": true|false}` or `{\"input\": ...}`, as the run's `pending.kind` asks"),
    responses(
        (status = 202, description = "Resumed: the run goes on in the background (poll, push, events)", body = Run),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent or request, or a request this caller may not see", body = ErrorBody),
        (status = 409, description = "not_waiting: the run is not paused for input (details.status); not_deployed: the agent is not live", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "invalid_request: the answer does not fit what the run waits for (details.field)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn input(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
    Body(body): Body<InputBody>,
) -> Result<HttpResponse, ApiError> {
    let (id, rid) = path.into_inner();
    let agent = agent_id(&id)?;
    let rid: Uuid = rid
        .parse()
        .map_err(|_| ApiError::not_found(format!("request {rid}")))?;
    let run = rt.run(agent, rid).await?;
    if !invoker.may_see(run.member.as_deref()) {
        return Err(ApiError::not_found(format!("request {rid}")));
    }
    if run.run.status != RunStatus::InputRequired {
        return Err(actors::Error::NotWaiting(run.run.status.as_str()).into());
    }
    let kind = run
        .run
        .pending
        .as_ref()
        .and_then(|p| p.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let invalid = |field: &str, message: &str| {
        ApiError::from(events::Rejection::invalid(
            field.to_owned(),
            message.to_owned(),
        ))
    };
    let answer =
        match (kind, body.approve, body.input) {
            ("approval", Some(approve), None) => Answer::Approve(approve),
            ("approval", _, _) => return Err(invalid(
                "approve",
                "the run waits for an approval: send {\"approve\": true} or {\"approve\": false}",
            )),
            ("input", None, Some(input)) => Answer::Input(input),
            ("input", _, _) => {
                return Err(invalid(
                    "input",
                    "the run waits for an input: send {\"input\": ...}",
                ))
            }
            _ => {
                return Err(invalid(
                    "pending",
                    "the run waits for something this server cannot answer",
                ))
            }
        };
    let run = rt.resume(agent, rid, answer).await?;
    Ok(HttpResponse::Accepted().json(run.run))
}
