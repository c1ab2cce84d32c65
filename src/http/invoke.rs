//! The deployed endpoints: sync invoke, preview of the draft, async submit, poll (long-poll),
//! cancel. Answers as the contract's "Invocation" section says.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actors::runtime::{Request, Run, RunStatus, Runtime};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{agent_id, Invoker, OptionalBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents/{id}/invoke", web::post().to(invoke))
        .route("/v1/agents/{id}/preview", web::post().to(preview))
        .route("/v1/agents/{id}/invoke/async", web::post().to(submit))
        .route("/v1/agents/{id}/requests/{rid}", web::get().to(poll))
        .route("/v1/agents/{id}/requests/{rid}", web::delete().to(cancel));
}

/// Longest long-poll, in seconds.
const MAX_WAIT_S: u64 = 30;

#[derive(Deserialize)]
struct InvokeBody {
    #[serde(default = "empty_object")]
    input: Value,
}

impl Default for InvokeBody {
    fn default() -> Self {
        InvokeBody {
            input: empty_object(),
        }
    }
}

fn empty_object() -> Value {
    json!({})
}

/// A printable header value of at most 255 bytes, if present.
fn token_header(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get(name) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= 255 => Ok(Some(s.trim().to_owned())),
        _ => Err(ApiError::bad_field(
            name,
            format!("{name} must be 1-255 printable characters"),
        )),
    }
}

fn request(req: &HttpRequest, body: InvokeBody) -> Result<Request, ApiError> {
    Ok(Request {
        input: body.input,
        member: token_header(req, "X-Hangar-Member")?,
        idempotency_key: token_header(req, "Idempotency-Key")?,
        depth: 0,
    })
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
        RunStatus::Succeeded => Ok(HttpResponse::Ok().json(run)),
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

async fn invoke(
    _: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<InvokeBody>,
) -> Result<HttpResponse, ApiError> {
    let run = rt.invoke(agent_id(&id)?, request(&req, body)?).await?;
    sync_answer(&run.run)
}

async fn preview(
    _: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<InvokeBody>,
) -> Result<HttpResponse, ApiError> {
    let run = rt.preview(agent_id(&id)?, request(&req, body)?).await?;
    sync_answer(&run.run)
}

async fn submit(
    _: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<InvokeBody>,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let run = rt.submit(agent, request(&req, body)?).await?;
    let poll_url = format!("/v1/agents/{agent}/requests/{}", run.run.request_id);
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, poll_url.clone()))
        .insert_header((header::RETRY_AFTER, "1"))
        .json(json!({"request_id": run.run.request_id, "status": run.run.status, "poll_url": poll_url})))
}

#[derive(Deserialize)]
struct PollQuery {
    wait: Option<u64>,
}

async fn poll(
    _: Invoker,
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
    let run = rt.wait(agent, rid, Duration::from_secs(wait)).await?;
    let mut res = HttpResponse::Ok();
    if !run.run.status.is_final() {
        res.insert_header((header::RETRY_AFTER, "1"));
    }
    Ok(res.json(run.run))
}

async fn cancel(
    _: Invoker,
    rt: web::Data<Runtime>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, rid) = path.into_inner();
    let agent = agent_id(&id)?;
    let rid = rid
        .parse()
        .map_err(|_| ApiError::not_found(format!("request {rid}")))?;
    let run = rt.cancel(agent, rid).await?;
    Ok(HttpResponse::Ok().json(run.run))
}
