// Invocation keys: issue (the key is shown once, in a dialog, and never again), list, revoke.

import * as api from "./api.js";
import { h, fill, field, errorBox, notice, showError, clearErrors, dialog, confirmDialog, table, fmtTime, copyButton } from "./dom.js";

export async function keysSection(actx) {
  const box = h("div", {});
  const member = h("input", { type: "text", maxlength: "128", autocomplete: "off", placeholder: "optional" });
  const form = h("form", { class: "inline-form", onsubmit: issue },
    field("Member", member, { path: "member", hint: "A member's key acts as that member: their credentials, their runs only." }),
    errorBox(null),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Issue a key")));
  actx.body.append(h("p", { class: "muted" }, "Keys call this agent's endpoints (invoke, async, poll, cancel) and nothing else. Hangar stores only their hash."), form, box);
  await draw();

  async function draw() {
    try {
      const { keys } = await api.get(actx.path("/keys"));
      fill(box, keys.length
        ? table(null, ["Key", "Member", "Issued", ""], keys.map((k) => h("tr", { "data-key": k.id },
          h("td", {}, h("code", {}, k.id)),
          h("td", {}, k.member || h("span", { class: "muted" }, "—")),
          h("td", {}, fmtTime(k.created_at)),
          h("td", {}, h("button", { type: "button", class: "danger", onclick: () => revoke(k) }, "Revoke")))))
        : h("p", { class: "empty" }, "No keys: only the admin token can call the endpoints."));
    } catch (err) {
      fill(box, errorBox(err));
    }
  }

  async function issue(e) {
    e.preventDefault();
    clearErrors(form);
    const body = member.value.trim() ? { member: member.value.trim() } : undefined;
    let issued;
    try {
      issued = await api.post(actx.path("/keys"), body);
    } catch (err) {
      showError(form, err);
      return;
    }
    member.value = "";
    await actx.refresh();
    await dialog("Your new invocation key", (close) => h("div", { class: "secret-once" },
      h("p", {}, h("strong", {}, "Copy it now: "), "Hangar keeps only its hash and cannot show it again."),
      h("div", { class: "copyable" }, h("code", { class: "secret" }, issued.key), copyButton(issued.key, "Copy key")),
      h("p", { class: "small muted" }, `Id ${issued.id}${issued.member ? `, acts as ${issued.member}` : ""}. Send it as Authorization: Bearer.`),
      h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => close(true) }, "I have copied it"))));
    await draw();
  }

  async function revoke(k) {
    if (!(await confirmDialog(`Revoke ${k.id}?`, "Callers using it are refused from now on. This cannot be undone.", "Revoke"))) return;
    try {
      await api.del(actx.path(`/keys/${encodeURIComponent(k.id)}`));
      await actx.refresh();
      notice(`Key ${k.id} revoked.`);
      await draw();
    } catch (err) {
      notice(err.explanation, "error");
    }
  }
}
