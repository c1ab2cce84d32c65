// Building the page. Everything the API returns is put in as text (textContent, attribute
// values), never parsed as HTML: agent names, templates and run outputs are other people's text.

/**
 * `h("button", {class: "x", onclick: fn}, "Save")`: an element; attributes starting with `on`
 * are listeners, `false`/null attributes are left out, children may be strings, nodes, arrays.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * Unsaved work on the page: while `unsaved.what` is set, leaving the page (another section, a
 * reload, closing the tab) asks first.
 */
export const unsaved = { what: null };

let uid = 0;
/** A fresh id for label/field pairs. */
export function nextId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

/**
 * A labelled field: `field("Name", input, {path: "name", hint})`. The wrapper carries
 * `data-path`, where problems and API errors about that field are shown.
 */
export function field(label, input, { path, hint } = {}) {
  if (!input.id) input.id = nextId();
  const hintEl = hint ? h("p", { class: "hint", id: `${input.id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field", dataset: path ? { path } : {} },
    h("label", { for: input.id }, label), input, hintEl,
    h("div", { class: "field-problems", id: `${input.id}-problems`, "aria-live": "polite" }));
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

/** The live marker: a dot and the version, its tooltip saying when it was deployed. */
export function liveMarker(agent) {
  if (agent.status !== "live") return badge("draft");
  const when = `Deployed ${fmtTime(agent.deployed_at)} (version ${agent.live_version})`;
  return h("span", { class: "live", title: when, "aria-label": `Live, ${when}`, tabindex: "0" },
    h("span", { class: "dot", "aria-hidden": "true" }), `live v${agent.live_version}`);
}

/** A message at the top of the page (polite live region). */
export function notice(text, kind = "ok") {
  const el = document.getElementById("notice");
  fill(el, h("p", { class: `notice-${kind}` }, text));
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => fill(el), 6000);
}

/** An error box (role=alert) holding an ApiError's explanation, or nothing. */
export function errorBox(err, extra = null) {
  if (!err) return h("div", { class: "error-box", hidden: true });
  return h("div", { class: "error-box", role: "alert" },
    h("p", {}, err.explanation || err.message || String(err)), extra);
}

/**
 * Shows an API error where it belongs: next to the field `details.field` names when the form
 * has it, else in the form's error box. Returns true when it found the field.
 */
export function showError(form, err) {
  clearErrors(form);
  const path = err && err.field;
  const target = path && findFieldFor(form, path);
  if (target) {
    addProblem(target, err.message, "error");
    const input = target.querySelector("input, textarea, select");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    return true;
  }
  const box = form.querySelector(":scope .error-box") || form.appendChild(h("div", { class: "error-box" }));
  fill(box, h("p", {}, err.explanation || err.message || String(err)),
    err.status === 412 ? h("button", { type: "button", onclick: reloadPage }, "Reload to see the current state") : null);
  box.hidden = false;
  box.setAttribute("role", "alert");
  return false;
}

/** Draws the current page again from the server (closing any dialog first). */
export function reloadPage() {
  document.querySelectorAll("dialog[open]").forEach((d) => d.close());
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}

/** The field wrapper that best matches a path: itself, else its nearest listed ancestor. */
export function findFieldFor(root, path) {
  let p = path;
  while (p) {
    const el = root.querySelector(`[data-path="${CSS.escape(p)}"]`);
    if (el) return el;
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    if (cut <= 0) break;
    p = p.slice(0, cut);
  }
  return null;
}

export function addProblem(fieldEl, text, kind) {
  const list = fieldEl.querySelector(":scope > .field-problems") || fieldEl.appendChild(h("div", { class: "field-problems" }));
  list.append(h("p", { class: `problem problem-${kind}` }, text));
  fieldEl.classList.add(`has-${kind}`);
}

export function clearErrors(root) {
  root.querySelectorAll(".field-problems").forEach((el) => el.replaceChildren());
  root.querySelectorAll(".has-error, .has-warning").forEach((el) => el.classList.remove("has-error", "has-warning"));
  root.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  root.querySelectorAll(".error-box").forEach((el) => { el.hidden = true; el.replaceChildren(); });
}

/**
 * A modal dialog (`<dialog>`: focus stays inside, Escape closes). `build(close)` returns its
 * content. Resolves with what `close(value)` was given (undefined when dismissed).
 */
export function dialog(title, build, { wide = false } = {}) {
  return new Promise((resolve) => {
    const titleId = nextId("dlg");
    const dlg = h("dialog", { class: wide ? "wide" : "", "aria-labelledby": titleId });
    let result;
    const close = (value) => {
      result = value;
      dlg.close();
    };
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(result);
    });
    dlg.append(h("div", { class: "dialog-head" }, h("h2", { id: titleId }, title),
      h("button", { type: "button", class: "icon", "aria-label": "Close", onclick: () => close(undefined) }, "×")),
    build(close));
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** Asks to confirm something that cannot be undone. Resolves true when confirmed. */
export function confirmDialog(title, text, action, { danger = true } = {}) {
  return dialog(title, (close) => h("div", {},
    h("p", {}, text),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => close(false) }, "Cancel"),
      h("button", { type: "button", class: danger ? "danger" : "primary", onclick: () => close(true) }, action)))).then(Boolean);
}

/** A button that copies `text()` to the clipboard and says so. */
export function copyButton(text, label = "Copy") {
  const btn = h("button", { type: "button", class: "copy" }, label);
  btn.addEventListener("click", async () => {
    const value = typeof text === "function" ? text() : text;
    try {
      await navigator.clipboard.writeText(value);
      btn.textContent = "Copied";
    } catch {
      // No clipboard permission: select the text so Ctrl+C works.
      const pre = btn.closest(".copyable")?.querySelector("pre, code, input");
      if (pre) window.getSelection().selectAllChildren(pre);
      btn.textContent = "Press Ctrl+C";
    }
    setTimeout(() => { btn.textContent = label; }, 2000);
  });
  return btn;
}

/** A block of code with a copy button. */
export function codeBlock(text, label) {
  return h("div", { class: "copyable" },
    h("div", { class: "copy-bar" }, h("span", {}, label || ""), copyButton(text, label ? `Copy ${label}` : "Copy")),
    h("pre", { tabindex: "0" }, h("code", {}, text)));
}

/**
 * Tabs (WAI-ARIA pattern: arrow keys move between tabs, Tab enters the panel).
 * `tabs(label, [{id, title, render}], selected, onSelect)`.
 */
export function tabs(label, items, selected, onSelect) {
  const list = h("div", { role: "tablist", "aria-label": label, class: "tabs" });
  const panel = h("div", { role: "tabpanel", class: "tabpanel", tabindex: "0" });
  const buttons = items.map((item) => h("button", {
    type: "button", role: "tab", id: nextId("tab"), "data-tab": item.id,
    onclick: () => select(item.id, true),
  }, item.title));
  list.append(...buttons);
  list.addEventListener("keydown", (e) => {
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    let j = null;
    if (e.key === "ArrowRight") j = (i + 1) % buttons.length;
    if (e.key === "ArrowLeft") j = (i - 1 + buttons.length) % buttons.length;
    if (e.key === "Home") j = 0;
    if (e.key === "End") j = buttons.length - 1;
    if (j === null) return;
    e.preventDefault();
    buttons[j].focus();
    select(items[j].id, true);
  });
  function select(id, byUser) {
    items.forEach((item, i) => {
      const on = item.id === id;
      buttons[i].setAttribute("aria-selected", on ? "true" : "false");
      buttons[i].tabIndex = on ? 0 : -1;
      if (on) {
        panel.setAttribute("aria-labelledby", buttons[i].id);
        fill(panel, item.render());
      }
    });
    if (byUser && onSelect) onSelect(id);
  }
  select(items.some((i) => i.id === selected) ? selected : items[0].id, false);
  return h("div", { class: "tabset" }, list, panel);
}

/** Pretty JSON for display. */
export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** A problem list (validation errors and warnings), each with its path. */
export function problemList(errors = [], warnings = []) {
  if (!errors.length && !warnings.length) return h("p", { class: "ok" }, "✓ No problems");
  return h("ul", { class: "problems" },
    errors.map((p) => h("li", { class: "problem problem-error" }, h("strong", {}, "Error "), p.message, p.path ? h("code", {}, ` ${p.path}`) : null)),
    warnings.map((p) => h("li", { class: "problem problem-warning" }, h("strong", {}, "Warning "), p.message, p.path ? h("code", {}, ` ${p.path}`) : null)));
}

/** A table, wrapped so it scrolls sideways on a narrow window instead of the page. */
export function table(caption, headers, rows) {
  return h("div", { class: "table-wrap" }, h("table", {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows)));
}
