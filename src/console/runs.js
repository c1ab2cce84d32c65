// Runs: the list, and one run with its timeline.
//
// Hooks for what is being built beside the console: the list reads `GET …/requests` when the
// server answers it, else it shows the runs started from this tab (kept in sessionStorage, ids
// only) and opens any run by its id; the run page reads the run's events
// (`GET …/requests/{rid}/events`, Server-Sent Events) when the server answers them, else it draws
// the timeline from the run record (created, started, finished, push).

import * as api from "./api.js";
import { h, fill, field, errorBox, json, badge, fmtTime, table, confirmDialog, notice } from "./dom.js";

const KEY = (agent) => `hangar.runs.${agent}`;
const FINAL = ["succeeded", "failed", "timed_out", "cancelled"];

/** Notes a run started from this tab, so the list can show it before the server lists runs. */
export function remember(agent, rid) {
  const ids = JSON.parse(sessionStorage.getItem(KEY(agent)) || "[]").filter((x) => x !== rid);
  ids.unshift(rid);
  sessionStorage.setItem(KEY(agent), JSON.stringify(ids.slice(0, 50)));
}

export async function runsSection(actx) {
  if (actx.rest[0]) return runPage(actx, actx.rest[0]);
  const rid = h("input", { type: "text", required: true, pattern: "[0-9a-fA-F-]{36}", autocomplete: "off", placeholder: "request id" });
  const open = h("form", { class: "inline-form", onsubmit: (e) => { e.preventDefault(); if (open.reportValidity()) actx.go("runs", rid.value.trim()); } },
    field("Open a run", rid, { hint: "The request_id of any run of this agent" }), h("div", { class: "actions" }, h("button", { type: "submit" }, "Open")));
  const box = h("div", { "aria-live": "polite" });
  actx.body.append(open, box);

  let runs = null;
  let listed = false;
  try {
    const r = await api.get(actx.path("/requests?limit=50"));
    runs = r.runs || r.requests || [];
    listed = true;
  } catch (err) {
    if (!api.isMissingRoute(err)) {
      fill(box, errorBox(err));
      return;
    }
  }
  if (!listed) {
    const ids = JSON.parse(sessionStorage.getItem(KEY(actx.id)) || "[]");
    runs = (await Promise.all(ids.map((id) => api.get(actx.path(`/requests/${id}`)).catch(() => null)))).filter(Boolean);
    box.append(h("p", { class: "muted small" }, "This server does not list runs yet: shown here are the runs started from this tab."));
  }
  if (!runs.length) {
    box.append(h("p", { class: "empty" }, "No runs to show. Call the agent from its Endpoint page, or open a run by its id."));
    return;
  }
  box.append(table(null, ["Run", "Status", "Version", "Created", "Finished"], runs.map((r) => h("tr", {},
    h("td", {}, h("a", { href: `#/agents/${actx.id}/runs/${r.request_id}` }, h("code", {}, r.request_id))),
    h("td", {}, badge(r.status)),
    h("td", {}, `v${r.version}`),
    h("td", {}, fmtTime(r.created_at)),
    h("td", {}, fmtTime(r.finished_at))))));
}

