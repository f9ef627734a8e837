// DAG tab: the server-aggregated graph laid out by dagre (layered) and drawn
// on a canvas, because even aggregated graphs reach hundreds of nodes once a
// group is expanded and the DOM would not pan and zoom them smoothly.

import {
  STATE_COLORS, STATES, CRITICAL_COLOR, h, clear, fitCanvas, showTooltip, hideTooltip, fmtNum, errorBox,
} from "./common.js";

const FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
const FONT_BOLD = "600 12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
const SINGLE_H = 30;
const GROUP_H = 50;

function tint(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  const r = (n >> 16) & 255, g = (n >> 8) & 255, b = n & 255;
  const mix = (c) => Math.round(c * alpha + 255 * (1 - alpha));
  return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
}
const TINTS = Object.fromEntries(STATES.map((s) => [s, tint(STATE_COLORS[s], 0.22)]));

/** The state that colours a node: the "loudest" present one. */
function mainState(states) {
  for (const s of ["failed", "running", "cancelled", "ready", "waiting", "skipped", "succeeded"]) {
    if (states && states[s]) return s;
  }
  return "waiting";
}

export class GraphView {
  /**
   * @param {HTMLElement} root
   * @param {{load: (expand: string[]) => Promise<object>, onOp: (op: string) => void,
   *          onRest: (group: string) => void}} opts
   */
  constructor(root, opts) {
    this.opts = opts;
    this.expand = new Set(opts.expand || []);
    this.data = null;
    this.key = "";
    this.layout = null; // {nodes: Map, edges: [], width, height}
    this.view = { scale: 1, tx: 0, ty: 0 };
    this.fitPending = true;
    this.hover = null;
    this.measure = document.createElement("canvas").getContext("2d");

    this.chips = h("span", { class: "toolbar" });
    this.status = h("span", { class: "muted" });
    const legend = h("span", { class: "legend" },
      STATES.map((s) => h("span", null, h("i", { class: "dot", style: { "--dot": STATE_COLORS[s] } }), s)),
      h("span", null, h("i", { class: "dot", style: { "--dot": CRITICAL_COLOR } }), "critical path"));
    this.canvas = h("canvas", { "data-testid": "dag-canvas", "aria-label": "batch graph" });
    this.box = h("div", { class: "canvas-box" }, this.canvas,
      h("span", { class: "hint" }, "wheel: zoom · drag: pan · click a group to expand, an op to open it"));
    this.error = h("div");
    clear(root,
      h("div", { class: "toolbar" }, legend, h("span", { class: "spacer" }), this.status,
        h("button", { class: "btn", onclick: () => { this.fit(); this.requestDraw(); } }, "Fit")),
      h("div", { class: "toolbar" }, this.chips),
      this.error, this.box);
    this.bindInput();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.box);
  }

  stop() {
    this.stopped = true;
    this.resizeObserver.disconnect();
    hideTooltip();
  }

  async refresh() {
    let data;
    try {
      data = await this.opts.load([...this.expand]);
    } catch (e) {
      clear(this.error, errorBox(e));
      return;
    }
    clear(this.error);
    if (this.stopped) return;
    this.data = data;
    const key = data.nodes.map((n) => n.id).join("\n") + "|" + data.edges.map((e) => `${e.from}>${e.to}`).join("\n");
    if (key !== this.key || !this.layout) {
      this.key = key;
      if (data.nodes.length > 300) {
        // dagre takes a second or two at this size: say so first.
        this.status.textContent = `laying out ${fmtNum(data.nodes.length)} nodes…`;
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        if (this.stopped || this.data !== data) return;
      }
      this.relayout();
    } else {
      for (const n of data.nodes) {
        const ln = this.layout.nodes.get(n.id);
        if (ln) ln.node = n;
      }
      this.setCritical();
      const counts = new Map(data.edges.map((x) => [`${x.from}>${x.to}`, x.count]));
      for (const e of this.layout.edges) {
        const c = counts.get(`${e.from}>${e.to}`);
        if (c != null) e.count = c;
      }
    }
    this.status.textContent = `${fmtNum(data.op_count)} ops · ${data.nodes.length} nodes · ${data.layers} layers`;
    this.renderChips();
    this.canvas.dataset.ready = "1";
    this.requestDraw();
  }

  renderChips() {
    clear(this.chips, this.expand.size ? h("span", { class: "muted" }, "Expanded:") : null,
      [...this.expand].map((id) => h("span", { class: "chip" }, id.replace(/^g:/, ""),
        h("button", { title: "collapse", onclick: () => this.toggle(id) }, "×"))));
  }

  toggle(groupId) {
    if (this.expand.has(groupId)) this.expand.delete(groupId);
    else this.expand.add(groupId);
    this.fitPending = true;
    if (this.opts.onExpand) this.opts.onExpand([...this.expand]);
    this.refresh();
  }

  nodeSize(n) {
    const single = n.op != null;
    this.measure.font = single ? FONT : FONT_BOLD;
    const label = single ? n.label : `${n.label}  ×${fmtNum(n.count)}`;
    const w = Math.min(260, Math.max(single ? 80 : 150, this.measure.measureText(label).width + (single ? 24 : 40)));
    return { w, h: single ? SINGLE_H : GROUP_H, label };
  }

  relayout() {
    const dagre = window.dagre;
    if (!dagre) {
      clear(this.error, errorBox("the graph layout library did not load"));
      return;
    }
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 12, ranksep: 70, edgesep: 8, marginx: 24, marginy: 24 });
    g.setDefaultEdgeLabel(() => ({}));
    const nodes = new Map();
    for (const n of this.data.nodes) {
      const size = this.nodeSize(n);
      g.setNode(n.id, { width: size.w, height: size.h });
      nodes.set(n.id, { node: n, w: size.w, h: size.h, label: size.label, x: 0, y: 0 });
    }
    for (const e of this.data.edges) {
      if (nodes.has(e.from) && nodes.has(e.to)) g.setEdge(e.from, e.to);
    }
    const t0 = performance.now();
    dagre.layout(g);
    this.canvas.dataset.layoutMs = (performance.now() - t0).toFixed(0);
    for (const [id, ln] of nodes) {
      const p = g.node(id);
      ln.x = p.x - ln.w / 2;
      ln.y = p.y - ln.h / 2;
    }
    const edges = [];
    for (const e of this.data.edges) {
      const le = g.edge(e.from, e.to);
      if (!le) continue;
      edges.push({ from: e.from, to: e.to, count: e.count, points: le.points || [] });
    }
    const gg = g.graph();
    this.layout = { nodes, edges, width: gg.width || 1, height: gg.height || 1 };
    this.setCritical();
    if (this.fitPending) this.fit();
  }

  setCritical() {
    const crit = this.data.critical || [];
    this.criticalNodes = new Set(crit);
    this.criticalEdges = new Set();
    for (let i = 0; i + 1 < crit.length; i++) this.criticalEdges.add(`${crit[i]}>${crit[i + 1]}`);
  }

  // -- view ----------------------------------------------------------------
  resize() {
    const rect = this.box.getBoundingClientRect();
    const height = Math.max(360, Math.min(window.innerHeight - rect.top - 16, 900));
    this.cssW = rect.width;
    this.cssH = height;
    this.dpr = fitCanvas(this.canvas, rect.width, height);
    if (this.fitPending && this.layout) this.fit();
    this.requestDraw();
  }

  fit() {
    if (!this.layout || !this.cssW) return;
    const { width, height } = this.layout;
    // The whole graph if it stays legible; an expanded group of hundreds of
    // members is too tall for that, so then keep nodes readable (or at
    // least the full width) and start at the top: the user pans down.
    const whole = Math.min(this.cssW / width, this.cssH / height, 1.4);
    const legible = Math.min(0.45, this.cssW / width);
    this.view.scale = Math.max(whole, legible, 0.02);
    this.view.tx = (this.cssW - width * this.view.scale) / 2;
    this.view.ty = height * this.view.scale <= this.cssH ? (this.cssH - height * this.view.scale) / 2 : 8;
    this.fitPending = false;
  }

  requestDraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    const dpr = this.dpr || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.layout) return;
    const { scale, tx, ty } = this.view;
    ctx.setTransform(dpr * scale, 0, 0, dpr * scale, dpr * tx, dpr * ty);
    const minX = -tx / scale, minY = -ty / scale;
    const maxX = minX + this.cssW / scale, maxY = minY + this.cssH / scale;
    const px = 1 / scale; // one CSS pixel in world units

    // Edges: ordinary first, critical on top.
    const drawEdge = (e) => {
      const pts = e.points;
      if (pts.length < 2) return;
      ctx.beginPath();
      ctx.moveTo(pts[0].x, pts[0].y);
      for (let i = 1; i < pts.length - 1; i++) {
        const mx = (pts[i].x + pts[i + 1].x) / 2, my = (pts[i].y + pts[i + 1].y) / 2;
        ctx.quadraticCurveTo(pts[i].x, pts[i].y, mx, my);
      }
      const last = pts[pts.length - 1], prev = pts[pts.length - 2];
      ctx.lineTo(last.x, last.y);
      ctx.stroke();
      const ang = Math.atan2(last.y - prev.y, last.x - prev.x);
      const a = 7;
      ctx.beginPath();
      ctx.moveTo(last.x, last.y);
      ctx.lineTo(last.x - a * Math.cos(ang - 0.4), last.y - a * Math.sin(ang - 0.4));
      ctx.lineTo(last.x - a * Math.cos(ang + 0.4), last.y - a * Math.sin(ang + 0.4));
      ctx.closePath();
      ctx.fill();
    };
    ctx.strokeStyle = "#c3c8d1";
    ctx.fillStyle = "#c3c8d1";
    ctx.lineWidth = Math.max(1.2, px);
    const critical = [];
    for (const e of this.layout.edges) {
      if (this.criticalEdges.has(`${e.from}>${e.to}`)) critical.push(e);
      else drawEdge(e);
    }
    ctx.strokeStyle = CRITICAL_COLOR;
    ctx.fillStyle = CRITICAL_COLOR;
    ctx.lineWidth = Math.max(3, 2 * px);
    for (const e of critical) drawEdge(e);
    if (scale > 0.45) {
      ctx.font = FONT;
      ctx.fillStyle = "#6b7280";
      ctx.textAlign = "center";
      for (const e of this.layout.edges) {
        if (e.count > 1 && e.points.length) {
          const mid = e.points[Math.floor(e.points.length / 2)];
          ctx.fillText(`×${fmtNum(e.count)}`, mid.x, mid.y - 4);
        }
      }
    }

    // Nodes.
    const showText = scale > 0.3;
    for (const ln of this.layout.nodes.values()) {
      if (ln.x > maxX || ln.y > maxY || ln.x + ln.w < minX || ln.y + ln.h < minY) continue;
      const n = ln.node;
      const single = n.op != null;
      const isCrit = this.criticalNodes.has(n.id);
      const st = mainState(n.states);
      const hovered = this.hover === n.id;
      ctx.beginPath();
      ctx.roundRect(ln.x, ln.y, ln.w, ln.h, 6);
      ctx.fillStyle = single ? TINTS[st] : "#ffffff";
      ctx.fill();
      ctx.lineWidth = isCrit ? 2.5 : hovered ? 2 : 1.2;
      ctx.strokeStyle = isCrit ? CRITICAL_COLOR : single ? STATE_COLORS[st] : hovered ? "#6b7280" : "#aab1bd";
      ctx.stroke();
      if (!single) {
        // Stacked bar of the group's counts by state.
        const bx = ln.x + 10, by = ln.y + ln.h - 16, bw = ln.w - 20, bh = 8;
        const total = n.count || 1;
        let x = bx;
        for (const s of STATES) {
          const c = (n.states && n.states[s]) || 0;
          if (!c) continue;
          const w = Math.max((c / total) * bw, 1.5 * px);
          ctx.fillStyle = STATE_COLORS[s];
          ctx.fillRect(x, by, Math.min(w, bx + bw - x), bh);
          x += w;
        }
        ctx.strokeStyle = "#e5e7eb";
        ctx.lineWidth = px;
        ctx.strokeRect(bx, by, bw, bh);
      }
      if (showText) {
        ctx.fillStyle = "#1f2937";
        ctx.textAlign = "left";
        ctx.textBaseline = "middle";
        ctx.font = single ? FONT : FONT_BOLD;
        const ty2 = single ? ln.y + ln.h / 2 : ln.y + 15;
        let label = ln.label;
        const room = ln.w - (single ? 20 : 34);
        if (ctx.measureText(label).width > room) {
          while (label.length > 3 && ctx.measureText(label + "…").width > room) label = label.slice(0, -1);
          label += "…";
        }
        ctx.fillText(label, ln.x + 10, ty2);
        if (!single && !n.id.endsWith(":rest")) {
          ctx.fillStyle = "#6b7280";
          ctx.textAlign = "right";
          ctx.fillText(this.expand.has(n.id) ? "−" : "+", ln.x + ln.w - 10, ty2);
        }
      }
    }
  }

  // -- input ---------------------------------------------------------------
  toWorld(ev) {
    const r = this.canvas.getBoundingClientRect();
    const cx = ev.clientX - r.left, cy = ev.clientY - r.top;
    return { cx, cy, x: (cx - this.view.tx) / this.view.scale, y: (cy - this.view.ty) / this.view.scale };
  }

  hit(ev) {
    if (!this.layout) return null;
    const { x, y } = this.toWorld(ev);
    for (const ln of this.layout.nodes.values()) {
      if (x >= ln.x && x <= ln.x + ln.w && y >= ln.y && y <= ln.y + ln.h) return ln;
    }
    return null;
  }

  bindInput() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("pointerdown", (ev) => {
      drag = { x: ev.clientX, y: ev.clientY, tx: this.view.tx, ty: this.view.ty, moved: false };
      c.setPointerCapture(ev.pointerId);
    });
    c.addEventListener("pointermove", (ev) => {
      if (drag) {
        const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) {
          drag.moved = true;
          c.classList.add("dragging");
        }
        if (drag.moved) {
          this.view.tx = drag.tx + dx;
          this.view.ty = drag.ty + dy;
          hideTooltip();
          this.requestDraw();
        }
        return;
      }
      const ln = this.hit(ev);
      const id = ln ? ln.node.id : null;
      if (id !== this.hover) {
        this.hover = id;
        c.style.cursor = ln ? "pointer" : "";
        this.requestDraw();
      }
      if (ln) {
        const n = ln.node;
        const parts = STATES.filter((s) => n.states && n.states[s]).map((s) => `${s} ${fmtNum(n.states[s])}`);
        const what = n.op != null ? `${n.op} (${n.kind})` : `${n.label}: ${fmtNum(n.count)} ops (${n.kind})`;
        showTooltip(`${what} · ${parts.join(", ")}`, ev.clientX, ev.clientY);
      } else hideTooltip();
    });
    c.addEventListener("pointerleave", () => {
      hideTooltip();
      if (this.hover) {
        this.hover = null;
        this.requestDraw();
      }
    });
    c.addEventListener("pointerup", (ev) => {
      const wasDrag = drag && drag.moved;
      drag = null;
      c.classList.remove("dragging");
      if (wasDrag) return;
      const ln = this.hit(ev);
      if (!ln) return;
      const n = ln.node;
      if (n.op != null) this.opts.onOp(n.op);
      else if (n.id.endsWith(":rest")) this.opts.onRest(n.group || n.label);
      else this.toggle(n.id);
    });
    c.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const { cx, cy } = this.toWorld(ev);
      const factor = Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015));
      const scale = Math.min(4, Math.max(0.02, this.view.scale * factor));
      const k = scale / this.view.scale;
      this.view.tx = cx - (cx - this.view.tx) * k;
      this.view.ty = cy - (cy - this.view.ty) * k;
      this.view.scale = scale;
      this.requestDraw();
    }, { passive: false });
  }
}
