// Timeline tab: a Gantt chart with one lane per worker, drawn on a canvas
// from typed arrays so that 100,000 spans cost no DOM and one pass to draw.
// A worker runs several ops at once (it has slots), so each lane is split
// into rows: spans are packed greedily, in start order, into the first row
// that is free. Within a row spans never overlap and are sorted by start,
// so their ends are sorted too and drawing or hit-testing a time window is
// a binary search.

import {
  STATE_COLORS, STATES, CRITICAL_COLOR, h, clear, fitCanvas, showTooltip, hideTooltip, fmtMs, fmtNum, errorBox,
} from "./common.js";

const ROW_H = 12;
const ROW_GAP = 2;
const LANE_GAP = 8;
const AXIS_H = 24;
const LABEL_W = 96;
const PAGE = 10000;
const FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
const STATE_CODE = Object.fromEntries(STATES.map((s, i) => [s, i]));

function niceStep(ms) {
  const p = Math.pow(10, Math.floor(Math.log10(ms)));
  for (const m of [1, 2, 5, 10]) if (m * p >= ms) return m * p;
  return 10 * p;
}

export class TimelineView {
  /**
   * @param {HTMLElement} root
   * @param {{fetchPage: (offset: number, limit: number) => Promise<object>, onOp: (op: string) => void}} opts
   */
  constructor(root, opts) {
    this.opts = opts;
    this.n = 0;
    this.cap = 0;
    this.alloc(1024);
    this.workers = [];
    this.wall = 1;
    this.view = null; // {t0, k (px per ms), y}
    this.status = h("span", { class: "muted", "data-testid": "timeline-status" }, "Loading…");
    const legend = h("span", { class: "legend" },
      STATES.map((s) => h("span", null, h("i", { class: "dot", style: { "--dot": STATE_COLORS[s] } }), s)),
      h("span", null, h("i", { class: "dot", style: { "--dot": CRITICAL_COLOR } }), "critical path"));
    this.canvas = h("canvas", { "data-testid": "timeline-canvas", "aria-label": "timeline" });
    this.box = h("div", { class: "canvas-box" }, this.canvas,
      h("span", { class: "hint" }, "wheel: zoom time · drag: pan · click a span to open its op"));
    this.error = h("div");
    clear(root,
      h("div", { class: "toolbar" }, legend, h("span", { class: "spacer" }), this.status,
        h("button", { class: "btn", onclick: () => { this.view = null; this.userMoved = false; this.requestDraw(); } }, "Fit")),
      this.error, this.box);
    this.bindInput();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.box);
  }

  stop() {
    this.stopped = true;
    this.setLive(false);
    this.resizeObserver.disconnect();
    hideTooltip();
  }

  alloc(cap) {
    const grow = (Old, T) => {
      const a = new T(cap);
      if (Old) a.set(Old.subarray(0, Math.min(this.n, cap)));
      return a;
    };
    this.opIndex = grow(this.opIndex, Int32Array);
    this.worker = grow(this.worker, Int32Array);
    this.start = grow(this.start, Float64Array);
    this.dur = grow(this.dur, Float64Array);
    this.state = grow(this.state, Uint8Array);
    this.crit = grow(this.crit, Uint8Array);
    this.row = grow(null, Int32Array);
    const ids = new Array(cap);
    if (this.ids) for (let i = 0; i < this.n; i++) ids[i] = this.ids[i];
    this.ids = ids;
    this.cap = cap;
    // Per-state rectangle buffers (x, y, w) for one draw pass.
    this.rects = STATES.map(() => new Float32Array(cap * 3));
  }

  /** Put one page of spans at `offset` (overwriting what was there). */
  put(offset, page) {
    const spans = page.spans;
    const need = offset + spans.length;
    if (need > this.cap || page.total > this.cap) this.alloc(Math.max(need, page.total, this.cap * 2));
    for (let j = 0; j < spans.length; j++) {
      const s = spans[j];
      const i = offset + j;
      this.opIndex[i] = s[0];
      this.ids[i] = s[1];
      this.worker[i] = s[2];
      this.start[i] = s[3];
      this.dur[i] = Math.max(0, s[4] || 0);
      this.state[i] = STATE_CODE[s[5]] ?? 0;
      this.crit[i] = s[6] ? 1 : 0;
    }
    this.n = Math.max(this.n, need);
    this.workers = page.workers || this.workers;
    this.wall = Math.max(page.wall_ms || 0, 1);
    this.wallAt = performance.now();
    this.total = page.total;
    this.idIndex = null; // rebuilt when an event needs it
  }

  /** Read every page from `from` on; draws as pages arrive. */
  async loadFrom(from) {
    let offset = from;
    const t0 = performance.now();
    let pending = this.opts.fetchPage(offset, PAGE);
    for (;;) {
      const page = await pending;
      if (this.stopped) return;
      // Ask for the next page before digesting this one: the server and
      // the page then work at the same time.
      if (page.next != null) pending = this.opts.fetchPage(page.next, PAGE);
      this.put(offset, page);
      if (from === 0 && offset === 0) this.n = page.spans.length; // a full reload starts afresh
      this.pack();
      if (!this.userMoved) this.view = null; // follow the batch until the user zooms or pans
      this.status.textContent = page.next == null
        ? `${fmtNum(this.n)} spans · ${this.workers.length} workers`
        : `loading ${fmtNum(this.n)} / ${fmtNum(page.total)} spans…`;
      this.requestDraw();
      if (page.next == null) break;
      offset = page.next;
    }
    this.canvas.dataset.loaded = String(this.n);
    this.loadMs = performance.now() - t0;
  }

  async load() {
    try {
      await this.loadFrom(0);
      clear(this.error);
    } catch (e) {
      clear(this.error, errorBox(e));
    }
  }

  /**
   * While the batch runs, only spans from the first one still running on
   * can change (spans come in start order), so re-read from there — unless
   * that is a lot, then read only the spans that are new and let the
   * events (applyEvent) finish the ones already drawn.
   */
  async refreshLive() {
    const running = STATE_CODE.running;
    let first = this.n;
    for (let i = 0; i < this.n; i++) {
      if (this.state[i] === running) {
        first = i;
        break;
      }
    }
    if (this.n - first > 2 * PAGE) first = this.n;
    try {
      await this.loadFrom(first);
    } catch (e) {
      clear(this.error, errorBox(e));
    }
  }

  /** An op's end, from the events stream, onto a span already drawn. */
  applyEvent(ev, createdAtMs) {
    const ended = { op_succeeded: "succeeded", op_failed: "failed", op_skipped: "skipped", op_cancelled: "cancelled" };
    const st = ended[ev.kind];
    if (!st || !ev.op_id || !this.n) return;
    if (!this.idIndex) {
      this.idIndex = new Map();
      for (let i = 0; i < this.n; i++) this.idIndex.set(this.ids[i], i);
    }
    const i = this.idIndex.get(ev.op_id);
    if (i == null) return;
    this.state[i] = STATE_CODE[st];
    if (createdAtMs && ev.at_ms) this.dur[i] = Math.max(this.dur[i], ev.at_ms - createdAtMs - this.start[i]);
    this.requestDraw();
  }

  /** Redraw now and then while the batch runs, so running spans grow. */
  setLive(on) {
    if (on && !this.ticker) this.ticker = setInterval(() => this.requestDraw(), 1000);
    if (!on && this.ticker) {
      clearInterval(this.ticker);
      this.ticker = null;
    }
  }

  nowWall() {
    return this.ticker ? this.wall + (performance.now() - (this.wallAt || 0)) : this.wall;
  }

  /** Assign spans to rows within their worker's lane and index rows. */
  pack() {
    const n = this.n;
    const lanes = Math.max(this.workers.length, 1);
    const ends = Array.from({ length: lanes }, () => []);
    for (let i = 0; i < n; i++) {
      const w = Math.min(Math.max(this.worker[i], 0), lanes - 1);
      const e = ends[w];
      const s = this.start[i];
      let r = 0;
      while (r < e.length && e[r] > s) r++;
      if (r === e.length) e.push(0);
      // A running span's end is unknown: nothing else goes after it in its row.
      e[r] = this.state[i] === STATE_CODE.running ? Infinity : s + Math.max(this.dur[i], 1);
      this.row[i] = r;
    }
    // Lane layout: rows per lane, first global row of each lane.
    this.laneRows = ends.map((e) => Math.max(e.length, 1));
    this.laneFirst = new Int32Array(lanes);
    this.laneY = new Float64Array(lanes);
    let rows = 0, y = 0;
    for (let w = 0; w < lanes; w++) {
      this.laneFirst[w] = rows;
      this.laneY[w] = y;
      rows += this.laneRows[w];
      y += this.laneRows[w] * (ROW_H + ROW_GAP) + LANE_GAP;
    }
    this.contentH = y;
    this.rowCount = rows;
    // CSR index: spans of each global row, in start order.
    const counts = new Int32Array(rows + 1);
    const gRow = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const w = Math.min(Math.max(this.worker[i], 0), lanes - 1);
      gRow[i] = this.laneFirst[w] + this.row[i];
      counts[gRow[i] + 1]++;
    }
    for (let r = 0; r < rows; r++) counts[r + 1] += counts[r];
    const fill = counts.slice(0, rows);
    const list = new Int32Array(n);
    for (let i = 0; i < n; i++) list[fill[gRow[i]]++] = i;
    this.rowStart = counts;
    this.rowList = list;
    this.rowLane = new Int32Array(rows);
    this.rowY = new Float64Array(rows);
    for (let w = 0; w < lanes; w++) {
      for (let r = 0; r < this.laneRows[w]; r++) {
        this.rowLane[this.laneFirst[w] + r] = w;
        this.rowY[this.laneFirst[w] + r] = this.laneY[w] + r * (ROW_H + ROW_GAP);
      }
    }
    this.critList = [];
    for (let i = 0; i < n; i++) if (this.crit[i]) this.critList.push(i);
  }

  // -- view ----------------------------------------------------------------
  resize() {
    const rect = this.box.getBoundingClientRect();
    this.cssW = rect.width;
    this.cssH = Math.max(320, Math.min(window.innerHeight - rect.top - 16, 900));
    this.dpr = fitCanvas(this.canvas, rect.width, this.cssH);
    this.requestDraw();
  }

  ensureView() {
    if (!this.view) {
      const span = this.wall * 1.02;
      this.view = { t0: -this.wall * 0.01, k: (this.cssW - LABEL_W - 12) / span, y: 0 };
    }
  }

  requestDraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  /** First index in row r (within rowList) whose span ends at or after t. */
  firstEndingAfter(r, t) {
    let lo = this.rowStart[r], hi = this.rowStart[r + 1];
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const i = this.rowList[mid];
      if (this.start[i] + this.dur[i] < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  draw() {
    if (!this.cssW || !this.rowStart) return;
    this.ensureView();
    const t = performance.now();
    const ctx = this.canvas.getContext("2d");
    const dpr = this.dpr || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.cssW, this.cssH);
    const { t0, k } = this.view;
    const plotW = this.cssW - LABEL_W;
    const tEnd = t0 + plotW / k;
    const y0 = AXIS_H - this.view.y;

    // Lanes' backgrounds and labels.
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    for (let w = 0; w < this.laneRows.length; w++) {
      const ly = y0 + this.laneY[w];
      const lh = this.laneRows[w] * (ROW_H + ROW_GAP);
      if (ly > this.cssH || ly + lh < AXIS_H) continue;
      if (w % 2 === 0) {
        ctx.fillStyle = "#f8f9fb";
        ctx.fillRect(0, ly - LANE_GAP / 2, this.cssW, lh + LANE_GAP);
      }
    }

    // Spans, bucketed by state then filled with one path per state.
    const fill = new Int32Array(STATES.length);
    const rects = this.rects;
    const runningCode = STATE_CODE.running;
    const nowWall = this.nowWall();
    for (let r = 0; r < this.rowCount; r++) {
      const ry = y0 + this.rowY[r];
      if (ry > this.cssH || ry + ROW_H < AXIS_H) continue;
      // Runs of thin same-state spans that touch at this zoom become one
      // rectangle: zoomed out, 100,000 spans are a few thousand rects.
      let runSt = -1, runEnd = -Infinity, runAt = -1;
      const end = this.rowStart[r + 1];
      for (let p = this.firstEndingAfter(r, t0); p < end; p++) {
        const i = this.rowList[p];
        const s = this.start[i];
        if (s > tEnd) break;
        let x = LABEL_W + (s - t0) * k;
        const st = this.state[i];
        let wd = (st === runningCode ? Math.max(this.dur[i], nowWall - s) : this.dur[i]) * k;
        if (wd < 1) wd = 1;
        if (x < LABEL_W) {
          wd -= LABEL_W - x;
          x = LABEL_W;
          if (wd <= 0) continue;
        }
        const b = rects[st];
        if (st === runSt && wd < 3 && x - runEnd < 1) {
          runEnd = Math.max(runEnd, x + wd);
          b[runAt + 2] = runEnd - b[runAt];
          continue;
        }
        const f = fill[st] * 3;
        b[f] = x;
        b[f + 1] = ry;
        b[f + 2] = wd > 2 ? wd - 0.5 : wd; // a hair of gap between neighbours
        fill[st]++;
        runSt = wd < 3 ? st : -1;
        runEnd = x + wd;
        runAt = f;
      }
    }
    for (let si = 0; si < STATES.length; si++) {
      const b = rects[si];
      const m = fill[si];
      if (!m) continue;
      ctx.fillStyle = STATE_COLORS[STATES[si]];
      ctx.beginPath();
      for (let j = 0; j < m; j++) ctx.rect(b[j * 3], b[j * 3 + 1], b[j * 3 + 2], ROW_H);
      ctx.fill();
    }

    // Critical path: outlined spans joined by a line, on top.
    if (this.critList.length) {
      const pos = (i) => {
        const w = Math.min(Math.max(this.worker[i], 0), this.laneRows.length - 1);
        const ry = y0 + this.rowY[this.laneFirst[w] + this.row[i]];
        return { x: LABEL_W + (this.start[i] - t0) * k, y: ry, w: Math.max(this.dur[i] * k, 2) };
      };
      ctx.save();
      ctx.beginPath();
      ctx.rect(LABEL_W, AXIS_H, plotW, this.cssH - AXIS_H);
      ctx.clip();
      ctx.strokeStyle = CRITICAL_COLOR;
      ctx.lineWidth = 1.5;
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      let prev = null;
      for (const i of this.critList) {
        const p = pos(i);
        if (prev) {
          ctx.moveTo(prev.x + prev.w, prev.y + ROW_H / 2);
          ctx.lineTo(p.x, p.y + ROW_H / 2);
        }
        prev = p;
      }
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.lineWidth = 2;
      for (const i of this.critList) {
        const p = pos(i);
        ctx.strokeRect(p.x - 1, p.y - 1, p.w + 2, ROW_H + 2);
      }
      ctx.restore();
    }

    // Hovered span.
    if (this.hover != null && this.hover < this.n) {
      const i = this.hover;
      const w = Math.min(Math.max(this.worker[i], 0), this.laneRows.length - 1);
      const ry = y0 + this.rowY[this.laneFirst[w] + this.row[i]];
      ctx.strokeStyle = "#111827";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(LABEL_W + (this.start[i] - t0) * k - 1, ry - 1, Math.max(this.dur[i] * k, 1) + 2, ROW_H + 2);
    }

    // Label column and axis drawn last, over the spans.
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, LABEL_W, this.cssH);
    ctx.fillRect(0, 0, this.cssW, AXIS_H);
    ctx.fillStyle = "#374151";
    ctx.textAlign = "left";
    for (let w = 0; w < this.laneRows.length; w++) {
      const ly = y0 + this.laneY[w];
      const lh = this.laneRows[w] * (ROW_H + ROW_GAP);
      if (ly > this.cssH || ly + lh < AXIS_H) continue;
      const name = this.workers[w] || `worker ${w}`;
      ctx.fillText(name.length > 14 ? name.slice(0, 13) + "…" : name, 10, Math.max(ly + 7, AXIS_H + 7));
    }
    ctx.strokeStyle = "#e3e6eb";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(LABEL_W + 0.5, 0);
    ctx.lineTo(LABEL_W + 0.5, this.cssH);
    ctx.moveTo(0, AXIS_H + 0.5);
    ctx.lineTo(this.cssW, AXIS_H + 0.5);
    ctx.stroke();
    const step = niceStep(100 / k);
    ctx.fillStyle = "#6b7280";
    ctx.textAlign = "center";
    ctx.beginPath();
    for (let tt = Math.ceil(t0 / step) * step; tt <= tEnd; tt += step) {
      const x = LABEL_W + (tt - t0) * k;
      if (x < LABEL_W + 20) continue;
      ctx.moveTo(x + 0.5, AXIS_H - 5);
      ctx.lineTo(x + 0.5, AXIS_H);
      ctx.fillText(fmtMs(tt), x, AXIS_H / 2);
    }
    ctx.stroke();
    this.lastDrawMs = performance.now() - t;
    this.canvas.dataset.drawMs = this.lastDrawMs.toFixed(1);
  }

  // -- input ---------------------------------------------------------------
  local(ev) {
    const r = this.canvas.getBoundingClientRect();
    return { x: ev.clientX - r.left, y: ev.clientY - r.top };
  }

  hit(ev) {
    if (!this.view || !this.rowStart) return null;
    const { x, y } = this.local(ev);
    if (x < LABEL_W || y < AXIS_H) return null;
    const wy = y - AXIS_H + this.view.y;
    // Find the row under y (rows are few: a linear scan is fine).
    let r = -1;
    for (let q = 0; q < this.rowCount; q++) {
      if (wy >= this.rowY[q] - 1 && wy <= this.rowY[q] + ROW_H + 1) {
        r = q;
        break;
      }
    }
    if (r < 0) return null;
    const t = this.view.t0 + (x - LABEL_W) / this.view.k;
    const tol = 3 / this.view.k;
    let best = null, bestD = Infinity;
    const end = this.rowStart[r + 1];
    for (let p = this.firstEndingAfter(r, t - tol); p < end; p++) {
      const i = this.rowList[p];
      if (this.start[i] > t + tol) break;
      const d = t < this.start[i] ? this.start[i] - t : t > this.start[i] + this.dur[i] ? t - this.start[i] - this.dur[i] : 0;
      if (d < bestD) {
        bestD = d;
        best = i;
      }
      if (d === 0) break;
    }
    return best;
  }

  bindInput() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("pointerdown", (ev) => {
      this.ensureView();
      drag = { x: ev.clientX, y: ev.clientY, t0: this.view.t0, vy: this.view.y, moved: false };
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
          this.userMoved = true;
          this.view.t0 = drag.t0 - dx / this.view.k;
          const maxY = Math.max(0, this.contentH - (this.cssH - AXIS_H) + 10);
          this.view.y = Math.min(maxY, Math.max(0, drag.vy - dy));
          hideTooltip();
          this.requestDraw();
        }
        return;
      }
      const i = this.hit(ev);
      if (i !== this.hover) {
        this.hover = i;
        c.style.cursor = i != null ? "pointer" : "";
        this.requestDraw();
      }
      if (i != null) {
        const crit = this.crit[i] ? " · critical path" : "";
        showTooltip(`${this.ids[i]} · ${fmtMs(this.dur[i])} · ${STATES[this.state[i]]} · ${this.workers[this.worker[i]] || ""}` +
          ` · +${fmtMs(this.start[i])}${crit}`, ev.clientX, ev.clientY);
      } else hideTooltip();
    });
    c.addEventListener("pointerleave", () => {
      hideTooltip();
      if (this.hover != null) {
        this.hover = null;
        this.requestDraw();
      }
    });
    c.addEventListener("pointerup", (ev) => {
      const wasDrag = drag && drag.moved;
      drag = null;
      c.classList.remove("dragging");
      if (wasDrag) return;
      const i = this.hit(ev);
      if (i != null) this.opts.onOp(this.ids[i]);
    });
    c.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      this.ensureView();
      this.userMoved = true;
      if (ev.shiftKey) {
        const maxY = Math.max(0, this.contentH - (this.cssH - AXIS_H) + 10);
        this.view.y = Math.min(maxY, Math.max(0, this.view.y + ev.deltaY));
      } else {
        const { x } = this.local(ev);
        const px = Math.max(x - LABEL_W, 0);
        const tAt = this.view.t0 + px / this.view.k;
        const factor = Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015));
        const maxK = 200; // px per ms
        const minK = (this.cssW - LABEL_W) / (this.wall * 4);
        this.view.k = Math.min(maxK, Math.max(minK, this.view.k * factor));
        this.view.t0 = tAt - px / this.view.k;
      }
      this.requestDraw();
    }, { passive: false });
  }
}
