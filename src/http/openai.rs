//! The OpenAI-compatible endpoint: `POST /v1/agents/{id}/chat/completions` (plain and
//! `stream: true`) and `GET /v1/agents/{id}/models`, so that any OpenAI SDK talks to an agent
//! with `base_url = <hangar>/v1/agents/<id>` and the invocation key as its API key.
//!
//! A chat completion is a sync run of the live version (the same run `/invoke` makes, with its
//! id, idempotency, limits and events); its input is `{"message": <the last user message>,
//! "messages": [<as sent>]}`. Errors answer in OpenAI's shape, `{"error": {"message", "type",
//! "code", "param"}}`, with the statuses `invoke` uses.

use std::cell::Cell;
use std::rc::Rc;

use actix_web::http::{header, Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actors::runtime::{Request, Run, RunStatus, Runtime};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{agent_id, token_header, Body, Invoker};
use super::resource;
use super::stream::{event_stream, start_streamed_run};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/chat/completions",
        [(Method::POST, web::to(chat_completions))],
    ))
    .service(resource(
        "/v1/agents/{id}/models",
        [(Method::GET, web::to(models))],
    ));
}

/// An error in OpenAI's shape; the status and `code` are Hangar's.
#[derive(Debug)]
pub(super) struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl From<actors::Error> for OpenAiError {
    fn from(e: actors::Error) -> Self {
        OpenAiError(e.into())
    }
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// OpenAI's error `type` for a status, as its SDKs expect them.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The `error` object OpenAI's clients read.
fn error_object(e: &ApiError) -> Value {
    json!({
        "message": e.message,
        "type": error_type(e.status),
        "code": e.code,
        "param": e.details.get("field"),
    })
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.0.status);
        if matches!(self.0.status.as_u16(), 429 | 503) {
            res.insert_header((header::RETRY_AFTER, "1"));
        }
        if self.0.status == StatusCode::REQUEST_TIMEOUT {
            res.force_close();
        }
        res.json(json!({ "error": error_object(&self.0) }))
    }
}

/// A chat completion request; only what Hangar uses is read, anything else is ignored.
#[derive(Deserialize, ToSchema)]
pub(super) struct ChatRequest {
    /// The conversation, as OpenAI's API takes it: `[{"role", "content"}]`. The last `user`
    /// message becomes `input.message`; all of them are `input.messages`.
    messages: Vec<ChatMessage>,
    /// Answer as `chat.completion.chunk` server-sent events, ended by `data: [DONE]`.
    #[serde(default)]
    stream: bool,
    /// Accepted and ignored: the agent is the model.
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<Value>,
}

#[derive(Deserialize, Serialize, ToSchema)]
pub(super) struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, …
    role: String,
    /// A string, or an array of content parts (`{"type": "text", "text"}` parts are read).
    #[serde(default)]
    #[schema(value_type = Object)]
    content: Value,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    rest: serde_json::Map<String, Value>,
}

/// The text of a message's content: the string, or its text parts joined.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// What the agent's answer says, as `message.content`: the output if it is a string, else its
/// `text`, `message` or `answer` field if that is a string, else the output as compact JSON.
pub(super) fn content_of(output: Option<&Value>) -> String {
    let Some(output) = output else {
        return String::new();
    };
    if let Value::String(s) = output {
        return s.clone();
    }
    ["text", "message", "answer"]
        .iter()
        .find_map(|k| output.get(k).and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| output.to_string())
}

/// A final run that did not succeed, as `invoke` answers it.
pub(super) fn run_failure(run: &Run) -> Option<ApiError> {
    let message = run
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    let details = json!({"request_id": run.request_id});
    let (status, code) = match run.status {
        RunStatus::Succeeded
        | RunStatus::Queued
        | RunStatus::Running
        | RunStatus::InputRequired => return None,
        RunStatus::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        RunStatus::Cancelled => (StatusCode::CONFLICT, "cancelled"),
        RunStatus::Failed => (StatusCode::BAD_GATEWAY, "run_failed"),
    };
    Some(ApiError::new(status, code, message).with_details(details))
}

fn completion_id(rid: Uuid) -> String {
    format!("chatcmpl-{rid}")
}

/// A `chat.completion` with one choice.
#[derive(Serialize, ToSchema)]
pub(super) struct ChatCompletion {
    /// `chatcmpl-<request id>`: the run is `GET /v1/agents/{id}/requests/{request id}`.
    id: String,
    /// `chat.completion`
    object: &'static str,
    /// Unix seconds.
    created: i64,
    /// The agent id.
    model: String,
    #[schema(value_type = Vec<Object>)]
    choices: Value,
    /// Zeros: a flow's token use is not counted.
    #[schema(value_type = Object)]
    usage: Value,
}

