// Shared pieces of the Volley dashboard: state colours, the API client, DOM
// and formatting helpers. Plain ES module, no build step: the Rust server
// embeds these files as they are.

// One table of state colours for badges, the graph and the timeline alike.
export const STATE_COLORS = {
  waiting: "#cbd5e1",
  ready: "#93c5fd",
  running: "#3b82f6",
  succeeded: "#22c55e",
  failed: "#ef4444",
  skipped: "#eab308",
  cancelled: "#64748b",
};
export const STATES = Object.keys(STATE_COLORS);
export const CRITICAL_COLOR = "#7c3aed";

export function applyStateColors() {
  const root = document.documentElement.style;
  for (const s of STATES) root.setProperty(`--s-${s}`, STATE_COLORS[s]);
  root.setProperty("--critical", CRITICAL_COLOR);
}

export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message || kind || `HTTP ${status}`);
    this.status = status;
    this.kind = kind;
  }
}

let redirecting = false;
/** Send the browser to the login page, coming back here afterwards. */
export function toLogin() {
  if (redirecting) return;
  redirecting = true;
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

let sessionPromise = null;
/** `GET /api/session`, read once per page load (it holds the CSRF token). */
export function session() {
  if (!sessionPromise) {
    sessionPromise = api("/api/session").catch((e) => {
      sessionPromise = null;
      throw e;
    });
  }
  return sessionPromise;
}

/** JSON API call; a 401 goes to the login page, other errors throw ApiError. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    const s = await session();
    headers["X-Volley-Csrf"] = s.csrf || "";
  }
  const resp = await fetch(path, { method, headers, body, credentials: "same-origin", cache: "no-store" });
  if (resp.status === 401) {
    toLogin();
    throw new ApiError(401, "unauthenticated", "not logged in");
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, data && data.error, data && data.message);
  return data;
}

export const enc = encodeURIComponent;

/** Build an element: h("a", {href: "/", class: "x"}, "text", child…). */
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "style" && typeof v === "object") {
        for (const [sk, sv] of Object.entries(v)) {
          if (sk.startsWith("--")) e.style.setProperty(sk, sv);
          else e.style[sk] = sv;
        }
      }
      else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(e, c);
    else e.append(c instanceof Node ? c : String(c));
  }
}

export function clear(e, ...children) {
  e.replaceChildren();
  append(e, children);
  return e;
}

export function badge(state, attrs = {}) {
  return h("span", { class: "badge", style: { "--dot": STATE_COLORS[state] || "#999" }, ...attrs }, state);
}

export function fmtNum(n) {
  return n == null ? "–" : Number(n).toLocaleString("en-US");
}

export function fmtMs(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function fmtTime(unixMs) {
  if (!unixMs) return "–";
  const d = new Date(unixMs);
  const pad = (x) => String(x).padStart(2, "0");
  const today = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function fmtBytes(n) {
  if (n == null) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function fmtSpeedup(x) {
  return x == null ? "–" : `${Number(x).toFixed(1)}×`;
}

/**
 * Wrap an async function so that it runs at most once per `ms`, never twice
 * at the same time, and once more after the last call that came in while it
 * waited (so the newest data always gets read).
 */
export function throttled(fn, ms) {
  let last = -Infinity;
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = true;
    last = performance.now();
    try {
      await fn();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) console.warn(e);
    } finally {
      running = false;
      if (again) {
        again = false;
        kick();
      }
    }
  };
  const kick = () => {
    if (timer) return;
    timer = setTimeout(run, Math.max(0, last + ms - performance.now()));
  };
  kick.cancel = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  return kick;
}

/** Call `fn` now and then every `ms` after it finished; returns a stop function. */
export function poll(fn, ms) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) console.warn(e);
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}

/** A canvas sized to its box in CSS pixels, drawn at the device's pixel ratio. */
export function fitCanvas(canvas, cssWidth, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  canvas.style.height = `${cssHeight}px`;
  const w = Math.max(1, Math.round(cssWidth * dpr));
  const hgt = Math.max(1, Math.round(cssHeight * dpr));
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== hgt) canvas.height = hgt;
  return dpr;
}

export function showTooltip(text, clientX, clientY) {
  const tip = document.getElementById("tooltip");
  if (!tip) return;
  tip.textContent = text;
  tip.hidden = false;
  const x = Math.min(clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = Math.min(clientY + 14, window.innerHeight - tip.offsetHeight - 8);
  tip.style.left = `${x}px`;
  tip.style.top = `${y}px`;
}

export function hideTooltip() {
  const tip = document.getElementById("tooltip");
  if (tip) tip.hidden = true;
}

export function errorBox(e) {
  return h("div", { class: "error-box", role: "alert" }, e instanceof ApiError ? `${e.kind || "error"}: ${e.message}` : String(e));
}
