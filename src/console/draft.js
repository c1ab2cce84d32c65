// The draft editor: the profile and model as fields, knowledge files, and each tool and flow
// node as its own JSON box, so the validation problems (which carry paths such as
// `flow.nodes[1].next`) are shown next to the part they concern. Saving sends `If-Match` with the
// seq the editor was loaded at: a draft someone else saved meanwhile is a 412, never overwritten.

import * as api from "./api.js";
import { h, fill, field, errorBox, notice, json, showError, clearErrors, addProblem, findFieldFor, unsaved } from "./dom.js";

const NODE_TEMPLATES = {
  transform: { id: "step", type: "transform", output: { text: "{{ input.message }}" }, next: "done" },
  model: { id: "ask", type: "model", prompt: "{{ input.message }}", next: "done" },
  tool: { id: "call", type: "tool", tool: "TOOL NAME", args: {}, next: "done" },
  knowledge: { id: "look", type: "knowledge", query: "{{ input.message }}", top_k: 3, next: "done" },
  condition: { id: "pick", type: "condition", branches: [{ when: "input.message", next: "done" }], else: "done" },
  agent: { id: "delegate", type: "agent", agent: "COLLABORATOR ID", input: { message: "{{ input.message }}" }, next: "done" },
  end: { id: "done", type: "end", output: { text: "{{ input.message }}" } },
};

