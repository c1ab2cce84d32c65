//! One delivery attempt: the signed POST of a final Run, and what its answer means.

use std::time::{Duration, SystemTime};

use awc::error::SendRequestError;
use awc::http::header;
use chrono::Utc;

use super::schedule::parse_retry_after;
use super::signature::{self, sign};
use crate::runtime::Run;

/// How long a receiver has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how one run is pushed. Holds plaintext secrets: deliberately no `Debug`.
pub(super) struct Target {
    pub url: String,
    pub token: String,
    /// The agent's `whsec_…` signing secret.
    pub secret: String,
}

/// What an attempt came to.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    /// A 2xx.
    Delivered(u16),
    /// `410 Gone`: the receiver wants no more; stop at once.
    Gone,
    /// Anything else; `status` is `None` when no answer came (timeout, connection failure).
    Failed {
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
}

/// The client every attempt of one pusher shares: 15 s to answer, redirects returned as they
/// are (a 3xx is a failed attempt, never followed to another host).
pub(super) fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(TIMEOUT)
        .disable_redirects()
        .finish()
}

/// POSTs `run` to the target, signed for this moment. Fails only if the secret is malformed.
pub(super) async fn attempt(
    client: &awc::Client,
    target: &Target,
    run: &Run,
) -> Result<Answer, signature::Error> {
    let body = serde_json::to_vec(run).unwrap_or_default();
    let msg_id = run.request_id.to_string();
    let timestamp = Utc::now().timestamp();
    let signature = sign(&target.secret, &msg_id, timestamp, &body)?;
    let sent = client
        .post(target.url.as_str())
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::AUTHORIZATION, format!("Bearer {}", target.token)))
        .insert_header(("webhook-id", msg_id))
        .insert_header(("webhook-timestamp", timestamp.to_string()))
        .insert_header(("webhook-signature", signature))
        .timeout(TIMEOUT)
        .send_body(body)
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            // awc's errors name neither the URL nor header values, so they are safe to log.
            let why = match &e {
                SendRequestError::Timeout => format!("no answer within {} s", TIMEOUT.as_secs()),
                other => other.to_string(),
            };
            tracing::warn!(error = %why, "push attempt got no answer");
            return Ok(Answer::Failed {
                status: None,
                retry_after: None,
            });
        }
    };
    let status = response.status();
    Ok(if status.is_success() {
        Answer::Delivered(status.as_u16())
    } else if status == awc::http::StatusCode::GONE {
        Answer::Gone
    } else {
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        Answer::Failed {
            status: Some(status.as_u16()),
            retry_after,
        }
    })
}
