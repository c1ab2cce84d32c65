//! Request extractors: the admin token, invocation keys, JSON bodies that name the failing field, agent ids,
//! and `If-Match`.

use std::future::{ready, Future};
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;
use serde_json::json;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::error::ApiError;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// How long a request body may take to arrive once its headers have, as app data
/// (`HANGAR_BODY_TIMEOUT_S`; without it, [`BodyTimeout::default`]). actix-web's own request
/// timeout covers only the headers: without this, a client that dribbles a body a byte at a time
/// holds a connection and a growing buffer for as long as it likes.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl Default for BodyTimeout {
    /// The contract's 30 s.
    fn default() -> Self {
        BodyTimeout(Duration::from_secs(30))
    }
}

/// The server's admin token, as app data.
#[derive(Clone)]
pub struct AdminToken(pub String);

/// Proof that the request carried the admin token. Compared in constant time.
pub struct Admin;

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn is_admin(req: &HttpRequest) -> bool {
    let expected = req.app_data::<web::Data<AdminToken>>();
    match (bearer(req), expected) {
        (Some(given), Some(expected)) => bool::from(given.as_bytes().ct_eq(expected.0.as_bytes())),
        _ => false,
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if is_admin(req) {
            return Box::pin(ready(Ok(Admin)));
        }
        let presented = bearer(req).map(str::to_owned);
        let runtime = req
            .app_data::<web::Data<actors::runtime::Runtime>>()
            .cloned();
        Box::pin(async move {
            let (Some(key), Some(runtime)) = (presented, runtime) else {
                return Err(ApiError::unauthorized());
            };
            // A valid invocation key is a credential, only not for this route: 403 says so,
            // where 401 would send its holder looking for a typo.
            if is_invocation_key(&runtime, &key).await {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "an invocation key can only invoke its agent (/invoke, /requests); it cannot \
                     manage agents: send the admin token",
                ));
            }
            Err(ApiError::unauthorized())
        })
    }
}

/// Whether `key` is a live invocation key of the agent it names. Every stored hash is compared,
/// so the time taken says nothing of which matched.
async fn is_invocation_key(runtime: &actors::runtime::Runtime, key: &str) -> bool {
    let Some(owner) = events::key::agent_of(key) else {
        return false;
    };
    let Ok(state) = runtime.state(owner).await else {
        return false;
    };
    let hash = events::key::hash(key);
    state.keys.values().fold(false, |found, k| {
        found | bool::from(k.sha256.as_bytes().ct_eq(hash.as_bytes()))
    })
}

/// Who is calling an invocation route, proven: the admin token, or one of the agent's own
/// invocation keys (a valid key of another agent is 403; anything else 401).
///
/// `member` is whose credentials the run uses and whose runs the caller may see. With a key, it
/// is the key's own member (`POST /keys {"member": …}`): a header cannot make a key act as
/// someone else, so `X-Hangar-Member` with a key is 403 unless it names that same member. Only
/// the admin token may act for any member through the header (an operator's tool).
pub struct Invoker {
    /// The key's id, or `None` for the admin token.
    pub key: Option<String>,
    pub member: Option<String>,
}

impl Invoker {
    /// Whose `Idempotency-Key`s these are: the same key sent by two callers names two requests,
    /// so one caller can never be handed another's run (the contract's "Changes to v1").
    pub fn scope(&self) -> &str {
        self.key.as_deref().unwrap_or("admin")
    }

    /// Whether the caller may see (poll, cancel) a run asked for by `run_member`. The admin sees
    /// every run. A key sees only the runs of its own member; a key without a member, only the
    /// runs that have none: so a member's run (its input, its output from that member's
    /// credentials) is never shown to anyone acting as someone else.
    pub fn may_see(&self, run_member: Option<&str>) -> bool {
        self.key.is_none() || self.member.as_deref() == run_member
    }
}

/// A printable header value of at most 255 bytes, if present; else 400 naming the header.
pub fn token_header(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
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

pub const MEMBER_HEADER: &str = "X-Hangar-Member";

impl FromRequest for Invoker {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let named = token_header(req, MEMBER_HEADER);
        if is_admin(req) {
            return Box::pin(ready(named.map(|member| Invoker { key: None, member })));
        }
        let presented = bearer(req).map(str::to_owned);
        let path_agent = req
            .match_info()
            .get("id")
            .and_then(|id| Uuid::try_parse(id).ok());
        let runtime = req
            .app_data::<web::Data<actors::runtime::Runtime>>()
            .cloned();
        Box::pin(async move {
            let (Some(key), Some(runtime)) = (presented, runtime) else {
                return Err(ApiError::unauthorized());
            };
            let Some(owner) = events::key::agent_of(&key) else {
                return Err(ApiError::unauthorized());
            };
            let state = runtime
                .state(owner)
                .await
                .map_err(|_| ApiError::unauthorized())?;
            let hash = events::key::hash(&key);
            // Every stored hash is compared in constant time, so the time taken says nothing of
            // how much of a guess matched.
            let mut found = None;
            for (id, k) in &state.keys {
                if bool::from(k.sha256.as_bytes().ct_eq(hash.as_bytes())) {
                    found = Some((id.clone(), k.member.clone()));
                }
            }
            let Some((kid, key_member)) = found else {
                return Err(ApiError::unauthorized());
            };
            if path_agent != Some(owner) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this invocation key belongs to another agent",
                ));
            }
            match named? {
                Some(named) if Some(&named) != key_member.as_ref() => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "{MEMBER_HEADER} cannot make an invocation key act as another member: \
                         call with a key issued for that member (POST /v1/agents/{owner}/keys \
                         with {{\"member\": NAME}}), or leave the header out"
                    ),
                )
                .with_details(json!({"header": MEMBER_HEADER, "key_member": key_member}))),
                _ => Ok(Invoker {
                    key: Some(kid),
                    member: key_member,
                }),
            }
        })
    }
}

