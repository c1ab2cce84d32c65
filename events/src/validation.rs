//! Validation of a draft: every error and warning rule of the contract, each a [`Problem`] with
//! the path of the offending field. Any error or warning blocks deploy.
//!
//! The rules come in families, each a small function: the profile (name, description), the
//! model, tools and their connections, collaborators, the flow's nodes, and the flow as a graph.
//! Problems are reported in the order their fields appear in the spec, so the same draft always
//! yields the same report. `docs/validation.md` lists every code.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::ops::RangeInclusive;

use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::connection::Connection;
use crate::secret::Sealed;
use crate::spec::{limits, AgentSpec, Flow, Model, Node, NodeKind, Tool};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub code: String,
    pub message: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    /// Deployable: no error and no warning.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.warnings.is_empty()
    }

    fn error(&mut self, code: &str, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(problem(code, path, message));
    }

    fn warning(&mut self, code: &str, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(problem(code, path, message));
    }
}

fn problem(code: &str, path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        code: code.to_owned(),
        message: message.into(),
        path: path.into(),
    }
}

/// What validation needs to know of another agent named as a collaborator.
#[derive(Debug, Clone, PartialEq)]
pub struct Collaborator {
    pub name: String,
    pub live: bool,
}

/// Looks up other agents. Implemented by the runtime over the event store.
pub trait Directory {
    fn collaborator(&self, id: Uuid) -> Option<Collaborator>;
}

/// The auth types a tool's `security` may name: the `type` of each connection [`crate::connection::Auth`].
const SECURITY_TYPES: [&str; 4] = ["api_key", "basic", "bearer", "key_value"];

/// Validates `spec` as agent `agent_id` would deploy it with `connections`.
pub fn validate(
    agent_id: Uuid,
    spec: &AgentSpec,
    connections: &[Connection<Sealed>],
    directory: &dyn Directory,
) -> Report {
    let mut report = Report::default();
    // One environment compiles every template and expression: syntax only, nothing is rendered.
    let jinja = Environment::new();
    check_profile(spec, &mut report);
    check_model(spec.model.as_ref(), connections, &mut report);
    check_tools(spec, connections, &jinja, &mut report);
    check_collaborators(agent_id, &spec.collaborators, directory, &mut report);
    check_flow(agent_id, spec, &jinja, &mut report);
    check_unused_connections(spec, connections, &mut report);
    report
}

// ---- profile ----------------------------------------------------------------------------------

fn check_profile(spec: &AgentSpec, report: &mut Report) {
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

// ---- model ------------------------------------------------------------------------------------

fn check_model(model: Option<&Model>, connections: &[Connection<Sealed>], report: &mut Report) {
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
        "openai" => {
            if !model.base_url.as_deref().is_some_and(is_http_url) {
                report.error(
                    "unsupported_model",
                    "model.base_url",
                    "the openai provider needs `base_url`, the http:// or https:// URL of an \
                     OpenAI-compatible server (e.g. \"https://api.openai.com/v1\")",
                );
            }
        }
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

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|host| !host.is_empty() && !url.chars().any(char::is_whitespace))
}

// ---- tools and connections --------------------------------------------------------------------

fn check_tools(
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
        if !used.contains(tool.name.as_str()) {
            report.warning(
                "unused_tool",
                path,
                format!(
                    "no tool node uses tool '{}': add a `tool` node that calls it, or remove it",
                    tool.name
                ),
            );
        }
    }
}

