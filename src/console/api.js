// The console's only way to Hangar: fetch() against this origin, the admin token in the
// Authorization header. The token lives in this tab's sessionStorage: never in a URL (so never in
// a log, the history or a Referer) and never in localStorage (so it dies with the tab).

const TOKEN_KEY = "hangar.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer that is not a 2xx, in the API's error shape (or made to look like it). */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details ?? null;
  }

  /** The request field the error names (`details.field`), if any. */
  get field() {
    return this.details && typeof this.details.field === "string" ? this.details.field : null;
  }

  /** What went wrong, in words a person acts on; the server's message says how to fix it. */
  get explanation() {
    switch (this.status) {
      case 0: return `Hangar could not be reached (${this.message}). Check that the server is running.`;
      case 401: return "Hangar refused the admin token. Sign in again with the current token.";
      case 403: return `Not allowed: ${this.message}`;
      case 412: return "Someone else changed this agent since you loaded it.";
      case 429: return `Hangar is busy: ${this.message}`;
      default:
        if (this.status >= 500) return `Hangar could not do this (${this.status} ${this.code}): ${this.message}`;
        return this.message;
    }
  }
}

/** Listeners told when the token is refused, so the page can ask for it again. */
const refusedListeners = [];
export function onTokenRefused(fn) {
  refusedListeners.push(fn);
}

/**
 * Calls the API. Resolves to `{status, body, etag}`; rejects with an ApiError for any status
 * outside 2xx/3xx. `ifMatch` sends `If-Match: "<seq>"`.
 */
export async function call(method, path, { body, ifMatch, headers = {}, signal } = {}) {
  const h = { Accept: "application/json", ...headers };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  if (ifMatch !== undefined && ifMatch !== null) h["If-Match"] = `"${ifMatch}"`;
  let payload;
  if (body !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers: h, body: payload, signal, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", e.message || "network error");
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: `http_${res.status}`, message: res.statusText || `HTTP ${res.status}` };
    const apiError = new ApiError(res.status, err.code, err.message, err.details);
    if (res.status === 401) refusedListeners.forEach((fn) => fn(apiError));
    throw apiError;
  }
  const etag = res.headers.get("ETag");
  return { status: res.status, body: data, etag: etag ? Number(etag.replace(/"/g, "")) : null };
}

export const get = (path, opts) => call("GET", path, opts).then((r) => r.body);
export const post = (path, body, opts = {}) => call("POST", path, { ...opts, body }).then((r) => r.body);
export const put = (path, body, opts = {}) => call("PUT", path, { ...opts, body }).then((r) => r.body);
export const del = (path, opts) => call("DELETE", path, opts).then((r) => r.body);

/** `/v1/agents/{id}` plus a tail, the id escaped. */
export function agentPath(id, tail = "") {
  return `/v1/agents/${encodeURIComponent(id)}${tail}`;
}

/** Whether an error means "this route does not exist on this server" (a feature not built yet). */
export function isMissingRoute(err) {
  return err instanceof ApiError && (err.status === 404 || err.status === 405) && /^route /.test(err.message || "");
}

/**
 * Reads a Server-Sent Events stream with the token in a header (EventSource cannot send one, and
 * the token never goes into a URL). Calls `onEvent({id, event, data})` per event; resolves when
 * the stream ends. Rejects with an ApiError when the route answers an error.
 */
export async function stream(path, { onEvent, signal, method = "GET", body } = {}) {
  const h = { Accept: "text/event-stream", Authorization: `Bearer ${token()}` };
  if (body !== undefined) h["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: "no-store", credentials: "omit" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", e.message || "network error");
  }
  if (!res.ok || !(res.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
    let err = { code: `http_${res.status}`, message: res.statusText };
    try {
      const data = JSON.parse(await res.text());
      if (data.error) err = data.error;
    } catch { /* not JSON */ }
    throw new ApiError(res.status, err.code, err.message, err.details);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const ev = { id: null, event: "message", data: "" };
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "id") ev.id = val;
        else if (field === "event") ev.event = val;
        else if (field === "data") ev.data += (ev.data ? "\n" : "") + val;
      }
      if (!ev.data && ev.event === "message") continue;
      try {
        ev.data = JSON.parse(ev.data);
      } catch { /* plain text data */ }
      onEvent(ev);
    }
  }
}
