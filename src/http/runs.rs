//! The list of an agent's requests (runs), newest first, a page at a time: what the console's
//! runs page and an operator's "what ran lately" read. One run is `GET /requests/{rid}`.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::runtime::{Run, RunStatus, Runtime};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{agent_id, Invoker};
use super::resource;
use super::responses::{BadRequest, Forbidden, NotFound, Unauthorized, Unavailable};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/requests",
        [(Method::GET, web::to(list))],
    ));
}

/// Longest page.
const MAX_LIMIT: usize = 200;
/// Pages read from the store to fill one page when filters drop runs: bounds the work of one
/// request on an agent with many runs this caller may not see.
const MAX_SCANS: usize = 20;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Runs per page (1-200, default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// The `next` of the previous page: runs created before that one.
    before: Option<Uuid>,
    /// Only runs in this status.
    status: Option<RunStatus>,
}

/// A page of runs.
#[derive(Serialize, ToSchema)]
pub(super) struct RunPage {
    /// Newest first.
    runs: Vec<Run>,
    /// Pass as `before` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Uuid>,
}

/// List the agent's requests (sync and async), newest first, within the run retention.
///
/// An invocation key of a member sees that member's runs only; the admin token sees all.
#[utoipa::path(
    get, path = "/v1/agents/{id}/requests", operation_id = "list_requests", tag = "invocation",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of runs, newest first", body = RunPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn list(
    invoker: Invoker,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let agent = agent_id(&id)?;
    let q = web::Query::<ListQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::bad_field(
            "query",
            format!("limit (1-{MAX_LIMIT}), before (a request id) and status (a run status): {e}"),
        )
    })?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_field(
            "limit",
            format!("limit must be 1-{MAX_LIMIT}"),
        ));
    }
    // 404 for an agent that does not exist, as every route under it.
    rt.state(agent).await?;
    let mut before = q.before;
    let mut runs: Vec<Run> = Vec::new();
    let mut next = None;
    'scan: for scan in 1..=MAX_SCANS {
        let page = rt.runs().list_runs(agent, before, limit).await?;
        let exhausted = page.len() < limit;
        for run in page {
            let rid = run.run.request_id;
            let wanted = invoker.may_see(run.member.as_deref())
                && q.status.is_none_or(|s| run.run.status == s);
            if wanted {
                if runs.len() == limit {
                    // One more is there: the next page starts after the last one shown.
                    next = runs.last().map(|r| r.request_id);
                    break 'scan;
                }
                runs.push(run.run);
            }
            before = Some(rid);
        }
        if exhausted {
            break;
        }
        if scan == MAX_SCANS {
            // Filters dropped most of what was read: the page is short, and goes on from the
            // last run read.
            next = before;
        }
    }
    Ok(HttpResponse::Ok().json(RunPage { runs, next }))
}
