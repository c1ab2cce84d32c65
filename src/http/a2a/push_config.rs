//! A task's push notification config (A2A's `…TaskPushNotificationConfig` methods and the
//! HTTP+JSON routes under `/tasks/{tid}/pushNotificationConfigs`): one config per task, kept
//! with its run by the run store (`RunStore::change_a2a_push`), so that it holds whichever node
//! runs the task and whatever state the task is in. Creating one on a task that has ended
//! pushes the final task to it at once; deleting it cancels a push not yet delivered.
//!
//! Both protocol versions' shapes are read: 1.0's flat `TaskPushNotificationConfig`
//! (`{taskId, id, url, token, authentication: {scheme, credentials}}`) and 0.3's
//! `{taskId, pushNotificationConfig: {id, url, token, authentication: {schemes, credentials}}}`
//! (0.3 names the task `id` and the config `pushNotificationConfigId` in get, list and delete).

use actix_web::{web, HttpResponse};
use actors::runtime::Runtime;
use events::run::{A2aPush, A2aPushChange};
use serde_json::{json, Value};
use uuid::Uuid;

use super::super::error::ApiError;
use super::super::extract::{agent_id, Body, Invoker};
use super::super::responses::{
    Forbidden, PayloadTooLarge, RequestTimeout, Unauthorized, Unavailable, UnsupportedMediaType,
};
use super::{rest_answer, visible, A2aError};

/// A push config as kept with its task: the URL checked, the secrets sealed for it. `field`
/// names the config in errors (`params.configuration.taskPushNotificationConfig`).
pub(super) fn push_config(
    rt: &Runtime,
    agent: Uuid,
    config: &Value,
    field: &str,
) -> Result<A2aPush, A2aError> {
    let bad = |what: &str| A2aError::InvalidParams(format!("{field}.{what}"));
    if !config.is_object() {
        return Err(A2aError::InvalidParams(format!(
            "{field} must be an object"
        )));
    }
    let url = config
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .filter(|u| u.len() <= 2048)
        .ok_or_else(|| bad("url must be an http(s) URL"))?
        .to_owned();
    let text = |v: Option<&Value>, what: &str| -> Result<Option<String>, A2aError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= 4096 => Ok(Some(s.clone())),
            Some(_) => Err(bad(&format!("{what} must be a string"))),
        }
    };
    let seal = |value: String, field: &str| {
        rt.cipher()
            .seal(&value, &events::secret::Place::a2a_push(agent, &url, field))
    };
    // An empty token is none (protobuf JSON clients send unset strings as "").
    let token = text(config.get("token"), "token")?
        .filter(|t| !t.is_empty())
        .map(|t| seal(t, "token"));
    let auth = config.get("authentication").filter(|a| !a.is_null());
    let scheme = match auth.and_then(|a| a.get("schemes")) {
        // 0.3: a list of schemes, of which the first is used.
        Some(Value::Array(schemes)) => text(schemes.first(), "authentication.schemes[0]")?,
        Some(Value::Null) | None => {
            text(auth.and_then(|a| a.get("scheme")), "authentication.scheme")?
        }
        Some(_) => return Err(bad("authentication.schemes must be a list of strings")),
    }
    .filter(|s| !s.is_empty());
    if scheme
        .as_deref()
        .is_some_and(|s| !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(bad("authentication.scheme must be a word such as Bearer"));
    }
    let credentials = text(
        auth.and_then(|a| a.get("credentials")),
        "authentication.credentials",
    )?
    .filter(|c| !c.is_empty())
    .map(|c| seal(c, "credentials"));
    let id = text(config.get("id"), "id")?
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    Ok(A2aPush {
        id,
        url,
        token,
        scheme,
        credentials,
    })
}

/// A push config as a 1.0 client sees it: never its secrets.
fn view(tid: Uuid, config: &A2aPush) -> Value {
    let mut view = json!({"id": config.id, "taskId": tid, "url": config.url});
    if let Some(scheme) = &config.scheme {
        view["authentication"] = json!({ "scheme": scheme });
    }
    view
}

/// A push config as a 0.3 client sees it (`TaskPushNotificationConfig`).
fn view_v03(tid: Uuid, config: &A2aPush) -> Value {
    let mut inner = json!({"id": config.id, "url": config.url});
    if let Some(scheme) = &config.scheme {
        inner["authentication"] = json!({ "schemes": [scheme] });
    }
    json!({"taskId": tid, "pushNotificationConfig": inner})
}

