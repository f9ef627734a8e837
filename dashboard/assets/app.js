// The Volley dashboard's pages. One HTML shell is served for every page
// path; this module routes on location.pathname and reads the JSON API of
// docs/dashboard-api.md. No build step: the Rust server embeds these files.

import {
  STATES, api, session, enc, h, clear, badge, fmtNum, fmtMs, fmtTime, fmtBytes, fmtSpeedup, throttled, poll,
  errorBox, applyStateColors, ApiError, STATE_COLORS, toLogin,
} from "./common.js";
import { GraphView } from "./graph.js";
import { TimelineView } from "./timeline.js";

const main = document.getElementById("main");
const panel = document.getElementById("panel");

function setTitle(text) {
  document.title = text ? `${text} · Volley` : "Volley";
}

function markNav(which) {
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === which);
}

function progressBar(counts, total) {
  const bar = h("span", { class: "progress" });
  for (const s of ["succeeded", "failed", "skipped", "cancelled", "running"]) {
    const c = counts[s] || 0;
    if (c && total) bar.append(h("span", { style: { width: `${(100 * c) / total}%`, background: STATE_COLORS[s] } }));
  }
  return bar;
}

// ---------------------------------------------------------------- login --
function loginPage() {
  setTitle("Log in");
  document.querySelector(".topbar nav").hidden = true;
  const params = new URLSearchParams(location.search);
  const next = params.get("next") || "/";
  // A bad token is answered 401 with this same page: the navigation's
  // status says so (a good one redirects away).
  const nav = performance.getEntriesByType("navigation")[0];
  const err = params.get("error") || (nav && nav.responseStatus === 401 ? "invalid" : null);
  clear(main, h("div", { class: "login card" },
    h("h1", null, "Log in to Volley"),
    h("p", { class: "muted" }, "Paste an API token. A one-time link (/login?token=…&next=…) works too."),
    err ? h("div", { class: "error-box", role: "alert" }, err === "invalid" ? "That token was not accepted." : err) : null,
    h("form", { method: "post", action: "/login" },
      h("label", { for: "token" }, "Token"),
      h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, autofocus: true }),
      h("input", { type: "hidden", name: "next", value: next.startsWith("/") && !next.startsWith("//") ? next : "/" }),
      h("button", { class: "btn", type: "submit" }, "Log in"))));
}

// ----------------------------------------------------------- batch list --
function listPage() {
  setTitle("Batches");
  markNav("list");
  const tbody = h("tbody");
  const more = h("button", { class: "btn", hidden: true }, "Load older");
  const err = h("div");
  clear(main,
    h("div", { class: "toolbar" }, h("h1", null, "Batches"), h("span", { class: "live" }, "live")),
    err,
    h("div", { class: "table-wrap" }, h("table", { "data-testid": "batch-list" },
      h("thead", null, h("tr", null,
        h("th", null, "State"), h("th", null, "Name"), h("th", null, "Tenant"), h("th", null, "Ops done / total"),
        h("th", { class: "num" }, "Wall"), h("th", { class: "num" }, "Speedup"), h("th", null, "Started"))),
      tbody)),
    h("div", { class: "pager" }, more));
  let first = [];
  let older = [];
  let cursor = null;
  let loadedOlder = false;
  const render = () => {
    const seen = new Set();
    const rows = [];
    for (const b of [...first, ...older]) {
      if (seen.has(b.id)) continue;
      seen.add(b.id);
      const href = `/batches/${enc(b.id)}`;
      rows.push(h("tr", { class: "clickable", "data-testid": "batch-row", "data-id": b.id, onclick: (ev) => {
        if (ev.target.closest("a")) return;
        location.assign(href);
      } },
      h("td", null, badge(b.state)),
      h("td", null, h("a", { href }, b.name || b.id), " ", h("span", { class: "muted mono" }, b.id)),
      h("td", null, b.tenant || "–"),
      h("td", null, progressBar({ succeeded: b.done }, b.total), `${fmtNum(b.done)} / ${fmtNum(b.total)}`),
      h("td", { class: "num" }, fmtMs(b.wall_ms)),
      h("td", { class: "num" }, fmtSpeedup(b.speedup)),
      h("td", null, fmtTime(b.created_at_ms))));
    }
    if (!rows.length) rows.push(h("tr", null, h("td", { colspan: 7, class: "muted" }, "No batches yet.")));
    clear(tbody, rows);
    more.hidden = !cursor;
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const d = await api(`/api/batches?limit=50&before=${enc(cursor)}`);
      older = older.concat(d.batches);
      cursor = d.next;
      loadedOlder = true;
      render();
    } catch (e) {
      clear(err, errorBox(e));
    } finally {
      more.disabled = false;
    }
  });
  poll(async () => {
    try {
      const d = await api("/api/batches?limit=50");
      first = d.batches;
      if (!loadedOlder) cursor = d.next;
      clear(err);
      render();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) clear(err, errorBox(e));
      throw e;
    }
  }, 2000);
}

