//! A2A 1.0 (the Agent2Agent protocol): each live agent is an A2A agent at `/a2a/{id}`, with its
//! agent card, the JSON-RPC binding (`POST /a2a/{id}`, 1.0 method names and their 0.3 aliases)
//! and the HTTP+JSON binding under the same base. A task is a run (`task`): the same record
//! `/requests/{rid}` shows, with the same auth, limits, idempotency and events.
//!
//! Operations are written once (`send`, `get`, `cancel`, `subscribe`…) and each binding only
//! wraps their answers and errors. A task's push notification config has its own module
//! (`push_config`).

use std::future::ready;

use actix_web::http::{header, Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::a2a as task;
use actors::flow::Answer;
use actors::runtime::{Request, RunStatus, Runtime};
use events::run::RunEvent;
use futures_util::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{agent_id, token_header, Body, Invoker};
use super::responses::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, RequestTimeout, SseEvent, Unauthorized,
    Unavailable, UnsupportedMediaType,
};
use super::stream::{event_stream, start_streamed_run};
use super::{resource, PublicUrl};

pub(super) mod push_config;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/a2a/{id}/.well-known/agent-card.json",
        [(Method::GET, web::to(agent_card))],
    ))
    .service(resource("/a2a/{id}", [(Method::POST, web::to(json_rpc))]))
    .service(resource(
        "/a2a/{id}/message:send",
        [(Method::POST, web::to(rest_send))],
    ))
    .service(resource(
        "/a2a/{id}/message:stream",
        [(Method::POST, web::to(rest_stream))],
    ))
    // Before `/tasks/{tid}`, whose segment would otherwise take `x:cancel` too.
    .service(resource(
        "/a2a/{id}/tasks/{tid}:cancel",
        [(Method::POST, web::to(rest_cancel))],
    ))
    .service(resource(
        "/a2a/{id}/tasks/{tid}:subscribe",
        [
            (Method::GET, web::to(rest_subscribe)),
            (Method::POST, web::to(rest_subscribe_post)),
        ],
    ))
    .service(resource(
        "/a2a/{id}/tasks/{tid}",
        [(Method::GET, web::to(rest_get))],
    ))
    .service(resource(
        "/a2a/{id}/tasks",
        [(Method::GET, web::to(rest_list))],
    ))
    .service(resource(
        "/a2a/{id}/tasks/{tid}/pushNotificationConfigs",
        [
            (Method::POST, web::to(push_config::rest_create)),
            (Method::GET, web::to(push_config::rest_list)),
        ],
    ))
    .service(resource(
        "/a2a/{id}/tasks/{tid}/pushNotificationConfigs/{cid}",
        [
            (Method::GET, web::to(push_config::rest_get)),
            (Method::DELETE, web::to(push_config::rest_delete)),
        ],
    ));
}

/// An A2A error: its JSON-RPC code, and the HTTP status the HTTP+JSON binding answers.
#[derive(Debug)]
pub(super) enum A2aError {
    Parse(String),
    InvalidRequest(String),
    MethodNotFound(String),
    InvalidParams(String),
    TaskNotFound(String),
    NotCancelable(String),
    Unsupported(String),
    /// Anything Hangar refuses as it would on `/invoke` (not deployed, overloaded, …).
    Hangar(ApiError),
}

impl From<ApiError> for A2aError {
    fn from(e: ApiError) -> Self {
        match (e.status.as_u16(), e.code) {
            (404, "not_found") => A2aError::TaskNotFound(e.message),
            (400 | 422, "invalid_request") => A2aError::InvalidParams(e.message),
            _ => A2aError::Hangar(e),
        }
    }
}

