#!/usr/bin/env python3
"""Run one Volley peer workload (Dask, Celery or Ray) and print one JSON object.

    peer_bench.py --system dask|celery|ray --workload W1|W2|W3|W4 [--size N]
                  [--redis-url URL] [--redis-pid PID] [--run-id ID] [--timeout S]
    peer_bench.py --sweep RUN_ID      # kill every process left by run RUN_ID

Workloads (every task is a no-op returning a tiny int):
  W1  N independent tasks (default 20,000), submit all, wait for all
  W2  N chains of 10 dependent tasks (default 1,000 chains = 10,000 tasks)
  W3  1 task -> N tasks each depending on it -> 1 task depending on all N (N=5,000)
  W4  N sequential round trips of one task (default 200); p50/p90 in ms

stdout carries exactly one JSON object; everything else goes to stderr (file
descriptor 1 is pointed at stderr for the whole run, children included).

CPU: user+sys seconds, during the timed section only, of this process, all
its descendants, the Redis server Celery uses, and any process carrying this
run's marker environment variable (VOLLEY_PEER_BENCH_RUN). See README.md.
"""

import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
MARKER = "VOLLEY_PEER_BENCH_RUN"
DEFAULT_SIZES = {"W1": 20_000, "W2": 1_000, "W3": 5_000, "W4": 200}
CHAIN_LENGTH = 10
WARMUP_TASKS = 100
SAMPLE_INTERVAL_S = 0.5

# The real stdout, kept for the one JSON line; fd 1 then points at stderr so no
# library or child process can write anything else to our stdout.
_JSON_OUT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
_emit_lock = threading.Lock()
_emitted = False


def emit(obj):
    """Print the single JSON result object (only the first call prints)."""
    global _emitted
    with _emit_lock:
        if _emitted:
            return
        _emitted = True
        _JSON_OUT.write(json.dumps(obj) + "\n")
        _JSON_OUT.flush()


