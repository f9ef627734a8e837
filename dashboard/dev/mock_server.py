#!/usr/bin/env python3
"""DEV TOOL ONLY — a fake dashboard back end for working on the front end.

This is *not* the Volley dashboard server and nothing in the product or its
tests uses it. The real server is the coordinator's axum service; this file
only imitates the contract in docs/dashboard-api.md so that the pages under
dashboard/assets/ can be developed and their browser tests exercised without
a cluster:

    python3 dashboard/dev/mock_server.py --port 8377 --ops 100000 --fanout 5000

It serves the HTML shell for every page path, the assets under /assets/, and
fixture JSON for every /api/ route of the contract. The batches are generated:
a schedule is simulated on a few fake workers, and each batch's state at any
moment is derived from the wall clock, so the "running" batch really advances
(ops start and finish, the graph's counts move, the SSE stream emits events)
until it ends after --run-seconds.

Login: GET /login?token=TOKEN&next=PATH or POST /login with the token given
by --token (default "dev"); --auth none turns the session check off.
"""

import argparse
import bisect
import heapq
import json
import os
import random
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def now_ms():
    return int(time.time() * 1000)


class Batch:
    """A generated batch: ops, dependencies and a simulated schedule.

    Times are ms since the batch's creation; `clock()` says how far the
    batch has got (for a finished batch, past its end)."""

    def __init__(self, bid, name, tenant, ops, fanout, workers, slots, seed,
                 created_at_ms, run_ms=None, fail_some=False, namespace=None):
        self.id, self.name, self.tenant = bid, name, tenant
        self.namespace = namespace
        self.created_at_ms = created_at_ms
        self.cancelled_at = None
        rnd = random.Random(seed)
        ids, kinds, groups, deps = [], [], [], []

        def add(op_id, kind, group, after):
            ids.append(op_id)
            kinds.append(kind)
            groups.append(group)
            deps.append(after)
            return len(ids) - 1

        fetch = add("fetch", "shell", None, [])
        build = add("build", "shell", None, [fetch])
        merges = []
        remaining = max(0, ops - 3)
        gi = 0
        group_names = ["test", "render", "lint", "shard", "encode", "score"]
        while remaining > 1:
            size = min(fanout, remaining - 1)
            gname = group_names[gi % len(group_names)] + ("" if gi < len(group_names) else "-%d" % gi)
            members = [add("%s-%d" % (gname, k), "shell" if gi % 2 == 0 else "http", gname, [build])
                       for k in range(size)]
            merges.append(add("merge-%s" % gname, "echo", None, members))
            remaining -= size + 1
            gi += 1
        while remaining > 0:
            merges.append(add("extra-%d" % remaining, "echo", None, [build]))
            remaining -= 1
        report = add("report", "shell", None, merges or [build])
        self.ids, self.kinds, self.groups, self.deps = ids, kinds, groups, deps
        self.index = {op_id: i for i, op_id in enumerate(ids)}
        n = len(ids)
        self.dependents = [[] for _ in range(n)]
        for i, ds in enumerate(deps):
            for d in ds:
                self.dependents[d].append(i)
        self.failed = set()
        if fail_some:
            for k in rnd.sample(range(2, n - 1), min(3, max(0, n - 3))):
                if groups[k] is not None:
                    self.failed.add(k)
        self.attempts = [2 if i in self.failed else (2 if rnd.random() < 0.01 else 1) for i in range(n)]

        # Simulate: slots as a heap of (free_at, worker, slot).
        dur = [rnd.randint(200, 3000) for _ in range(n)]
        dur[fetch], dur[build], dur[report] = 1500, 4000, 2500
        heap = [(0, w, s) for w in range(workers) for s in range(slots)]
        heapq.heapify(heap)
        start, end, worker = [0] * n, [0] * n, [0] * n
        for i in range(n):  # ids are in topological order by construction
            ready = max((end[d] for d in deps[i]), default=0)
            free, w, s = heapq.heappop(heap)
            start[i] = max(ready, free) + 5
            end[i] = start[i] + dur[i]
            worker[i] = w
            heapq.heappush(heap, (end[i], w, s))
        wall = max(end)
        if run_ms:  # stretch or squeeze so that the batch lasts run_ms
            f = run_ms / wall
            start = [int(x * f) for x in start]
            end = [max(int(x * f), start[i] + 1) for i, x in enumerate(end)]
            wall = max(end)
        self.start, self.end, self.worker = start, end, worker
        self.dur = [end[i] - start[i] for i in range(n)]
        self.wall = wall
        self.sequential = sum(self.dur)
        self.workers = ["w%d" % (w + 1) for w in range(workers)]
        self.slots = slots
        # Critical path: from the op that ends last, back through the
        # dependency that ended last.
        cur = max(range(n), key=lambda i: end[i])
        path = [cur]
        while deps[cur]:
            cur = max(deps[cur], key=lambda d: end[d])
            path.append(cur)
        path.reverse()
        self.critical = path
        self.critical_set = set(path)
        self.critical_ms = sum(self.dur[i] for i in path)
        # Events, in time order: (at, seq, kind, op)
        evs = [(0, "batch_submitted", None)]
        for i in range(n):
            evs.append((start[i], "op_started", i))
            evs.append((end[i], "op_failed" if i in self.failed else "op_succeeded", i))
        evs.append((wall, "batch_finished", None))
        evs.sort(key=lambda e: (e[0], 0 if e[1] == "op_started" else 1))
        self.events = evs
        self.event_times = [e[0] for e in evs]
        self.order = sorted(range(n), key=lambda i: start[i])
        self.starts_sorted = [start[i] for i in self.order]

    # -- state at a moment ------------------------------------------------
    def clock(self):
        t = now_ms() - self.created_at_ms
        if self.cancelled_at is not None:
            t = min(t, self.cancelled_at)
        return t

    def op_state(self, i, t):
        if self.start[i] > t:
            if self.cancelled_at is not None:
                return "cancelled"
            return "ready" if all(self.end[d] <= t for d in self.deps[i]) else "waiting"
        if self.end[i] > t:
            return "cancelled" if self.cancelled_at is not None else "running"
        return "failed" if i in self.failed else "succeeded"

    def batch_state(self, t):
        if self.cancelled_at is not None:
            return "cancelled"
        if t < self.wall:
            return "running"
        return "failed" if self.failed else "succeeded"

    def counts(self, t):
        c = {s: 0 for s in ("succeeded", "failed", "skipped", "cancelled", "running", "waiting", "ready")}
        if t >= self.wall and self.cancelled_at is None:
            c["succeeded"] = len(self.ids) - len(self.failed)
            c["failed"] = len(self.failed)
            return c
        for i in range(len(self.ids)):
            c[self.op_state(i, t)] += 1
        return c

    def summary(self, t):
        c = self.counts(t)
        state = self.batch_state(t)
        done = c["succeeded"] + c["failed"] + c["skipped"] + c["cancelled"]
        wall = min(t, self.wall)
        finished = state != "running"
        seq = sum(self.dur[i] for i in range(len(self.ids)) if self.end[i] <= t) if not finished or self.cancelled_at else self.sequential
        return {
            "id": self.id, "name": self.name, "tenant": self.tenant, "state": state,
            "done": done, "total": len(self.ids), "counts": c,
            "created_at_ms": self.created_at_ms,
            "finished_at_ms": self.created_at_ms + wall if finished else 0,
            "wall_ms": wall, "sequential_ms": seq,
            "speedup": round(seq / wall, 2) if finished and wall else None,
        }

    def last_seq(self, t):
        return bisect.bisect_right(self.event_times, t)


