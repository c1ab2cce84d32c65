//! The HTTP layer: thin handlers that translate requests into registry calls and results into
//! responses. Routes are grouped by resource, one module each.

mod agents;
mod connections;
mod deployment;
pub mod error;
pub mod extract;
mod invoke;
mod keys;
mod log;

use actix_web::{web, HttpResponse};

pub use deployment::PublicUrl;
pub use extract::AdminToken;

use error::ApiError;

/// Every route of the API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(extract::MAX_BODY))
        .route("/healthz", web::get().to(healthz))
        .configure(agents::routes)
        .configure(connections::routes)
        .configure(deployment::routes)
        .configure(log::routes)
        .configure(invoke::routes)
        .configure(keys::routes)
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Prometheus text; no auth, and nothing secret in it.
async fn metrics(rt: web::Data<actors::runtime::Runtime>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(rt.metrics_text())
}

/// Unknown routes answer in the API's error shape too.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "route {} {}",
        req.method(),
        req.path()
    )))
}