/// A JSON body of type `T`. A parse failure is a 400 naming the field (`flow.nodes[0].next`).
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if let Err(e) = uncompressed(req) {
            return Box::pin(ready(Err(e)));
        }
        let bytes = read_body(req, payload);
        Box::pin(async move { parse_json(&bytes.await?).map(Body) })
    }
}

/// A body that may be empty or `null` (then `T::default()`).
pub struct OptionalBody<T>(pub T);

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if let Err(e) = uncompressed(req) {
            return Box::pin(ready(Err(e)));
        }
        let bytes = read_body(req, payload);
        Box::pin(async move {
            let bytes = bytes.await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalBody(T::default()));
            }
            parse_json::<Option<T>>(&bytes).map(|body| OptionalBody(body.unwrap_or_default()))
        })
    }
}

/// Refuses a compressed body (415) before a byte of it is read. Inflating is where a 1 MB gzip
/// body becomes half a gigabyte of memory, and no client of a JSON API of this size needs it
/// (docs/security.md, "Request bodies"). `identity` is no encoding, so it passes.
fn uncompressed(req: &HttpRequest) -> Result<(), ApiError> {
    let encodings = req.headers().get_all(header::CONTENT_ENCODING);
    for value in encodings {
        let text = value.to_str().unwrap_or("?");
        let compressed = text
            .split(',')
            .map(str::trim)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
        if compressed {
            let shown: String = text.chars().take(40).collect();
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "request bodies are taken uncompressed only (Content-Encoding: {shown}); \
                     send the body again without Content-Encoding"
                ),
            )
            .with_details(serde_json::json!({ "field": "Content-Encoding" })));
        }
    }
    Ok(())
}

/// The whole body, at most [`MAX_BODY`] bytes, arriving within the [`BodyTimeout`] (else 408).
fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> impl Future<Output = Result<web::Bytes, ApiError>> {
    let limit = req.app_data::<BodyTimeout>().copied().unwrap_or_default().0;
    let bytes = web::Bytes::from_request(req, payload);
    async move {
        match actix_web::rt::time::timeout(limit, bytes).await {
            Ok(read) => read.map_err(payload_error),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s; send it again, all at once",
                    limit.as_secs()
                ),
            )),
        }
    }
}

fn payload_error(e: actix_web::Error) -> ApiError {
    match e.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {MAX_BODY} bytes"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("could not read the body: {e}"),
        ),
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if field == "." || field.is_empty() {
            ApiError::bad_field(
                "",
                format!("the body is not valid JSON for this route: {inner}"),
            )
        } else {
            ApiError::bad_field(&field, format!("field '{field}': {inner}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_field("", format!("unexpected data after the JSON body: {e}"))
    })?;
    Ok(value)
}

/// An agent id from the path. Anything that is not a UUID names no agent: 404.
pub fn agent_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("agent {raw}")))
}

/// The seq of `If-Match: "<seq>"`, if sent; `*` means any.
pub fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.headers().get("If-Match") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let inner = text.trim_start_matches("W/").trim_matches('"');
    inner.parse().map(Some).map_err(|_| {
        ApiError::bad_field(
            "If-Match",
            "If-Match must be the ETag of the agent, e.g. \"12\"",
        )
    })
}

/// Path segments that cannot be decoded (e.g. `%FF`) name nothing: 404 in the API's error shape,
/// not actix's plain-text default.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|e, req| ApiError::not_found(format!("{} ({e})", req.path())).into())
}

/// `If-Match`, as the OpenAPI document describes it for every write.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `if_match`; this only documents it.
pub struct IfMatchHeader {
    /// The agent's ETag, `"<seq>"`: the write is refused with 412 (nothing written) if the agent
    /// has moved past it. `*`, or no header: write whatever the seq.
    #[param(
        rename = "If-Match",
        pattern = r#"^(\*|(W/)?"?[0-9]+"?)$"#,
        example = "\"12\""
    )]
    if_match: Option<String>,
}

/// The optional headers of the run routes, as the OpenAPI document describes them; `invoke.rs`
/// reads them (1-255 printable characters, else 400 naming the header).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only documents them.
pub struct RunHeaders {
    /// The same key within 24 h returns the same request: no second run.
    #[param(
        rename = "Idempotency-Key",
        pattern = r"^[\t -~]*[!-~][\t -~]*$",
        max_length = 255
    )]
    idempotency_key: Option<String>,
    /// With the admin token only: the member to act for, whose own credentials `member`
    /// connections use. With an invocation key it is 403 unless it names the key's own member
    /// (a key issued with `{"member": NAME}` acts as that member without it).
    #[param(
        rename = "X-Hangar-Member",
        pattern = r"^[\t -~]*[!-~][\t -~]*$",
        max_length = 255
    )]
    member: Option<String>,
    /// The conversation thread, as `thread_id` in the body (the same one if both are sent).
    #[param(
        rename = "X-Hangar-Thread",
        pattern = r"^[A-Za-z0-9._:-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    thread: Option<String>,
}