/// The task a request names (`taskId`; 0.3's get, list and delete say `id`), and the config
/// it names if any (`id` beside a `taskId`; 0.3's `pushNotificationConfigId`).
fn named(params: &Value) -> Result<(&str, Option<&str>), A2aError> {
    let text = |name: &str| params.get(name).and_then(Value::as_str);
    if let Some(tid) = text("taskId") {
        return Ok((tid, text("id").or_else(|| text("pushNotificationConfigId"))));
    }
    let tid = text("id")
        .ok_or_else(|| A2aError::InvalidParams("params.taskId must be a string".into()))?;
    Ok((tid, text("pushNotificationConfigId")))
}

/// The config a create request carries, and the field that names it in errors: 1.0's flat
/// `TaskPushNotificationConfig`, 0.3's `pushNotificationConfig`, or a `config` holding either.
fn carried(params: &Value) -> (&Value, &'static str) {
    let inner = |v: &Value, name: &str| v.get(name).filter(|v| v.is_object()).is_some();
    if inner(params, "config") {
        let config = &params["config"];
        if inner(config, "pushNotificationConfig") {
            return (
                &config["pushNotificationConfig"],
                "params.config.pushNotificationConfig",
            );
        }
        return (config, "params.config");
    }
    if inner(params, "pushNotificationConfig") {
        return (
            &params["pushNotificationConfig"],
            "params.pushNotificationConfig",
        );
    }
    (params, "params")
}

/// Which shape the answer takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    V1,
    V03,
}

/// `CreateTaskPushNotificationConfig` (0.3: `tasks/pushNotificationConfig/set`): the task's
/// config becomes this one (a task keeps one); if the task has ended, its final state is
/// pushed to it now.
pub(super) async fn create(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    params: &Value,
    shape: Shape,
) -> Result<Value, A2aError> {
    let tid = params
        .get("taskId")
        .and_then(Value::as_str)
        .ok_or_else(|| A2aError::InvalidParams("params.taskId must be a string".into()))?;
    let (config, field) = carried(params);
    let mut config = push_config(rt, agent, config, field)?;
    if let (Some(id), "params.config" | "params.config.pushNotificationConfig") =
        (params.get("configId").and_then(Value::as_str), field)
    {
        if !id.is_empty() {
            config.id = id.to_owned();
        }
    }
    let run = visible(rt, invoker, agent, tid).await?;
    let rid = run.run.request_id;
    let stored = rt
        .runs()
        .change_a2a_push(rid, A2aPushChange::Set(config))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| A2aError::TaskNotFound(format!("task {tid} not found")))?;
    if stored
        .run
        .push
        .as_ref()
        .and_then(|p| p.next_attempt_at)
        .is_some()
    {
        rt.wake_pusher();
    }
    let config = stored
        .a2a_push
        .as_ref()
        .ok_or_else(|| A2aError::TaskNotFound(format!("task {tid} not found")))?;
    Ok(match shape {
        Shape::V1 => view(rid, config),
        Shape::V03 => view_v03(rid, config),
    })
}

/// `GetTaskPushNotificationConfig` and `ListTaskPushNotificationConfigs`: the task's config (one
/// at most). Get without a config id answers the task's config, if it has one.
pub(super) async fn read(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    params: &Value,
    one: bool,
    shape: Shape,
) -> Result<Value, A2aError> {
    let (tid, wanted) = named(params)?;
    let run = visible(rt, invoker, agent, tid).await?;
    let rid = run.run.request_id;
    let mut configs = run
        .a2a_push
        .iter()
        .filter(|c| !one || wanted.is_none_or(|w| c.id == w))
        .map(|c| match shape {
            Shape::V1 => view(rid, c),
            Shape::V03 => view_v03(rid, c),
        });
    match (one, shape) {
        (true, _) => configs
            .next()
            .ok_or_else(|| A2aError::TaskNotFound(format!("task {tid} has no such push config"))),
        (false, Shape::V1) => Ok(json!({ "configs": configs.collect::<Vec<_>>() })),
        (false, Shape::V03) => Ok(Value::Array(configs.collect())),
    }
}

