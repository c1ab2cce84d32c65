//! Deploy, redeploy, rollback, undeploy, and the read-only view of the live version with
//! copy-paste snippets for its endpoints.

use super::view::{self, AgentView, DeploymentView, VersionView};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::runtime::Runtime;
use actors::Registry;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::agents::agent_response;
use super::error::{ApiError, ErrorBody};
use super::extract::{agent_id, if_match, Admin, IfMatchHeader, OptionalBody};
use super::resource;
use super::responses::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, RequestTimeout,
    Unauthorized, Unavailable, UnsupportedMediaType,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(
        "/v1/agents/{id}/deploy",
        [(Method::POST, web::to(deploy))],
    ))
    .service(resource(
        "/v1/agents/{id}/undeploy",
        [(Method::POST, web::to(undeploy))],
    ))
    .service(resource(
        "/v1/agents/{id}/deployment",
        [(Method::GET, web::to(deployment))],
    ))
    .service(resource(
        "/v1/agents/{id}/versions",
        [(Method::GET, web::to(versions))],
    ));
}

/// Where clients reach this server, for the URLs in a deployment; `--public-url` overrides what
/// the request's Host header says.
#[derive(Clone, Default)]
pub struct PublicUrl(pub Option<String>);

/// Empty (or `{}`) deploys the draft; `{"version": N}` re-deploys version N (rollback).
#[derive(Deserialize, Default, ToSchema)]
pub(super) struct DeployBody {
    /// Re-deploy this earlier version (rollback) instead of the draft.
    #[serde(default)]
    version: Option<u32>,
}

/// Snapshot the draft and make it live, or roll back to an earlier version.
///
/// Refused with 422 `validation_failed` when the draft has any error or warning: nothing is
/// deployed and no event written.
#[utoipa::path(
    post, path = "/v1/agents/{id}/deploy", operation_id = "deploy", tag = "deployment",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        IfMatchHeader,
    ),
    request_body(content = Option<DeployBody>, description = "Optional: `{\"version\": N}` for a rollback"),
    responses(
        (status = 200, description = "The new live version", body = Deployment),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "validation_failed: the draft has errors or warnings (`details: {errors, warnings}`, Problems); or invalid_request on `version` never deployed", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn deploy(
    _: Admin,
    rt: web::Data<Runtime>,
    public: web::Data<PublicUrl>,
    id: web::Path<String>,
    req: HttpRequest,
    OptionalBody(body): OptionalBody<DeployBody>,
) -> Result<HttpResponse, ApiError> {
    let id = agent_id(&id)?;
    let out = rt.deploy(id, body.version, if_match(&req)?).await?;
    deployment_response(&out.state, &base_url(&public, &req))
}

/// Stop serving now: runs in flight and queued are cancelled, the agent is back to draft.
#[utoipa::path(
    post, path = "/v1/agents/{id}/undeploy", operation_id = "undeploy", tag = "deployment",
    params(
        ("id" = Uuid, Path, description = "The agent's id"),
        IfMatchHeader,
    ),
    responses(
        (status = 200, description = "The agent, back in draft", body = AgentView, headers(
            ("ETag" = String, description = "\"<seq>\""),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "not_deployed: the agent is not live (or `conflict`: a concurrent change; retry)", body = ErrorBody),
        (status = 412, response = PreconditionFailed),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn undeploy(
    _: Admin,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let out = rt.undeploy(agent_id(&id)?, if_match(&req)?).await?;
    Ok(agent_response(HttpResponse::Ok(), &out.state))
}

/// The live version, read-only, with its endpoint URLs and ready-to-copy snippets.
#[utoipa::path(
    get, path = "/v1/agents/{id}/deployment", operation_id = "get_deployment", tag = "deployment",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The live version", body = Deployment),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "not_found: no such agent; not_deployed: the agent has no live version", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn deployment(
    _: Admin,
    reg: web::Data<Registry>,
    public: web::Data<PublicUrl>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    deployment_response(&state, &base_url(&public, &req))
}

#[derive(Serialize, ToSchema)]
pub(super) struct VersionList {
    versions: Vec<VersionView>,
}

/// Every deployed version, oldest first.
#[utoipa::path(
    get, path = "/v1/agents/{id}/versions", operation_id = "list_versions", tag = "deployment",
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The versions", body = VersionList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn versions(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(VersionList {
        versions: view::versions(&state),
    }))
}

fn base_url(public: &PublicUrl, req: &HttpRequest) -> String {
    match &public.0 {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

fn deployment_response(state: &events::AgentState, base: &str) -> Result<HttpResponse, ApiError> {
    let Some(d) = view::deployment(state) else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_deployed",
            "the agent has no live version; POST /deploy first",
        ));
    };
    let endpoints = Endpoints::of(
        state.id,
        base,
        state
            .live()
            .is_some_and(|v| v.snapshot.endpoint.asynchronous.push_enabled),
    );
    let snippets = endpoints.snippets();
    Ok(HttpResponse::Ok().json(Deployment {
        deployment: d,
        endpoints,
        snippets,
    }))
}

