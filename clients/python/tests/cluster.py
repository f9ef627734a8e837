"""A real Volley cluster on this machine for the tests: redis-server, one
coordinator and N workers, each on a free loopback port, torn down in
reverse order."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable, List, Optional, cast

import grpc

HERE = Path(__file__).resolve().parent
DEFAULT_VOLLEY_BIN = HERE.parent.parent.parent / "target" / "debug" / "volley"


def volley_bin() -> Path:
    """The `volley` binary: $VOLLEY_BIN, else the workspace's debug build."""
    path = Path(os.environ.get("VOLLEY_BIN") or DEFAULT_VOLLEY_BIN)
    if not path.is_file():
        raise RuntimeError(
            f"no volley binary at {path}: build it (cargo build --bin volley) "
            "or point VOLLEY_BIN at one"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_prctl() -> Optional[Callable[..., int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return cast(Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


# Resolved here, in the parent: the child only calls it between fork and exec.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so a killed
    test run leaves no servers behind (Linux; elsewhere a no-op)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _health_serving(address: str, timeout: float) -> bool:
    """One grpc.health.v1 Check of the whole server (service "")."""
    with grpc.insecure_channel(address) as channel:
        check: Callable[..., bytes] = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            # HealthCheckRequest{service: ""} is the empty message;
            # HealthCheckResponse{status: SERVING} is field 1 = 1.
            response = check(b"", timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(response == b"\x08\x01")


class Process:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, argv: List[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


class Cluster:
    """redis-server + `volley coordinator` + `workers` × `volley worker`."""

    def __init__(self, base_dir: Path, workers: int = 2, slots: int = 4) -> None:
        self.base_dir = base_dir
        self.root = base_dir / "root"  # the workers' --root
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs = base_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.worker_count = workers
        self.slots = slots
        self.processes: List[Process] = []
        self.address = ""
        self.redis_port = 0

    def start(self, timeout: float = 30.0) -> Cluster:
        try:
            self._start(timeout)
        except BaseException:
            logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.processes)
            self.stop()
            raise RuntimeError(f"the test cluster did not start:\n{logs}") from None
        return self

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        binary = str(volley_bin())
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeError("redis-server is not on the PATH")
        self.redis_port = free_port()
        self.processes.append(
            Process(
                "redis",
                [
                    redis,
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                self.logs,
            )
        )
        self._wait_for_port(self.redis_port, deadline)
        coordinator_port = free_port()
        self.address = f"127.0.0.1:{coordinator_port}"
        self.processes.append(
            Process(
                "coordinator",
                [
                    binary,
                    "coordinator",
                    "--listen",
                    self.address,
                    "--redis",
                    f"redis://127.0.0.1:{self.redis_port}",
                ],
                self.logs,
            )
        )
        while not _health_serving(self.address, timeout=1.0):
            self._check(deadline, "the coordinator's health to be SERVING")
            time.sleep(0.05)
        for index in range(self.worker_count):
            self.processes.append(
                Process(
                    f"worker-{index + 1}",
                    [
                        binary,
                        "worker",
                        "--coordinator",
                        f"http://{self.address}",
                        "--slots",
                        str(self.slots),
                        "--allow-shell",
                        "--root",
                        str(self.root),
                        "--id",
                        f"pytest-worker-{index + 1}",
                        "--drain-timeout",
                        "1s",
                    ],
                    self.logs,
                )
            )
        from volley import Client

        with Client(self.address) as client:
            while len(client.workers()) < self.worker_count:
                self._check(deadline, f"{self.worker_count} workers to register")
                time.sleep(0.05)

    def _wait_for_port(self, port: int, deadline: float) -> None:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                self._check(deadline, f"port {port} to listen")
                time.sleep(0.05)

    def _check(self, deadline: float, waiting_for: str) -> None:
        for process in self.processes:
            process.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {waiting_for}")

    def logs_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.processes)

    def stop(self, process_name: Optional[str] = None) -> None:
        """Stops everything, workers first (or only the named process)."""
        for process in reversed(self.processes):
            if process_name is None or process.name == process_name:
                process.stop()