async function runPage(actx, rid) {
  const head = h("div", {});
  const timeline = h("ol", { class: "timeline", "aria-live": "polite", "aria-label": "Timeline" });
  const detail = h("div", {});
  actx.body.append(h("p", {}, h("a", { href: `#/agents/${actx.id}/runs` }, "← All runs")), head, h("h3", {}, "Timeline"), timeline, detail);
  const controller = new AbortController();
  actx.onLeave(() => controller.abort());

  let run;
  try {
    run = await api.get(actx.path(`/requests/${encodeURIComponent(rid)}`));
  } catch (err) {
    fill(head, errorBox(err));
    return;
  }
  let streamed = false;
  drawRun(run);

  // Run events, when the server records them: a live timeline that ends with run.finished.
  try {
    await api.stream(actx.path(`/requests/${encodeURIComponent(rid)}/events`), {
      signal: controller.signal,
      onEvent: (ev) => {
        if (!streamed) { streamed = true; timeline.replaceChildren(); }
        timeline.append(eventItem(ev));
        if (ev.event === "run.finished" && ev.data && ev.data.run) drawRun(ev.data.run, false);
      },
    });
    if (streamed) return;
  } catch (err) {
    if (err.name === "AbortError") return;
    if (!api.isMissingRoute(err) && err.status !== 404) timeline.after(errorBox(err));
  }
  // No run events: follow the record while it moves by itself (a paused run waits for input).
  while (["queued", "running"].includes(run.status) && !controller.signal.aborted) {
    try {
      run = await api.get(actx.path(`/requests/${encodeURIComponent(rid)}?wait=20`), { signal: controller.signal });
      drawRun(run);
    } catch (err) {
      if (err.name !== "AbortError") detail.append(errorBox(err));
      return;
    }
  }

  function drawRun(r, redrawTimeline = true) {
    const cancel = FINAL.includes(r.status) ? null : h("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirmDialog("Cancel this run?", "It stops now; a result it was about to produce is lost.", "Cancel the run"))) return;
      try {
        drawRun(await api.del(actx.path(`/requests/${encodeURIComponent(rid)}`)));
        notice("Run cancelled.");
      } catch (err) {
        notice(err.explanation, "error");
      }
    } }, "Cancel run");
    fill(head, h("div", { class: "title-row" }, h("h3", {}, h("code", {}, r.request_id)), badge(r.status), cancel),
      h("p", { class: "muted" }, `Version ${r.version}`, r.parent ? ` · called by run ${r.parent.request_id}` : ""));
    if (redrawTimeline && !streamed) {
      fill(timeline,
        item("created", r.created_at, "Accepted"),
        r.started_at ? item("started", r.started_at, `Started on version ${r.version}`) : null,
        r.pending ? item("input_required", null, `Waiting for ${r.pending.kind}`) : null,
        r.finished_at ? item(r.status, r.finished_at, `Finished: ${r.status}${r.error ? ` — ${r.error.message || r.error.code}` : ""}`) : item("pending", null, `Now ${r.status}…`),
        r.push ? item(`push-${r.push.status}`, r.push.delivered_at, `Push ${r.push.status} after ${r.push.attempts} attempt(s)${r.push.last_status ? `, last answer ${r.push.last_status}` : ""}`) : null);
    }
    fill(detail,
      r.status === "input_required" && r.pending ? pendingPanel(r) : null,
      r.output !== null && r.output !== undefined ? [h("h3", {}, "Output"), h("pre", {}, json(r.output))] : null,
      r.error ? [h("h3", {}, "Error"), h("pre", { class: "error-text" }, json(r.error))] : null);
  }
}

/** A paused run: approve or refuse the tool call it waits on, or give the input it asks for. */
function pendingPanel(r) {
  const p = r.pending;
  const out = h("div", { "aria-live": "polite" });
  const path = api.agentPath(r.agent_id, `/requests/${r.request_id}/input`);
  const send = async (body) => {
    try {
      await api.post(path, body);
      fill(out, h("p", { class: "ok" }, "Sent: the run continues in the background."));
      setTimeout(() => window.dispatchEvent(new HashChangeEvent("hashchange")), 800);
    } catch (err) {
      fill(out, errorBox(err));
    }
  };
  if (p.kind === "approval") {
    return h("div", { class: "card" }, h("h3", {}, "Waiting for approval"),
      h("p", {}, `Node ${p.node} wants to call the tool ${p.tool} with:`), h("pre", {}, json(p.args)),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary", onclick: () => send({ approve: true }) }, "Approve"),
        h("button", { type: "button", class: "danger", onclick: () => send({ approve: false }) }, "Refuse")), out);
  }
  const input = h("textarea", { rows: "3", class: "code", spellcheck: "false" }, "{}");
  const form = h("form", { onsubmit: (e) => {
    e.preventDefault();
    try {
      send({ input: JSON.parse(input.value || "{}") });
    } catch (err) {
      fill(out, h("p", { class: "problem problem-error" }, `Not valid JSON: ${err.message}`));
    }
  } }, field(`Input for ${p.node}`, input, { hint: p.prompt || "" }), h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Send")), out);
  return h("div", { class: "card" }, h("h3", {}, "Waiting for input"), form);
}

function item(kind, at, text) {
  return h("li", { class: `tl tl-${kind}` }, h("span", { class: "tl-at" }, at ? fmtTime(at) : ""), h("span", { class: "tl-text" }, text));
}

function eventItem(ev) {
  const d = ev.data && typeof ev.data === "object" ? ev.data : {};
  const text = {
    "run.queued": () => "Queued",
    "run.started": () => `Started on version ${d.version}`,
    "node.started": () => `Node ${d.node} (${d.type}) started`,
    "node.finished": () => `Node ${d.node} finished`,
    "model.delta": () => `Model ${d.node}: ${d.text}`,
    "tool.called": () => `Tool ${d.tool} called from ${d.node}: ${d.status}`,
    "run.input_required": () => "Waiting for input",
    "run.finished": () => `Finished: ${d.run?.status}`,
  }[ev.event];
  const li = item(ev.event.replace(/\./g, "-"), d.at || null, text ? text() : ev.event);
  if (ev.event === "node.finished" && d.output !== undefined) li.append(h("details", {}, h("summary", {}, "output"), h("pre", {}, json(d.output))));
  return li;
}