// ------------------------------------------------------------ batch page --
const TABS = [["graph", "DAG"], ["timeline", "Timeline"], ["ops", "Ops"], ["memory", "Memory"]];

function batchPage(id) {
  markNav("list");
  setTitle(id);
  const base = `/api/batches/${enc(id)}`;
  const header = h("div", { class: "card header-card" }, h("p", { class: "muted" }, "Loading batch…"));
  const tabsNav = h("nav", { class: "tabs" });
  const content = h("div", { class: "tab-content" });
  clear(main, header, tabsNav, content);

  let batch = null;
  let sess = null;
  let current = null; // {name, view, onEvent, stop}
  let events = null;
  let finished = false;
  let lastSeq = 0;
  let openOpId = null;

  // -- header --
  const renderHeader = () => {
    const b = batch;
    const counts = { succeeded: b.succeeded, failed: b.failed, running: b.running, waiting: b.waiting,
      skipped: b.skipped, cancelled: b.cancelled };
    const canCancel = b.state === "running" && sess && sess.mode !== "file";
    const cp = b.critical_path || [];
    const shown = cp.length > 60 ? [...cp.slice(0, 30), null, ...cp.slice(-30)] : cp;
    clear(header,
      h("div", { class: "header" },
        h("div", null,
          h("div", { class: "title" },
            h("h1", null, b.name || b.id),
            h("span", { class: "badge", style: { "--dot": STATE_COLORS[b.state] || "#999" }, "data-testid": "batch-state" }, b.state),
            h("span", { class: "muted", "data-testid": "op-count" }, `${b.total} ops`),
            h("span", { class: "muted mono" }, b.id)),
          h("div", { class: "muted" }, `tenant ${b.tenant || "–"} · created ${fmtTime(b.created_at_ms)}`,
            b.namespace ? [" · namespace ", h("a", { href: `/namespaces/${enc(b.namespace)}` }, b.namespace)] : null)),
        h("div", null, canCancel ? h("button", { class: "btn danger", "data-testid": "cancel", onclick: cancel }, "Cancel batch") : null,
          events && !finished ? h("span", { class: "live", style: { marginLeft: "10px" } }, "live") : null)),
      b.error ? h("div", { class: "error-box" }, b.error) : null,
      h("div", { class: "stats" },
        stat("Wall", fmtMs(b.wall_ms)), stat("Sequential", fmtMs(b.sequential_ms)),
        stat("Speedup", fmtSpeedup(b.speedup)), stat("Critical path", fmtMs(b.critical_path_ms)),
        stat("Done", `${fmtNum(b.succeeded + b.failed + b.skipped + b.cancelled)} / ${fmtNum(b.total)}`)),
      h("div", { class: "counts", "data-testid": "batch-counts", "data-seq": lastSeq },
        Object.entries(counts).map(([s, c]) => h("span", { "data-state": s },
          h("i", { class: "dot", style: { "--dot": STATE_COLORS[s] } }), `${s} ${fmtNum(c || 0)}`))),
      h("div", { class: "critical-path", "data-testid": "critical-path" },
        h("span", { class: "muted" }, "Critical path: "),
        cp.length ? shown.map((op, i) => [i ? h("span", { class: "arrow" }, "→") : null,
          op == null ? h("span", { class: "muted" }, `… ${cp.length - 60} more …`)
            : h("span", { class: "op mono", "data-testid": "critical-op", onclick: () => openOp(op) }, op)])
          : h("span", { class: "muted" }, "not known yet")));
  };
  const stat = (k, v) => h("div", { class: "stat" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));

  async function cancel(ev) {
    ev.target.disabled = true;
    try {
      await api(`${base}/cancel`, { method: "POST" });
      refreshHeader();
    } catch (e) {
      header.append(errorBox(e));
      ev.target.disabled = false;
    }
  }

  const readHeader = async () => {
    batch = await api(base);
    setTitle(batch.name || batch.id);
    if (batch.state !== "running" && events && !finished) {
      // The stream may not have told us (yet); the header is the truth.
      finish();
    }
    renderHeader();
  };
  const refreshHeader = throttled(readHeader, 1000);

  // -- tabs --
  const makeTab = (name) => {
    if (name === "timeline") {
      const view = new TimelineView(content, {
        fetchPage: (offset, limit) => api(`${base}/timeline?offset=${offset}&limit=${limit}`),
        onOp: openOp,
      });
      view.load();
      view.setLive(!!batch && batch.state === "running" && !finished);
      const live = throttled(() => view.refreshLive(), 2000);
      return {
        view,
        onEvent: (ev) => {
          view.setLive(!finished);
          view.applyEvent(ev, batch && batch.created_at_ms);
          live();
        },
        onFinish: () => {
          view.setLive(false);
          view.load();
        },
        stop: () => {
          live.cancel();
          view.stop();
        },
      };
    }
    if (name === "ops") return opsTab(content, base, openOp, () => batch);
    if (name === "memory") {
      const stop = memoryView(content, `${base}/memory`, "Batch memory");
      return { stop };
    }
    // graph
    const params = new URLSearchParams(location.search);
    const view = new GraphView(content, {
      load: (expand) => api(`${base}/graph${expand.length ? `?expand=${expand.map(enc).join(",")}` : ""}`),
      onOp: openOp,
      onRest: (group) => {
        setParam("q", group);
        showTab("ops");
      },
      expand: (params.get("expand") || "").split(",").filter(Boolean),
      onExpand: (list) => setParam("expand", list.join(",") || null, true),
    });
    view.refresh();
    const live = throttled(() => view.refresh(), 1000);
    return { view, onEvent: live, onFinish: () => view.refresh(), stop: () => { live.cancel(); view.stop(); } };
  };

  const renderTabs = (active) => {
    clear(tabsNav, TABS.map(([name, label]) => h("a", {
      href: `?tab=${name}`, class: name === active ? "active" : null, "data-tab": name,
      onclick: (ev) => {
        ev.preventDefault();
        setParam("tab", name);
        showTab(name);
      },
    }, label)));
  };

  function showTab(name) {
    if (!TABS.some(([n]) => n === name)) name = "graph";
    if (current && current.name === name) return;
    if (current && current.stop) current.stop();
    renderTabs(name);
    current = { name, ...makeTab(name) };
  }

  // -- op panel --
  function openOp(op) {
    openOpId = op;
    setParam("op", op);
    loadPanel(op, true);
  }
  const loadPanel = async (op, fresh) => {
    if (fresh) {
      panel.hidden = false;
      clear(panel, closeBtn(), h("p", { class: "muted" }, `Loading ${op}…`));
    }
    try {
      const d = await api(`${base}/ops/${enc(op)}`);
      if (openOpId !== op) return;
      renderOpPanel(d, base, closePanel);
    } catch (e) {
      if (openOpId === op) clear(panel, closeBtn(), errorBox(e));
    }
  };
  const refreshPanel = throttled(() => (openOpId ? loadPanel(openOpId, false) : null), 1000);
  const closePanel = () => {
    openOpId = null;
    panel.hidden = true;
    setParam("op", null);
  };
  const closeBtn = () => h("button", { class: "btn close", "aria-label": "close", onclick: closePanel }, "×");
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !panel.hidden) closePanel();
  });

  // -- live --
  function finish() {
    finished = true;
    if (events) events.close();
    setTimeout(() => {
      readHeader().catch(() => {});
      if (current && current.onFinish) current.onFinish();
      if (openOpId) loadPanel(openOpId, false);
    }, 300);
  }

  function startEvents() {
    const url = `${base}/events?after=${lastSeq}`;
    events = new EventSource(url);
    const onEvent = (msg) => {
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (typeof ev.seq === "number") lastSeq = Math.max(lastSeq, ev.seq);
      document.body.dataset.eventSeq = String(lastSeq);
      refreshHeader();
      if (current && current.onEvent) current.onEvent(ev);
      if (openOpId && ev.op_id === openOpId) refreshPanel();
      if (ev.kind === "batch_finished") finish();
    };
    events.addEventListener("batch", onEvent);
    events.onmessage = onEvent;
    events.onerror = () => {
      // The browser reconnects by itself (sending Last-Event-ID) unless the
      // answer was not an event stream, e.g. a 401: then see whether the
      // session is gone, and fall back to polling the header.
      if (events.readyState === EventSource.CLOSED && !finished) {
        api("/api/session").catch(() => {});
        const stop = poll(async () => {
          await readHeader();
          if (current && current.onEvent) current.onEvent({});
          if (batch.state !== "running") stop();
        }, 2000);
      }
    };
  }

  window.addEventListener("popstate", () => {
    const p = new URLSearchParams(location.search);
    showTab(p.get("tab") || "graph");
    const op = p.get("op");
    if (op && op !== openOpId) {
      openOpId = op;
      loadPanel(op, true);
    } else if (!op && openOpId) {
      openOpId = null;
      panel.hidden = true;
    }
  });

  // -- start: header first (it is one small read), then the tab --
  const params = new URLSearchParams(location.search);
  session().then((s) => {
    sess = s;
    if (batch) renderHeader();
  }).catch(() => {});
  readHeader().then(() => {
    lastSeq = batch.last_seq || 0;
    if (batch.state === "running") {
      startEvents();
      renderHeader();
      // A safety net if events stall: the header is re-read every 5 s.
      const stop = poll(async () => {
        if (finished) return stop();
        if (!finished) await readHeader();
      }, 5000);
    }
  }).catch((e) => {
    if (e instanceof ApiError && e.status === 401) return;
    clear(header, errorBox(e));
  });
  showTab(params.get("tab") || "graph");
  if (params.get("op")) {
    openOpId = params.get("op");
    loadPanel(openOpId, true);
  }
}