impl From<actors::Error> for A2aError {
    fn from(e: actors::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl A2aError {
    fn code(&self) -> i64 {
        match self {
            A2aError::Parse(_) => -32700,
            A2aError::InvalidRequest(_) => -32600,
            A2aError::MethodNotFound(_) => -32601,
            A2aError::InvalidParams(_) => -32602,
            A2aError::TaskNotFound(_) => -32001,
            A2aError::NotCancelable(_) => -32002,
            A2aError::Unsupported(_) => -32004,
            // JSON-RPC's range for server errors; `data` says which.
            A2aError::Hangar(_) => -32000,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            A2aError::Parse(_) | A2aError::InvalidRequest(_) | A2aError::InvalidParams(_) => {
                StatusCode::BAD_REQUEST
            }
            A2aError::MethodNotFound(_) | A2aError::TaskNotFound(_) => StatusCode::NOT_FOUND,
            A2aError::NotCancelable(_) => StatusCode::CONFLICT,
            A2aError::Unsupported(_) => StatusCode::BAD_REQUEST,
            A2aError::Hangar(e) => e.status,
        }
    }

    /// The reason A2A's HTTP+JSON binding names in its `ErrorInfo`.
    fn reason(&self) -> &str {
        match self {
            A2aError::Parse(_) | A2aError::InvalidRequest(_) | A2aError::InvalidParams(_) => {
                "INVALID_REQUEST"
            }
            A2aError::MethodNotFound(_) => "METHOD_NOT_FOUND",
            A2aError::TaskNotFound(_) => "TASK_NOT_FOUND",
            A2aError::NotCancelable(_) => "TASK_NOT_CANCELABLE",
            A2aError::Unsupported(_) => "UNSUPPORTED_OPERATION",
            A2aError::Hangar(e) => e.code,
        }
    }

    fn message(&self) -> &str {
        match self {
            A2aError::Parse(m)
            | A2aError::InvalidRequest(m)
            | A2aError::MethodNotFound(m)
            | A2aError::InvalidParams(m)
            | A2aError::TaskNotFound(m)
            | A2aError::NotCancelable(m)
            | A2aError::Unsupported(m) => m,
            A2aError::Hangar(e) => &e.message,
        }
    }

    fn rpc(&self) -> Value {
        let mut error = json!({"code": self.code(), "message": self.message()});
        if let A2aError::Hangar(e) = self {
            error["data"] =
                json!({"code": e.code, "status": e.status.as_u16(), "details": e.details});
        }
        error
    }

    /// The HTTP+JSON binding's error: the status, and google.rpc's shape A2A uses.
    fn rest(&self) -> HttpResponse {
        let status = self.status();
        let mut res = HttpResponse::build(status);
        if matches!(status.as_u16(), 429 | 503) {
            res.insert_header((header::RETRY_AFTER, "1"));
        }
        res.json(json!({"error": {
            "code": status.as_u16(),
            "status": status.canonical_reason().unwrap_or("").to_ascii_uppercase().replace(' ', "_"),
            "message": self.message(),
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": self.reason(),
                "domain": "a2a-protocol.org",
            }],
        }}))
    }
}

/// Which protocol version the caller speaks: 1.0 with `A2A-Version: 1.0`, else 0.3.
fn speaks_v1(req: &HttpRequest) -> bool {
    req.headers()
        .get("A2A-Version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with('1'))
}

/// Who may see a task: as for `/requests/{rid}`.
async fn visible(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    tid: &str,
) -> Result<actors::runtime::StoredRun, A2aError> {
    let not_found = || A2aError::TaskNotFound(format!("task {tid} not found"));
    let rid: Uuid = tid.parse().map_err(|_| not_found())?;
    match rt.run(agent, rid).await {
        Ok(run) if invoker.may_see(run.member.as_deref()) => Ok(run),
        Ok(_) => Err(not_found()),
        Err(e) => match ApiError::from(e) {
            e if e.status == StatusCode::NOT_FOUND => Err(not_found()),
            e => Err(e.into()),
        },
    }
}

fn str_param<'a>(params: &'a Value, name: &str) -> Result<&'a str, A2aError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| A2aError::InvalidParams(format!("params.{name} must be a string")))
}