export async function draftSection(actx) {
  const editor = h("div", {});
  actx.body.append(editor);
  await draw();

  async function draw() {
    const loadedSeq = actx.seq;
    const draft = structuredClone(actx.agent.draft || {});
    const form = h("form", { class: "draft", novalidate: true, onsubmit: (e) => { e.preventDefault(); save(); } });
    const summary = h("div", { class: "problem-summary", "aria-live": "polite" });
    const conflict = h("div", { class: "conflict", hidden: true, role: "alert" });

    // Profile
    const name = h("input", { type: "text", value: draft.name || "", maxlength: "200", required: true });
    const description = h("textarea", { rows: "2" }, draft.description || "");
    const instructions = h("textarea", { rows: "3" }, draft.instructions || "");
    // Model
    const model = draft.model || {};
    const provider = h("input", { type: "text", value: model.provider || "", list: "providers", placeholder: "echo" });
    const providers = h("datalist", { id: "providers" }, h("option", { value: "echo" }), h("option", { value: "openai" }));
    const modelName = h("input", { type: "text", value: model.name || "", placeholder: "echo-1" });
    const modelTimeout = h("input", { type: "number", min: "1", max: "600", step: "1", value: model.timeout_s ?? "" });
    const baseUrl = h("input", { type: "url", value: model.base_url || "", placeholder: "https://models.example.com/v1" });
    const modelConnection = h("input", { type: "text", value: model.connection || "" });
    // Knowledge, tools, collaborators, flow
    const knowledgeList = h("div", { class: "items" });
    (draft.knowledge || []).forEach((k) => knowledgeList.append(knowledgeItem(k)));
    const toolList = h("div", { class: "items" });
    (draft.tools || []).forEach((t) => toolList.append(jsonItem("Tool", t)));
    const collaborators = h("textarea", { rows: "2", placeholder: "One agent id per line" }, (draft.collaborators || []).join("\n"));
    const start = h("input", { type: "text", value: draft.flow?.start || "" });
    const nodeList = h("div", { class: "items" });
    (draft.flow?.nodes || []).forEach((n) => nodeList.append(jsonItem("Node", n)));
    const nodeType = h("select", {}, Object.keys(NODE_TEMPLATES).map((t) => h("option", { value: t }, t)));

    const saveBtn = h("button", { type: "submit", class: "primary" }, "Save draft");
    const dirty = h("span", { class: "muted small", "aria-live": "polite" });
    unsaved.what = null;
    const changed = () => { dirty.textContent = "Unsaved changes"; unsaved.what = "the draft"; };
    form.addEventListener("input", changed);
    // Adding or removing an item changes the draft too; the problem links and the reload do not.
    form.addEventListener("click", (e) => {
      const button = e.target.closest("button[type=button]");
      if (button && !button.closest(".problem-summary, .conflict")) changed();
    });

    form.append(
      conflict, summary,
      h("fieldset", {}, h("legend", {}, "Profile"),
        field("Name", name, { path: "name" }),
        field("Description", description, { path: "description", hint: "Shown to the teams who call the agent; required to deploy." }),
        field("Instructions", instructions, { path: "instructions", hint: "The system prompt of model nodes." })),
      h("fieldset", {}, h("legend", {}, "Model"), providers,
        h("div", { class: "grid2" },
          field("Provider", provider, { path: "model.provider", hint: "echo (built in, offline) or openai (any compatible server)" }),
          field("Model name", modelName, { path: "model.name" }),
          field("Timeout (s)", modelTimeout, { path: "model.timeout_s", hint: "1–600" }),
          field("Base URL", baseUrl, { path: "model.base_url", hint: "openai only" }),
          field("Connection", modelConnection, { path: "model.connection", hint: "The connection whose credentials the model uses" }))),
      h("fieldset", { dataset: { path: "knowledge" } }, h("legend", {}, "Knowledge files"), knowledgeList,
        h("div", { class: "field-problems" }),
        h("button", { type: "button", onclick: () => knowledgeList.append(knowledgeItem({ name: "", content: "" })) }, "Add a knowledge file")),
      h("fieldset", { dataset: { path: "tools" } }, h("legend", {}, "Tools"), toolList,
        h("div", { class: "field-problems" }),
        h("button", { type: "button", onclick: () => toolList.append(jsonItem("Tool", { name: "forecast", connection: "weather", security: "api_key", method: "GET", path: "/forecast?city={{ args.city }}" })) }, "Add a tool")),
      h("fieldset", {}, h("legend", {}, "Collaborators"),
        field("Collaborator agent ids", collaborators, { path: "collaborators", hint: "Live agents this one may call from an agent node." })),
      h("fieldset", { dataset: { path: "flow" } }, h("legend", {}, "Flow"),
        h("div", { class: "field-problems" }),
        field("Start node", start, { path: "flow.start" }),
        h("div", { dataset: { path: "flow.nodes" } }, h("div", { class: "field-problems" }), nodeList),
        h("div", { class: "inline" }, field("New node type", nodeType),
          h("button", { type: "button", onclick: () => nodeList.append(jsonItem("Node", NODE_TEMPLATES[nodeType.value])) }, "Add a node"))),
      errorBox(null),
      h("div", { class: "actions sticky" }, dirty, saveBtn));
    fill(editor, form);
    renumber();
    await showProblems();

    function knowledgeItem(k) {
      const kname = h("input", { type: "text", value: k.name || "" });
      const content = h("textarea", { rows: "4" }, k.content || "");
      const item = h("div", { class: "item knowledge-item" },
        field("File name", kname),
        field("Content", content),
        h("div", { class: "field-problems" }),
        h("button", { type: "button", class: "link danger", onclick: () => { item.remove(); renumber(); } }, "Remove this file"));
      item.read = () => ({ name: kname.value, content: content.value });
      return item;
    }

    function jsonItem(kind, value) {
      const text = h("textarea", { rows: String(Math.min(14, json(value).split("\n").length + 1)), class: "code", spellcheck: "false" }, json(value));
      const title = h("h3", {});
      const item = h("div", { class: "item json-item" }, title, field(`${kind} JSON`, text),
        h("button", { type: "button", class: "link danger", onclick: () => { item.remove(); renumber(); } }, `Remove this ${kind.toLowerCase()}`));
      item.kind = kind;
      item.retitle = (i) => {
        let label = "";
        try {
          const v = JSON.parse(text.value);
          label = kind === "Node" ? `${v.id ?? "?"} (${v.type ?? "?"})` : `${v.name ?? "?"}`;
        } catch { label = "(not valid JSON)"; }
        title.textContent = `${kind} ${i + 1}: ${label}`;
      };
      text.addEventListener("change", renumber);
      item.read = () => JSON.parse(text.value);
      item.textarea = text;
      return item;
    }

    /** Gives each list item the path the API names it by, e.g. `flow.nodes[2]`. */
    function renumber() {
      [...nodeList.children].forEach((el, i) => { el.dataset.path = `flow.nodes[${i}]`; el.retitle?.(i); });
      [...toolList.children].forEach((el, i) => { el.dataset.path = `tools[${i}]`; el.retitle?.(i); });
      [...knowledgeList.children].forEach((el, i) => { el.dataset.path = `knowledge[${i}]`; });
    }

    /** Reads the form into a spec; a JSON box that does not parse is shown next to it. */
    function read() {
      const spec = structuredClone(draft); // keeps fields this editor does not show
      spec.name = name.value.trim();
      spec.description = description.value;
      spec.instructions = instructions.value;
      const m = { ...(draft.model || {}) };
      m.provider = provider.value.trim();
      m.name = modelName.value.trim();
      m.timeout_s = modelTimeout.value === "" ? null : Number(modelTimeout.value);
      m.base_url = baseUrl.value.trim() || null;
      m.connection = modelConnection.value.trim() || null;
      spec.model = m.provider || m.name ? m : null;
      spec.knowledge = [...knowledgeList.children].map((el) => el.read());
      spec.collaborators = collaborators.value.split(/\s+/).map((s) => s.trim()).filter(Boolean);
      let bad = null;
      const parse = (el) => {
        try {
          return el.read();
        } catch (e) {
          const f = el.querySelector(".field");
          addProblem(f, `Not valid JSON: ${e.message}`, "error");
          el.textarea.setAttribute("aria-invalid", "true");
          bad = bad || el.textarea;
          return null;
        }
      };
      spec.tools = [...toolList.children].map(parse);
      const nodes = [...nodeList.children].map(parse);
      spec.flow = start.value.trim() || nodes.length ? { ...(draft.flow || {}), start: start.value.trim(), nodes } : null;
      if (bad) {
        bad.focus();
        return null;
      }
      return spec;
    }

    async function save() {
      clearErrors(form);
      const spec = read();
      if (!spec) return;
      saveBtn.disabled = true;
      try {
        await api.put(actx.path("/draft"), spec, { ifMatch: loadedSeq });
        await actx.refresh();
        notice("Draft saved.");
        await draw();
      } catch (err) {
        if (err.status === 412) {
          showConflict(err);
        } else {
          showError(form, err);
        }
      } finally {
        saveBtn.disabled = false;
      }
    }

    function showConflict(err) {
      const actual = err.details?.actual;
      fill(conflict,
        h("p", {}, h("strong", {}, "Someone else changed this draft. "),
          `You opened it at event #${loadedSeq}${actual ? `; it is now at event #${actual}` : ""}. Your changes were not saved. `,
          "Reload to see the current draft (your edits here will be replaced), or copy what you need first."),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "primary", onclick: async () => { await actx.refresh(); await draw(); notice("Reloaded the current draft."); } }, "Reload the draft")));
      conflict.hidden = false;
      conflict.scrollIntoView({ block: "nearest" });
      conflict.querySelector("button").focus();
    }

    async function showProblems() {
      let report;
      try {
        report = await api.get(actx.path("/validation"));
      } catch (err) {
        fill(summary, errorBox(err));
        return;
      }
      const all = [...report.errors.map((p) => [p, "error"]), ...report.warnings.map((p) => [p, "warning"])];
      if (!all.length) {
        fill(summary, h("p", { class: "ok" }, "✓ The draft has no problems: it can be deployed."));
        return;
      }
      const items = all.map(([p, kind]) => {
        const target = findFieldFor(form, p.path || "");
        if (target) addProblem(target, `${kind === "error" ? "Error" : "Warning"}: ${p.message}`, kind);
        const focus = () => {
          const input = target?.querySelector("input, textarea, select");
          (input || target)?.focus?.();
          target?.scrollIntoView({ block: "center" });
        };
        return h("li", { class: `problem problem-${kind}` },
          h("strong", {}, kind === "error" ? "Error " : "Warning "), p.message, " ",
          target ? h("button", { type: "button", class: "link", onclick: focus }, `Go to ${p.path}`) : (p.path ? h("code", {}, p.path) : null));
      });
      fill(summary, h("p", {}, `${report.errors.length} error(s), ${report.warnings.length} warning(s): each blocks deploying.`), h("ul", { class: "problems" }, items));
    }
  }
}