class Store:
    def __init__(self, args):
        start = now_ms()
        self.batches = {}
        self.order = []
        big = Batch("b-big", "big-fanout", "acme", args.ops, args.fanout, 16, 8, 1,
                    start - 3_600_000, namespace="acme-shared")
        self.add(big)
        small = Batch("b-small", "nightly-etl", "acme", 40, 12, 3, 2, 2, start - 7_200_000, fail_some=True)
        self.add(small)
        running = Batch("b-running", "live-render", "acme", args.running_ops, min(args.fanout, 400), 8, 4, 3,
                        start, run_ms=args.run_seconds * 1000, namespace="acme-shared")
        self.add(running)
        for k in range(args.extra):
            self.add(Batch("b-old-%d" % k, "daily-%d" % k, "beta" if k % 3 == 0 else "acme", 25, 8, 2, 2,
                           10 + k, start - 86_400_000 * (k + 1)))
        self.order.sort(key=lambda b: -self.batches[b].created_at_ms)

    def add(self, b):
        self.batches[b.id] = b
        self.order.append(b.id)


class Handler(BaseHTTPRequestHandler):
    server_version = "volley-mock/0"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            super().log_message(fmt, *args)

    # -- plumbing -----------------------------------------------------------
    def send(self, code, body, ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":"))
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, code, kind, message):
        self.send(code, {"error": kind, "message": message})

    def session(self):
        if self.server.opts.auth == "none":
            return {"tenant": None}
        cookie = self.headers.get("Cookie", "")
        for part in cookie.split(";"):
            k, _, v = part.strip().partition("=")
            if k == "volley_session" and v in self.server.sessions:
                return self.server.sessions[v]
        return None

    def shell(self, code=200):
        # The strict policy the real server is proposed to send: the pages
        # must work under it (no inline script, no external origin).
        with open(os.path.join(ASSETS, "index.html"), "rb") as f:
            self.send(code, f.read(), CONTENT_TYPES[".html"], [("Content-Security-Policy", CSP)])

    def login(self, token, nxt):
        if token != self.server.opts.token:
            self.shell(401)
            return
        sid = secrets.token_hex(16)
        self.server.sessions[sid] = {"tenant": "acme", "csrf": secrets.token_hex(8)}
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        self.send(303, b"", "text/plain", [
            ("Location", nxt),
            ("Set-Cookie", "volley_session=%s; HttpOnly; SameSite=Strict; Path=/" % sid)])

    # -- routes -------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if url.path == "/login":
            form = urllib.parse.parse_qs(body)
            self.login(form.get("token", [""])[0], form.get("next", ["/"])[0])
            return
        sess = self.session()
        if url.path == "/logout":
            self.send(303, b"", "text/plain", [("Location", "/login"), ("Set-Cookie", "volley_session=; Max-Age=0; Path=/")])
            return
        if sess is None:
            self.error(401, "unauthenticated", "log in first")
            return
        if self.server.opts.auth != "none" and self.headers.get("X-Volley-Csrf") != sess["csrf"]:
            self.error(403, "forbidden", "missing or wrong X-Volley-Csrf")
            return
        parts = url.path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["api", "batches"] and parts[3] == "cancel":
            b = self.server.store.batches.get(parts[2])
            if not b:
                self.error(404, "not_found", "no batch %s" % parts[2])
                return
            if b.batch_state(b.clock()) == "running":
                b.cancelled_at = b.clock()
            self.send(200, {"cancelled": True})
            return
        self.error(404, "not_found", "no route")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        q = lambda k, d=None: query.get(k, [d])[0]
        if path.startswith("/assets/"):
            rel = os.path.normpath(path[len("/assets/"):])
            full = os.path.join(ASSETS, rel)
            if rel.startswith("..") or not os.path.isfile(full):
                self.send(404, b"not found", "text/plain")
                return
            with open(full, "rb") as f:
                self.send(200, f.read(), CONTENT_TYPES.get(os.path.splitext(full)[1], "application/octet-stream"))
            return
        if path == "/favicon.ico":
            self.send(204, b"", "text/plain")
            return
        if path == "/login":
            if q("token") is not None:
                self.login(q("token"), q("next", "/"))
            else:
                self.shell()
            return
        sess = self.session()
        if not path.startswith("/api/"):
            if sess is None:
                self.send(303, b"", "text/plain", [("Location", "/login?next=" + urllib.parse.quote(self.path, safe=""))])
                return
            self.shell()
            return
        if sess is None:
            self.error(401, "unauthenticated", "log in first")
            return
        delay = self.server.opts.latency_ms
        if delay:
            time.sleep(delay / 1000)
        try:
            self.api(path, q, sess)
        except BrokenPipeError:
            pass

    def api(self, path, q, sess):
        store = self.server.store
        parts = path.strip("/").split("/")[1:]
        if parts == ["session"]:
            self.send(200, {"auth": self.server.opts.auth != "none", "tenant": "acme", "role": "client",
                            "csrf": sess.get("csrf", ""), "mode": "live"})
            return
        if parts == ["workers"]:
            return self.workers()
        if parts == ["batches"]:
            limit = min(int(q("limit", "50")), 200)
            ids = store.order
            before = q("before")
            if before in ids:
                ids = ids[ids.index(before) + 1:]
            page = ids[:limit]
            rows = []
            for bid in page:
                s = store.batches[bid].summary(store.batches[bid].clock())
                rows.append({k: s[k] for k in ("id", "name", "tenant", "state", "done", "total", "created_at_ms",
                                               "finished_at_ms", "wall_ms", "speedup")})
            self.send(200, {"batches": rows, "next": page[-1] if len(ids) > limit else None})
            return
        if len(parts) == 3 and parts[0] == "namespaces" and parts[2] == "memory":
            return self.memory("namespace", urllib.parse.unquote(parts[1]), None)
        if len(parts) < 2 or parts[0] != "batches":
            return self.error(404, "not_found", "no route %s" % path)
        b = store.batches.get(parts[1])
        if b is None:
            return self.error(404, "not_found", "no batch %s" % parts[1])
        t = b.clock()
        rest = parts[2:]
        if not rest:
            s = b.summary(t)
            c = s.pop("counts")
            s.pop("done")
            s.pop("finished_at_ms")
            s.update({"error": "3 ops failed" if s["state"] == "failed" else "",
                      "succeeded": c["succeeded"], "failed": c["failed"], "skipped": c["skipped"],
                      "cancelled": c["cancelled"], "running": c["running"], "waiting": c["waiting"] + c["ready"],
                      "critical_path": [b.ids[i] for i in b.critical],
                      "critical_path_ms": b.critical_ms, "namespace": b.namespace, "last_seq": b.last_seq(t)})
            return self.send(200, s)
        if rest == ["graph"]:
            expand = [x for x in (q("expand") or "").split(",") if x]
            key = (b.id, tuple(sorted(expand)))
            if b.batch_state(t) != "running" and key in self.server.graph_cache:
                return self.send(200, self.server.graph_cache[key])
            body = self.graph(b, t, expand)
            if b.batch_state(t) != "running":
                self.server.graph_cache[key] = body
            return self.send(200, body)
        if rest == ["ops"]:
            return self.ops(b, t, int(q("offset", "0")), min(int(q("limit", "200")), 1000), q("state"), q("q"))
        if rest == ["timeline"]:
            return self.timeline(b, t, int(q("offset", "0")), min(int(q("limit", "10000")), 10000))
        if rest == ["events"]:
            after = self.headers.get("Last-Event-ID") or q("after") or "0"
            return self.events(b, int(after))
        if rest == ["memory"]:
            return self.memory("batch", b.namespace, b)
        if len(rest) >= 2 and rest[0] == "ops":
            op = urllib.parse.unquote(rest[1])
            i = b.index.get(op)
            if i is None:
                return self.error(404, "not_found", "no op %s" % op)
            if rest[2:] == ["logs"]:
                stream = q("stream", "stdout")
                text = self.log_text(b, i, t, stream, full=True)
                return self.send(200, text, "text/plain; charset=utf-8")
            return self.op_detail(b, i, t)
        self.error(404, "not_found", "no route %s" % path)

    # -- API bodies ---------------------------------------------------------
    def node_of(self, b, i, expanded):
        g = b.groups[i]
        if g is None:
            return "o:" + b.ids[i]
        if "g:" + g in expanded:
            members = self.server.group_members(b, g)
            return "o:" + b.ids[i] if members[i] < 500 else "g:%s:rest" % g
        return "g:" + g

    def graph(self, b, t, expand):
        expanded = set(expand)
        nodes, edges = {}, {}
        layer_of = {}
        for i in range(len(b.ids)):
            nid = self.node_of(b, i, expanded)
            lay = max((layer_of[d] + 1 for d in b.deps[i]), default=0)
            layer_of[i] = lay
            n = nodes.get(nid)
            if n is None:
                g = b.groups[i]
                single = nid.startswith("o:")
                n = nodes[nid] = {"id": nid, "label": b.ids[i] if single else (g + (" (rest)" if nid.endswith(":rest") else "")),
                                  "kind": b.kinds[i], "count": 0, "layer": lay, "group": g,
                                  "op": b.ids[i] if single else None, "states": {}}
            n["count"] += 1
            st = b.op_state(i, t)
            n["states"][st] = n["states"].get(st, 0) + 1
            for d in b.deps[i]:
                key = (self.node_of(b, d, expanded), nid)
                edges[key] = edges.get(key, 0) + 1
        crit = []
        for i in b.critical:
            nid = self.node_of(b, i, expanded)
            if not crit or crit[-1] != nid:
                crit.append(nid)
        return json.dumps({"op_count": len(b.ids), "layers": max(layer_of.values()) + 1,
                           "nodes": list(nodes.values()),
                           "edges": [{"from": f, "to": to, "count": c} for (f, to), c in edges.items()],
                           "critical": crit}, separators=(",", ":"))

    def op_row(self, b, i, t):
        st = b.op_state(i, t)
        started = b.start[i] <= t
        return {"index": i, "id": b.ids[i], "kind": b.kinds[i], "group": b.groups[i], "state": st,
                "attempts": b.attempts[i] if started else 0,
                "worker": b.workers[b.worker[i]] if started else None,
                "started_ms": b.start[i] if started else None,
                "duration_ms": (min(b.end[i], t) - b.start[i]) if started else None,
                "error": "shell exited with code 1" if st == "failed" else ""}

    def ops(self, b, t, offset, limit, state, text):
        if not state and not text:
            sel = range(len(b.ids))
        else:
            sel = [i for i in range(len(b.ids))
                   if (not state or b.op_state(i, t) == state) and (not text or text in b.ids[i])]
        page = sel[offset:offset + limit]
        self.send(200, {"total": len(sel), "offset": offset, "ops": [self.op_row(b, i, t) for i in page]})

    def log_text(self, b, i, t, stream, full):
        if b.start[i] > t:
            return ""
        if stream == "stderr":
            return "warning: flaky network, retrying\n" if b.attempts[i] > 1 else ""
        lines = ["[%s] step %d of %s: ok" % (b.ids[i], k, b.kinds[i]) for k in range(400 if full else 60)]
        return "\n".join(lines) + "\n"

    def op_detail(self, b, i, t):
        row = self.op_row(b, i, t)
        st = row["state"]
        out = self.log_text(b, i, t, "stdout", True)
        err = self.log_text(b, i, t, "stderr", True)
        events = []
        seq = 0
        for k, (at, kind, op) in enumerate(b.events):
            if op == i and at <= t:
                events.append({"seq": k + 1, "at_ms": b.created_at_ms + at, "kind": kind, "attempt": b.attempts[i],
                               "worker": b.workers[b.worker[i]], "message": ""})
        why = None
        if st in ("waiting", "ready"):
            reasons = ["waits for `%s` (%s)" % (b.ids[d], b.op_state(d, t)) for d in b.deps[i]
                       if b.end[d] > t][:5] or ["no free slot for kind `%s`" % b.kinds[i]]
            why = {"parked": False, "reasons": reasons}
        row.update({"args": {"cmd": "./run.sh %s" % b.ids[i], "env": {"API_TOKEN": "••••••", "MODE": "••••••"},
                             "password": "••••••", "input": "${secret.S3_KEY}"},
                    "after": [b.ids[d] for d in b.deps[i][:50]], "max_attempts": 3,
                    "output": out[:4096], "output_bytes": len(out), "stderr": err[:4096], "stderr_bytes": len(err),
                    "error": "shell exited with code 1: assertion failed in step 17" if st == "failed" else "",
                    "events": events, "why": why})
        self.send(200, row)

    def timeline(self, b, t, offset, limit):
        n_started = bisect.bisect_right(b.starts_sorted, t)
        idx = b.order[offset:min(offset + limit, n_started)]
        spans = [[i, b.ids[i], b.worker[i], b.start[i], min(b.end[i], t) - b.start[i], b.op_state(i, t),
                  i in b.critical_set] for i in idx]
        nxt = offset + limit if offset + limit < n_started else None
        self.send(200, {"workers": b.workers, "total": n_started, "next": nxt, "wall_ms": min(t, b.wall), "spans": spans})

    def events(self, b, after):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seq = after
        try:
            while True:
                t = b.clock()
                upto = b.last_seq(t)
                chunk = []
                while seq < upto and len(chunk) < 500:
                    at, kind, op = b.events[seq]
                    seq += 1
                    ev = {"seq": seq, "at_ms": b.created_at_ms + at, "kind": kind,
                          "op_id": b.ids[op] if op is not None else None,
                          "attempt": b.attempts[op] if op is not None else 0,
                          "worker": b.workers[b.worker[op]] if op is not None else None,
                          "message": "", "batch_state": b.batch_state(at if kind != "batch_finished" else t)}
                    chunk.append("id: %d\nevent: batch\ndata: %s\n\n" % (seq, json.dumps(ev)))
                    if kind == "batch_finished":
                        break
                if chunk:
                    self.wfile.write("".join(chunk).encode())
                    self.wfile.flush()
                    if chunk[-1].find('"batch_finished"') >= 0:
                        return
                elif b.batch_state(t) != "running":
                    # cancelled: say so and end
                    ev = {"seq": seq + 1, "at_ms": now_ms(), "kind": "batch_finished", "op_id": None, "attempt": 0,
                          "worker": None, "message": "cancelled", "batch_state": b.batch_state(t)}
                    self.wfile.write(("id: %d\nevent: batch\ndata: %s\n\n" % (seq + 1, json.dumps(ev))).encode())
                    return
                else:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            return

    def memory(self, scope, ns, b):
        t = (b.clock() if b else now_ms() % 1_000_000)
        v = 1 + int(t / 3000)
        keys = [{"key": "plan", "version": v, "writer": "agent-1#%d" % v, "bytes": 120,
                 "preview": '{"step": %d, "goal": "render all frames"}' % v, "updated_at_ms": now_ms() - 500},
                {"key": "cursor", "version": 2 * v, "writer": "render-7", "bytes": 8, "preview": str(v * 17),
                 "updated_at_ms": now_ms() - 1500},
                {"key": "config", "version": 1, "writer": "build", "bytes": 300,
                 "preview": "threads=8\nquality=high", "updated_at_ms": now_ms() - 600_000}]
        if scope == "namespace":
            keys.append({"key": "ns-owner", "version": 1, "writer": "admin", "bytes": 4, "preview": ns,
                         "updated_at_ms": now_ms() - 9_000_000})
        self.send(200, {"scope": scope, "keys": keys})

    def workers(self):
        run = self.server.store.batches["b-running"]
        t = run.clock()
        busy = [0] * len(run.workers)
        if run.batch_state(t) == "running":
            lo = bisect.bisect_right(run.starts_sorted, t - 100_000)
            for i in run.order[max(0, lo - 5000):bisect.bisect_right(run.starts_sorted, t)]:
                if run.end[i] > t:
                    busy[run.worker[i]] += 1
        ws = []
        for k, w in enumerate(run.workers):
            ws.append({"id": w, "slots": run.slots, "busy": min(busy[k], run.slots),
                       "labels": {"zone": "eu-%d" % (k % 2 + 1)} | ({"gpu": "a100"} if k < 2 else {}),
                       "kinds": ["shell", "echo", "http"], "draining": k == len(run.workers) - 1,
                       "coordinator": "c1"})
        self.send(200, {"workers": ws})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, opts):
        super().__init__(addr, Handler)
        self.opts = opts
        self.sessions = {}
        self.store = Store(opts)
        self._members = {}
        self.graph_cache = {}
        self._lock = threading.Lock()

    def group_members(self, b, g):
        key = (b.id, g)
        with self._lock:
            if key not in self._members:
                self._members[key] = {i: k for k, i in enumerate(j for j in range(len(b.ids)) if b.groups[j] == g)}
            return self._members[key]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8377)
    p.add_argument("--ops", type=int, default=20000, help="ops in the big finished batch b-big")
    p.add_argument("--fanout", type=int, default=5000, help="size of each foreach group")
    p.add_argument("--running-ops", type=int, default=3000, help="ops in the running batch b-running")
    p.add_argument("--run-seconds", type=int, default=600, help="how long b-running runs")
    p.add_argument("--extra", type=int, default=8, help="extra small finished batches for the list")
    p.add_argument("--token", default="dev")
    p.add_argument("--auth", choices=["token", "none"], default="token")
    p.add_argument("--latency-ms", type=int, default=0, help="added to every API answer")
    p.add_argument("--verbose", action="store_true")
    opts = p.parse_args()
    t0 = time.time()
    srv = Server((opts.host, opts.port), opts)
    print("mock dashboard (DEV TOOL) on http://%s:%d  token=%s  batches: %s  (generated in %.1fs)" % (
        opts.host, srv.server_address[1], opts.token, ", ".join(srv.store.order[:3]), time.time() - t0), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