/// A message, as the run request it asks for, and its context id.
fn run_request(
    req: &HttpRequest,
    invoker: &Invoker,
    params: &Value,
) -> Result<(Request, String), A2aError> {
    let message = params
        .get("message")
        .ok_or_else(|| A2aError::InvalidParams("params.message is required".into()))?;
    let (input, context) = task::input_of(message).map_err(|e| A2aError::InvalidParams(e.0))?;
    // The context is the conversation's thread: its tasks run one at a time and see its turns.
    let thread = super::invoke::thread_id("params.message.contextId", &context)
        .map_err(|e| A2aError::InvalidParams(e.message))?;
    let request = Request {
        input,
        thread: Some(thread),
        member: invoker.member.clone(),
        idempotency_key: token_header(req, "Idempotency-Key")?,
        caller: Some(invoker.scope().to_owned()),
        ..Request::default()
    };
    Ok((request, context))
}

/// `SendMessage`: runs the agent and answers the task once it has ended (up to the sync
/// timeout), or at once when `configuration.returnImmediately` (accepted durably, as
/// `/invoke/async`).
async fn send(
    rt: &Runtime,
    req: &HttpRequest,
    invoker: &Invoker,
    agent: Uuid,
    params: &Value,
) -> Result<Value, A2aError> {
    let immediately = params
        .pointer("/configuration/returnImmediately")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(tid) = params.pointer("/message/taskId").and_then(Value::as_str) {
        return continue_task(rt, invoker, agent, tid, params, immediately).await;
    }
    let (mut request, _) = run_request(req, invoker, params)?;
    request.a2a_push = match params.pointer("/configuration/taskPushNotificationConfig") {
        Some(config) if !config.is_null() => Some(push_config::push_config(
            rt,
            agent,
            config,
            "params.configuration.taskPushNotificationConfig",
        )?),
        _ => None,
    };
    let run = if immediately {
        rt.submit(agent, request).await?
    } else if request.a2a_push.is_some() {
        // Pushed from the durable outbox, so run as an async request; the caller still waits
        // for its end, up to the sync timeout.
        let accepted = rt.submit(agent, request).await?;
        let state = rt.state(agent).await?;
        let limit = state
            .live()
            .map(|v| v.snapshot.endpoint.sync_timeout_s)
            .unwrap_or(180);
        rt.wait(
            agent,
            accepted.run.request_id,
            std::time::Duration::from_secs(limit),
        )
        .await?
    } else {
        rt.invoke(agent, request).await?
    };
    Ok(json!({ "task": task::task(&run) }))
}

/// A message naming a task (`message.taskId`): the answer a task in `TASK_STATE_INPUT_REQUIRED`
/// waits for. For an approval, a data part `{"approve": bool}` or a text part such as "yes" or
/// "no"; for an input node, the message's input (its data parts merged, its text as `message`).
/// The task goes on as a resumed run; the answer is the task once it settles again (up to the
/// sync timeout), or at once with `returnImmediately`.
async fn continue_task(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    tid: &str,
    params: &Value,
    immediately: bool,
) -> Result<Value, A2aError> {
    let not_found = || A2aError::TaskNotFound(format!("task {tid}"));
    let rid: Uuid = tid.parse().map_err(|_| not_found())?;
    let run = rt.run(agent, rid).await.map_err(ApiError::from)?;
    if !invoker.may_see(run.member.as_deref()) {
        return Err(not_found());
    }
    if run.run.status != RunStatus::InputRequired {
        return Err(A2aError::Unsupported(format!(
            "task {tid} is {}: only a task in TASK_STATE_INPUT_REQUIRED takes another message",
            task::state(run.run.status)
        )));
    }
    let message = params.get("message").unwrap_or(&Value::Null);
    let (mut input, _) = task::input_of(message).map_err(|e| A2aError::InvalidParams(e.0))?;
    if let Some(map) = input.as_object_mut() {
        map.remove("a2a");
    }
    let kind = run.run.pending.as_ref().and_then(|p| p.get("kind"));
    let answer = match kind.and_then(Value::as_str) {
        Some("approval") => Answer::Approve(approval_of(&input).ok_or_else(|| {
            A2aError::InvalidParams(
                "the task waits for an approval: send a data part {\"approve\": true|false} \
                 or the text yes or no"
                    .into(),
            )
        })?),
        Some("input") => Answer::Input(input),
        _ => {
            return Err(A2aError::Unsupported(
                "the task waits for something this server cannot take over A2A".into(),
            ))
        }
    };
    rt.resume(agent, rid, answer)
        .await
        .map_err(ApiError::from)?;
    let run = if immediately {
        rt.run(agent, rid).await
    } else {
        let limit = rt
            .state(agent)
            .await
            .ok()
            .and_then(|state| state.live().map(|v| v.snapshot.endpoint.sync_timeout_s))
            .unwrap_or(180);
        rt.wait(agent, rid, std::time::Duration::from_secs(limit))
            .await
    }
    .map_err(ApiError::from)?;
    Ok(json!({ "task": task::task(&run) }))
}