/** Change one query parameter without reloading (null removes it). */
function setParam(key, value, replace = false) {
  const u = new URL(location.href);
  if (value == null || value === "") u.searchParams.delete(key);
  else u.searchParams.set(key, value);
  if (u.href === location.href) return;
  if (replace) history.replaceState(null, "", u);
  else history.pushState(null, "", u);
}

// ---------------------------------------------------------------- op panel --
function renderOpPanel(d, base, close) {
  const logLink = (stream, bytes) =>
    h("a", { href: `${base}/ops/${enc(d.id)}/logs?stream=${stream}`, target: "_blank", rel: "noopener" },
      `whole ${stream} (${fmtBytes(bytes)})`);
  const text = (label, body, bytes, stream) => {
    if (!bytes && !body) return null;
    return [h("h2", null, label, " ", h("span", { class: "muted", style: { fontWeight: 400 } },
      bytes > (body || "").length ? `first ${fmtBytes((body || "").length)} of ${fmtBytes(bytes)}` : "")),
    h("pre", { "data-testid": `op-${stream}` }, body || ""), logLink(stream, bytes)];
  };
  clear(panel,
    h("button", { class: "btn close", "aria-label": "close", onclick: close }, "×"),
    h("div", { "data-testid": "op-panel" },
      h("h1", { class: "mono", style: { fontSize: "16px", paddingRight: "40px" } }, d.id),
      h("div", null, badge(d.state, { "data-testid": "op-state" }), " ", h("span", { class: "muted" }, `#${d.index}`)),
      d.why ? h("div", { class: "why", "data-testid": "op-why", style: { marginTop: "10px" } },
        h("strong", null, d.why.parked ? "Parked: " : "Why it waits: "),
        h("ul", { style: { margin: "4px 0 0", paddingLeft: "18px" } }, (d.why.reasons || []).map((r) => h("li", null, r)))) : null,
      h("dl", null,
        h("dt", null, "Kind"), h("dd", null, d.kind),
        h("dt", null, "Group"), h("dd", null, d.group || "–"),
        h("dt", null, "Attempts"), h("dd", null, `${d.attempts ?? 0}${d.max_attempts ? ` / ${d.max_attempts}` : ""}`),
        h("dt", null, "Worker"), h("dd", null, d.worker || "–"),
        h("dt", null, "Started"), h("dd", null, d.started_ms == null ? "–" : `+${fmtMs(d.started_ms)} after submit`),
        h("dt", null, "Duration"), h("dd", null, fmtMs(d.duration_ms)),
        h("dt", null, "After"), h("dd", { class: "mono" }, (d.after && d.after.length) ? d.after.join(", ") : "–")),
      d.error ? [h("h2", null, "Error"), h("pre", { class: "error", "data-testid": "op-error" }, d.error)] : null,
      h("h2", null, "Args ", h("span", { class: "muted", style: { fontWeight: 400 } }, "(secrets masked)")),
      h("pre", { "data-testid": "op-args" }, JSON.stringify(d.args ?? {}, null, 2)),
      text("Output", d.output, d.output_bytes, "stdout"),
      text("Stderr", d.stderr, d.stderr_bytes, "stderr"),
      h("h2", null, "Events"),
      (d.events && d.events.length) ? h("div", { class: "table-wrap" }, h("table", null,
        h("thead", null, h("tr", null, h("th", null, "Seq"), h("th", null, "At"), h("th", null, "Kind"),
          h("th", null, "Attempt"), h("th", null, "Worker"), h("th", null, "Message"))),
        h("tbody", null, d.events.map((e) => h("tr", null, h("td", { class: "num" }, e.seq), h("td", null, fmtTime(e.at_ms)),
          h("td", null, e.kind), h("td", { class: "num" }, e.attempt ?? ""), h("td", null, e.worker || ""),
          h("td", { class: "wrap" }, e.message || "")))))) : h("p", { class: "muted" }, "No events yet.")));
}

