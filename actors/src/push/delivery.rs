//! One delivery attempt: the signed POST of a final Run, and what its answer means.

use std::time::{Duration, SystemTime};

use awc::error::SendRequestError;
use awc::http::header;
use chrono::Utc;

use super::schedule::parse_retry_after;
use super::signature::{self, sign};
use crate::egress;
use events::run::Run;

/// How long a receiver has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how one run is pushed. Holds plaintext secrets: deliberately no `Debug`.
pub(super) struct Target {
    pub url: String,
    /// The `Authorization` header's value, if one is sent.
    pub authorization: Option<String>,
    /// Further headers (an A2A config's token).
    pub headers: Vec<(&'static str, String)>,
    /// The agent's `whsec_…` signing secret; without one (an A2A push of an agent that never
    /// enabled push) the Standard Webhooks headers are left out.
    pub secret: Option<String>,
    /// An A2A push: the body is a `StreamResponse` with the task, not the Run.
    pub a2a: bool,
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
/// are (a 3xx is a failed attempt, never followed to another host), and every connection
/// through the egress policy ([`crate::egress`]).
pub(super) fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(TIMEOUT)
        .disable_redirects()
        .connector(egress::connector())
        .finish()
}

/// Why no attempt could be made: nothing that trying again would change, so the push is given
/// up at once (the outbox marks it failed and logs this reason).
#[derive(Debug, thiserror::Error)]
pub(super) enum Unsent {
    /// The signing secret is malformed.
    #[error(transparent)]
    Signature(#[from] signature::Error),
    /// The egress policy refuses the webhook's host (it resolves to a metadata, link-local or
    /// operator-denied address). The same URL would be refused on every retry.
    #[error(transparent)]
    Egress(egress::Denied),
}

/// The delivery's `webhook-id`: the request id for the final Run. A paused Run (`input_required`)
/// is a delivery of its own, so it gets an id of its own, `<request id>.input_required.<8 hex of
/// what it waits for>`: a receiver that drops repeated ids must not drop the final Run as a
/// repeat of the pause.
pub(super) fn message_id(run: &Run) -> String {
    use sha2::{Digest, Sha256};
    if run.status != events::run::RunStatus::InputRequired {
        return run.request_id.to_string();
    }
    let pending = serde_json::to_vec(&run.pending).unwrap_or_default();
    let digest = Sha256::digest(&pending);
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}.input_required.{short}", run.request_id)
}

/// POSTs `run` to the target, signed for this moment. Fails only if the secret is malformed or
/// the egress policy refuses the destination.
pub(super) async fn attempt(
    client: &awc::Client,
    target: &Target,
    run: &Run,
    body: Vec<u8>,
) -> Result<Answer, Unsent> {
    let msg_id = message_id(run);
    let timestamp = Utc::now().timestamp();
    let mut request = client
        .post(target.url.as_str())
        .insert_header((header::CONTENT_TYPE, "application/json"));
    if let Some(authorization) = &target.authorization {
        request = request.insert_header((header::AUTHORIZATION, authorization.as_str()));
    }
    for (name, value) in &target.headers {
        request = request.insert_header((*name, value.as_str()));
    }
    if let Some(secret) = &target.secret {
        let signature = sign(secret, &msg_id, timestamp, &body)?;
        request = request
            .insert_header(("webhook-id", msg_id))
            .insert_header(("webhook-timestamp", timestamp.to_string()))
            .insert_header(("webhook-signature", signature));
    }
    let sent = request.timeout(TIMEOUT).send_body(body).await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            if let Some(denied) = egress::denied(&e) {
                return Err(Unsent::Egress(denied.clone()));
            }
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use events::run::RunStatus;

    /// A webhook whose host the policy refuses is not an attempt that may succeed later: it
    /// comes back as `Unsent::Egress`, which the outbox records as a failed push at once.
    #[actix_rt::test]
    async fn a_refused_webhook_host_is_unsent_not_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = awc::Client::builder()
            .disable_redirects()
            .connector(egress::connector_with(Arc::new(egress::Policy {
                allow_loopback: false,
                ..egress::Policy::default()
            })))
            .finish();
        let target = Target {
            url: format!("http://localhost:{port}/hook"),
            authorization: Some("Bearer t".into()),
            headers: Vec::new(),
            secret: Some(format!(
                "whsec_{}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])
            )),
            a2a: false,
        };
        let now = Utc::now();
        let run = Run {
            request_id: Uuid::now_v7(),
            agent_id: Uuid::now_v7(),
            version: 1,
            status: RunStatus::Succeeded,
            output: None,
            error: None,
            created_at: now,
            started_at: Some(now),
            finished_at: Some(now),
            push: None,
            pending: None,
            parent: None,
            thread_id: None,
        };
        let unsent = attempt(&client, &target, &run, Vec::new())
            .await
            .expect_err("refused");
        let Unsent::Egress(denied) = unsent else {
            panic!("{unsent}")
        };
        assert_eq!(denied.reason, egress::Reason::Loopback);
        assert!(listener.accept().is_err(), "nothing connected");
    }
}
