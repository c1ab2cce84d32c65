// The flow drawn as a graph (SVG): nodes in columns by their distance from `start`, edges for
// `next`, condition branches and `else`; nodes with problems outlined; unreachable nodes in a
// last column. A list of the same edges follows it for screen readers and for copying.

import * as api from "./api.js";
import { h, fill, errorBox, problemList, fmtTime } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace's name, not a URL that is fetched
const W = 170;
const H = 54;
const GAP_X = 70;
const GAP_Y = 26;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** The edges of a flow: `[from, to, label]`. */
export function edges(flow) {
  const out = [];
  for (const n of flow?.nodes || []) {
    if (!n || typeof n !== "object") continue;
    if (Array.isArray(n.branches)) n.branches.forEach((b, i) => b && b.next && out.push([n.id, b.next, b.when ? `when ${b.when}` : `branch ${i + 1}`]));
    if (n.else) out.push([n.id, n.else, "else"]);
    if (n.next) out.push([n.id, n.next, ""]);
  }
  return out;
}

/**
 * An SVG drawing of `flow`. `problems` (Problems with paths) mark the nodes they name.
 */
export function flowGraph(flow, problems = []) {
  const nodes = (flow?.nodes || []).filter((n) => n && typeof n === "object");
  if (!nodes.length) return h("p", { class: "empty" }, "The flow has no nodes yet.");
  const byId = new Map(nodes.map((n, i) => [n.id, { node: n, index: i, layer: null }]));
  const es = edges(flow);
  // Columns: breadth-first distance from start.
  const startEntry = byId.get(flow.start);
  if (startEntry) {
    startEntry.layer = 0;
    const queue = [flow.start];
    while (queue.length) {
      const id = queue.shift();
      const layer = byId.get(id).layer;
      for (const [from, to] of es) {
        if (from !== id || !byId.has(to)) continue;
        const t = byId.get(to);
        if (t.layer === null) {
          t.layer = layer + 1;
          queue.push(to);
        }
      }
    }
  }
  const maxLayer = Math.max(0, ...[...byId.values()].map((e) => e.layer ?? 0));
  const unreachable = [...byId.values()].filter((e) => e.layer === null);
  unreachable.forEach((e) => { e.layer = maxLayer + 1; e.unreachable = true; });
  const columns = [];
  for (const e of byId.values()) (columns[e.layer] ||= []).push(e);
  columns.forEach((col, x) => col.forEach((e, y) => { e.x = 20 + x * (W + GAP_X); e.y = 30 + y * (H + GAP_Y); }));
  const width = 40 + columns.length * (W + GAP_X) - GAP_X;
  const height = 60 + Math.max(...columns.map((c) => (c ? c.length : 0))) * (H + GAP_Y);

  const marked = new Map();
  for (const p of problems) {
    const m = /^flow\.nodes\[(\d+)\]/.exec(p.path || "");
    if (m) {
      const n = nodes[Number(m[1])];
      if (n) marked.set(n.id, [...(marked.get(n.id) || []), p]);
    }
  }

  const svg = s("svg", { xmlns: SVG, width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "flow-title", class: "flow" },
    s("title", { id: "flow-title" }, `Flow graph: ${nodes.length} nodes, starting at ${flow.start || "(no start)"}`),
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
  for (const [from, to, label] of es) {
    const a = byId.get(from);
    const b = byId.get(to);
    if (!a || !b) continue;
    const x1 = a.x + W;
    const y1 = a.y + H / 2;
    const x2 = b.x;
    const y2 = b.y + H / 2;
    let d;
    if (b.layer > a.layer) {
      const mx = (x1 + x2) / 2;
      d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
    } else {
      // A back edge (a loop, which validation reports) goes round below.
      const low = Math.max(a.y, b.y) + H + GAP_Y / 2 + 6;
      d = `M ${a.x + W / 2} ${a.y + H} C ${a.x + W / 2} ${low}, ${b.x + W / 2} ${low}, ${b.x + W / 2} ${b.y + H}`;
    }
    svg.append(s("path", { d, class: `edge${label === "else" ? " edge-else" : ""}`, "marker-end": "url(#arrow)" }));
    if (label) svg.append(s("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, class: "edge-label", "text-anchor": "middle" }, label.length > 28 ? `${label.slice(0, 27)}…` : label));
  }
  for (const e of byId.values()) {
    const probs = marked.get(e.node.id) || [];
    const kind = probs.some((p) => p.severity === "error") ? "error" : probs.length ? "warning" : "";
    const cls = ["node", `node-${e.node.type}`, e.unreachable ? "node-unreachable" : "", kind ? `node-${kind}` : "", e.node.id === flow.start ? "node-start" : ""].join(" ");
    const g = s("g", { class: cls, transform: `translate(${e.x} ${e.y})`, "data-node": e.node.id },
      s("title", {}, [`${e.node.id} (${e.node.type})`, e.unreachable ? "unreachable from start" : "", ...probs.map((p) => p.message)].filter(Boolean).join("\n")),
      s("rect", { width: W, height: H, rx: 8 }),
      s("text", { x: 12, y: 22, class: "node-id" }, e.node.id.length > 20 ? `${e.node.id.slice(0, 19)}…` : e.node.id),
      s("text", { x: 12, y: 40, class: "node-type" }, `${e.node.type}${e.node.id === flow.start ? " · start" : ""}${probs.length ? ` · ${probs.length} problem(s)` : ""}`));
    svg.append(g);
  }
  const list = h("details", { class: "edge-list" }, h("summary", {}, "The flow as text"),
    h("ul", {}, nodes.map((n) => h("li", {}, h("code", {}, n.id), ` (${n.type})`,
      edges({ nodes: [n] }).map(([, to, label]) => [" → ", h("code", {}, to), label ? ` (${label})` : ""]),
      byId.get(n.id)?.unreachable ? " — unreachable" : ""))));
  return h("div", {}, h("div", { class: "graph-wrap" }, svg), list);
}

/** The Flow section: the draft's graph with its problems, and the live version's, read-only. */
export async function flowSection(actx) {
  const draftBox = h("div", {});
  const liveBox = h("div", {});
  actx.body.append(h("h3", {}, "Draft"), draftBox, h("h3", {}, "Live version (read-only)"), liveBox);
  try {
    const report = await api.get(actx.path("/validation"));
    const problems = [...report.errors.map((p) => ({ ...p, severity: "error" })), ...report.warnings.map((p) => ({ ...p, severity: "warning" }))];
    fill(draftBox, flowGraph(actx.agent.draft.flow, problems), problemList(report.errors, report.warnings),
      h("p", {}, h("a", { href: `#/agents/${actx.id}/draft` }, "Edit the draft")));
  } catch (err) {
    fill(draftBox, errorBox(err));
  }
  if (actx.agent.status !== "live") {
    fill(liveBox, h("p", { class: "muted" }, "Not deployed: there is no live flow."));
    return;
  }
  try {
    const d = await api.get(actx.path("/deployment"));
    fill(liveBox, h("p", { class: "muted" }, `Version ${d.version}, deployed ${fmtTime(d.deployed_at)}.`), flowGraph(d.spec.flow));
  } catch (err) {
    fill(liveBox, errorBox(err));
  }
}