// ---------------------------------------------------------------- ops tab --
function opsTab(root, base, openOp, getBatch) {
  const LIMIT = 100;
  const params = new URLSearchParams(location.search);
  let offset = 0;
  let state = params.get("state") || "";
  let q = params.get("q") || "";
  const select = h("select", { "aria-label": "state" }, h("option", { value: "" }, "all states"),
    STATES.map((s) => h("option", { value: s, selected: s === state }, s)));
  const search = h("input", { type: "search", placeholder: "search op id…", value: q, "aria-label": "search" });
  const info = h("span", { class: "muted" });
  const tbody = h("tbody");
  const prev = h("button", { class: "btn" }, "‹ Prev");
  const next = h("button", { class: "btn" }, "Next ›");
  const err = h("div");
  clear(root,
    h("div", { class: "toolbar" }, select, search, h("span", { class: "spacer" }), info),
    err,
    h("div", { class: "table-wrap" }, h("table", { "data-testid": "ops-table" },
      h("thead", null, h("tr", null, ["#", "Op", "Kind", "Group", "State", "Attempts", "Worker", "Started", "Duration", "Error"]
        .map((t, i) => h("th", { class: [0, 5, 7, 8].includes(i) ? "num" : null }, t)))),
      tbody)),
    h("div", { class: "pager" }, prev, next));
  let seqNo = 0;
  const load = async () => {
    const my = ++seqNo;
    let url = `${base}/ops?offset=${offset}&limit=${LIMIT}`;
    if (state) url += `&state=${enc(state)}`;
    if (q) url += `&q=${enc(q)}`;
    let d;
    try {
      d = await api(url);
    } catch (e) {
      clear(err, errorBox(e));
      return;
    }
    if (my !== seqNo) return;
    clear(err);
    info.textContent = d.total ? `${fmtNum(d.offset + 1)}–${fmtNum(d.offset + d.ops.length)} of ${fmtNum(d.total)} ops` : "no ops";
    prev.disabled = offset === 0;
    next.disabled = offset + d.ops.length >= d.total;
    clear(tbody, d.ops.map((o) => h("tr", { class: "clickable", "data-testid": "op-row", onclick: () => openOp(o.id) },
      h("td", { class: "num muted" }, o.index),
      h("td", { class: "mono" }, o.id),
      h("td", null, o.kind),
      h("td", null, o.group || ""),
      h("td", null, badge(o.state)),
      h("td", { class: "num" }, o.attempts ?? ""),
      h("td", null, o.worker || ""),
      h("td", { class: "num" }, o.started_ms == null ? "" : `+${fmtMs(o.started_ms)}`),
      h("td", { class: "num" }, o.duration_ms == null ? "" : fmtMs(o.duration_ms)),
      h("td", { class: "wrap", style: { color: "#b91c1c" } }, o.error || ""))));
    if (!d.ops.length) clear(tbody, h("tr", null, h("td", { colspan: 10, class: "muted" }, "No ops match.")));
  };
  select.addEventListener("change", () => {
    state = select.value;
    offset = 0;
    setParam("state", state || null, true);
    load();
  });
  let debounce = null;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      q = search.value.trim();
      offset = 0;
      setParam("q", q || null, true);
      load();
    }, 250);
  });
  prev.addEventListener("click", () => {
    offset = Math.max(0, offset - LIMIT);
    load();
  });
  next.addEventListener("click", () => {
    offset += LIMIT;
    load();
  });
  load();
  const live = throttled(load, 2000);
  return {
    onEvent: live,
    onFinish: load,
    stop: () => {
      live.cancel();
      setParam("q", null, true);
      setParam("state", null, true);
    },
  };
}