def log(msg):
    print(f"[peer_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Terminated(BaseException):
    pass


# Set by main(): what a hard exit must kill.
_RUN = {"id": None, "keep": set()}


def _hard_exit(reason, code):
    """Kill every process of this run and exit at once (from any thread)."""
    log(f"hard exit: {reason}")
    try:
        kill_everything(_RUN["id"], _RUN["keep"])
    finally:
        os._exit(code)


def _on_sigterm(signum, frame):
    # Clean up through the normal path, but never take more than 20 s for it.
    timer = threading.Timer(20, _hard_exit, args=(f"signal {signum}: clean shutdown took > 20 s", 143))
    timer.daemon = True
    timer.start()
    raise Terminated(f"signal {signum}")


# --------------------------------------------------------------------------
# Processes: CPU accounting and clean-up


def _marked(run_id):
    """Processes (other than this one) whose environment carries run_id."""
    # Reads /proc/PID/environ raw: psutil's parser stops at the first empty
    # entry, and processes that set their title (Ray's) leave such gaps.
    me = os.getpid()
    needle = f"\0{MARKER}={run_id}\0".encode()
    found = []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                if needle in b"\0" + f.read() + b"\0":
                    found.append(proc)
        except OSError:
            pass
    return found


def _key(proc):
    try:
        return (proc.pid, proc.create_time())
    except psutil.Error:
        return None


def _cpu(proc):
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return None


class CpuMeter:
    """user+sys CPU of every process involved, between start() and stop().

    A process present at start() counts from its value then; one that appears
    later counts from zero; one that exits counts with its last seen value (a
    background thread samples every SAMPLE_INTERVAL_S).
    """

    def __init__(self, run_id, extra_pids=()):
        self.run_id = run_id
        self.me = psutil.Process()
        self.extra = []
        for pid in extra_pids:
            try:
                self.extra.append(psutil.Process(pid))
            except psutil.Error:
                log(f"warning: pid {pid} not found; its CPU is not counted")
        self.base = {}
        self.last = {}
        self.names = {}
        self.procs = {}
        self.started = False
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self.own_cpu = 0.0  # CPU of the sampling thread itself, not counted
        self.machine_start = None
        self.foreign_cpu = None
        self.steal = None

    def _candidates(self, marker_scan):
        procs = [self.me] + self.extra
        try:
            procs += self.me.children(recursive=True)
        except psutil.Error:
            pass
        if marker_scan:
            procs += _marked(self.run_id)
        return procs

    def _poll(self, marker_scan=False):
        with self._lock:
            # Already-known processes first (they may have been reparented).
            seen = set()
            for key, proc in list(self.procs.items()):
                value = _cpu(proc)
                if value is not None:
                    self.last[key] = value
                seen.add(key)
            for proc in self._candidates(marker_scan):
                key = _key(proc)
                if key is None or key in seen:
                    continue
                seen.add(key)
                value = _cpu(proc)
                if value is None:
                    continue
                if key not in self.procs:
                    self.procs[key] = proc
                    self.base[key] = value if not self.started else 0.0
                    try:
                        self.names[key] = " ".join(proc.cmdline())[:90] or proc.name()
                    except psutil.Error:
                        self.names[key] = "?"
                self.last[key] = value

    def _run(self):
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            t0 = time.thread_time()
            self._poll()
            self.own_cpu += time.thread_time() - t0

    @staticmethod
    def _machine_busy():
        """CPU seconds the whole machine spent busy since boot (/proc/stat)."""
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        hz = os.sysconf("SC_CLK_TCK")
        return (user + nice + system + irq + softirq) / hz, steal / hz

    def start(self):
        self.machine_start = self._machine_busy()
        self._poll(marker_scan=True)
        self.started = True
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._poll(marker_scan=True)
        deltas = {key: self.last[key] - self.base[key] for key in self.procs}
        for key, delta in sorted(deltas.items(), key=lambda kv: -kv[1]):
            if delta >= 0.005:
                log(f"  cpu {delta:7.2f}s  pid {key[0]:>7}  {self.names[key]}")
        log(f"  cpu {-self.own_cpu:7.2f}s  (the sampler's own CPU, taken off the driver's)")
        ours = sum(deltas.values())
        machine_end = self._machine_busy()
        if self.machine_start is not None and machine_end is not None:
            # Whatever else ran meanwhile competed for the same 2 cores; steal
            # is time the hypervisor gave our vCPUs to someone else.
            busy = machine_end[0] - self.machine_start[0]
            self.steal = machine_end[1] - self.machine_start[1]
            self.foreign_cpu = max(0.0, busy - ours)
            log(f"  machine busy {busy:.2f}s, ours {ours:.2f}s, "
                f"other processes ~{self.foreign_cpu:.2f}s, steal {self.steal:.2f}s")
        return ours - self.own_cpu


def _alive(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_everything(run_id, keep=()):
    """Kill all descendants and every process with this run's marker."""
    me = psutil.Process()
    keep = set(keep) | {os.getpid()}
    for round_no in range(3):
        victims = {}
        try:
            for proc in me.children(recursive=True):
                victims[proc.pid] = proc
        except psutil.Error:
            pass
        for proc in _marked(run_id):
            victims[proc.pid] = proc
        for pid in keep:
            victims.pop(pid, None)
        victims = [p for p in victims.values() if _alive(p)]
        if not victims:
            return
        sig_name = "SIGTERM" if round_no == 0 else "SIGKILL"
        names = []
        for proc in victims:
            try:
                names.append(f"{proc.pid}:{' '.join(proc.cmdline())[:200] or proc.name()} (ppid {proc.ppid()})")
            except psutil.Error:
                names.append(str(proc.pid))
        log(f"cleanup: {sig_name} to {len(victims)} leftover process(es): {'; '.join(names)}")
        for proc in victims:
            try:
                # multiprocessing's resource tracker ignores SIGTERM by design.
                if round_no == 0 and "multiprocessing.resource_tracker" not in " ".join(proc.cmdline()):
                    proc.terminate()
                else:
                    proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(victims, timeout=5 if round_no == 0 else 3)


def sweep(run_id):
    procs = _marked(run_id)
    if not procs:
        return
    log(f"sweep: killing {len(procs)} leftover process(es) of run {run_id}")
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


# --------------------------------------------------------------------------
# Helpers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self, floor=1.0):
        return max(floor, self.end - time.monotonic())


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def check(what, got, expected):
    if got != expected:
        raise AssertionError(f"{what}: got {got!r:.200}, expected {expected!r:.200}")


def ops_for(workload, size):
    return {"W1": size, "W2": size * CHAIN_LENGTH, "W3": size + 2, "W4": size}[workload]


def expected_chain_results(chains):
    return [i + CHAIN_LENGTH for i in range(chains)]


def expected_fan(width):
    return width * 1 + sum(range(width))  # each middle task returns root(=1) + i


# --------------------------------------------------------------------------
# Workload drivers. Each returns a callable per workload that runs the timed
# part and returns the list of per-round-trip latencies (W4) or None.


def run_dask(args, size, cleanups, deadline):
    from dask.distributed import Client, LocalCluster

    def noop(x):
        return x

    def inc(x):
        return x + 1

    def add(x, y):
        return x + y

    def total(values):
        return sum(values)

    log("dask: starting LocalCluster(n_workers=2, threads_per_worker=1, processes=True)")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    cleanups.append(lambda: cluster.close(timeout=20))
    client = Client(cluster)
    cleanups.append(lambda: client.close(timeout=20))
    client.wait_for_workers(2, timeout=deadline.left())
    log(f"dask: {len(client.scheduler_info()['workers'])} workers; warm-up")
    warm = client.map(noop, [-(i + 1) for i in range(WARMUP_TASKS)])
    client.gather(warm)
    del warm

    def w1():
        futures = client.map(noop, range(size))
        out = client.gather(futures)
        check("W1", out, list(range(size)))

    def w2():
        finals = []
        for i in range(size):
            f = client.submit(inc, i - 1)
            for _ in range(CHAIN_LENGTH - 1):
                f = client.submit(inc, f)
            finals.append(f)
        check("W2", client.gather(finals), [i - 1 + CHAIN_LENGTH for i in range(size)])

    def w3():
        root = client.submit(noop, 1)
        middle = [client.submit(add, root, i) for i in range(size)]
        final = client.submit(total, middle)
        check("W3", final.result(timeout=deadline.left()), expected_fan(size))

    def w4():
        lat = []
        for i in range(size):
            t0 = time.perf_counter()
            check("W4", client.submit(noop, i).result(timeout=deadline.left()), i)
            lat.append(time.perf_counter() - t0)
        return lat

    return {"W1": w1, "W2": w2, "W3": w3, "W4": w4}, []


def start_redis(tmpdir, deadline):
    import redis

    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmpdir, "--logfile", os.path.join(tmpdir, "redis.log")],
        stdin=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if deadline.left(0) <= 0:
                raise
            time.sleep(0.05)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


def run_celery(args, size, cleanups, deadline):
    tmpdir = tempfile.mkdtemp(prefix="volley-peer-celery-")
    cleanups.append(lambda: shutil.rmtree(tmpdir, ignore_errors=True))
    extra_pids = []
    if args.redis_url:
        url = args.redis_url
        if args.redis_pid:
            extra_pids.append(args.redis_pid)
        else:
            log("warning: --redis-url without --redis-pid: Redis CPU is not counted")
    else:
        redis_proc, url = start_redis(tmpdir, deadline)
        log(f"celery: started redis-server pid {redis_proc.pid} at {url}")

        def stop_redis():
            redis_proc.terminate()
            try:
                redis_proc.wait(10)
            except subprocess.TimeoutExpired:
                redis_proc.kill()
        cleanups.append(stop_redis)
        # It is our child, so the meter sees it anyway; naming it is harmless.
        extra_pids.append(redis_proc.pid)

    os.environ["VOLLEY_PEER_REDIS_URL"] = url
    os.environ["VOLLEY_PEER_CELERY_QUEUE"] = f"peer-{os.environ[MARKER]}"
    sys.path.insert(0, HERE)
    import celery_tasks as ct
    from celery import chain, chord, group
    from celery.result import ResultSet

    log("celery: starting worker (prefork, concurrency 2)")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=prefork",
         "--concurrency=2", "--loglevel=WARNING", "-Q", ct.QUEUE,
         "--hostname", f"peer-{os.environ[MARKER]}@%h"],
        cwd=HERE, stdin=subprocess.DEVNULL,
    )

    def stop_worker():
        # Warm shutdown first (SIGTERM), then the process tree is killed.
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                log("celery: worker did not stop in 15 s; killing")
        ct.app.close()
    cleanups.append(stop_worker)

    log("celery: warm-up")
    out = group(ct.noop.s(-(i + 1)) for i in range(WARMUP_TASKS)).apply_async().get(
        timeout=deadline.left())
    check("warm-up", out, [-(i + 1) for i in range(WARMUP_TASKS)])
    if worker.poll() is not None:
        raise RuntimeError(f"celery worker exited with {worker.returncode}")

    def w1():
        results = ResultSet([ct.noop.delay(i) for i in range(size)])
        check("W1", results.get(timeout=deadline.left()), list(range(size)))

    def w2():
        finals = []
        for i in range(size):
            sig = chain(ct.inc.s(i - 1), *[ct.inc.s() for _ in range(CHAIN_LENGTH - 1)])
            finals.append(sig.apply_async())
        out = ResultSet(finals).get(timeout=deadline.left())
        check("W2", out, [i - 1 + CHAIN_LENGTH for i in range(size)])

    def w3():
        sig = chain(ct.noop.s(1), chord([ct.add.s(i) for i in range(size)], ct.total.s()))
        # follow_parents=False: the default re-checks all N header results on
        # every wake-up (O(N) Redis GETs each time), which made W3 take minutes.
        result = sig.apply_async()
        check("W3", result.get(timeout=deadline.left(), follow_parents=False), expected_fan(size))

    def w4():
        lat = []
        for i in range(size):
            t0 = time.perf_counter()
            check("W4", ct.noop.delay(i).get(timeout=deadline.left()), i)
            lat.append(time.perf_counter() - t0)
        return lat

    return {"W1": w1, "W2": w2, "W3": w3, "W4": w4}, extra_pids