/// An approval in a message's input: `approve` from a data part, else its text.
fn approval_of(input: &Value) -> Option<bool> {
    if let Some(approve) = input.get("approve").and_then(Value::as_bool) {
        return Some(approve);
    }
    let text = input.get("message").and_then(Value::as_str)?;
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "approve" | "approved" | "ok" | "true" => Some(true),
        "no" | "n" | "deny" | "denied" | "refuse" | "refused" | "reject" | "false" => Some(false),
        _ => None,
    }
}

/// `ListTasks`: the agent's tasks this caller may see, newest first, filtered by `contextId`
/// and `status`, `pageSize` (1-100, default 50) at a time; `nextPageToken` is the last task's id.
async fn list(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    params: &Value,
) -> Result<Value, A2aError> {
    let size = match params.get("pageSize") {
        None | Some(Value::Null) => 50,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| A2aError::InvalidParams("params.pageSize must be 1-100".into()))?
            as usize,
    };
    let text = |name: &str| {
        params
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut before = match text("pageToken") {
        Some(token) => Some(token.parse::<Uuid>().map_err(|_| {
            A2aError::InvalidParams("params.pageToken is not a token this server gave".into())
        })?),
        None => None,
    };
    let context = text("contextId");
    let state = text("status");
    if let Some(state) = state {
        if !state.starts_with("TASK_STATE_") {
            return Err(A2aError::InvalidParams(
                "params.status must be a TASK_STATE_… value".into(),
            ));
        }
    }
    rt.state(agent).await?;
    let mut tasks = Vec::new();
    let mut exhausted = false;
    // Filters drop runs after they are read: read a bounded number of pages to fill one.
    for _ in 0..20 {
        let page = rt
            .runs()
            .list_runs(agent, before, size)
            .await
            .map_err(ApiError::from)?;
        exhausted = page.len() < size;
        for run in page {
            before = Some(run.run.request_id);
            let wanted = invoker.may_see(run.member.as_deref())
                && context.is_none_or(|c| task::context_of(&run) == c)
                && state.is_none_or(|s| task::state(run.run.status) == s);
            if wanted {
                tasks.push(task::task(&run));
                if tasks.len() == size {
                    break;
                }
            }
        }
        if exhausted || tasks.len() == size {
            break;
        }
    }
    let next = match (exhausted && tasks.len() < size, before) {
        (false, Some(last)) => last.to_string(),
        _ => String::new(),
    };
    Ok(json!({"tasks": tasks, "nextPageToken": next, "pageSize": size}))
}

/// One `StreamResponse` per run event that changes the task: `WORKING` when it starts, its
/// artifact and final status when it ends (`run.finished`, after which the stream closes).
fn stream_responses(
    rt: &Runtime,
    rid: Uuid,
    context: String,
    first: Value,
    wrap: impl Fn(Value) -> Bytes + 'static,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let opening = wrap(json!({ "task": first }));
    let encode = move |event: &RunEvent| -> Option<Bytes> {
        match event.kind.as_str() {
            "run.started" => Some(wrap(json!({"statusUpdate": {
                "taskId": rid, "contextId": context,
                "status": {"state": task::state(RunStatus::Running), "timestamp": event.at.to_rfc3339()},
            }}))),
            "run.finished" => {
                let run: actors::runtime::Run =
                    serde_json::from_value(event.data.get("run")?.clone()).ok()?;
                let done = task::task_of_run(&run, &context);
                let mut out = Vec::new();
                if let Some(artifact) = task::artifact(&run) {
                    out.extend_from_slice(&wrap(json!({"artifactUpdate": {
                        "taskId": rid, "contextId": context, "artifact": artifact,
                        "append": false, "lastChunk": true,
                    }})));
                }
                out.extend_from_slice(&wrap(json!({"statusUpdate": {
                    "taskId": rid, "contextId": context, "status": done["status"],
                }})));
                Some(Bytes::from(out))
            }
            _ => None,
        }
    };
    futures_util::stream::once(ready(Ok(opening))).chain(event_stream(rt, rid, 0, encode, None))
}