// -------------------------------------------------------------- memory --
function memoryView(root, url, title) {
  const tbody = h("tbody");
  const err = h("div");
  const scope = h("span", { class: "muted" });
  clear(root,
    h("div", { class: "toolbar" }, h("h2", { style: { margin: 0 } }, title), scope, h("span", { class: "live" }, "live")),
    err,
    h("div", { class: "table-wrap" }, h("table", { "data-testid": "memory-table" },
      h("thead", null, h("tr", null, h("th", null, "Key"), h("th", { class: "num" }, "Version"), h("th", null, "Writer"),
        h("th", { class: "num" }, "Size"), h("th", null, "Preview"), h("th", null, "Updated"))),
      tbody)));
  return poll(async () => {
    let d;
    try {
      d = await api(url);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) clear(err, errorBox(e));
      throw e;
    }
    clear(err);
    scope.textContent = d.scope ? `scope: ${d.scope}` : "";
    clear(tbody, d.keys.length ? d.keys.map((k) => h("tr", null,
      h("td", { class: "mono" }, k.key),
      h("td", { class: "num" }, k.version),
      h("td", { class: "mono" }, k.writer || ""),
      h("td", { class: "num" }, fmtBytes(k.bytes)),
      h("td", { class: "wrap mono" }, k.preview || ""),
      h("td", null, fmtTime(k.updated_at_ms)))) : h("tr", null, h("td", { colspan: 6, class: "muted" }, "No keys.")));
  }, 2000);
}