def run_ray(args, size, cleanups, deadline):
    import ray

    log("ray: ray.init(num_cpus=2)")
    ray.init(num_cpus=2)
    cleanups.append(ray.shutdown)

    @ray.remote
    def noop(x):
        return x

    @ray.remote
    def inc(x):
        return x + 1

    @ray.remote
    def add(x, y):
        return x + y

    @ray.remote
    def total(*values):
        return sum(values)

    log("ray: warm-up")
    ray.get([noop.remote(-(i + 1)) for i in range(WARMUP_TASKS)], timeout=deadline.left())

    def w1():
        out = ray.get([noop.remote(i) for i in range(size)], timeout=deadline.left())
        check("W1", out, list(range(size)))

    def w2():
        finals = []
        for i in range(size):
            ref = inc.remote(i - 1)
            for _ in range(CHAIN_LENGTH - 1):
                ref = inc.remote(ref)
            finals.append(ref)
        out = ray.get(finals, timeout=deadline.left())
        check("W2", out, [i - 1 + CHAIN_LENGTH for i in range(size)])

    def w3():
        root = noop.remote(1)
        middle = [add.remote(root, i) for i in range(size)]
        final = total.remote(*middle)  # top-level ObjectRef args are resolved
        check("W3", ray.get(final, timeout=deadline.left()), expected_fan(size))

    def w4():
        lat = []
        for i in range(size):
            t0 = time.perf_counter()
            check("W4", ray.get(noop.remote(i), timeout=deadline.left()), i)
            lat.append(time.perf_counter() - t0)
        return lat

    return {"W1": w1, "W2": w2, "W3": w3, "W4": w4}, []


