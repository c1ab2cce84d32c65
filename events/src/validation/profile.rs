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
        if find_connection(connections, id).is_none() {
            report.error(
                "unknown_connection",
                "model.connection",
                format!(
                    "the model uses connection '{id}', which this agent does not have: add it \
                     (POST .../connections) or name one of: {}",
                    listing(connections.iter().map(|c| c.id.as_str()))
                ),
            );
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
