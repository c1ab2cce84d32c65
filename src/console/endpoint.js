// The endpoint page: Deploy → the pre-deployment summary → confirm; the sync / async poll /
// async push tabs with their settings (ranges enforced here by the inputs, and by the server,
// whose refusal is shown next to the field), the push signing secret shown once, snippets with
// copy buttons, a call to try it; undeploy. And the versions, with redeploy and rollback.

import * as api from "./api.js";
import { h, fill, field, errorBox, notice, json, showError, clearErrors, dialog, confirmDialog, codeBlock, copyButton, tabs, fmtTime, table, badge, problemList } from "./dom.js";
import { remember } from "./runs.js";

/** Where an agent's endpoints are, when it is not live yet: the same URLs it will have. */
function urls(actx, deployment) {
  if (deployment) return deployment.endpoints;
  const base = `${location.origin}/v1/agents/${actx.id}`;
  return { sync: `${base}/invoke`, async_poll: `${base}/invoke/async`, async_push: null };
}

export async function endpointSection(actx) {
  const status = h("div", { class: "deploy-bar" });
  const tabBox = h("div", {});
  actx.body.append(status, tabBox);
  let deployment = null;
  let settings = null;
  let tab = actx.rest[0] || "sync";

  await load();

  async function load() {
    deployment = null;
    try {
      if (actx.agent.status === "live") deployment = await api.get(actx.path("/deployment"));
      settings = await api.get(actx.path("/endpoint"));
    } catch (err) {
      fill(tabBox, errorBox(err));
      return;
    }
    drawStatus();
    const protocols = h("div", {});
    fill(tabBox, protocols);
    drawProtocols(protocols);
    tabBox.prepend(tabs("Endpoint kinds", [
      { id: "sync", title: "Sync", render: syncTab },
      { id: "async-poll", title: "Async poll", render: pollTab },
      { id: "async-push", title: "Async push", render: pushTab },
    ], tab, (id) => { tab = id; }));
  }

  /** The same agent over other protocols, when this server speaks them (A2A, OpenAI). */
  async function drawProtocols(box) {
    if (!deployment) return;
    const base = deployment.endpoints.sync.replace(/\/v1\/agents\/.*$/, "");
    const parts = [];
    try {
      await api.get(`/a2a/${encodeURIComponent(actx.id)}/.well-known/agent-card.json`);
      const url = `${base}/a2a/${actx.id}/.well-known/agent-card.json`;
      parts.push(urlRow("A2A card", url));
    } catch { /* no A2A on this server */ }
    try {
      await api.get(actx.path("/models"));
      parts.push(urlRow("OpenAI base_url", `${base}/v1/agents/${actx.id}`));
    } catch { /* no OpenAI-compatible endpoint on this server */ }
    if (parts.length) fill(box, h("h3", {}, "Other protocols"), parts);
  }

  function drawStatus() {
    const a = actx.agent;
    const deployBtn = h("button", { type: "button", class: "primary", onclick: () => deployDialog(actx, null).then((done) => done && reload()) },
      a.status === "live" ? "Redeploy the draft" : "Deploy");
    const undeployBtn = a.status === "live"
      ? h("button", { type: "button", class: "danger", onclick: () => undeploy(actx).then((done) => done && reload()) }, "Undeploy")
      : null;
    fill(status,
      h("p", {}, a.status === "live"
        ? [h("strong", {}, `Live: version ${a.live_version}`), `, deployed ${fmtTime(a.deployed_at)}. Settings changed here take effect at the next deploy.`]
        : [h("strong", {}, "Not deployed."), " Deploy to serve these endpoints; the URLs never change across redeploys."]),
      h("div", { class: "actions" }, deployBtn, undeployBtn,
        a.status === "live" ? h("a", { href: `#/agents/${actx.id}/flow` }, "View the live flow") : null));
  }

  async function reload() {
    await actx.refresh();
    await load();
  }

  function snippets() {
    if (!deployment) return h("p", { class: "muted" }, "Snippets appear once the agent is deployed.");
    return tabs("Snippet language", [
      { id: "curl", title: "curl", render: () => codeBlock(deployment.snippets.curl, "curl") },
      { id: "python", title: "Python", render: () => codeBlock(deployment.snippets.python, "Python") },
      { id: "node", title: "Node.js", render: () => codeBlock(deployment.snippets.node, "Node.js") },
    ], "curl");
  }

  function urlRow(label, url) {
    return h("div", { class: "copyable url-row" }, h("span", { class: "label" }, label), h("code", {}, url), copyButton(url, "Copy URL"));
  }

  /** A settings form for part of the endpoint settings; `fields` are [label, input, path, hint]. */
  function settingsForm(parts, collect, after) {
    const form = h("form", { class: "settings", onsubmit: async (e) => {
      e.preventDefault();
      clearErrors(form);
      // The browser's own check first: it names the field and its range, in the user's language.
      if (!form.reportValidity()) return;
      const body = collect();
      try {
        // If-Match: the settings are replaced whole, so they must not undo someone else's.
        const saved = await api.put(actx.path("/endpoint"), body, { ifMatch: actx.seq });
        settings = saved;
        await actx.refresh();
        notice("Endpoint settings saved; they go live at the next deploy.");
        if (after) after(saved);
        else form.querySelector("button[type=submit]").focus();
      } catch (err) {
        showError(form, err);
      }
    } }, parts, errorBox(null), h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save settings")));
    return form;
  }

  /** The whole settings body the server expects (absent fields would take their defaults). */
  function body(overrides = {}) {
    const a = settings.async;
    return {
      sync_timeout_s: settings.sync_timeout_s,
      max_concurrency: settings.max_concurrency,
      async: { push_enabled: a.push_enabled, url: a.url, token: a.token === null ? null : "***", timeout_s: a.timeout_s, ...(overrides.async || {}) },
      ...Object.fromEntries(Object.entries(overrides).filter(([k]) => k !== "async")),
    };
  }

  function syncTab() {
    const timeout = h("input", { type: "number", min: "60", max: "300", step: "1", required: true, value: settings.sync_timeout_s });
    const concurrency = h("input", { type: "number", min: "1", max: "10000", step: "1", required: true, value: settings.max_concurrency });
    return h("div", {},
      urlRow("POST", urls(actx, deployment).sync),
      h("p", { class: "muted" }, "The caller waits for the result, up to the timeout."),
      settingsForm([
        h("div", { class: "grid2" },
          field("Sync timeout (seconds)", timeout, { path: "sync_timeout_s", hint: "60–300; default 180" }),
          field("Max concurrent runs", concurrency, { path: "max_concurrency", hint: "1–10000; beyond it a sync call gets 429" })),
      ], () => body({ sync_timeout_s: Number(timeout.value), max_concurrency: Number(concurrency.value) })),
      tryIt("sync"),
      h("h3", {}, "Snippets"), snippets());
  }

  function pollTab() {
    const noLimit = h("input", { type: "checkbox", checked: settings.async.timeout_s === null });
    const timeout = h("input", { type: "number", min: "60", max: "600", step: "1", value: settings.async.timeout_s ?? 180, required: true, disabled: settings.async.timeout_s === null });
    noLimit.addEventListener("change", () => { timeout.disabled = noLimit.checked; });
    return h("div", {},
      urlRow("POST", urls(actx, deployment).async_poll),
      h("p", { class: "muted" }, "202 with a request id at once (durable before the answer); poll GET …/requests/{id}, with ?wait= to long-poll."),
      settingsForm([
        h("div", { class: "grid2" },
          field("Async timeout (seconds)", timeout, { path: "async.timeout_s", hint: "60–600; default 180" }),
          h("label", { class: "check" }, noLimit, " No time limit")),
      ], () => body({ async: { timeout_s: noLimit.checked ? null : Number(timeout.value) } })),
      tryIt("async"),
      h("h3", {}, "Snippets"), snippets());
  }

  function pushTab() {
    const a = settings.async;
    const enabled = h("input", { type: "checkbox", checked: a.push_enabled });
    const url = h("input", { type: "url", value: a.url || "", placeholder: "https://hooks.example.com/hangar", pattern: "https?://.+" });
    const token = h("input", { type: "password", autocomplete: "new-password", placeholder: a.token ? "stored — leave empty to keep it" : "" });
    const secretBox = h("div", {});
    const sync = () => { url.required = enabled.checked; token.required = enabled.checked && !a.token; };
    enabled.addEventListener("change", sync);
    url.addEventListener("input", () => { token.required = enabled.checked && (!a.token || url.value !== (a.url || "")); });
    sync();
    drawSecret(settings.signing_secret);

    function drawSecret(secret, fresh = false) {
      if (!secret) {
        fill(secretBox, h("p", { class: "muted" }, "No signing secret yet: Hangar makes one when push is first enabled."));
        return;
      }
      const shown = fresh || !secret.includes("***");
      fill(secretBox,
        shown
          ? h("div", { class: "secret-once", role: "alert" },
            h("p", {}, h("strong", {}, "Signing secret: copy it now. "), "It is shown this once; afterwards only whsec_*** is."),
            h("div", { class: "copyable" }, h("code", { class: "secret" }, secret), copyButton(secret, "Copy secret")))
          : h("p", {}, "Signing secret: ", h("code", {}, secret), " (shown in full only when made)"),
        h("button", { type: "button", onclick: rotate }, "Rotate the signing secret"));
    }

    async function rotate() {
      const ok = await confirmDialog("Rotate the signing secret?",
        "A new secret is made and the old one stops verifying at once, for the live version too. Receivers must switch to the new one.", "Rotate");
      if (!ok) return;
      try {
        const saved = await api.post(actx.path("/endpoint/rotate-secret"));
        settings = saved;
        await actx.refresh();
        drawSecret(saved.signing_secret, true);
        notice("A new signing secret was made.");
      } catch (err) {
        fill(secretBox, errorBox(err));
      }
    }

    const form = settingsForm([
      h("label", { class: "check" }, enabled, " Push each async run's result to a URL"),
      field("Push URL", url, { path: "async.url", hint: "http or https; changing it needs the token again" }),
      field("Push token", token, { path: "async.token", hint: "Sent as Authorization: Bearer; never shown again" }),
    ], () => body({ async: { push_enabled: enabled.checked, url: url.value.trim() || null, token: token.value ? token.value : (a.token ? "***" : null) } }),
    (saved) => {
      token.value = "";
      if (saved.signing_secret && !saved.signing_secret.includes("***")) drawSecret(saved.signing_secret, true);
    });
    return h("div", {},
      urlRow("POST", urls(actx, deployment).async_poll),
      h("p", { class: "muted" }, "As async poll, and Hangar POSTs the final run to your URL, signed with Standard Webhooks headers; retried until your server answers 2xx."),
      form, h("h3", {}, "Signing secret"), secretBox,
      h("h3", {}, "Verify a delivery"),
      codeBlock(`# pip install standardwebhooks
from standardwebhooks.webhooks import Webhook
wh = Webhook(os.environ["HANGAR_SIGNING_SECRET"])  # whsec_...
run = wh.verify(request_body, request_headers)      # raises if the signature is wrong`, "Python"));
  }

  /** Calls the live endpoint from the console and links to the run. */
  function tryIt(mode) {
    const input = h("textarea", { rows: "2", class: "code", spellcheck: "false" }, '{"message": "Hello"}');
    const out = h("div", { "aria-live": "polite" });
    const form = h("form", { class: "try", onsubmit: async (e) => {
      e.preventDefault();
      clearErrors(form);
      let parsed;
      try {
        parsed = JSON.parse(input.value || "{}");
      } catch (err) {
        showError(form, new api.ApiError(400, "invalid_request", `Not valid JSON: ${err.message}`, { field: "input" }));
        return;
      }
      fill(out, h("p", { class: "muted" }, "Calling…"));
      try {
        if (mode === "sync") {
          const run = await api.post(actx.path("/invoke"), { input: parsed });
          remember(actx.id, run.request_id);
          fill(out, h("p", {}, badge(run.status), " ", h("a", { href: `#/agents/${actx.id}/runs/${run.request_id}` }, `run ${run.request_id}`)), h("pre", {}, json(run.output)));
        } else {
          const accepted = await api.post(actx.path("/invoke/async"), { input: parsed });
          remember(actx.id, accepted.request_id);
          fill(out, h("p", {}, badge(accepted.status), " accepted: ", h("a", { href: `#/agents/${actx.id}/runs/${accepted.request_id}` }, `run ${accepted.request_id}`)));
        }
      } catch (err) {
        fill(out, errorBox(err, err.details?.request_id ? h("a", { href: `#/agents/${actx.id}/runs/${err.details.request_id}` }, "Open the run") : null));
      }
    } },
    h("h3", {}, "Try it"),
    field("Input (JSON)", input, { path: "input" }),
    errorBox(null),
    h("div", { class: "actions" }, h("button", { type: "submit", disabled: !deployment }, mode === "sync" ? "Call" : "Submit")), out);
    if (!deployment) form.append(h("p", { class: "muted small" }, "Deploy first to call the endpoint."));
    return form;
  }
}

/**
 * The pre-deployment summary with its checks, then deploy on confirm. `version`: a rollback to
 * that version instead of the draft. Resolves true when something was deployed.
 */
export async function deployDialog(actx, version, { check = false } = {}) {
  let agent;
  let summary;
  try {
    const r = await api.call("GET", actx.path());
    agent = r.body;
    // `?check=true` first proves every connection the draft uses (servers that check connections).
    summary = version === null ? await api.get(actx.path(check ? "/summary?check=true" : "/summary")) : null;
  } catch (err) {
    notice(err.explanation, "error");
    return false;
  }
  const seq = agent.seq;
  const title = version === null ? "Deploy the draft" : `Roll back to version ${version}`;
  return dialog(title, (close) => {
    const problems = h("div", { "aria-live": "polite" });
    const confirm = h("button", { type: "button", class: "primary", disabled: summary ? !summary.can_deploy : false }, version === null ? "Confirm and deploy" : `Deploy version ${version} again`);
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      try {
        const d = await api.post(actx.path("/deploy"), version === null ? {} : { version }, { ifMatch: seq });
        await actx.refresh();
        notice(`Deployed: version ${d.version} is live.`);
        close(true);
      } catch (err) {
        if (err.code === "validation_failed") {
          fill(problems, h("p", { role: "alert" }, "Hangar refused to deploy: fix these first."), problemList(err.details?.errors, err.details?.warnings));
        } else if (err.status === 412) {
          fill(problems, errorBox(err, h("p", {}, "Close this and open Deploy again to see the current summary.")));
        } else {
          fill(problems, errorBox(err));
        }
      }
    });
    return h("div", { class: "summary" },
      summary ? summaryView(actx, summary) : h("p", {}, `Version ${version} is deployed again as a new version (rollback_of ${version}). It is validated again first.`),
      problems,
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => close(false) }, "Cancel"),
        summary && summary.connections.length ? h("button", { type: "button", onclick: () => close("check") }, "Check the connections") : null,
        confirm));
  }, { wide: true }).then((result) => (result === "check" ? deployDialog(actx, version, { check: true }) : result));
}