/// The live version as answered: the snapshot, its endpoint URLs, and snippets to call them.
#[derive(Serialize, ToSchema)]
pub(super) struct Deployment {
    #[serde(flatten)]
    deployment: DeploymentView,
    endpoints: Endpoints,
    snippets: Snippets,
}

/// The agent's endpoint URLs: derived from its id only, so they never change across redeploys.
#[derive(Serialize, ToSchema)]
struct Endpoints {
    sync: String,
    async_poll: String,
    /// The async URL when the live version pushes results, else `null`.
    async_push: Option<String>,
    /// `POST`: a sync run's events as server-sent events.
    stream: String,
    /// The `base_url` of any OpenAI SDK (`POST …/chat/completions`, `GET …/models`).
    openai_base_url: String,
    /// The A2A agent card (no auth); the A2A endpoint is its `supportedInterfaces`.
    agent_card: String,
}

/// Ready-to-copy calls of the endpoints; each reads the token from `$HANGAR_TOKEN`.
#[derive(Serialize, ToSchema)]
struct Snippets {
    curl: String,
    python: String,
    node: String,
    /// The OpenAI Python SDK pointed at the agent.
    openai: String,
}

impl Endpoints {
    fn of(id: Uuid, base: &str, push: bool) -> Self {
        let async_url = format!("{base}/v1/agents/{id}/invoke/async");
        Endpoints {
            sync: format!("{base}/v1/agents/{id}/invoke"),
            async_push: push.then(|| async_url.clone()),
            async_poll: async_url,
            stream: format!("{base}/v1/agents/{id}/invoke/stream"),
            openai_base_url: format!("{base}/v1/agents/{id}"),
            agent_card: format!("{base}/a2a/{id}/.well-known/agent-card.json"),
        }
    }

    /// Ready to copy; the token is read from `HANGAR_TOKEN` so no secret sits in a snippet.
    fn snippets(&self) -> Snippets {
        let (sync, poll) = (&self.sync, &self.async_poll);
        let curl = format!(
            "# sync: waits for the result\n\
             curl -sS -X POST '{sync}' \\\n  -H \"Authorization: Bearer $HANGAR_TOKEN\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"input\": {{}}}}'\n\n\
             # async: 202 with a request id, then poll the Location it returns\n\
             curl -sS -X POST '{poll}' \\\n  -H \"Authorization: Bearer $HANGAR_TOKEN\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"input\": {{}}}}'\n"
        );
        let python = format!(
            "import os, time, requests\n\
             headers = {{\"Authorization\": f\"Bearer {{os.environ['HANGAR_TOKEN']}}\"}}\n\n\
             # sync\n\
             run = requests.post(\"{sync}\", json={{\"input\": {{}}}}, headers=headers, timeout=310).json()\n\
             print(run[\"output\"])\n\n\
             # async: submit, then poll (long-poll with ?wait=)\n\
             accepted = requests.post(\"{poll}\", json={{\"input\": {{}}}}, headers=headers, timeout=30).json()\n\
             while True:\n    run = requests.get(accepted[\"poll_url\"] + \"?wait=30\", headers=headers, timeout=40).json()\n    if run[\"status\"] not in (\"queued\", \"running\"):\n        break\n\
             print(run[\"status\"], run[\"output\"])\n"
        );
        let node = format!(
            "const headers = {{ Authorization: `Bearer ${{process.env.HANGAR_TOKEN}}`, 'Content-Type': 'application/json' }};\n\n\
             // sync\n\
             const run = await (await fetch('{sync}', {{ method: 'POST', headers, body: JSON.stringify({{ input: {{}} }}) }})).json();\n\
             console.log(run.output);\n\n\
             // async: submit, then poll (long-poll with ?wait=)\n\
             const accepted = await (await fetch('{poll}', {{ method: 'POST', headers, body: JSON.stringify({{ input: {{}} }}) }})).json();\n\
             let result;\n\
             do {{ result = await (await fetch(accepted.poll_url + '?wait=30', {{ headers }})).json(); }} while (['queued', 'running'].includes(result.status));\n\
             console.log(result.status, result.output);\n"
        );
        let openai = format!(
            "import os\n\
             from openai import OpenAI\n\n\
             client = OpenAI(base_url=\"{}\", api_key=os.environ[\"HANGAR_TOKEN\"])\n\
             chat = client.chat.completions.create(model=\"agent\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])\n\
             print(chat.choices[0].message.content)\n\n\
             # streamed\n\
             for chunk in client.chat.completions.create(model=\"agent\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}], stream=True):\n    print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)\n\n\
             # A2A clients discover the agent at {}\n",
            self.openai_base_url, self.agent_card
        );
        Snippets {
            curl,
            python,
            node,
            openai,
        }
    }
}
