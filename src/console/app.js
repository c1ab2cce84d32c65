// The console's entry: the sign-in gate and the router. Pages are addressed by the URL's
// fragment (`#/agents/ID/endpoint`), which holds ids only: never the token.

import * as api from "./api.js";
import { h, fill, field, errorBox, unsaved } from "./dom.js";
import { agentsPage } from "./agents.js";
import { agentPage } from "./agent.js";

const main = () => document.getElementById("main");

/** What the current page cleans up when the user leaves it (open streams, timers). */
let leave = null;

/** The fragment shown now: where to go back to when leaving unsaved work is declined. */
let current = location.hash;

function route() {
  if (unsaved.what && location.hash !== current) {
    if (!window.confirm(`Leave without saving ${unsaved.what}? Your changes will be lost.`)) {
      history.replaceState(null, "", current || "#/");
      return;
    }
  }
  unsaved.what = null;
  current = location.hash;
  if (leave) {
    try { leave(); } catch { /* a page that failed to clean up must not block the next */ }
    leave = null;
  }
  renderSession();
  if (!api.token()) {
    signIn();
    return;
  }
  const parts = (location.hash.replace(/^#\/?/, "") || "").split("/").filter(Boolean).map(decodeURIComponent);
  const ctx = { main: main(), setLeave: (fn) => { leave = fn; }, crumbs: setCrumbs };
  if (parts.length === 0) {
    agentsPage(ctx);
  } else if (parts[0] === "agents" && parts[1]) {
    agentPage(ctx, parts[1], parts[2] || "draft", parts.slice(3));
  } else {
    setCrumbs([]);
    fill(main(), h("h1", {}, "Not found"), h("p", {}, "There is no such page. ", h("a", { href: "#/" }, "Back to the agents")));
  }
}

function setCrumbs(items) {
  const nav = document.getElementById("crumbs");
  fill(nav, h("ol", {}, h("li", {}, h("a", { href: "#/" }, "Agents")),
    items.map(([text, href]) => h("li", {}, href ? h("a", { href }, text) : h("span", { "aria-current": "page" }, text)))));
}

function renderSession() {
  const el = document.getElementById("session");
  if (!api.token()) {
    fill(el);
    return;
  }
  fill(el, h("button", {
    type: "button", class: "link", onclick: () => {
      api.forgetToken();
      route();
    },
  }, "Sign out"));
}

/** Asks for the admin token. The input has no `name`: even a form submitted without this
 * script (it cannot be) would carry nothing, and the form posts nowhere. */
function signIn(reason) {
  setCrumbs([]);
  document.title = "Sign in · Hangar";
  const input = h("input", { type: "password", autocomplete: "current-password", required: true, spellcheck: "false" });
  const err = errorBox(reason);
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", {
    class: "card narrow", method: "post", action: "#", novalidate: false,
    onsubmit: async (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      submit.disabled = true;
      api.setToken(value);
      try {
        await api.get("/v1/agents");
        input.value = "";
        route();
      } catch (e2) {
        api.forgetToken();
        const shown = e2.status === 403
          ? new api.ApiError(403, "forbidden", "That is an invocation key; the console needs the admin token (HANGAR_ADMIN_TOKEN, or the admin-token file in the data directory).")
          : e2;
        fill(err, h("p", {}, shown.explanation));
        err.hidden = false;
        err.setAttribute("role", "alert");
        submit.disabled = false;
        input.focus();
        input.select();
      }
    },
  },
  h("h1", {}, "Sign in to Hangar"),
  h("p", {}, "The console acts with the admin token. It is kept in this browser tab only (sessionStorage) and forgotten when the tab closes."),
  field("Admin token", input, { hint: "Set with HANGAR_ADMIN_TOKEN, or printed on the first start and kept in DATA_DIR/admin-token." }),
  err,
  h("div", { class: "actions" }, submit));
  fill(main(), form);
  input.focus();
}

api.onTokenRefused((err) => {
  api.forgetToken();
  renderSession();
  signIn(err);
});

window.addEventListener("hashchange", route);
window.addEventListener("beforeunload", (e) => {
  if (unsaved.what) e.preventDefault();
});
// A module script runs once the document is parsed.
route();