function namespacePage(ns) {
  setTitle(`namespace ${ns}`);
  markNav(null);
  const box = h("div");
  clear(main, h("h1", null, "Namespace ", h("span", { class: "mono" }, ns)), box);
  memoryView(box, `/api/namespaces/${enc(ns)}/memory`, "Memory");
}

// -------------------------------------------------------------- workers --
function workersPage() {
  setTitle("Workers");
  markNav("workers");
  const tbody = h("tbody");
  const summary = h("span", { class: "muted" });
  const err = h("div");
  clear(main,
    h("div", { class: "toolbar" }, h("h1", null, "Workers"), summary, h("span", { class: "live" }, "live")),
    err,
    h("div", { class: "table-wrap" }, h("table", { "data-testid": "workers-table" },
      h("thead", null, h("tr", null, h("th", null, "Worker"), h("th", null, "Slots"), h("th", { class: "num" }, "Busy / free"),
        h("th", null, "Labels"), h("th", null, "Kinds"), h("th", null, "Coordinator"), h("th", null, "Status"))),
      tbody)));
  poll(async () => {
    let d;
    try {
      d = await api("/api/workers");
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) clear(err, errorBox(e));
      throw e;
    }
    clear(err);
    const slots = d.workers.reduce((a, w) => a + w.slots, 0);
    const busy = d.workers.reduce((a, w) => a + w.busy, 0);
    summary.textContent = `${d.workers.length} workers · ${busy} of ${slots} slots busy`;
    clear(tbody, d.workers.length ? d.workers.map((w) => h("tr", { "data-testid": "worker-row" },
      h("td", { class: "mono" }, w.id),
      h("td", null, h("span", { class: "slots" },
        Array.from({ length: Math.min(w.slots, 64) }, (_, i) => h("i", { class: i < w.busy ? "busy" : null })))),
      h("td", { class: "num" }, `${w.busy} / ${w.slots - w.busy}`),
      h("td", null, Object.entries(w.labels || {}).map(([k, v]) => h("span", { class: "chip", style: { marginRight: "4px" } }, `${k}=${v}`))),
      h("td", null, (w.kinds || []).join(", ")),
      h("td", null, w.coordinator || ""),
      h("td", null, w.draining ? h("span", { class: "badge", style: { "--dot": STATE_COLORS.skipped } }, "draining")
        : h("span", { class: "badge", style: { "--dot": STATE_COLORS.succeeded } }, "active"))))
      : h("tr", null, h("td", { colspan: 7, class: "muted" }, "No workers connected.")));
  }, 2000);
}