/// `SendStreamingMessage`: a sync run, its task first, then its updates until it ends.
async fn send_streaming(
    rt: &Runtime,
    req: &HttpRequest,
    invoker: &Invoker,
    agent: Uuid,
    params: &Value,
    wrap: impl Fn(Value) -> Bytes + 'static,
) -> Result<HttpResponse, A2aError> {
    let (request, context) = run_request(req, invoker, params)?;
    let mut message = params.get("message").cloned().unwrap_or(Value::Null);
    let rid = start_streamed_run(rt, agent, request).await?;
    message["contextId"] = json!(context);
    message["taskId"] = json!(rid);
    let first = json!({
        "id": rid, "contextId": context,
        "status": {"state": task::state(RunStatus::Running), "timestamp": chrono::Utc::now().to_rfc3339()},
        "history": [message],
    });
    Ok(sse(stream_responses(rt, rid, context, first, wrap)))
}

/// `SubscribeToTask`: the task as it is, then its updates until it ends. A task that has
/// already ended cannot be subscribed to (A2A: `UnsupportedOperationError`).
async fn subscribe(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    tid: &str,
    wrap: impl Fn(Value) -> Bytes + 'static,
) -> Result<HttpResponse, A2aError> {
    let run = visible(rt, invoker, agent, tid).await?;
    if task::settled(run.run.status) {
        return Err(A2aError::Unsupported(format!(
            "task {tid} has ended ({}): get it with GetTask",
            task::state(run.run.status)
        )));
    }
    let context = task::context_of(&run);
    Ok(sse(stream_responses(
        rt,
        run.run.request_id,
        context,
        task::task(&run),
        wrap,
    )))
}

/// `CancelTask`.
async fn cancel(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    tid: &str,
) -> Result<Value, A2aError> {
    let run = visible(rt, invoker, agent, tid).await?;
    match rt.cancel(agent, run.run.request_id).await {
        Ok(run) => Ok(task::task(&run)),
        Err(actors::Error::AlreadyFinished(_)) => Err(A2aError::NotCancelable(format!(
            "task {tid} has already ended"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn sse(
    stream: impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream)
}

/// The agent card of a live agent: public, so that clients can discover it.
#[utoipa::path(
    get, path = "/a2a/{id}/.well-known/agent-card.json", operation_id = "a2a_agent_card", tag = "protocols",
    security(()),
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The A2A 1.0 agent card", body = Object, headers(
            ("ETag" = String, description = "Changes with the live version"),
            ("Cache-Control" = String, description = "How long the card may be cached"),
        )),
        (status = 404, description = "not_found: no such agent, or it is not live", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn agent_card(
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    public: Option<web::Data<PublicUrl>>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let state = rt.state(agent).await?;
    let (Some(version), Some(live)) = (state.live_version, state.live()) else {
        return Err(ApiError::not_found(format!("live agent {agent}")));
    };
    let base = match public.as_deref().and_then(|p| p.0.clone()) {
        Some(url) => url,
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    };
    let url = format!("{}/a2a/{agent}", base.trim_end_matches('/'));
    let spec = &live.snapshot.spec;
    let modes = json!(["text/plain", "application/json"]);
    let card = json!({
        "name": spec.name,
        "description": spec.description,
        "version": version.to_string(),
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": url, "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
        ],
        "provider": {"organization": "Hangar", "url": base},
        "capabilities": {"streaming": true, "pushNotifications": true},
        "defaultInputModes": modes,
        "defaultOutputModes": modes,
        "skills": [{
            "id": "run",
            "name": spec.name,
            "description": spec.description,
            "tags": ["hangar"],
            "inputModes": modes,
            "outputModes": modes,
        }],
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {
            "scheme": "Bearer",
            "description": "The admin token or one of the agent's invocation keys",
        }}},
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{agent}-{version}-{}\"", state.seq)))
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .json(card))
}