/** A line of the summary: `ok` true (✓), false (✗), or null for "not known yet" (•). */
function tick(ok, text) {
  const [cls, mark, words] = ok === null ? ["check-unknown", "•", "Not checked: "] : ok ? ["check-ok", "✓", "OK: "] : ["check-bad", "✗", "Problem: "];
  return h("li", { class: cls }, h("span", { class: "tick", "aria-hidden": "true" }, mark), h("span", { class: "sr" }, words), text);
}

/** A connection's status in the summary: proved, refused or unusable, or not checked yet. */
function connectionOk(status) {
  if (status === "authenticated" || status === "ready") return true;
  if (status === "unchecked") return null;
  return false; // rejected, unreachable, needs_member_credentials
}

function summaryView(actx, s) {
  const p = s.profile;
  return h("div", {},
    h("ul", { class: "checks" },
      tick(Boolean(p.name && p.description), h("span", {}, h("strong", {}, "Profile: "), `${p.name || "(no name)"} — ${p.description || "no description"}`)),
      tick(Boolean(p.model), h("span", {}, h("strong", {}, "Model: "), p.model ? `${p.model.provider} / ${p.model.name}` : "none")),
      tick(true, h("span", {}, h("strong", {}, "Knowledge: "), s.knowledge.length ? s.knowledge.map((k) => `${k.name} (${k.bytes} bytes)`).join(", ") : "none")),
      ...s.tools.map((t) => tick(t.security_matches, h("span", {}, h("strong", {}, "Tool "), `${t.name} → ${t.connection} (${t.security})${t.security_matches ? "" : ": security does not match the connection"}`))),
      ...s.collaborators.map((c) => tick(c.live, h("span", {}, h("strong", {}, "Collaborator "), `${c.name || c.id}${c.live ? " is live" : " is not live"}`))),
      ...s.connections.map((c) => tick(connectionOk(c.status), h("span", {}, h("strong", {}, "Connection "),
        `${c.display_name || c.id} (${c.server}): ${c.status.replace(/_/g, " ")}${c.checked_at ? `, ${fmtTime(c.checked_at)}` : ""}`))),
      tick(s.errors.length === 0, h("span", {}, h("strong", {}, "Errors: "), String(s.errors.length))),
      tick(s.warnings.length === 0, h("span", {}, h("strong", {}, "Warnings: "), String(s.warnings.length)))),
    s.behavior.instructions ? h("details", {}, h("summary", {}, "Behavior (instructions)"), h("pre", {}, s.behavior.instructions)) : null,
    s.can_deploy
      ? h("p", { class: "ok" }, "✓ Ready to deploy.")
      : h("div", { class: "blocked" }, h("p", { role: "alert" }, "Deploy is blocked: every error and warning must be fixed first."),
        problemList(s.errors, s.warnings), h("a", { href: `#/agents/${actx.id}/draft` }, "Open the draft editor")));
}

