// Preview: a chat with the draft (`POST /preview` runs the draft as the sync endpoint would).
// A message is sent as `{"message": TEXT}`, or as the whole input when "JSON input" is ticked.

import * as api from "./api.js";
import { h, fill, field, json, problemList } from "./dom.js";

export async function previewSection(actx) {
  const transcript = h("ol", { class: "chat", "aria-live": "polite", "aria-label": "Preview conversation" });
  const message = h("textarea", { rows: "3", placeholder: "Type a message, or a JSON object with “JSON input” ticked" });
  const asJson = h("input", { type: "checkbox" });
  const member = h("input", { type: "text", placeholder: "optional", autocomplete: "off" });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const form = h("form", { class: "chat-form", onsubmit: (e) => { e.preventDefault(); run(); } },
    field("Message", message, { path: "input" }),
    h("div", { class: "inline" },
      h("label", { class: "check" }, asJson, " JSON input"),
      field("As member", member, { hint: "Runs with this member's credentials (X-Hangar-Member)" })),
    h("div", { class: "actions" }, send));
  message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  actx.body.append(
    h("p", { class: "muted" }, "Runs the current draft, as the sync endpoint would, without deploying it. Ctrl+Enter sends."),
    transcript, form);
  message.focus();

  async function run() {
    const text = message.value;
    let input;
    if (asJson.checked) {
      try {
        input = JSON.parse(text || "{}");
      } catch (e) {
        fill(form.querySelector('[data-path="input"] .field-problems'), h("p", { class: "problem problem-error" }, `Not valid JSON: ${e.message}`));
        return;
      }
    } else {
      input = { message: text };
    }
    fill(form.querySelector('[data-path="input"] .field-problems'));
    transcript.append(h("li", { class: "msg msg-user" }, h("span", { class: "who" }, "You"), h("pre", {}, asJson.checked ? json(input) : text)));
    const pending = h("li", { class: "msg msg-agent pending" }, h("span", { class: "who" }, "Draft"), h("p", {}, "Running…"));
    transcript.append(pending);
    send.disabled = true;
    message.value = "";
    const headers = member.value.trim() ? { "X-Hangar-Member": member.value.trim() } : {};
    try {
      const r = await api.call("POST", actx.path("/preview"), { body: { input }, headers });
      const out = r.body.output;
      const textOut = typeof out === "string" ? out : (out && typeof out.text === "string" ? out.text : null);
      fill(pending, h("span", { class: "who" }, "Draft"),
        textOut !== null ? h("p", { class: "reply" }, textOut) : null,
        h("details", { open: textOut === null }, h("summary", {}, "Output (JSON)"), h("pre", {}, json(out))),
        h("p", { class: "small muted" }, `request ${r.body.request_id} · ${r.body.status}`));
      pending.classList.remove("pending");
    } catch (err) {
      pending.classList.remove("pending");
      pending.classList.add("msg-error");
      const d = err.details || {};
      fill(pending, h("span", { class: "who" }, "Draft"),
        h("p", { role: "alert" }, err.code === "validation_failed"
          ? "The draft cannot run yet: fix these first."
          : err.code === "run_failed" ? `The run failed: ${d.error?.message || err.message}` : err.explanation),
        err.code === "validation_failed" ? [problemList(d.errors, d.warnings), h("a", { href: `#/agents/${actx.id}/draft` }, "Open the draft editor")] : null,
        err.code === "timeout" ? h("p", { class: "small" }, `The ${d.limit || ""} limit fired${d.node ? ` at node ${d.node}` : ""}.`) : null);
    } finally {
      send.disabled = false;
      message.focus();
    }
  }
}
