//! The HTTP layer: thin handlers that translate requests into registry calls and results into
//! responses. Routes are grouped by resource, one module each; `openapi` describes them all.

mod a2a;
mod agents;
mod cluster;
mod connection_checks;
mod connections;
mod console;
mod deployment;
pub mod error;
pub mod extract;
mod invoke;
mod keys;
mod log;
mod openai;
mod openapi;
mod responses;
mod runs;
mod stream;
mod threads;
pub mod view;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpResponse, Resource, ResponseError, Route};

pub use deployment::PublicUrl;
pub use extract::{AdminToken, BodyTimeout};

use error::ApiError;

/// Every route of the API. Each handler carries its `#[utoipa::path]`, and `openapi::ApiDoc`
/// lists them all: a route added here and not there fails `tests/openapi.rs`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(extract::MAX_BODY))
        .app_data(extract::path_config())
        .service(resource(
            "/healthz",
            [(Method::GET, web::to(cluster::healthz))],
        ))
        .service(resource(
            "/v1/cluster",
            [(Method::GET, web::to(cluster::cluster))],
        ))
        .service(resource(
            "/openapi.json",
            [(Method::GET, web::to(openapi::document))],
        ))
        // The router tries each `{id}` pattern in turn (a regex each), so the hot routes go first.
        .configure(invoke::routes)
        .configure(runs::routes)
        .configure(stream::routes)
        .configure(openai::routes)
        .configure(a2a::routes)
        .configure(threads::routes)
        .configure(agents::routes)
        .configure(connections::routes)
        .configure(connection_checks::routes)
        .configure(deployment::routes)
        .configure(log::routes)
        .configure(keys::routes)
        .configure(console::routes)
        .service(resource("/metrics", [(Method::GET, web::to(metrics))]));
}

/// One path with its methods. Any other method answers 405 `method_not_allowed` with `Allow`
/// listing these (a wrong method is not an unknown route).
fn resource<const N: usize>(path: &str, routes: [(Method, Route); N]) -> Resource {
    let allow = routes
        .iter()
        .map(|(method, _)| method.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut resource = web::resource(path);
    for (method, route) in routes {
        resource = resource.route(route.method(method));
    }
    resource.default_service(web::to(move |req: actix_web::HttpRequest| {
        let allow = allow.clone();
        async move {
            let mut res = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} answers {allow}, not {}", req.path(), req.method()),
            )
            .error_response();
            if let Ok(value) = header::HeaderValue::from_str(&allow) {
                res.headers_mut().insert(header::ALLOW, value);
            }
            res
        }
    }))
}

/// Prometheus text; no auth, and nothing secret in it.
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "server",
    security(()),
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain")),
)]
async fn metrics(rt: web::Data<actors::runtime::Runtime>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(rt.metrics_text().await?))
}

/// Unknown routes answer in the API's error shape too.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "route {} {}",
        req.method(),
        req.path()
    )))
}
