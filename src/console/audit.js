// The audit log: the agent's events, oldest first, secrets shown as ***; the hash chain checked
// by the server (`GET …/verify`); the agent as it stood after any event (`GET …/history`).

import * as api from "./api.js";
import { h, fill, errorBox, json, fmtTime, dialog } from "./dom.js";

const PAGE = 100;

export async function auditSection(actx) {
  const verdict = h("div", { class: "verdict", "aria-live": "polite" });
  const recheck = h("button", { type: "button", onclick: verify }, "Check the chain again");
  const list = h("ol", { class: "events" });
  const more = h("button", { type: "button", hidden: true, onclick: () => load() }, "Load more");
  actx.body.append(h("div", { class: "actions" }, verdict, recheck), list, more);
  let after = 0;
  await Promise.all([verify(), load()]);

  async function verify() {
    fill(verdict, h("span", { class: "muted" }, "Checking the hash chain…"));
    try {
      const v = await api.get(actx.path("/verify"));
      fill(verdict, v.ok
        ? h("p", { class: "chain-ok" }, h("span", { "aria-hidden": "true" }, "✓ "), `Hash chain verified: ${v.events} events, intact.`)
        : h("p", { class: "chain-bad", role: "alert" }, h("span", { "aria-hidden": "true" }, "✗ "),
          `Hash chain broken at ${v.first_bad}: ${v.reason}. ${v.events} events before it are intact.`));
    } catch (err) {
      fill(verdict, errorBox(err));
    }
  }

  async function load() {
    try {
      const { events } = await api.get(actx.path(`/events?after=${after}&limit=${PAGE}`));
      for (const e of events) list.append(eventItem(e));
      if (events.length) after = events[events.length - 1].seq;
      more.hidden = events.length < PAGE;
    } catch (err) {
      list.after(errorBox(err));
    }
  }

  function eventItem(e) {
    return h("li", { class: "event", "data-seq": e.seq },
      h("div", { class: "event-head" },
        h("span", { class: "seq" }, `#${e.seq}`), h("strong", {}, e.type), h("span", { class: "muted" }, fmtTime(e.at)),
        h("button", { type: "button", class: "link", onclick: () => history(e.seq) }, "Agent after this event")),
      h("div", { class: "hashes small muted" }, "hash ", h("code", { title: e.hash }, (e.hash || "").slice(0, 16)), "… prev ", h("code", { title: e.prev_hash }, (e.prev_hash || "").slice(0, 16)), "…"),
      h("details", {}, h("summary", {}, "Data"), h("pre", {}, json(e.data))));
  }

  async function history(seq) {
    try {
      const a = await api.get(actx.path(`/history?at=${seq}`));
      await dialog(`The agent after event #${seq}`, () => h("div", {},
        h("p", {}, `Status ${a.status}${a.live_version ? `, live version ${a.live_version}` : ""}.`),
        h("pre", {}, json(a.draft))), { wide: true });
    } catch (err) {
      list.before(errorBox(err));
    }
  }
}
