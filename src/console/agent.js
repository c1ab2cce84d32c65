// One agent: its header (name, live marker) and its sections, in the order a team meets them.

import * as api from "./api.js";
import { h, fill, errorBox, liveMarker, fmtTime } from "./dom.js";
import { draftSection } from "./draft.js";
import { flowSection } from "./flowgraph.js";
import { previewSection } from "./preview.js";
import { endpointSection, versionsSection } from "./endpoint.js";
import { connectionsSection } from "./connections.js";
import { keysSection } from "./keys.js";
import { runsSection } from "./runs.js";
import { threadsSection } from "./threads.js";
import { auditSection } from "./audit.js";

const SECTIONS = [
  ["draft", "Draft", draftSection],
  ["flow", "Flow", flowSection],
  ["preview", "Preview", previewSection],
  ["endpoint", "Endpoint", endpointSection],
  ["versions", "Versions", versionsSection],
  ["connections", "Connections", connectionsSection],
  ["keys", "Keys", keysSection],
  ["runs", "Runs", runsSection],
  ["threads", "Threads", threadsSection],
  ["audit", "Audit log", auditSection],
];

export async function agentPage(ctx, id, section, rest) {
  const entry = SECTIONS.find(([key]) => key === section) || SECTIONS[0];
  const head = h("div", { class: "agent-head" });
  const nav = h("nav", { class: "sections", "aria-label": "Agent sections" },
    h("ul", {}, SECTIONS.map(([key, title]) => h("li", {},
      h("a", { href: `#/agents/${id}/${key}`, "aria-current": key === entry[0] ? "page" : false }, title)))));
  const body = h("section", { class: "section-body", "aria-labelledby": "section-title" });
  fill(ctx.main, head, nav, body);
  ctx.crumbs([["…", null]]);

  const cleanups = [];
  ctx.setLeave(() => cleanups.forEach((fn) => fn()));

  const actx = {
    id,
    agent: null,
    /** The seq of the agent as last read: writes that must not overwrite someone else's send it as If-Match. */
    seq: null,
    path: (tail = "") => api.agentPath(id, tail),
    body,
    rest,
    onLeave: (fn) => cleanups.push(fn),
    /** Reads the agent again and redraws the header. */
    async refresh() {
      const r = await api.call("GET", api.agentPath(id));
      actx.agent = r.body;
      actx.seq = r.etag ?? r.body.seq;
      drawHead();
      return actx.agent;
    },
    go: (key, ...more) => { location.hash = `#/agents/${id}/${[key, ...more].map(encodeURIComponent).join("/")}`; },
  };

  function drawHead() {
    const a = actx.agent;
    ctx.crumbs([[a.name || "(unnamed)", `#/agents/${id}`], [entry[1], null]]);
    document.title = `${entry[1]} · ${a.name || "(unnamed)"} · Hangar`;
    fill(head,
      h("div", { class: "title-row" }, h("h1", {}, a.name || "(unnamed)"), liveMarker(a)),
      h("p", { class: "muted" }, a.description || "No description yet."),
      h("p", { class: "small muted" }, `Agent ${a.id} · created ${fmtTime(a.created_at)} · event #${a.seq}`));
  }

  try {
    await actx.refresh();
  } catch (err) {
    fill(head, h("h1", {}, "Agent"), errorBox(err, h("p", {}, h("a", { href: "#/" }, "Back to the agents"))));
    fill(body);
    return;
  }
  fill(body, h("h2", { id: "section-title" }, entry[1]));
  try {
    await entry[2](actx);
  } catch (err) {
    if (err.name !== "AbortError") body.append(errorBox(err));
  }
}
