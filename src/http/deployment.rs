//! Deploy, redeploy, rollback, undeploy, and the read-only view of the live version with
//! copy-paste snippets for its endpoints.

use actix_web::{web, HttpRequest, HttpResponse};
use actors::runtime::Runtime;
use actors::Registry;
use events::view;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::agents::agent_response;
use super::error::ApiError;
use super::extract::{agent_id, if_match, Admin, OptionalBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents/{id}/deploy", web::post().to(deploy))
        .route("/v1/agents/{id}/undeploy", web::post().to(undeploy))
        .route("/v1/agents/{id}/deployment", web::get().to(deployment))
        .route("/v1/agents/{id}/versions", web::get().to(versions));
}

/// Where clients reach this server, for the URLs in a deployment; `--public-url` overrides what
/// the request's Host header says.
#[derive(Clone, Default)]
pub struct PublicUrl(pub Option<String>);

#[derive(Deserialize, Default)]
struct DeployBody {
    /// Re-deploy this earlier version (rollback) instead of the draft.
    #[serde(default)]
    version: Option<u32>,
}

async fn deploy(
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

async fn undeploy(
    _: Admin,
    rt: web::Data<Runtime>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let out = rt.undeploy(agent_id(&id)?, if_match(&req)?).await?;
    Ok(agent_response(HttpResponse::Ok(), &out.state))
}

async fn deployment(
    _: Admin,
    reg: web::Data<Registry>,
    public: web::Data<PublicUrl>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    deployment_response(&state, &base_url(&public, &req))
}

async fn versions(
    _: Admin,
    reg: web::Data<Registry>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = reg.state(agent_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(json!({ "versions": view::versions(&state) })))
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
    let urls = Endpoints::of(
        state.id,
        base,
        state
            .live()
            .is_some_and(|v| v.snapshot.endpoint.asynchronous.push_enabled),
    );
    let mut body = serde_json::to_value(&d).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "endpoints".into(),
            json!({"sync": urls.sync, "async_poll": urls.async_poll, "async_push": urls.async_push}),
        );
        map.insert("snippets".into(), urls.snippets());
    }
    Ok(HttpResponse::Ok().json(body))
}

/// The agent's endpoint URLs: derived from its id only, so they never change across redeploys.
struct Endpoints {
    sync: String,
    async_poll: String,
    async_push: Option<String>,
}

impl Endpoints {
    fn of(id: Uuid, base: &str, push: bool) -> Self {
        let async_url = format!("{base}/v1/agents/{id}/invoke/async");
        Endpoints {
            sync: format!("{base}/v1/agents/{id}/invoke"),
            async_push: push.then(|| async_url.clone()),
            async_poll: async_url,
        }
    }

    /// Ready to copy; the token is read from `HANGAR_TOKEN` so no secret sits in a snippet.
    fn snippets(&self) -> serde_json::Value {
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
        json!({"curl": curl, "python": python, "node": node})
    }
}
