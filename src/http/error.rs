//! The one error shape of the API and the one place that maps domain and runtime errors to
//! statuses: `{"error": {"code", "message", "details"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use events::Rejection;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// A 400 naming the request field at fault.
    pub fn bad_field(field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            .with_details(json!({ "field": field }))
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as 'Authorization: Bearer <token>'",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            res.insert_header(("Retry-After", "1"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a body that came too slowly may never come: the connection is not
            // kept for another request.
            res.force_close();
        }
        res.json(ErrorBody {
            error: ErrorObject {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        })
    }
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_request", "message": "field 'flow.nodes[0].next': invalid type: integer `3`, expected a string", "details": {"field": "flow.nodes[0].next"}}}))]
pub struct ErrorBody<'a> {
    pub error: ErrorObject<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorObject<'a> {
    /// Stable, snake_case: what a client branches on (`invalid_request`, `not_found`, …).
    pub code: &'a str,
    /// What went wrong and how to fix it, for a person.
    pub message: &'a str,
    /// Structured context, or `null`: the field at fault (`{"field": "flow.nodes[0].next"}`),
    /// the Problems of a refused deploy, the request id and Run of a failed sync run, …
    #[schema(value_type = serde_json::Value)]
    pub details: &'a Value,
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let message = r.to_string();
        match r {
            Rejection::Invalid { field, message } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("{field}: {message}"),
            )
            .with_details(json!({ "field": field })),
            Rejection::SecretRequired { field, message } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "secret_required",
                format!("{field}: {message}"),
            )
            .with_details(json!({ "field": field })),
            Rejection::MembersHoldCredentials {
                connection,
                members,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "member_credentials_stored",
                format!(
                    "{message}; they never follow a new server: remove the connection (which \
                     drops them) and add it again with the new server, then members set theirs \
                     again (DELETE and POST .../connections)"
                ),
            )
            .with_details(
                json!({ "field": "server", "connection": connection, "members": members }),
            ),
            Rejection::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            Rejection::Duplicate { .. } => {
                ApiError::new(StatusCode::CONFLICT, "duplicate", message)
            }
            Rejection::NotDeployed => ApiError::new(
                StatusCode::CONFLICT,
                "not_deployed",
                "the agent is not deployed; POST /deploy first",
            ),
            Rejection::Stale { expected, actual } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "conflict",
                format!("{message}; GET the agent again and retry with If-Match: \"{actual}\""),
            )
            .with_details(json!({"expected": expected, "actual": actual})),
            Rejection::ValidationFailed(report) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!("{message}; fix them (GET /validation lists them) and deploy again"),
            )
            .with_details(json!({"errors": report.errors, "warnings": report.warnings})),
            // The same code and details as a refused deploy: a client handles both alike.
            Rejection::NotRunnable(report) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!("{message}; fix them (GET /validation lists them) and preview again"),
            )
            .with_details(json!({"errors": report.errors, "warnings": report.warnings})),
        }
    }
}

impl From<actors::Error> for ApiError {
    fn from(e: actors::Error) -> Self {
        use events::store::Error as Store;
        match e {
            actors::Error::Rejected(r) => r.into(),
            actors::Error::Store(Store::Conflict { .. }) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the agent was changed concurrently; retry",
            ),
            actors::Error::Store(Store::Unavailable(why)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)
            }
            actors::Error::Store(e) => {
                tracing::error!(error = %e, "storage failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_error",
                    e.to_string(),
                )
            }
            actors::Error::Unavailable(why) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)
            }
            actors::Error::Overloaded => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "the agent is at its limit of runs in flight (max_concurrency) or its queue is full (HANGAR_MAX_QUEUE requests, or HANGAR_AGENT_QUOTA_MB of queued input); retry after Retry-After seconds",
            ),
            actors::Error::IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                e.to_string(),
            ),
            actors::Error::AlreadyFinished(run) => ApiError::new(
                StatusCode::CONFLICT,
                "already_finished",
                format!("the request already ended {}; nothing to cancel", run.status.as_str()),
            )
            .with_details(serde_json::json!({ "run": run })),
            actors::Error::ThreadBusy(ref thread) => {
                ApiError::new(StatusCode::CONFLICT, "thread_busy", e.to_string())
                    .with_details(json!({ "thread_id": thread }))
            }
            actors::Error::NotWaiting(status) => {
                ApiError::new(StatusCode::CONFLICT, "not_waiting", e.to_string())
                    .with_details(json!({ "status": status }))
            }
        }
    }
}

impl From<events::store::Error> for ApiError {
    fn from(e: events::store::Error) -> Self {
        actors::Error::Store(e).into()
    }
}
