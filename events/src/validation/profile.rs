//! The profile: name, description and model.

use crate::connection::Connection;
use crate::egress;
use crate::secret::Sealed;
use crate::spec::{limits, AgentSpec, Model};

use super::tools::find_connection;
use super::{check_range, listing, Report};

pub(super) fn check_profile(spec: &AgentSpec, report: &mut Report) {
    if spec.name.trim().is_empty() {
        report.error(
            "missing_name",
            "name",
            "the agent has no name: set `name` to a short, non-empty title",
        );
    }
    if spec.description.trim().is_empty() {
        report.error(
            "missing_description",
            "description",
            "the agent has no description: set `description` to a sentence saying what it does \
             (search and callers rely on it)",
        );
    }
}

pub(super) fn check_model(
    model: Option<&Model>,
    connections: &[Connection<Sealed>],
    report: &mut Report,
) {
    let Some(model) = model else {
        report.error(
            "unsupported_model",
            "model",
            "no model is set: set `model` with provider \"echo\" (built in) or \"openai\"",
        );
        return;
    };
    match model.provider.as_str() {
        "echo" => {}
        "openai" => match model.base_url.as_deref() {
            Some(url) if egress::is_http_url(url) => {
                if let Some(why) = egress::literal_refusal(url) {
                    report.error("egress_denied", "model.base_url", why);
                }
            }
            _ => report.error(
                "unsupported_model",
                "model.base_url",
                "the openai provider needs `base_url`, the http:// or https:// URL of an \
                     OpenAI-compatible server (e.g. \"https://api.openai.com/v1\")",
            ),
        },
        other => report.error(
            "unsupported_model",
            "model.provider",
            format!(
                "model provider '{other}' is not supported: use \"echo\" (built in, offline) or \
                 \"openai\" (any OpenAI-compatible server)"
            ),
        ),
    }
    if let Some(id) = &model.connection {
        match find_connection(connections, id) {
            None => report.error(
                "unknown_connection",
                "model.connection",
                format!(
                    "the model uses connection '{id}', which this agent does not have: add it \
                     (POST .../connections) or name one of: {}",
                    listing(connections.iter().map(|c| c.id.as_str()))
                ),
            ),
            Some(connection) => check_model_origin(model, connection, report),
        }
    }
    if let Some(timeout) = model.timeout_s {
        check_range(
            "timeout_out_of_range",
            "model timeout_s",
            timeout,
            &limits::MODEL_TIMEOUT_S,
            "model.timeout_s",
            report,
        );
    }
}

/// A connection's credentials were given for its `server`: the model may use them only on that
/// server's origin, or whoever can edit the draft could point `base_url` at their own host and
/// collect them (the runtime refuses such a call too, for previews of invalid drafts). Only an
/// `openai` model with a well-formed `base_url` is judged: anything else is reported above.
fn check_model_origin(model: &Model, connection: &Connection<Sealed>, report: &mut Report) {
    let Some(url) = model.base_url.as_deref() else {
        return;
    };
    if model.provider != "openai" || !egress::is_http_url(url) {
        return;
    }
    if !egress::same_origin(url, &connection.server) {
        report.error(
            "connection_origin_mismatch",
            "model.base_url",
            format!(
                "base_url {url} is not on the server of connection '{}' ({}): its credentials go \
                 only there. Point base_url at that server (same scheme, host and port), or use \
                 a connection whose server is the model's",
                connection.id, connection.server
            ),
        );
    }
}