/// The JSON-RPC 2.0 binding: one request per call (no batches).
#[utoipa::path(
    post, path = "/a2a/{id}", operation_id = "a2a_json_rpc", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("A2A-Version" = Option<String>, Header, description = "`1.0`; without it the request is 0.3"),
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = r"^[\t -~]*[!-~][\t -~]*$",
            description = "As on /invoke: the same key within 24 h is the same task"),
    ),
    request_body(content = Object, description = "A JSON-RPC 2.0 request: `SendMessage`, `SendStreamingMessage`, `GetTask`, `ListTasks`, `CancelTask`, `SubscribeToTask`, `CreateTaskPushNotificationConfig`, `GetTaskPushNotificationConfig`, `ListTaskPushNotificationConfigs`, `DeleteTaskPushNotificationConfig` (and their 0.3 names)"),
    responses(
        (status = 200, description = "A JSON-RPC response (its `error` carries A2A's codes), or for the streaming methods server-sent events each holding one", body = Object),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn json_rpc(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    body: Result<Body<Value>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let mut call = match body {
        Ok(Body(call)) => call,
        // Not JSON: JSON-RPC's parse error. A body too large, too slow or compressed stays
        // the HTTP error it is.
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            let error = A2aError::Parse(format!("the body is not JSON: {}", e.message));
            return Ok(HttpResponse::Ok()
                .json(json!({"jsonrpc": "2.0", "id": null, "error": error.rpc()})));
        }
        Err(e) => return Err(e),
    };
    // An unknown agent is the route's 404, not a JSON-RPC answer about a task.
    rt.state(agent).await?;
    let v1 = speaks_v1(&req);
    let rpc_id = call.get("id").cloned().unwrap_or(Value::Null);
    // Taken out, not copied: a message's parts may be large.
    let params = call
        .get_mut("params")
        .map(Value::take)
        .unwrap_or_else(|| json!({}));
    let answer = |result: Result<Value, A2aError>| -> HttpResponse {
        let body = match result {
            Ok(result) => json!({"jsonrpc": "2.0", "id": rpc_id, "result": result}),
            Err(e) => json!({"jsonrpc": "2.0", "id": rpc_id, "error": e.rpc()}),
        };
        HttpResponse::Ok().json(body)
    };
    if call.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !call.is_object() {
        return Ok(answer(Err(A2aError::InvalidRequest(
            "a JSON-RPC 2.0 request object is expected (jsonrpc: \"2.0\", method, params, id)"
                .into(),
        ))));
    }
    let Some(method) = call.get("method").and_then(Value::as_str) else {
        return Ok(answer(Err(A2aError::InvalidRequest(
            "method must be a string".into(),
        ))));
    };
    if !params.is_object() {
        return Ok(answer(Err(A2aError::InvalidParams(
            "params must be an object".into(),
        ))));
    }
    let out = |value: Value| if v1 { value } else { v03_result(value) };
    let stream_id = rpc_id.clone();
    let wrap = move |value: Value| -> Bytes {
        let result = if v1 { value } else { v03_result(value) };
        let body = json!({"jsonrpc": "2.0", "id": stream_id, "result": result});
        Bytes::from(format!("data: {body}\n\n"))
    };
    let result = match method {
        "SendMessage" | "message/send" => send(&rt, &req, &invoker, agent, &params)
            .await
            .map(|mut r| if v1 { r } else { v03_result(r["task"].take()) }),
        "GetTask" | "tasks/get" => match str_param(&params, "id") {
            Ok(tid) => visible(&rt, &invoker, agent, tid)
                .await
                .map(|run| out(task::task(&run))),
            Err(e) => Err(e),
        },
        "CancelTask" | "tasks/cancel" => match str_param(&params, "id") {
            Ok(tid) => cancel(&rt, &invoker, agent, tid).await.map(out),
            Err(e) => Err(e),
        },
        "SendStreamingMessage" | "message/stream" => {
            return Ok(
                match send_streaming(&rt, &req, &invoker, agent, &params, wrap).await {
                    Ok(res) => res,
                    Err(e) => answer(Err(e)),
                },
            )
        }
        "SubscribeToTask" | "tasks/resubscribe" => {
            let tid = match str_param(&params, "id") {
                Ok(tid) => tid.to_owned(),
                Err(e) => return Ok(answer(Err(e))),
            };
            return Ok(match subscribe(&rt, &invoker, agent, &tid, wrap).await {
                Ok(res) => res,
                Err(e) => answer(Err(e)),
            });
        }
        "CreateTaskPushNotificationConfig" | "tasks/pushNotificationConfig/set" => {
            push_config::create(&rt, &invoker, agent, &params, push_config::shape_of(v1)).await
        }
        "GetTaskPushNotificationConfig" | "tasks/pushNotificationConfig/get" => {
            let shape = push_config::shape_of(v1);
            push_config::read(&rt, &invoker, agent, &params, true, shape).await
        }
        "ListTaskPushNotificationConfig"
        | "ListTaskPushNotificationConfigs"
        | "tasks/pushNotificationConfig/list" => {
            let shape = push_config::shape_of(v1);
            push_config::read(&rt, &invoker, agent, &params, false, shape).await
        }
        "DeleteTaskPushNotificationConfig" | "tasks/pushNotificationConfig/delete" => {
            push_config::delete(&rt, &invoker, agent, &params)
                .await
                .map(|()| Value::Null)
        }
        "ListTasks" | "tasks/list" => list(&rt, &invoker, agent, &params).await.map(|mut r| {
            if !v1 {
                r["tasks"] = task::to_v03(r["tasks"].take());
            }
            r
        }),
        other => Err(A2aError::MethodNotFound(format!(
            "no method {other}: see the agent card's protocol version (1.0) for the methods"
        ))),
    };
    Ok(answer(result))
}