/// `DeleteTaskPushNotificationConfig`: the task's config goes if it is the one named, and with
/// it a push of it not yet delivered. Deleting a config the task does not have (again, or
/// never given) is not an error, as in A2A's reference server; a task the caller may not see is
/// `TaskNotFound`.
pub(super) async fn delete(
    rt: &Runtime,
    invoker: &Invoker,
    agent: Uuid,
    params: &Value,
) -> Result<(), A2aError> {
    let (tid, wanted) = named(params)?;
    let wanted = wanted.ok_or_else(|| {
        A2aError::InvalidParams("params.id must name the push config to delete".into())
    })?;
    let run = visible(rt, invoker, agent, tid).await?;
    // Decided in the store: a config that replaced this one meanwhile stays.
    rt.runs()
        .change_a2a_push(run.run.request_id, A2aPushChange::Delete(wanted.to_owned()))
        .await
        .map_err(ApiError::from)?;
    Ok(())
}

/// The 0.3 shape of a JSON-RPC method's answer, where it differs.
pub(super) fn shape_of(v1: bool) -> Shape {
    if v1 {
        Shape::V1
    } else {
        Shape::V03
    }
}

/// HTTP+JSON: `CreateTaskPushNotificationConfig`.
#[utoipa::path(
    post, path = "/a2a/{id}/tasks/{tid}/pushNotificationConfigs", operation_id = "a2a_create_push_config", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The task id (the request id)"),
    ),
    request_body(content = Object, description = "A2A `TaskPushNotificationConfig`: `{id, url, token, authentication: {scheme, credentials}}` (the task's one config from now on)"),
    responses(
        (status = 200, description = "The config as stored (`{id, taskId, url, authentication: {scheme}}`, never its secrets); a task that has ended is pushed to it now", body = Object),
        (status = 400, description = "INVALID_REQUEST naming the field, in A2A's google.rpc error shape `{error: {code, status, message, details}}`, or a body Hangar cannot read (its own error shape)", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND, or no such agent", body = Object),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    ),
)]
pub(in crate::http) async fn rest_create(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
    Body(mut params): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let (id, tid) = path.into_inner();
    let agent = agent_id(&id)?;
    if !params.is_object() {
        return Ok(rest_answer(Err(A2aError::InvalidParams(
            "the body must be a TaskPushNotificationConfig object".into(),
        ))));
    }
    params["taskId"] = json!(tid);
    Ok(rest_answer(
        create(&rt, &invoker, agent, &params, Shape::V1).await,
    ))
}

/// HTTP+JSON: `ListTaskPushNotificationConfigs`.
#[utoipa::path(
    get, path = "/a2a/{id}/tasks/{tid}/pushNotificationConfigs", operation_id = "a2a_list_push_configs", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The task id (the request id)"),
    ),
    responses(
        (status = 200, description = "`{configs}`: the task's config, if it has one", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND, or no such agent", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(in crate::http) async fn rest_list(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, tid) = path.into_inner();
    let agent = agent_id(&id)?;
    let params = json!({ "taskId": tid });
    Ok(rest_answer(
        read(&rt, &invoker, agent, &params, false, Shape::V1).await,
    ))
}

/// HTTP+JSON: `GetTaskPushNotificationConfig`.
#[utoipa::path(
    get, path = "/a2a/{id}/tasks/{tid}/pushNotificationConfigs/{cid}", operation_id = "a2a_get_push_config", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The task id (the request id)"),
        ("cid" = String, Path, description = "The config's id"),
    ),
    responses(
        (status = 200, description = "The config (never its secrets)", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND: no such task, or it has no such config", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(in crate::http) async fn rest_get(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, tid, cid) = path.into_inner();
    let agent = agent_id(&id)?;
    let params = json!({ "taskId": tid, "id": cid });
    Ok(rest_answer(
        read(&rt, &invoker, agent, &params, true, Shape::V1).await,
    ))
}

/// HTTP+JSON: `DeleteTaskPushNotificationConfig`.
#[utoipa::path(
    delete, path = "/a2a/{id}/tasks/{tid}/pushNotificationConfigs/{cid}", operation_id = "a2a_delete_push_config", tag = "protocols",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ("tid" = String, Path, description = "The task id (the request id)"),
        ("cid" = String, Path, description = "The config's id"),
    ),
    responses(
        (status = 200, description = "`{}`: the task has no such config now (deleting again is not an error); a push of it not yet delivered is cancelled", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "TASK_NOT_FOUND", body = Object),
        (status = 503, response = Unavailable),
    ),
)]
pub(in crate::http) async fn rest_delete(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, tid, cid) = path.into_inner();
    let agent = agent_id(&id)?;
    let params = json!({ "taskId": tid, "id": cid });
    Ok(rest_answer(
        delete(&rt, &invoker, agent, &params)
            .await
            .map(|()| json!({})),
    ))
}
