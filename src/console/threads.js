// Threads (multi-turn conversations): open one by its id, read its turns, delete it.
// A hook for the threads work beside the console: on a server without threads the routes answer
// 404 "route …", and the page says so.

import * as api from "./api.js";
import { h, fill, field, errorBox, json, fmtTime, confirmDialog, notice } from "./dom.js";

export async function threadsSection(actx) {
  const tid = h("input", { type: "text", required: true, pattern: "[A-Za-z0-9._:\\-]{1,128}", autocomplete: "off", value: actx.rest[0] || "" });
  const form = h("form", { class: "inline-form", onsubmit: (e) => { e.preventDefault(); if (form.reportValidity()) actx.go("threads", tid.value.trim()); } },
    field("Thread id", tid, { hint: "1–128 of A–Z a–z 0–9 . _ : - (the thread_id of invoke calls, or an A2A contextId)" }),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Open")));
  const box = h("div", { "aria-live": "polite" });
  actx.body.append(form, box);
  if (!actx.rest[0]) return;
  const id = actx.rest[0];
  const path = actx.path(`/threads/${encodeURIComponent(id)}`);
  try {
    const thread = await api.get(path);
    const turns = thread.turns || [];
    fill(box,
      h("div", { class: "title-row" }, h("h3", {}, `Thread ${thread.thread_id}`),
        h("button", { type: "button", class: "danger", onclick: remove }, "Delete the thread")),
      turns.length ? h("ol", { class: "chat" }, turns.map((t) => [
        h("li", { class: "msg msg-user" }, h("span", { class: "who" }, `Caller · ${fmtTime(t.at)}`), h("pre", {}, json(t.input))),
        h("li", { class: "msg msg-agent" }, h("span", { class: "who" }, "Agent · ", h("a", { href: `#/agents/${actx.id}/runs/${t.request_id}` }, "run")), h("pre", {}, json(t.output))),
      ])) : h("p", { class: "empty" }, "No turns in this thread."));
  } catch (err) {
    fill(box, api.isMissingRoute(err)
      ? h("p", { class: "empty" }, "This server does not keep threads yet.")
      : errorBox(err));
  }

  async function remove() {
    if (!(await confirmDialog(`Delete thread ${id}?`, "Its turns are deleted from storage; the agent forgets the conversation.", "Delete"))) return;
    try {
      await api.del(path);
      notice(`Thread ${id} deleted.`);
      actx.go("threads");
    } catch (err) {
      box.append(errorBox(err));
    }
  }
}