// ---------------------------------------------------------- open a file --
/**
 * A file dashboard (`volley dashboard`) opens exports dropped anywhere on
 * the page or chosen in its drop zone: the file goes to POST /api/files,
 * which checks it (size, format, every index) and answers what is wrong, or
 * where the batch now is. A live dashboard has no such route.
 */
function fileOpener(s) {
  const status = h("div", { "data-testid": "open-status", "aria-live": "polite" });
  const input = h("input", { type: "file", accept: ".json,application/json", "data-testid": "open-file", hidden: true });
  const fail = (message) => clear(status, h("div", { class: "error-box", role: "alert", "data-testid": "open-error" }, message));
  const open = async (file) => {
    if (!file) return;
    if (s.max_file_bytes != null && file.size > s.max_file_bytes) {
      fail(`${file.name} is ${fmtBytes(file.size)}, more than the ${fmtBytes(s.max_file_bytes)} a dropped file may have (volley dashboard --max-file-bytes)`);
      return;
    }
    clear(status, h("p", { class: "muted" }, `Opening ${file.name}…`));
    let resp;
    let data = null;
    try {
      resp = await fetch("/api/files", {
        method: "POST",
        credentials: "same-origin",
        // A header value is Latin-1: other characters of the name become "?".
        headers: { "X-Volley-Csrf": s.csrf || "", "X-Volley-File-Name": file.name.replace(/[^\x20-\x7e]/g, "?"),
          "Content-Type": "application/json" },
        body: file,
      });
      data = await resp.json().catch(() => null);
    } catch (e) {
      fail(`${file.name} could not be sent: ${e}`);
      return;
    }
    if (!resp.ok) {
      fail((data && data.message) || `${file.name} was refused (HTTP ${resp.status})`);
      return;
    }
    location.assign(data.url);
  };
  input.addEventListener("change", () => open(input.files[0]));
  const zone = h("div", { class: "dropzone", "data-testid": "drop-zone" },
    h("strong", null, "Drop a batch export here"),
    h("span", { class: "muted" }, " (volley export ID > batch.json) or "),
    h("button", { class: "btn", type: "button", onclick: () => input.click() }, "choose a file"),
    input, status);
  // Anywhere on the page.
  document.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", (ev) => {
    if (!ev.relatedTarget) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    document.body.classList.remove("dragging");
    const file = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (!zone.isConnected) main.prepend(zone);
    if (file) open(file);
    else fail("Nothing to open: drop a file.");
  });
  return zone;
}

// --------------------------------------------------------------- router --
function notFound() {
  setTitle("Not found");
  clear(main, h("h1", null, "Not found"), h("p", null, h("a", { href: "/" }, "Back to the batch list")));
}

function route() {
  applyStateColors();
  const path = location.pathname;
  if (path === "/login") return loginPage();
  session().then((s) => {
    const info = document.getElementById("session-info");
    info.textContent = s.auth ? [s.tenant, s.role].filter(Boolean).join(" · ") : "no auth";
    const logout = document.getElementById("logout");
    logout.hidden = !s.auth;
    logout.onsubmit = async (ev) => {
      // Sent with the CSRF header like every other change; the plain form
      // post stays as the fallback should this fail.
      ev.preventDefault();
      try {
        await fetch("/logout", { method: "POST", headers: { "X-Volley-Csrf": s.csrf || "" }, credentials: "same-origin" });
      } finally {
        location.assign("/login");
      }
    };
    if (s.mode === "file") {
      const zone = fileOpener(s);
      // The list shows the drop zone; other pages take a drop anywhere.
      if (path === "/" || path === "") main.prepend(zone);
      main.prepend(h("div", { class: "banner" }, "Viewing exported batch files (read-only). Drop another export anywhere on the page to open it."));
    }
  }).catch(() => {});
  let m;
  if (path === "/" || path === "") return listPage();
  if ((m = path.match(/^\/batches\/([^/]+)\/?$/))) return batchPage(decodeURIComponent(m[1]));
  if (path === "/workers") return workersPage();
  if ((m = path.match(/^\/namespaces\/(.+?)\/?$/))) return namespacePage(decodeURIComponent(m[1]));
  return notFound();
}

window.addEventListener("unhandledrejection", (ev) => {
  if (ev.reason instanceof ApiError && ev.reason.status === 401) {
    ev.preventDefault();
    toLogin();
  }
});

route();