async function undeploy(actx) {
  const ok = await confirmDialog(`Undeploy ${actx.agent.name}?`,
    "The agent stops now: runs in flight and queued runs are cancelled, and its endpoints answer 409 until the next deploy. Its versions are kept.", "Undeploy");
  if (!ok) return false;
  try {
    await api.post(actx.path("/undeploy"), undefined, { ifMatch: actx.seq });
    await actx.refresh();
    notice("Undeployed: the agent is back to draft.");
    return true;
  } catch (err) {
    notice(err.explanation, "error");
    return false;
  }
}

export async function versionsSection(actx) {
  const box = h("div", {});
  actx.body.append(box);
  await draw();

  async function draw() {
    let versions;
    try {
      ({ versions } = await api.get(actx.path("/versions")));
    } catch (err) {
      fill(box, errorBox(err));
      return;
    }
    const redeploy = h("button", { type: "button", class: "primary", onclick: async () => { if (await deployDialog(actx, null)) await draw(); } },
      actx.agent.status === "live" ? "Redeploy the draft" : "Deploy the draft");
    const undeployBtn = actx.agent.status === "live" ? h("button", { type: "button", class: "danger", onclick: async () => { if (await undeploy(actx)) await draw(); } }, "Undeploy") : null;
    if (!versions.length) {
      fill(box, h("p", { class: "empty" }, "Never deployed."), h("div", { class: "actions" }, redeploy));
      return;
    }
    fill(box, h("div", { class: "actions" }, redeploy, undeployBtn),
      table("Every deployed version, newest first", ["Version", "Deployed", "Notes", ""], [...versions].reverse().map((v) => h("tr", { "data-version": v.version },
        h("td", {}, `v${v.version} `, v.live ? h("span", { class: "live", title: `Deployed ${fmtTime(v.deployed_at)}` }, h("span", { class: "dot", "aria-hidden": "true" }), "live") : null),
        h("td", {}, fmtTime(v.deployed_at)),
        h("td", {}, v.rollback_of ? `rollback of v${v.rollback_of}` : "", h("span", { class: "muted small" }, ` event #${v.seq}`)),
        h("td", {}, v.live ? null : h("button", { type: "button", onclick: async () => { if (await deployDialog(actx, v.version)) await draw(); } }, `Roll back to v${v.version}`))))));
  }
}