RUNNERS = {"dask": run_dask, "celery": run_celery, "ray": run_ray}


# --------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", choices=sorted(RUNNERS))
    p.add_argument("--workload", choices=sorted(DEFAULT_SIZES))
    p.add_argument("--size", type=int, help="W1 tasks, W2 chains, W3 fan width, W4 round trips")
    p.add_argument("--redis-url", help="Celery: use this Redis instead of starting one")
    p.add_argument("--redis-pid", type=int, help="pid of the --redis-url server, for CPU accounting")
    p.add_argument("--run-id", help="marker put in every process's environment (default: random)")
    p.add_argument("--timeout", type=float, default=290.0,
                   help="kill everything and report an error after this many seconds (default 290)")
    p.add_argument("--skew-file", help="append a line here when other processes competed for the CPU")
    p.add_argument("--sweep", metavar="RUN_ID", help="only kill the leftover processes of RUN_ID")
    args = p.parse_args()
    if not args.sweep and (not args.system or not args.workload):
        p.error("--system and --workload are required")
    if args.size is not None and args.size < 1:
        p.error("--size must be >= 1")
    return args


def main():
    args = parse_args()
    if args.sweep:
        sweep(args.sweep)
        return 0

    run_id = args.run_id or uuid.uuid4().hex[:12]
    os.environ[MARKER] = run_id
    system, workload = args.system, args.workload
    size = args.size or DEFAULT_SIZES[workload]
    deadline = Deadline(args.timeout)
    signal.signal(signal.SIGTERM, _on_sigterm)
    keep = {args.redis_pid} if args.redis_pid else set()

    _RUN["id"], _RUN["keep"] = run_id, keep

    def watchdog():
        emit({"system": system, "workload": workload,
              "error": f"timeout: not done after {args.timeout:.0f} s"})
        _hard_exit(f"watchdog: {args.timeout:.0f} s elapsed", 124)
    timer = threading.Timer(args.timeout, watchdog)
    timer.daemon = True
    timer.start()

    cleanups = []
    code = 0
    try:
        log(f"{system} {workload} size {size} (run {run_id})")
        workloads, extra_pids = RUNNERS[system](args, size, cleanups, deadline)
        meter = CpuMeter(run_id, extra_pids)
        log(f"{system} {workload}: timed section starts")
        meter.start()
        t0 = time.perf_counter()
        latencies = workloads[workload]()
        wall = time.perf_counter() - t0
        cpu = meter.stop()
        ops = ops_for(workload, size)
        result = {
            "system": system, "workload": workload, "ops": ops,
            "wall_s": round(wall, 4), "ops_per_s": round(ops / wall, 1),
            "cpu_s": round(cpu, 3), "cpu_us_per_op": round(cpu / ops * 1e6, 1),
            "p50_ms": None, "p90_ms": None,
        }
        if latencies:
            lat = sorted(x * 1000 for x in latencies)
            result["p50_ms"] = round(statistics.median(lat), 3)
            result["p90_ms"] = round(percentile(lat, 90), 3)
        log(f"{system} {workload}: {ops} ops in {wall:.2f} s ({ops / wall:.0f}/s), cpu {cpu:.2f} s")
        limit = 0.05 * wall * (os.cpu_count() or 1) + 0.2
        notes = []
        if meter.foreign_cpu is not None and meter.foreign_cpu > limit:
            notes.append(f"other processes used ~{meter.foreign_cpu:.1f} CPU s during the timed "
                         f"section ({meter.foreign_cpu / wall * 100:.0f}% of one core)")
        if meter.steal is not None and meter.steal > limit:
            notes.append(f"the hypervisor stole {meter.steal:.1f} CPU s "
                         f"({meter.steal / wall * 100:.0f}% of one core)")
        for note in notes:
            log(f"WARNING: {note}; this result is skewed")
            if args.skew_file:
                with open(args.skew_file, "a") as f:
                    f.write(f"{system} {workload}: {note}\n")
        emit(result)
    except BaseException as e:  # noqa: BLE001 - we always report and clean up
        code = 1
        traceback.print_exc(file=sys.stderr)
        emit({"system": system, "workload": workload, "error": f"{type(e).__name__}: {e}"[:500]})
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except BaseException as e:  # noqa: BLE001
                log(f"cleanup step failed: {type(e).__name__}: {e}")
        kill_everything(run_id, keep)
        timer.cancel()
    log("done")
    return code


if __name__ == "__main__":
    sys.exit(main())