/// The tool names that tool nodes call, in flow order.
fn tool_nodes(flow: Option<&Flow>) -> impl Iterator<Item = &str> {
    flow.into_iter()
        .flat_map(|flow| &flow.nodes)
        .filter_map(|node| match &node.kind {
            NodeKind::Tool { tool, .. } => Some(tool.as_str()),
            _ => None,
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

fn find_connection<'a>(
    connections: &'a [Connection<Sealed>],
    id: &str,
) -> Option<&'a Connection<Sealed>> {
    connections.iter().find(|c| c.id == id)
}

fn check_unused_connections(
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

// ---- collaborators ----------------------------------------------------------------------------

fn check_collaborators(
    agent_id: Uuid,
    collaborators: &[String],
    directory: &dyn Directory,
    report: &mut Report,
) {
    for (i, raw) in collaborators.iter().enumerate() {
        let path = format!("collaborators[{i}]");
        let Ok(id) = Uuid::parse_str(raw) else {
            report.error(
                "unknown_collaborator",
                path,
                format!("collaborator '{raw}' is not an agent id: use the UUID of another agent"),
            );
            continue;
        };
        if id == agent_id {
            report.error(
                "self_collaborator",
                path,
                "an agent cannot be its own collaborator: remove its own id from `collaborators`",
            );
            continue;
        }
        match directory.collaborator(id) {
            None => report.error(
                "unknown_collaborator",
                path,
                format!("no agent has id {id}: use the id of an existing agent, or remove it"),
            ),
            Some(other) if !other.live => report.error(
                "collaborator_not_live",
                path,
                format!(
                    "collaborator '{}' ({id}) is not deployed: deploy it first, or remove it",
                    other.name
                ),
            ),
            Some(_) => {}
        }
    }
}

// ---- flow: nodes ------------------------------------------------------------------------------

/// What a node may refer to outside the flow.
struct Scope<'a> {
    agent_id: Uuid,
    tools: HashSet<&'a str>,
    collaborators: HashSet<Uuid>,
    has_knowledge: bool,
}

fn check_flow(agent_id: Uuid, spec: &AgentSpec, jinja: &Environment, report: &mut Report) {
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
        NodeKind::Model { prompt } => {
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

fn check_range<T: PartialOrd + Display>(
    code: &str,
    what: &str,
    value: T,
    range: &RangeInclusive<T>,
    path: impl Into<String>,
    report: &mut Report,
) {
    if !range.contains(&value) {
        report.error(
            code,
            path,
            format!(
                "{what} {value} is out of range: use a value from {} to {}",
                range.start(),
                range.end()
            ),
        );
    }
}

/// Up to ten names for a "use one of" hint, so a huge draft does not make a huge message.
fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.collect();
    if names.is_empty() {
        return "(none yet)".to_owned();
    }
    names.sort_unstable();
    names.dedup();
    let more = names.len().saturating_sub(10);
    names.truncate(10);
    let mut out = names.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

// ---- templates and expressions ----------------------------------------------------------------

/// Compiles every string inside `value`; `path` grows `.key` and `[k]` on the way down.
fn check_json_templates(jinja: &Environment, value: &Value, path: String, report: &mut Report) {
    match value {
        Value::String(source) => check_template(jinja, source, path, report),
        Value::Array(items) => {
            for (k, item) in items.iter().enumerate() {
                check_json_templates(jinja, item, format!("{path}[{k}]"), report);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                check_json_templates(jinja, item, format!("{path}.{key}"), report);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn check_template(jinja: &Environment, source: &str, path: String, report: &mut Report) {
    if let Err(e) = jinja.template_from_str(source) {
        report.error(
            "bad_template",
            path,
            format!(
                "template does not compile ({}): fix the MiniJinja syntax, e.g. close every \
                 `{{{{ ... }}}}` and `{{% ... %}}`",
                describe(&e)
            ),
        );
    }
}

fn check_expression(jinja: &Environment, source: &str, path: String, report: &mut Report) {
    if let Err(e) = jinja.compile_expression(source) {
        report.error(
            "bad_expression",
            path,
            format!(
                "condition does not compile ({}): write one MiniJinja expression without \
                 braces, e.g. `input.count > 1`",
                describe(&e)
            ),
        );
    }
}

fn describe(e: &minijinja::Error) -> String {
    let what = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(line) => format!("{what}, line {line}"),
        None => what,
    }
}

// ---- flow: graph ------------------------------------------------------------------------------

/// The flow as a graph over node indices, built once for every graph rule.
struct Graph<'a> {
    /// Node index by id; when ids repeat, the first node owns the id.
    index: HashMap<&'a str, usize>,
    /// Each node's outgoing edges in spec order: branches, `else`, `next`.
    edges: Vec<Vec<Edge<'a>>>,
    start: Option<usize>,
}

struct Edge<'a> {
    /// The id the spec names.
    target: &'a str,
    /// The node it resolves to; `None` for an id that names no node.
    to: Option<usize>,
    /// The field that names the target, for problems about this edge.
    path: String,
    is_else: bool,
}

impl<'a> Graph<'a> {
    fn build(flow: &'a Flow) -> Self {
        let mut index = HashMap::new();
        for (i, node) in flow.nodes.iter().enumerate() {
            index.entry(node.id.as_str()).or_insert(i);
        }
        let edges = flow
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let path = format!("flow.nodes[{i}]");
                let mut out = Vec::new();
                let edge = |target: &'a str, path: String, is_else: bool| Edge {
                    target,
                    to: index.get(target).copied(),
                    path,
                    is_else,
                };
                if let NodeKind::Condition {
                    branches,
                    otherwise,
                } = &node.kind
                {
                    for (j, branch) in branches.iter().enumerate() {
                        out.push(edge(
                            &branch.next,
                            format!("{path}.branches[{j}].next"),
                            false,
                        ));
                    }
                    if let Some(target) = otherwise {
                        out.push(edge(target, format!("{path}.else"), true));
                    }
                }
                if let Some(target) = &node.next {
                    out.push(edge(target, format!("{path}.next"), false));
                }
                out
            })
            .collect();
        let start = index.get(flow.start.as_str()).copied();
        Graph {
            index,
            edges,
            start,
        }
    }

    fn is_duplicate(&self, i: usize, id: &str) -> bool {
        self.index.get(id) != Some(&i)
    }

    fn edges(&self, i: usize) -> &[Edge<'a>] {
        self.edges.get(i).map_or(&[], Vec::as_slice)
    }

    /// Which nodes a run from `start` can reach.
    fn reachable(&self, start: usize) -> Vec<bool> {
        let mut seen = vec![false; self.edges.len()];
        let mut queue = VecDeque::from([start]);
        while let Some(i) = queue.pop_front() {
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                _ => continue,
            }
            queue.extend(self.edges(i).iter().filter_map(|e| e.to));
        }
        seen
    }

    /// Every cycle once, as its nodes in order and the edge that closes it. An iterative
    /// depth-first search (no recursion, so no stack overflow on a long flow): an edge back to a
    /// node still on the search path closes a cycle.
    fn cycles(&self) -> Vec<(Vec<usize>, &Edge<'a>)> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut marks = vec![Mark::New; self.edges.len()];
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for root in self.start.into_iter().chain(0..self.edges.len()) {
            if marks.get(root) != Some(&Mark::New) {
                continue;
            }
            // The search path: each node with the index of its next edge to follow.
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            if let Some(m) = marks.get_mut(root) {
                *m = Mark::OnPath;
            }
            while let Some((node, k)) = path.last().copied() {
                let Some(edge) = self.edges(node).get(k) else {
                    if let Some(m) = marks.get_mut(node) {
                        *m = Mark::Done;
                    }
                    path.pop();
                    continue;
                };
                if let Some(top) = path.last_mut() {
                    top.1 += 1;
                }
                let Some(to) = edge.to else { continue };
                match marks.get(to).copied() {
                    Some(Mark::New) => {
                        if let Some(m) = marks.get_mut(to) {
                            *m = Mark::OnPath;
                        }
                        path.push((to, 0));
                    }
                    Some(Mark::OnPath) => {
                        let cycle: Vec<usize> = path
                            .iter()
                            .map(|&(n, _)| n)
                            .skip_while(|&n| n != to)
                            .collect();
                        if seen.insert(cycle.clone()) {
                            found.push((cycle, edge));
                        }
                    }
                    Some(Mark::Done) | None => {}
                }
            }
        }
        found
    }
}

