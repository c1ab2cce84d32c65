//! The flow node by node: it exists, every target it names exists, each node leads somewhere,
//! and what each kind of node refers to (tools, collaborators, knowledge) is there.

use std::collections::HashSet;

use minijinja::Environment;
use uuid::Uuid;

use crate::spec::{limits, AgentSpec, Flow, Node, NodeKind};

use super::graph::{check_cycles, check_reachability, Edge, Graph};
use super::templates::{check_expression, check_json_templates, check_template};
use super::{check_range, listing, Report};

/// What a node may refer to outside the flow.
struct Scope<'a> {
    agent_id: Uuid,
    tools: HashSet<&'a str>,
    /// The tools a model may be given: those with `parameters`.
    described: HashSet<&'a str>,
    collaborators: HashSet<Uuid>,
    has_knowledge: bool,
}

pub(super) fn check_flow(
    agent_id: Uuid,
    spec: &AgentSpec,
    jinja: &Environment,
    report: &mut Report,
) {
    let flow = match &spec.flow {
        Some(flow) if !flow.nodes.is_empty() => flow,
        Some(_) => {
            report.error(
                "no_flow",
                "flow.nodes",
                "the flow has no nodes: add at least a start node and an `end` node",
            );
            return;
        }
        None => {
            report.error(
                "no_flow",
                "flow",
                "the agent has no flow: set `flow` with a `start` node id and its `nodes`",
            );
            return;
        }
    };
    let graph = Graph::build(flow);
    if graph.start.is_none() {
        report.error(
            "unknown_start",
            "flow.start",
            format!(
                "start '{}' is not a node of the flow: set `start` to one of: {}",
                flow.start,
                listing(flow.nodes.iter().map(|n| n.id.as_str()))
            ),
        );
    }
    let scope = Scope {
        agent_id,
        tools: spec.tools.iter().map(|t| t.name.as_str()).collect(),
        described: spec
            .tools
            .iter()
            .filter(|t| t.parameters.is_some())
            .map(|t| t.name.as_str())
            .collect(),
        collaborators: spec
            .collaborators
            .iter()
            .filter_map(|c| Uuid::parse_str(c).ok())
            .collect(),
        has_knowledge: !spec.knowledge.is_empty(),
    };
    for (i, node) in flow.nodes.iter().enumerate() {
        let path = format!("flow.nodes[{i}]");
        if graph.is_duplicate(i, &node.id) {
            report.error(
                "duplicate_node",
                format!("{path}.id"),
                format!(
                    "another node is already called '{}': give each node a unique id",
                    node.id
                ),
            );
        }
        check_edges(node, graph.edges(i), flow, report);
        check_has_next(node, &path, report);
        check_node_kind(node, &scope, jinja, &path, report);
        if let Some(timeout) = node.timeout_s {
            check_range(
                "timeout_out_of_range",
                "node timeout_s",
                timeout,
                &limits::NODE_TIMEOUT_S,
                format!("{path}.timeout_s"),
                report,
            );
        }
    }
    check_cycles(flow, &graph, report);
    if let Some(start) = graph.start {
        check_reachability(flow, &graph, start, report);
    }
}

/// Every target a node names must exist.
fn check_edges(node: &Node, edges: &[Edge], flow: &Flow, report: &mut Report) {
    for edge in edges.iter().filter(|e| e.to.is_none()) {
        let (code, field) = if edge.is_else {
            ("unknown_else", "`else`")
        } else {
            ("unknown_next", "`next`")
        };
        report.error(
            code,
            edge.path.as_str(),
            format!(
                "node '{}' goes to '{}', which is not a node of the flow: set {field} to one \
                 of: {}",
                node.id,
                edge.target,
                listing(flow.nodes.iter().map(|n| n.id.as_str()))
            ),
        );
    }
}

/// Every node but an `end` must lead somewhere, or a run would stop without an output.
fn check_has_next(node: &Node, path: &str, report: &mut Report) {
    match &node.kind {
        NodeKind::End { .. } => {}
        NodeKind::Condition {
            branches,
            otherwise: None,
        } if branches.is_empty() => report.error(
            "missing_next",
            format!("{path}.branches"),
            format!(
                "condition '{}' has no branches and no `else`, so a run stops there: add a \
                 branch {{\"when\", \"next\"}} or an `else` target",
                node.id
            ),
        ),
        NodeKind::Condition { .. } => {}
        _ if node.next.is_none() => report.error(
            "missing_next",
            format!("{path}.next"),
            format!(
                "{} node '{}' has no `next`, so a run could never finish: set `next` to the node \
                 that follows (an `end` node to finish)",
                node.kind.type_name(),
                node.id
            ),
        ),
        _ => {}
    }
}

