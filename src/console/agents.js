// The agent list (status, search, the live marker) and creating an agent.

import * as api from "./api.js";
import { h, fill, field, errorBox, liveMarker, fmtTime, showError, table } from "./dom.js";

export function agentsPage(ctx) {
  ctx.crumbs([]);
  document.title = "Agents · Hangar";
  const q = h("input", { type: "search", placeholder: "Name or description", autocomplete: "off" });
  const status = h("select", {},
    h("option", { value: "" }, "All"), h("option", { value: "live" }, "Live"), h("option", { value: "draft" }, "Draft"));
  const results = h("div", { "aria-live": "polite" });
  const search = h("form", { class: "toolbar", role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
    field("Search", q), field("Status", status));
  let timer = null;
  q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(load, 250); });
  status.addEventListener("change", load);
  ctx.setLeave(() => clearTimeout(timer));

  const createBtn = h("button", { type: "button", class: "primary", onclick: () => createForm(ctx) }, "Create agent");
  fill(ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, "Agents"), createBtn),
    search, results);

  let generation = 0;
  async function load() {
    const mine = ++generation;
    const params = new URLSearchParams();
    if (q.value.trim()) params.set("q", q.value.trim());
    if (status.value) params.set("status", status.value);
    const query = params.toString();
    try {
      const { agents } = await api.get(`/v1/agents${query ? `?${query}` : ""}`);
      if (mine !== generation) return;
      if (!agents.length) {
        fill(results, h("p", { class: "empty" }, query ? "No agent matches." : "No agents yet. Create the first one."));
        return;
      }
      fill(results, table(null, ["Agent", "Status", "Updated"], agents.map((a) => h("tr", {},
        h("td", {}, h("a", { href: `#/agents/${a.id}` }, a.name || "(unnamed)"), h("div", { class: "muted small" }, a.description || "")),
        h("td", {}, liveMarker(a)),
        h("td", {}, fmtTime(a.updated_at))))));
    } catch (err) {
      if (mine === generation) fill(results, errorBox(err));
    }
  }
  load();
}

function createForm(ctx) {
  const open = ctx.main.querySelector("form.create");
  if (open) {
    open.querySelector("input").focus();
    return;
  }
  const name = h("input", { type: "text", required: true, maxlength: "200", autocomplete: "off" });
  const description = h("textarea", { rows: "2" });
  const form = h("form", { class: "card create", onsubmit: submit },
    h("h2", {}, "Create an agent"),
    h("p", { class: "muted" }, "Only the name is needed now; validation blocks deploying, not saving."),
    field("Name", name, { path: "name" }),
    field("Description", description, { path: "description" }),
    errorBox(null),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => form.remove() }, "Cancel"),
      h("button", { type: "submit", class: "primary" }, "Create")));
  ctx.main.querySelector(".page-head").after(form);
  name.focus();

  async function submit(e) {
    e.preventDefault();
    try {
      const agent = await api.post("/v1/agents", {
        name: name.value.trim(),
        description: description.value.trim(),
        model: { provider: "echo", name: "echo-1", timeout_s: 30 },
        flow: {
          start: "reply",
          nodes: [
            { id: "reply", type: "transform", output: { text: "You said: {{ input.message }}" }, next: "done" },
            { id: "done", type: "end", output: { text: "{{ nodes.reply.text }}" } },
          ],
        },
      });
      location.hash = `#/agents/${agent.id}/draft`;
    } catch (err) {
      showError(form, err);
    }
  }
}
