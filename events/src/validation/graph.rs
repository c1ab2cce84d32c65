//! The flow as a graph over node indices, built once for every graph rule: cycles and
//! reachability.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::spec::{Flow, NodeKind};

use super::Report;

/// The flow as a graph over node indices, built once for every graph rule.
pub(super) struct Graph<'a> {
    /// Node index by id; when ids repeat, the first node owns the id.
    index: HashMap<&'a str, usize>,
    /// Each node's outgoing edges in spec order: branches, `else`, `next`.
    edges: Vec<Vec<Edge<'a>>>,
    pub(super) start: Option<usize>,
}

pub(super) struct Edge<'a> {
    /// The id the spec names.
    pub(super) target: &'a str,
    /// The node it resolves to; `None` for an id that names no node.
    pub(super) to: Option<usize>,
    /// The field that names the target, for problems about this edge.
    pub(super) path: String,
    pub(super) is_else: bool,
}

impl<'a> Graph<'a> {
    pub(super) fn build(flow: &'a Flow) -> Self {
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

    pub(super) fn is_duplicate(&self, i: usize, id: &str) -> bool {
        self.index.get(id) != Some(&i)
    }

    pub(super) fn edges(&self, i: usize) -> &[Edge<'a>] {
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

pub(super) fn check_cycles(flow: &Flow, graph: &Graph, report: &mut Report) {
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

pub(super) fn check_reachability(flow: &Flow, graph: &Graph, start: usize, report: &mut Report) {
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