fn check_node_kind(
    node: &Node,
    scope: &Scope,
    jinja: &Environment,
    path: &str,
    report: &mut Report,
) {
    match &node.kind {
        NodeKind::Transform { output } | NodeKind::End { output } => {
            check_json_templates(jinja, output, format!("{path}.output"), report);
        }
        NodeKind::Model {
            prompt,
            tools,
            max_steps,
            ..
        } => {
            check_template(jinja, prompt, format!("{path}.prompt"), report);
            for (j, tool) in tools.iter().enumerate() {
                check_model_tool(node, tool, scope, format!("{path}.tools[{j}]"), report);
            }
            if let Some(steps) = max_steps {
                check_range(
                    "max_steps_out_of_range",
                    "max_steps",
                    *steps,
                    &limits::MAX_STEPS,
                    format!("{path}.max_steps"),
                    report,
                );
            }
        }
        NodeKind::Input { prompt } => {
            check_template(jinja, prompt, format!("{path}.prompt"), report);
        }
        NodeKind::Tool { tool, args } => {
            if !scope.tools.contains(tool.as_str()) {
                report.error(
                    "unknown_tool",
                    format!("{path}.tool"),
                    format!(
                        "node '{}' calls tool '{tool}', which is not in `tools`: add the tool or \
                         name one of: {}",
                        node.id,
                        listing(scope.tools.iter().copied())
                    ),
                );
            }
            check_json_templates(jinja, args, format!("{path}.args"), report);
        }
        NodeKind::Knowledge { query, top_k } => {
            check_template(jinja, query, format!("{path}.query"), report);
            check_range(
                "top_k_out_of_range",
                "top_k",
                *top_k,
                &limits::TOP_K,
                format!("{path}.top_k"),
                report,
            );
            if !scope.has_knowledge {
                report.warning(
                    "no_knowledge_files",
                    path,
                    format!(
                        "knowledge node '{}' has no knowledge files to search: add files to \
                         `knowledge`, or remove the node",
                        node.id
                    ),
                );
            }
        }
        NodeKind::Condition { branches, .. } => {
            for (j, branch) in branches.iter().enumerate() {
                check_expression(
                    jinja,
                    &branch.when,
                    format!("{path}.branches[{j}].when"),
                    report,
                );
            }
        }
        NodeKind::Agent { agent, input } => {
            check_agent_node(node, agent, scope, path, report);
            check_json_templates(jinja, input, format!("{path}.input"), report);
        }
    }
}

/// What a model node offers its model: a tool with `parameters` (the model must know what to
/// send), `knowledge`, or a collaborator; each by a name a model can call (OpenAI function names
/// are 1-64 of `A-Za-z0-9_-`).
fn check_model_tool(node: &Node, tool: &str, scope: &Scope, path: String, report: &mut Report) {
    if tool == KNOWLEDGE_TOOL {
        if !scope.has_knowledge {
            report.warning(
                "no_knowledge_files",
                path,
                format!(
                    "model node '{}' offers `knowledge` but the agent has no knowledge files: add \
                     files to `knowledge`, or remove it from `tools`",
                    node.id
                ),
            );
        }
        return;
    }
    if let Ok(id) = Uuid::parse_str(tool) {
        if id != scope.agent_id && scope.collaborators.contains(&id) {
            return;
        }
    }
    if !scope.tools.contains(tool) {
        report.error(
            "unknown_tool",
            path,
            format!(
                "model node '{}' offers '{tool}', which is neither a tool in `tools`, \
                 \"knowledge\", nor a collaborator id in `collaborators`: name one of: {}",
                node.id,
                listing(scope.tools.iter().copied())
            ),
        );
    } else if !scope.described.contains(tool) {
        report.error(
            "missing_parameters",
            path,
            format!(
                "tool '{tool}' has no `parameters`, so model node '{}' cannot tell its model \
                 what to send: give the tool a JSON Schema object in `parameters`",
                node.id
            ),
        );
    } else if !is_function_name(tool) {
        report.error(
            "invalid_tool_name",
            path,
            format!(
                "tool '{tool}' cannot be offered to a model: a model calls tools by names of 1-64 \
                 letters, digits, `_` or `-`; rename the tool"
            ),
        );
    }
}

/// The name a model node offers the knowledge search under.
pub const KNOWLEDGE_TOOL: &str = "knowledge";

/// Whether `name` is a valid OpenAI function name.
pub fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_agent_node(node: &Node, agent: &str, scope: &Scope, path: &str, report: &mut Report) {
    match Uuid::parse_str(agent) {
        Ok(id) if id == scope.agent_id => report.error(
            "self_collaborator",
            format!("{path}.agent"),
            format!(
                "node '{}' calls this agent itself: call another agent listed in `collaborators`",
                node.id
            ),
        ),
        Ok(id) if scope.collaborators.contains(&id) => {}
        _ => report.error(
            "unknown_collaborator",
            format!("{path}.agent"),
            format!(
                "node '{}' calls agent '{agent}', which is not in `collaborators`: add its id to \
                 `collaborators` or call a listed one",
                node.id
            ),
        ),
    }
}