fn check_cycles(flow: &Flow, graph: &Graph, report: &mut Report) {
    for (cycle, edge) in graph.cycles() {
        let ids: Vec<String> = cycle
            .iter()
            .chain(cycle.first())
            .filter_map(|&i| flow.nodes.get(i).map(|n| format!("'{}'", n.id)))
            .collect();
        report.error(
            "cycle",
            edge.path.as_str(),
            format!(
                "the flow loops: {}, so a run could go round forever: point this edge at a node \
                 further along or at an `end` node",
                ids.join(" → ")
            ),
        );
    }
}

fn check_reachability(flow: &Flow, graph: &Graph, start: usize, report: &mut Report) {
    let reached = graph.reachable(start);
    let reaches_end = flow
        .nodes
        .iter()
        .zip(&reached)
        .any(|(node, &r)| r && matches!(node.kind, NodeKind::End { .. }));
    if !reaches_end {
        report.error(
            "no_reachable_end",
            "flow.start",
            format!(
                "no `end` node can be reached from start '{}', so a run could never finish: add \
                 an `end` node and route the flow to it",
                flow.start
            ),
        );
    }
    for (i, (node, &r)) in flow.nodes.iter().zip(&reached).enumerate() {
        // A duplicate already has its error; the id it shares is owned by the first node.
        if !r && !graph.is_duplicate(i, &node.id) {
            report.warning(
                "unreachable_node",
                format!("flow.nodes[{i}]"),
                format!(
                    "node '{}' is never reached from start '{}': point a `next`, branch or \
                     `else` at it, or remove it",
                    node.id, flow.start
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Cipher;
    use serde_json::json;

    const ME: Uuid = Uuid::from_u128(1);
    const LIVE: Uuid = Uuid::from_u128(2);
    const DRAFT: Uuid = Uuid::from_u128(3);

    /// A directory of two other agents: one live, one still a draft.
    struct Agents(HashMap<Uuid, Collaborator>);

    impl Directory for Agents {
        fn collaborator(&self, id: Uuid) -> Option<Collaborator> {
            self.0.get(&id).cloned()
        }
    }

    fn agents() -> Agents {
        let agent = |name: &str, live| Collaborator {
            name: name.into(),
            live,
        };
        Agents(HashMap::from([
            (LIVE, agent("Translator", true)),
            (DRAFT, agent("Summarizer", false)),
        ]))
    }

    fn connection(id: &str, auth: Value) -> Connection<Sealed> {
        let plain: Connection<String> = serde_json::from_value(
            json!({"id": id, "server": "https://api.example.com", "auth": auth}),
        )
        .expect("connection parses");
        plain
            .admit(&Cipher::from_key(&[0; 32]))
            .expect("connection admitted")
    }

    fn weather() -> Connection<Sealed> {
        connection(
            "weather",
            json!({"type": "api_key", "header": "X-Api-Key", "key": "k"}),
        )
    }

    /// The contract's example, with a tool node so that its tool is used.
    fn example() -> Value {
        json!({
          "name": "Weather helper", "description": "Answers weather questions",
          "model": {"provider": "echo", "name": "echo-1", "timeout_s": 30},
          "voice": null,
          "instructions": "You answer briefly.",
          "knowledge": [{"name": "faq.md", "content": "..."}],
          "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                     "method": "GET", "path": "/forecast?city={{ args.city }}"}],
          "collaborators": [],
          "flow": {"start": "greet", "nodes": [
            {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.name }}"}, "next": "sky"},
            {"id": "sky", "type": "tool", "tool": "forecast", "args": {"city": "{{ input.city }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.greet.text }}"}}
          ]}
        })
    }

    fn check_with(spec: Value, connections: &[Connection<Sealed>]) -> Report {
        let spec: AgentSpec = serde_json::from_value(spec).expect("spec parses");
        validate(ME, &spec, connections, &agents())
    }

    fn check(spec: Value) -> Report {
        check_with(spec, &[weather()])
    }

    /// The example after `edit`.
    fn edited(edit: impl FnOnce(&mut Value)) -> Report {
        let mut spec = example();
        edit(&mut spec);
        check(spec)
    }

    fn has(problems: &[Problem], code: &str, path: &str) -> bool {
        problems
            .iter()
            .any(|p| p.code == code && p.path == path && !p.message.is_empty())
    }

    #[track_caller]
    fn assert_error(report: &Report, code: &str, path: &str) {
        assert!(
            has(&report.errors, code, path),
            "expected error {code} at {path}, got {report:#?}"
        );
        assert!(!report.ok());
    }

    #[track_caller]
    fn assert_warning(report: &Report, code: &str, path: &str) {
        assert!(
            has(&report.warnings, code, path),
            "expected warning {code} at {path}, got {report:#?}"
        );
        assert!(!report.ok());
    }

    #[track_caller]
    fn assert_only_error(report: &Report, code: &str, path: &str) {
        assert_error(report, code, path);
        assert_eq!(report.errors.len(), 1, "{report:#?}");
        assert!(report.warnings.is_empty(), "{report:#?}");
    }

    #[test]
    fn contract_example_is_ok() {
        let report = check(example());
        assert!(report.ok(), "{report:#?}");
    }

    #[test]
    fn every_node_kind_and_openai_model_can_be_ok() {
        let spec = json!({
          "name": "All kinds", "description": "Uses every node type",
          "model": {"provider": "openai", "name": "gpt", "base_url": "https://llm.example.com/v1",
                    "connection": "llm", "timeout_s": 600},
          "knowledge": [{"name": "faq.md", "content": "..."}],
          "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                     "path": "/f", "body": {"q": ["{{ args.q }}", 1, null]}}],
          "collaborators": [LIVE.to_string()],
          "flow": {"start": "ask", "nodes": [
            {"id": "ask", "type": "model", "prompt": "{{ input.q }}", "timeout_s": 1, "next": "look"},
            {"id": "look", "type": "knowledge", "query": "{{ nodes.ask.text }}", "top_k": 50, "next": "pick"},
            {"id": "pick", "type": "condition",
             "branches": [{"when": "input.n > 1", "next": "call"}], "else": "other"},
            {"id": "call", "type": "tool", "tool": "forecast", "args": {"q": "x"}, "next": "done"},
            {"id": "other", "type": "agent", "agent": LIVE.to_string(), "input": {"t": "{{ input }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": "{{ nodes }}"}
          ]}
        });
        let llm = connection("llm", json!({"type": "bearer", "token": "t"}));
        let report = check_with(spec, &[weather(), llm]);
        assert!(report.ok(), "{report:#?}");
    }

    #[test]
    fn missing_name_and_description() {
        let report = edited(|s| {
            s["name"] = json!("  ");
            s["description"] = json!("");
        });
        assert_error(&report, "missing_name", "name");
        assert_error(&report, "missing_description", "description");
        assert_eq!(report.errors.len(), 2);
    }

    #[test]
    fn no_flow_without_flow_or_nodes() {
        let report = edited(|s| s["flow"] = Value::Null);
        assert_error(&report, "no_flow", "flow");
        let report = edited(|s| s["flow"]["nodes"] = json!([]));
        assert_error(&report, "no_flow", "flow.nodes");
    }

    #[test]
    fn duplicate_node_names_the_second() {
        let report = edited(|s| s["flow"]["nodes"][1]["id"] = json!("greet"));
        assert_error(&report, "duplicate_node", "flow.nodes[1].id");
    }

    #[test]
    fn unknown_start() {
        let report = edited(|s| s["flow"]["start"] = json!("hello"));
        assert_only_error(&report, "unknown_start", "flow.start");
    }

    #[test]
    fn unknown_next_of_a_node() {
        let report = edited(|s| s["flow"]["nodes"][1]["next"] = json!("nowhere"));
        assert_error(&report, "unknown_next", "flow.nodes[1].next");
        assert_error(&report, "no_reachable_end", "flow.start");
        assert_warning(&report, "unreachable_node", "flow.nodes[2]");
    }

    #[test]
    fn unknown_next_of_a_branch_and_unknown_else() {
        let report = edited(|s| {
            s["flow"]["nodes"][0] = json!({"id": "greet", "type": "condition",
                "branches": [{"when": "true", "next": "sky"}, {"when": "false", "next": "nope"}],
                "else": "gone"});
        });
        assert_error(&report, "unknown_next", "flow.nodes[0].branches[1].next");
        assert_error(&report, "unknown_else", "flow.nodes[0].else");
        assert_eq!(report.errors.len(), 2, "{report:#?}");
    }

    #[test]
    fn missing_next_on_a_plain_node_and_an_empty_condition() {
        let report = edited(|s| {
            s["flow"]["nodes"][1]
                .as_object_mut()
                .expect("node")
                .remove("next");
        });
        assert_error(&report, "missing_next", "flow.nodes[1].next");
        let report = edited(|s| {
            s["flow"]["nodes"][0] = json!({"id": "greet", "type": "condition", "branches": []});
        });
        assert_error(&report, "missing_next", "flow.nodes[0].branches");
    }

    #[test]
    fn no_reachable_end() {
        let report = edited(|s| {
            s["flow"]["nodes"][2] =
                json!({"id": "done", "type": "transform", "output": "x", "next": "greet"});
        });
        assert_error(&report, "no_reachable_end", "flow.start");
    }

    #[test]
    fn cycle_is_reported_once_with_its_closing_edge_and_nodes() {
        let report = edited(|s| {
            s["flow"]["nodes"][1] = json!({"id": "sky", "type": "condition",
                "branches": [{"when": "input.again", "next": "greet"},
                             {"when": "input.twice", "next": "greet"}],
                "else": "done"});
        });
        let cycles: Vec<&Problem> = report.errors.iter().filter(|p| p.code == "cycle").collect();
        assert_eq!(cycles.len(), 1, "{report:#?}");
        assert_eq!(cycles[0].path, "flow.nodes[1].branches[0].next");
        assert!(
            cycles[0].message.contains("'greet' → 'sky' → 'greet'"),
            "{}",
            cycles[0].message
        );
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let report = edited(|s| s["flow"]["nodes"][2]["next"] = json!("done"));
        assert_only_error(&report, "cycle", "flow.nodes[2].next");
    }

    #[test]
    fn unreachable_node_warning() {
        let report = edited(|s| {
            let nodes = s["flow"]["nodes"].as_array_mut().expect("nodes");
            nodes.push(json!({"id": "lost", "type": "end", "output": {}}));
        });
        assert!(report.errors.is_empty(), "{report:#?}");
        assert_warning(&report, "unreachable_node", "flow.nodes[3]");
    }

    #[test]
    fn bad_template_points_into_the_json() {
        let report = edited(|s| {
            s["flow"]["nodes"][0]["output"]["text"] = json!("Hello {{ input.name");
            s["flow"]["nodes"][1]["args"] = json!({"list": ["ok", "{% if %}"]});
            s["flow"]["nodes"][2]["output"] = json!("{{ }}");
            s["tools"][0]["path"] = json!("/f?{{ args.city");
            s["tools"][0]["body"] = json!({"a": [{"b": "{% for %}"}]});
        });
        assert_error(&report, "bad_template", "tools[0].path");
        assert_error(&report, "bad_template", "tools[0].body.a[0].b");
        assert_error(&report, "bad_template", "flow.nodes[0].output.text");
        assert_error(&report, "bad_template", "flow.nodes[1].args.list[1]");
        assert_error(&report, "bad_template", "flow.nodes[2].output");
        assert_eq!(report.errors.len(), 5, "{report:#?}");
    }

    #[test]
    fn bad_template_in_prompt_query_and_agent_input() {
        let report = edited(|s| {
            s["collaborators"] = json!([LIVE.to_string()]);
            s["flow"]["nodes"] = json!([
                {"id": "greet", "type": "model", "prompt": "{{", "next": "look"},
                {"id": "look", "type": "knowledge", "query": "{% endif %}", "next": "ask"},
                {"id": "ask", "type": "agent", "agent": LIVE.to_string(), "input": {"q": "{{ x ) }}"}, "next": "sky"},
                {"id": "sky", "type": "tool", "tool": "forecast", "next": "done"},
                {"id": "done", "type": "end"}
            ]);
        });
        assert_error(&report, "bad_template", "flow.nodes[0].prompt");
        assert_error(&report, "bad_template", "flow.nodes[1].query");
        assert_error(&report, "bad_template", "flow.nodes[2].input.q");
        assert_eq!(report.errors.len(), 3, "{report:#?}");
    }

    #[test]
    fn bad_expression() {
        let report = edited(|s| {
            s["flow"]["nodes"][0] = json!({"id": "greet", "type": "condition",
                "branches": [{"when": "input.x >", "next": "sky"}, {"when": "", "next": "sky"}],
                "else": "sky"});
        });
        assert_error(&report, "bad_expression", "flow.nodes[0].branches[0].when");
        assert_error(&report, "bad_expression", "flow.nodes[0].branches[1].when");
        assert_eq!(report.errors.len(), 2, "{report:#?}");
    }

    #[test]
    fn unknown_tool() {
        let report = edited(|s| s["flow"]["nodes"][1]["tool"] = json!("radar"));
        assert_error(&report, "unknown_tool", "flow.nodes[1].tool");
        assert_warning(&report, "unused_tool", "tools[0]");
    }

    #[test]
    fn duplicate_tool() {
        let report = edited(|s| {
            let again = s["tools"][0].clone();
            s["tools"].as_array_mut().expect("tools").push(again);
        });
        assert_only_error(&report, "duplicate_tool", "tools[1].name");
    }

    #[test]
    fn unknown_connection_of_a_tool_and_of_the_model() {
        let report = edited(|s| {
            s["tools"][0]["connection"] = json!("rain");
            s["model"]["connection"] = json!("llm");
        });
        assert_error(&report, "unknown_connection", "model.connection");
        assert_error(&report, "unknown_connection", "tools[0].connection");
        assert_warning(&report, "unused_connection", "connections.weather");
    }

    #[test]
    fn security_mismatch() {
        let report = edited(|s| s["tools"][0]["security"] = json!("bearer"));
        assert_only_error(&report, "security_mismatch", "tools[0].security");
        let report = edited(|s| s["tools"][0]["security"] = json!("oauth"));
        assert_only_error(&report, "security_mismatch", "tools[0].security");
    }

    #[test]
    fn collaborators_unknown_not_live_and_self() {
        let report = edited(|s| {
            s["collaborators"] = json!([
                "not-a-uuid",
                Uuid::from_u128(99).to_string(),
                DRAFT.to_string(),
                ME.to_string(),
                LIVE.to_string()
            ]);
        });
        assert_error(&report, "unknown_collaborator", "collaborators[0]");
        assert_error(&report, "unknown_collaborator", "collaborators[1]");
        assert_error(&report, "collaborator_not_live", "collaborators[2]");
        assert_error(&report, "self_collaborator", "collaborators[3]");
        assert_eq!(report.errors.len(), 4, "{report:#?}");
    }

    #[test]
    fn agent_node_must_call_a_listed_collaborator_other_than_itself() {
        let agent_node = |agent: Uuid| {
            move |s: &mut Value| {
                s["flow"]["nodes"][0] = json!({"id": "greet", "type": "agent",
                    "agent": agent.to_string(), "next": "sky"});
            }
        };
        assert_only_error(
            &edited(agent_node(LIVE)),
            "unknown_collaborator",
            "flow.nodes[0].agent",
        );
        assert_only_error(
            &edited(agent_node(ME)),
            "self_collaborator",
            "flow.nodes[0].agent",
        );
    }

    #[test]
    fn unsupported_model() {
        assert_only_error(
            &edited(|s| s["model"] = Value::Null),
            "unsupported_model",
            "model",
        );
        assert_only_error(
            &edited(|s| s["model"]["provider"] = json!("claude")),
            "unsupported_model",
            "model.provider",
        );
        assert_only_error(
            &edited(|s| s["model"]["provider"] = json!("openai")),
            "unsupported_model",
            "model.base_url",
        );
        assert_only_error(
            &edited(|s| {
                s["model"]["provider"] = json!("openai");
                s["model"]["base_url"] = json!("ftp://llm.example.com");
            }),
            "unsupported_model",
            "model.base_url",
        );
    }

    #[test]
    fn timeouts_and_top_k_out_of_range() {
        let report = edited(|s| {
            s["model"]["timeout_s"] = json!(601);
            s["flow"]["nodes"][1]["timeout_s"] = json!(0);
        });
        assert_error(&report, "timeout_out_of_range", "model.timeout_s");
        assert_error(&report, "timeout_out_of_range", "flow.nodes[1].timeout_s");
        assert_eq!(report.errors.len(), 2, "{report:#?}");
        let report = edited(|s| {
            s["flow"]["nodes"][0] = json!({"id": "greet", "type": "knowledge", "query": "q", "top_k": 51, "next": "sky"});
        });
        assert_only_error(&report, "top_k_out_of_range", "flow.nodes[0].top_k");
    }

    #[test]
    fn unused_tool_and_unused_connection() {
        let report = edited(|s| {
            let tools = s["tools"].as_array_mut().expect("tools");
            tools.push(json!({"name": "radar", "connection": "weather",
                              "security": "api_key", "path": "/radar"}));
        });
        assert!(report.errors.is_empty(), "{report:#?}");
        assert_warning(&report, "unused_tool", "tools[1]");
        let extra = connection("maps", json!({"type": "bearer", "token": "t"}));
        let report = check_with(example(), &[weather(), extra]);
        assert!(report.errors.is_empty(), "{report:#?}");
        assert_warning(&report, "unused_connection", "connections.maps");
        assert_eq!(report.warnings.len(), 1);
    }

    #[test]
    fn knowledge_node_without_knowledge_files() {
        let report = edited(|s| {
            s["knowledge"] = json!([]);
            s["flow"]["nodes"][0] =
                json!({"id": "greet", "type": "knowledge", "query": "q", "next": "sky"});
        });
        assert!(report.errors.is_empty(), "{report:#?}");
        assert_warning(&report, "no_knowledge_files", "flow.nodes[0]");
    }

    #[test]
    fn problems_come_in_spec_order_every_time() {
        let edit = |s: &mut Value| {
            s["name"] = json!("");
            s["tools"][0]["security"] = json!("basic");
            s["flow"]["nodes"][0]["next"] = json!("x");
            s["flow"]["nodes"][2]["output"] = json!("{{");
        };
        let report = edited(edit);
        let paths: Vec<&str> = report.errors.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "name",
                "tools[0].security",
                "flow.nodes[0].next",
                "flow.nodes[2].output",
                "flow.start"
            ]
        );
        assert_eq!(report, edited(edit));
    }

    #[test]
    fn odd_drafts_do_not_panic() {
        let spec = json!({
          "flow": {"start": "", "nodes": [
            {"id": "", "type": "condition", "branches": [{"when": "{{", "next": ""}], "else": ""},
            {"id": "", "type": "end", "next": ""},
            {"id": "a", "type": "tool", "tool": "", "args": [[[{"": ""}]]], "next": "a", "timeout_s": 0}
          ]},
          "tools": [{"name": "", "connection": "", "security": "", "path": ""}],
          "collaborators": [""],
          "model": {"provider": "", "base_url": "https://"}
        });
        let report = check_with(spec, &[]);
        assert!(!report.errors.is_empty());
        assert!(has(
            &report.errors,
            "cycle",
            "flow.nodes[0].branches[0].next"
        ));
        assert!(has(&report.errors, "duplicate_node", "flow.nodes[1].id"));
    }
}
