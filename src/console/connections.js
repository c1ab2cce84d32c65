// Connections: add, edit, remove, and members' own credentials. Secrets go in through password
// inputs and never come back: the API answers `***`, and an empty secret input on an edit sends
// `***`, which keeps the stored one.

import * as api from "./api.js";
import { h, fill, field, errorBox, notice, showError, clearErrors, dialog, confirmDialog, table, badge } from "./dom.js";

const AUTH_TYPES = {
  api_key: "API key (header)",
  basic: "Basic (user name and password)",
  bearer: "Bearer token",
  key_value: "Key/value pairs (team only)",
};

export async function connectionsSection(actx) {
  const box = h("div", {});
  const addBtn = h("button", { type: "button", class: "primary", onclick: () => edit(null) }, "Add a connection");
  actx.body.append(h("p", { class: "muted" }, "Where tools send requests, and with which credentials. Changes take effect at the next deploy; members' own credentials at once."),
    h("div", { class: "actions" }, addBtn), box);
  await draw();

  async function draw() {
    let connections;
    try {
      ({ connections } = await api.get(actx.path("/connections")));
    } catch (err) {
      fill(box, errorBox(err));
      return;
    }
    if (!connections.length) {
      fill(box, h("p", { class: "empty" }, "No connections."));
      return;
    }
    fill(box, table(null, ["Connection", "Server", "Auth", "Credentials", "Status", ""], connections.map((c) => h("tr", { "data-connection": c.id },
      h("td", {}, h("strong", {}, c.display_name || c.id), h("div", { class: "muted small" }, c.id)),
      h("td", {}, h("code", {}, c.server)),
      h("td", {}, AUTH_TYPES[c.auth?.type] || c.auth?.type),
      h("td", {}, c.credentials === "member" ? `member (${c.members.length ? c.members.join(", ") : "none set"})` : "team"),
      h("td", {}, badge(c.status.replace(/_/g, " "), c.status === "ready" ? "ok" : "warn")),
      h("td", {}, h("div", { class: "row-actions" },
        h("button", { type: "button", onclick: () => check(c) }, "Check"),
        h("button", { type: "button", onclick: () => edit(c) }, "Edit"),
        c.credentials === "member" ? h("button", { type: "button", onclick: () => memberCredentials(c) }, "Member credentials") : null,
        h("button", { type: "button", class: "danger", onclick: () => remove(c) }, "Remove")))))));
  }

  /** Proves the credentials against the server (`GET <server><check_path>`), when this server can. */
  async function check(c) {
    // A team connection is checked with its own credentials; a member one with each member's.
    const bodies = c.credentials === "member" ? c.members.map((member) => ({ member })) : [{}];
    if (!bodies.length) {
      notice(`${c.id}: no member has stored credentials to check yet.`, "error");
      return;
    }
    const said = [];
    let allOk = true;
    for (const body of bodies) {
      try {
        const r = await api.post(actx.path(`/connections/${encodeURIComponent(c.id)}/check`), body);
        allOk = allOk && r.status === "authenticated";
        said.push(`${body.member ? `${body.member}: ` : ""}${r.status}${r.http_status ? ` (HTTP ${r.http_status}, ${r.latency_ms} ms)` : ""}${r.detail ? ` — ${r.detail}` : ""}`);
      } catch (err) {
        notice(api.isMissingRoute(err) ? "This server cannot check connections yet." : err.explanation, "error");
        return;
      }
    }
    notice(`${c.id}: ${said.join("; ")}`, allOk ? "ok" : "error");
    await actx.refresh();
    await draw();
  }

  async function remove(c) {
    const ok = await confirmDialog(`Remove ${c.display_name || c.id}?`, "Its stored secrets and every member's credentials for it are deleted. Tools that use it fail validation until it is back.", "Remove");
    if (!ok) return;
    try {
      await api.del(actx.path(`/connections/${encodeURIComponent(c.id)}`), { ifMatch: actx.seq });
      await actx.refresh();
      notice(`Connection ${c.id} removed.`);
      await draw();
    } catch (err) {
      notice(err.explanation, "error");
    }
  }

  function edit(existing) {
    return dialog(existing ? `Edit connection ${existing.id}` : "Add a connection", (close) => {
      const id = h("input", { type: "text", required: true, value: existing?.id || "", readonly: Boolean(existing), pattern: "[A-Za-z0-9_.:-]+" });
      const displayName = h("input", { type: "text", value: existing?.display_name || "" });
      const server = h("input", { type: "url", required: true, value: existing?.server || "", placeholder: "https://api.example.com" });
      const mode = h("select", {}, h("option", { value: "team" }, "Team: one set of credentials for every caller"), h("option", { value: "member" }, "Member: each member stores their own"));
      mode.value = existing?.credentials || "team";
      const type = h("select", {}, Object.entries(AUTH_TYPES).map(([k, v]) => h("option", { value: k }, v)));
      type.value = existing?.auth?.type || "api_key";
      const secrets = h("div", {});
      let read = () => ({});
      const drawSecrets = () => { read = authFields(secrets, type.value, existing && existing.auth?.type === type.value ? existing.auth : null, mode.value === "member"); };
      type.addEventListener("change", drawSecrets);
      mode.addEventListener("change", drawSecrets);
      drawSecrets();
      const form = h("form", { onsubmit: async (e) => {
        e.preventDefault();
        clearErrors(form);
        if (!form.reportValidity()) return;
        const base = existing ? Object.fromEntries(Object.entries(existing).filter(([k]) => !["status", "members"].includes(k))) : {};
        const body = { ...base, id: id.value.trim(), display_name: displayName.value.trim(), server: server.value.trim(), credentials: mode.value, auth: read() };
        try {
          // If-Match: an edit replaces the connection whole, so it must not undo someone else's.
          if (existing) await api.put(actx.path(`/connections/${encodeURIComponent(existing.id)}`), body, { ifMatch: actx.seq });
          else await api.post(actx.path("/connections"), body);
          await actx.refresh();
          notice(existing ? `Connection ${body.id} saved.` : `Connection ${body.id} added.`);
          close(true);
          await draw();
        } catch (err) {
          showError(form, err);
        }
      } },
      field("Id", id, { path: "id", hint: "Tools name the connection by it; it cannot change later." }),
      field("Display name", displayName, { path: "display_name" }),
      field("Server", server, { path: "server", hint: "Base URL; changing it needs the secrets again." }),
      field("Credentials", mode, { path: "credentials" }),
      field("Auth type", type, { path: "auth.type" }),
      secrets,
      errorBox(null),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => close(false) }, "Cancel"), h("button", { type: "submit", class: "primary" }, existing ? "Save" : "Add")));
      return form;
    });
  }

  function memberCredentials(c) {
    return dialog(`Member credentials for ${c.display_name || c.id}`, (close) => {
      const member = h("input", { type: "text", required: true, maxlength: "128", autocomplete: "off" });
      const secrets = h("div", {});
      const read = authFields(secrets, c.auth.type, c.auth, false, true);
      const form = h("form", { onsubmit: async (e) => {
        e.preventDefault();
        clearErrors(form);
        if (!form.reportValidity()) return;
        try {
          await api.put(actx.path(`/connections/${encodeURIComponent(c.id)}/members/${encodeURIComponent(member.value.trim())}`), read());
          await actx.refresh();
          notice(`Credentials for ${member.value.trim()} saved.`);
          close(true);
          await draw();
        } catch (err) {
          showError(form, err);
        }
      } },
      h("p", {}, c.members.length ? `Members with credentials: ${c.members.join(", ")}. Saving for one of them replaces theirs.` : "No member has stored credentials yet."),
      field("Member", member, { path: "member" }),
      secrets,
      errorBox(null),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => close(false) }, "Cancel"), h("button", { type: "submit", class: "primary" }, "Save credentials")));
      return form;
    });
  }
}