/// A 1.0 result in 0.3's form: the events of a stream unwrapped with their `kind`.
fn v03_result(mut value: Value) -> Value {
    let unwrapped = if let Some(task) = value.get_mut("task") {
        task.take()
    } else if let Some(update) = value.get_mut("statusUpdate") {
        let mut update = update.take();
        let state = update["status"]["state"].as_str().unwrap_or("");
        let ended = !matches!(state, "TASK_STATE_SUBMITTED" | "TASK_STATE_WORKING");
        update["kind"] = json!("status-update");
        update["final"] = json!(ended);
        update
    } else if let Some(update) = value.get_mut("artifactUpdate") {
        let mut update = update.take();
        update["kind"] = json!("artifact-update");
        update
    } else {
        value
    };
    task::to_v03(unwrapped)
}

fn rest_wrap(value: Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn rest_answer(result: Result<Value, A2aError>) -> HttpResponse {
    match result {
        Ok(value) => HttpResponse::Ok().json(value),
        Err(e) => e.rest(),
    }
}

/// HTTP+JSON: `SendMessage`.
#[utoipa::path(
    post, path = "/a2a/{id}/message:send", operation_id = "a2a_send_message", tag = "protocols",
    params(("id" = Uuid, Path, description = "The agent's id")),
    request_body(content = Object, description = "A2A `SendMessageRequest`: `{message, configuration}`"),
    responses(
        (status = 200, description = "`{\"task\": Task}`", body = Object),
        (status = 400, description = "INVALID_REQUEST in A2A's google.rpc error shape `{error: {code, status, message, details}}`, or a body Hangar cannot read (its own error shape)", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND, or no such live agent (A2A's google.rpc error shape)", body = Object),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "not_deployed", body = Object),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, description = "overloaded", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn rest_send(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    Body(params): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    Ok(rest_answer(send(&rt, &req, &invoker, agent, &params).await))
}

/// HTTP+JSON: `SendStreamingMessage` (server-sent events of `StreamResponse`s).
#[utoipa::path(
    post, path = "/a2a/{id}/message:stream", operation_id = "a2a_stream_message", tag = "protocols",
    params(("id" = Uuid, Path, description = "The agent's id")),
    request_body(content = Object, description = "A2A `SendMessageRequest`"),
    responses(
        (status = 200, description = "`StreamResponse` events: the task, then its updates", body = SseEvent, content_type = "text/event-stream"),
        (status = 400, description = "INVALID_REQUEST in A2A's google.rpc error shape `{error: {code, status, message, details}}`, or a body Hangar cannot read (its own error shape)", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND, or no such live agent (A2A's google.rpc error shape)", body = Object),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "not_deployed", body = Object),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, description = "overloaded", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn rest_stream(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    Body(params): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    Ok(
        match send_streaming(&rt, &req, &invoker, agent, &params, rest_wrap).await {
            Ok(res) => res,
            Err(e) => e.rest(),
        },
    )
}

/// HTTP+JSON: `GetTask`.
#[utoipa::path(
    get, path = "/a2a/{id}/tasks/{tid}", operation_id = "a2a_get_task", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The task id (the request id)"),
    ),
    responses(
        (status = 200, description = "The task", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn rest_get(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, tid) = path.into_inner();
    let agent = agent_id(&id)?;
    let found = visible(&rt, &invoker, agent, &tid).await;
    Ok(rest_answer(found.map(|run| task::task(&run))))
}

/// HTTP+JSON: `CancelTask`.
#[utoipa::path(
    post, path = "/a2a/{id}/tasks/{tid}:cancel", operation_id = "a2a_cancel_task", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The task id (the request id)"),
    ),
    responses(
        (status = 200, description = "The task, canceled", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND", body = Object),
        (status = 409, description = "TASK_NOT_CANCELABLE: it has ended", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn rest_cancel(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, tid) = path.into_inner();
    let agent = agent_id(&id)?;
    Ok(rest_answer(cancel(&rt, &invoker, agent, &tid).await))
}

/// HTTP+JSON: `SubscribeToTask`.
#[utoipa::path(
    get, path = "/a2a/{id}/tasks/{tid}:subscribe", operation_id = "a2a_subscribe_task", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The task id (the request id)"),
    ),
    responses(
        (status = 200, description = "`StreamResponse` events: the task, then its updates until it ends", body = SseEvent, content_type = "text/event-stream"),
        (status = 400, description = "UNSUPPORTED_OPERATION: the task has ended", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn rest_subscribe(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, tid) = path.into_inner();
    let agent = agent_id(&id)?;
    Ok(
        match subscribe(&rt, &invoker, agent, &tid, rest_wrap).await {
            Ok(res) => res,
            Err(e) => e.rest(),
        },
    )
}

/// HTTP+JSON: `SubscribeToTask`, as a POST (A2A allows both).
#[utoipa::path(
    post, path = "/a2a/{id}/tasks/{tid}:subscribe", operation_id = "a2a_subscribe_task_post", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The task id (the request id)"),
    ),
    responses(
        (status = 200, description = "`StreamResponse` events: the task, then its updates until it ends", body = SseEvent, content_type = "text/event-stream"),
        (status = 400, description = "UNSUPPORTED_OPERATION: the task has ended", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn rest_subscribe_post(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    rest_subscribe(invoker, rt, path).await
}

/// HTTP+JSON: `ListTasks`.
#[utoipa::path(
    get, path = "/a2a/{id}/tasks", operation_id = "a2a_list_tasks", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("contextId" = Option<String>, Query, description = "Only this context's tasks"),
        ("status" = Option<String>, Query, description = "Only tasks in this state (`TASK_STATE_…`)"),
        ("pageSize" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Tasks per page (default 50)"),
        ("pageToken" = Option<String>, Query, description = "The previous page's `nextPageToken`"),
    ),
    responses(
        (status = 200, description = "`{tasks, nextPageToken, pageSize}`, newest first", body = Object),
        (status = 400, description = "INVALID_REQUEST: a parameter is malformed", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND, or no such live agent (A2A's google.rpc error shape)", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn rest_list(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .map_err(|_| ApiError::bad_field("query", "the query string is malformed"))?;
    let params: serde_json::Map<String, Value> = query
        .into_inner()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(rest_answer(
        list(&rt, &invoker, agent, &Value::Object(params)).await,
    ))
}
