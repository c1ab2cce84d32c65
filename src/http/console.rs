//! `GET /console`: the web console, a handful of static files compiled into the binary
//! (`src/console/`), so there is nothing to fetch at run time, no CDN and no separate build. The
//! page holds no secret: it asks for the admin token and calls the API like any other client,
//! so these routes need no auth.
//!
//! The answers carry a strict Content-Security-Policy (scripts and styles from this origin
//! only, no inline code, no framing, requests to this origin only): the console renders
//! agent data that its authors typed (names, templates, outputs), and the policy is the second
//! wall behind its rendering as text.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::resource;
use super::responses::NotFound;

/// A file of the console: the name it is served under, its media type, its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $type:expr),* $(,)?) => {
        &[$(Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../console/", $name)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. `index.html` is the page (`GET /console`); the rest are under
/// `/console/NAME`. A file added to `src/console/` is served once it is listed here.
static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "console.css" => "text/css; charset=utf-8",
    "app.js" => JS,
    "api.js" => JS,
    "dom.js" => JS,
    "agents.js" => JS,
    "agent.js" => JS,
    "draft.js" => JS,
    "flowgraph.js" => JS,
    "preview.js" => JS,
    "endpoint.js" => JS,
    "connections.js" => JS,
    "keys.js" => JS,
    "runs.js" => JS,
    "threads.js" => JS,
    "audit.js" => JS,
    "favicon.svg" => "image/svg+xml",
};

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/console", [(Method::GET, web::to(page))]))
        .service(resource(
            "/console/{asset}",
            [(Method::GET, web::to(asset))],
        ));
}

/// The web console's page. No auth: the page asks for the admin token and keeps it in the
/// tab's `sessionStorage`.
#[utoipa::path(
    get, path = "/console", operation_id = "console", tag = "console",
    security(()),
    responses(
        (status = 200, description = "The console's HTML page", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified (`If-None-Match` named the current `ETag`)"),
    ),
)]
pub(super) async fn page(req: HttpRequest) -> HttpResponse {
    serve(&req, &ASSETS[0])
}

/// A script, style sheet or image of the console, compiled into the binary.
#[utoipa::path(
    get, path = "/console/{asset}", operation_id = "console_asset", tag = "console",
    security(()),
    params(("asset" = String, Path, description = "A file name such as `app.js`")),
    responses(
        (status = 200, description = "The file: a script, the style sheet or the icon", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "image/svg+xml"),
        )),
        (status = 304, description = "Not modified (`If-None-Match` named the current `ETag`)"),
        (status = 404, response = NotFound),
    ),
)]
pub(super) async fn asset(
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    ASSETS
        .iter()
        .skip(1)
        .find(|a| a.name == name.as_str())
        .map(|a| serve(&req, a))
        .ok_or_else(|| ApiError::not_found(format!("console file '{name}'")))
}

/// One validator for every file: the hash of the whole console, so a new binary with changed
/// files is fetched again and an unchanged one is answered 304.
fn etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| {
        let mut hasher = DefaultHasher::new();
        for a in ASSETS {
            a.name.hash(&mut hasher);
            a.bytes.hash(&mut hasher);
        }
        format!("\"console-{:016x}\"", hasher.finish())
    })
}

fn serve(req: &HttpRequest, asset: &Asset) -> HttpResponse {
    let etag = etag();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        // Revalidated on every load (cheap: a 304), so an upgraded server is never paired
        // with a stale script.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if fresh {
        return res.finish();
    }
    res.content_type(asset.content_type).body(asset.bytes)
}