/**
 * Draws the inputs of one auth type into `box` and returns a function reading them into an auth
 * object. `stored`: the connection's current (redacted) auth, when editing the same type: its
 * secrets are kept when their input is left empty. `memberMode`: the connection holds no team
 * secret, only the non-secret parts (the header). `required`: every secret must be typed.
 */
function authFields(box, type, stored, memberMode, required = false) {
  const secret = (label, path, has) => {
    const input = h("input", { type: "password", autocomplete: "new-password", required: required || (!has && !memberMode), placeholder: has ? "stored — leave empty to keep it" : "" });
    return [field(label, input, { path }), input];
  };
  const keep = (input, has) => (input.value ? input.value : has ? "***" : undefined);
  const parts = [];
  let read;
  if (type === "api_key") {
    const header = h("input", { type: "text", required: true, value: stored?.header || "X-Api-Key" });
    parts.push(field("Header", header, { path: "auth.header" }));
    if (memberMode) {
      read = () => ({ type, header: header.value.trim() });
    } else {
      const [f, key] = secret("Key", "auth.key", Boolean(stored?.key));
      parts.push(f);
      read = () => ({ type, header: header.value.trim(), key: keep(key, stored?.key) });
    }
  } else if (type === "basic") {
    if (memberMode) {
      read = () => ({ type });
    } else {
      const [fu, user] = secret("User name", "auth.username", Boolean(stored?.username));
      const [fp, pass] = secret("Password", "auth.password", Boolean(stored?.password));
      parts.push(fu, fp);
      read = () => ({ type, username: keep(user, stored?.username), password: keep(pass, stored?.password) });
    }
  } else if (type === "bearer") {
    if (memberMode) {
      read = () => ({ type });
    } else {
      const [f, token] = secret("Token", "auth.token", Boolean(stored?.token));
      parts.push(f);
      read = () => ({ type, token: keep(token, stored?.token) });
    }
  } else {
    const names = Object.keys(stored?.pairs || {});
    const pairs = h("textarea", { rows: "3", class: "code", spellcheck: "false", placeholder: "name=value, one per line" }, names.map((n) => `${n}=`).join("\n"));
    parts.push(field("Pairs", pairs, { path: "auth.pairs", hint: names.length ? "A name left without a value keeps its stored value." : "name=value, one per line" }));
    read = () => ({
      type,
      pairs: Object.fromEntries(pairs.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
        const i = l.indexOf("=");
        const k = (i < 0 ? l : l.slice(0, i)).trim();
        const v = i < 0 ? "" : l.slice(i + 1);
        return [k, v || (names.includes(k) ? "***" : "")];
      })),
    });
  }
  if (memberMode) parts.push(h("p", { class: "muted small" }, "Each member stores their own secret with “Member credentials”."));
  fill(box, parts);
  return read;
}
