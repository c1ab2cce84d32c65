//! Tools and connections: each tool's connection and security, its templates, and tools or
//! connections nothing uses.

use std::collections::HashSet;

use minijinja::Environment;

use crate::connection::Connection;
use crate::secret::Sealed;
use crate::spec::{AgentSpec, Flow, NodeKind, Tool};

use super::templates::{check_json_templates, check_template};
use super::{listing, Report};

/// The auth types a tool's `security` may name: the `type` of each connection [`crate::connection::Auth`].
const SECURITY_TYPES: [&str; 4] = ["api_key", "basic", "bearer", "key_value"];

pub(super) fn check_tools(
    spec: &AgentSpec,
    connections: &[Connection<Sealed>],
    jinja: &Environment,
    report: &mut Report,
) {
    let used: HashSet<&str> = tool_nodes(spec.flow.as_ref()).collect();
    let mut seen = HashSet::new();
    for (i, tool) in spec.tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        if !seen.insert(tool.name.as_str()) {
            report.error(
                "duplicate_tool",
                format!("{path}.name"),
                format!(
                    "another tool is already named '{}': give each tool a unique name",
                    tool.name
                ),
            );
        }
        check_tool_connection(tool, connections, &path, report);
        check_template(jinja, &tool.path, format!("{path}.path"), report);
        if let Some(body) = &tool.body {
            check_json_templates(jinja, body, format!("{path}.body"), report);
        }
        if let Some(parameters) = &tool.parameters {
            if !parameters.is_object() {
                report.error(
                    "invalid_parameters",
                    format!("{path}.parameters"),
                    format!(
                        "tool '{}' has `parameters` that are not a JSON Schema object: write \
                         e.g. {{\"type\": \"object\", \"properties\": {{...}}}}",
                        tool.name
                    ),
                );
            }
        }
        if !used.contains(tool.name.as_str()) {
            report.warning(
                "unused_tool",
                path,
                format!(
                    "no tool node or model node uses tool '{}': add a `tool` node that calls \
                     it, list it in a model node's `tools`, or remove it",
                    tool.name
                ),
            );
        }
    }
}

/// The tool names that tool nodes call and model nodes offer, in flow order.
fn tool_nodes(flow: Option<&Flow>) -> impl Iterator<Item = &str> {
    flow.into_iter()
        .flat_map(|flow| &flow.nodes)
        .flat_map(|node| match &node.kind {
            NodeKind::Tool { tool, .. } => vec![tool.as_str()],
            NodeKind::Model { tools, .. } => tools.iter().map(String::as_str).collect(),
            _ => vec![],
        })
}

fn check_tool_connection(
    tool: &Tool,
    connections: &[Connection<Sealed>],
    path: &str,
    report: &mut Report,
) {
    let connection = find_connection(connections, &tool.connection);
    if connection.is_none() {
        report.error(
            "unknown_connection",
            format!("{path}.connection"),
            format!(
                "tool '{}' uses connection '{}', which this agent does not have: add it \
                 (POST .../connections) or name one of: {}",
                tool.name,
                tool.connection,
                listing(connections.iter().map(|c| c.id.as_str()))
            ),
        );
    }
    if !SECURITY_TYPES.contains(&tool.security.as_str()) {
        report.error(
            "security_mismatch",
            format!("{path}.security"),
            format!(
                "tool '{}' names security '{}', which is no auth type: use one of {}",
                tool.name,
                tool.security,
                SECURITY_TYPES.join(", ")
            ),
        );
    } else if let Some(connection) = connection {
        let auth = connection.auth.type_name();
        if auth != tool.security {
            report.error(
                "security_mismatch",
                format!("{path}.security"),
                format!(
                    "tool '{}' expects {} auth but connection '{}' uses {auth}: set `security` \
                     to \"{auth}\" or point the tool at a connection with {} auth",
                    tool.name, tool.security, connection.id, tool.security
                ),
            );
        }
    }
}

pub(super) fn find_connection<'a>(
    connections: &'a [Connection<Sealed>],
    id: &str,
) -> Option<&'a Connection<Sealed>> {
    connections.iter().find(|c| c.id == id)
}

pub(super) fn check_unused_connections(
    spec: &AgentSpec,
    connections: &[Connection<Sealed>],
    report: &mut Report,
) {
    let model = spec.model.as_ref().and_then(|m| m.connection.as_deref());
    for connection in connections {
        let id = connection.id.as_str();
        let used = model == Some(id) || spec.tools.iter().any(|t| t.connection == id);
        if !used {
            report.warning(
                "unused_connection",
                format!("connections.{id}"),
                format!(
                    "connection '{id}' is used by no tool and not by the model: point a tool at \
                     it, or delete it"
                ),
            );
        }
    }
}