/// Run the live version on a chat conversation (OpenAI's chat completions API).
#[utoipa::path(
    post, path = "/v1/agents/{id}/chat/completions", operation_id = "chat_completions", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = r"^[\t -~]*[!-~][\t -~]*$",
            description = "The same key within 24 h returns the same request"),
        ("X-Hangar-Thread" = Option<String>, Header, min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._:-]{1,128}$",
            description = "The conversation thread: its runs run one at a time, and the flow sees its turns"),
    ),
    request_body(content = ChatRequest, description = "OpenAI's chat completions request; unknown fields are ignored"),
    responses(
        (status = 200, description = "A `chat.completion`; with `stream: true`, `chat.completion.chunk` server-sent events ended by `data: [DONE]`", body = ChatCompletion),
        (status = 400, description = "invalid_request (OpenAI's error shape `{\"error\": {\"message\", \"type\", \"code\", \"param\"}}`)"),
        (status = 401, description = "unauthorized"),
        (status = 403, description = "forbidden"),
        (status = 404, description = "not_found"),
        (status = 408, description = "request_timeout"),
        (status = 409, description = "not_deployed, or cancelled"),
        (status = 413, description = "payload_too_large"),
        (status = 415, description = "unsupported_media_type"),
        (status = 422, description = "idempotency_key_reused"),
        (status = 429, description = "overloaded"),
        (status = 502, description = "run_failed"),
        (status = 503, description = "unavailable"),
        (status = 504, description = "timeout"),
    ),
)]
pub(super) async fn chat_completions(
    invoker: Result<Invoker, ApiError>,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    body: Result<Body<ChatRequest>, ApiError>,
) -> Result<HttpResponse, OpenAiError> {
    let invoker = invoker?;
    let agent = agent_id(&id)?;
    let Body(chat) = body?;
    let message = chat
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| text_of(&m.content))
        .unwrap_or_default();
    // The conversation's thread, when the caller names one (`X-Hangar-Thread`): OpenAI's body
    // has no field for it, and its `messages` are the client's copy of the history.
    let thread = super::invoke::request_thread(&req, None)?;
    let mut input = json!({"message": message, "messages": chat.messages});
    if let Some(thread) = &thread {
        input["thread_id"] = json!(thread);
    }
    let request = Request {
        input,
        thread,
        member: invoker.member.clone(),
        idempotency_key: token_header(&req, "Idempotency-Key")?,
        caller: Some(invoker.scope().to_owned()),
        ..Request::default()
    };
    if chat.stream {
        let rid = start_streamed_run(&rt, agent, request).await?;
        return Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .streaming(chunks(&rt, agent, rid)));
    }
    let run = rt.invoke(agent, request).await?.run;
    if let Some(e) = run_failure(&run) {
        return Err(e.into());
    }
    Ok(HttpResponse::Ok().json(ChatCompletion {
        id: completion_id(run.request_id),
        object: "chat.completion",
        created: run.created_at.timestamp(),
        model: agent.to_string(),
        choices: json!([{
            "index": 0,
            "message": {"role": "assistant", "content": content_of(run.output.as_ref())},
            "finish_reason": "stop",
            "logprobs": null,
        }]),
        usage: json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
    }))
}

/// The run's events as `chat.completion.chunk`s: each `model.delta` as a content delta, the
/// whole content in one chunk at the end if nothing streamed, then the closing chunk and
/// `[DONE]`. A run that does not succeed ends with an `error` event, which OpenAI's SDKs raise.
fn chunks(
    rt: &Runtime,
    agent: Uuid,
    rid: Uuid,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let (id, created, model) = (
        completion_id(rid),
        Utc::now().timestamp(),
        agent.to_string(),
    );
    let streamed = Rc::new(Cell::new(false));
    let chunk = move |delta: Value, finish: Option<&str>| {
        let chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        format!("data: {chunk}\n\n")
    };
    let encode = move |event: &events::run::RunEvent| -> Option<Bytes> {
        match event.kind.as_str() {
            "model.delta" => {
                let text = event.data.get("text").and_then(Value::as_str)?;
                let first = !streamed.replace(true);
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({ "content": text })
                };
                Some(Bytes::from(chunk(delta, None)))
            }
            "run.finished" => {
                let run: Run = serde_json::from_value(event.data.get("run")?.clone()).ok()?;
                if let Some(e) = run_failure(&run) {
                    let error = json!({ "error": error_object(&e) });
                    return Some(Bytes::from(format!("data: {error}\n\n")));
                }
                let mut out = String::new();
                if !streamed.get() {
                    let content = content_of(run.output.as_ref());
                    out.push_str(&chunk(
                        json!({"role": "assistant", "content": content}),
                        None,
                    ));
                }
                out.push_str(&chunk(json!({}), Some("stop")));
                Some(Bytes::from(out))
            }
            _ => None,
        }
    };
    event_stream(
        rt,
        rid,
        0,
        encode,
        Some(Bytes::from_static(b"data: [DONE]\n\n")),
    )
}

/// The models list: one model, the agent.
#[derive(Serialize, ToSchema)]
pub(super) struct ModelList {
    /// `list`
    object: &'static str,
    #[schema(value_type = Vec<Object>)]
    data: Value,
}

/// OpenAI's models list: one model whose id is the agent id.
#[utoipa::path(
    get, path = "/v1/agents/{id}/models", operation_id = "list_models", tag = "protocols",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "`{\"object\": \"list\", \"data\": [{\"id\": <agent id>, \"object\": \"model\", \"created\", \"owned_by\": \"hangar\"}]}`", body = ModelList),
        (status = 401, description = "unauthorized (OpenAI's error shape)"),
        (status = 403, description = "forbidden"),
        (status = 404, description = "not_found"),
        (status = 503, description = "unavailable"),
    ),
)]
pub(super) async fn models(
    invoker: Result<Invoker, ApiError>,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    invoker?;
    let agent = agent_id(&id)?;
    let state = rt.state(agent).await?;
    let created = state.created_at.map(|t| t.timestamp()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data: json!([{"id": agent, "object": "model", "created": created, "owned_by": "hangar"}]),
    }))
}
