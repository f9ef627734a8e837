"""A real Volley cluster on this machine for the tests: redis-server, one
coordinator and N workers, each on a free loopback port, torn down in
reverse order.

With a `volley` that has authentication (`volley coordinator
--admin-token-file`), the cluster writes a random admin token to a 0600
file, gives it to the coordinator, mints a worker token with `volley token
create --role worker` for the workers, and tests connect with
`cluster.admin_token` (or tokens they mint with `cluster.create_token`).
With `tls=True` the coordinator serves TLS with certificates made by
`certs.py` (`mtls=True`: and asks for client certificates)."""

from __future__ import annotations

import ctypes
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, List, Optional, cast

import grpc
from certs import TlsFiles

if TYPE_CHECKING:
    from volley import Client

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


@functools.cache
def _help(command: str) -> str:
    result = subprocess.run(
        [str(volley_bin()), *command.split(), "--help"], capture_output=True, text=True
    )
    return result.stdout


def supports(command: str, flag: str) -> bool:
    """Whether `volley COMMAND --help` lists FLAG (the Rust side's auth and
    TLS landed at different times; tests skip what the binary lacks)."""
    return flag in _help(command)


def auth_supported() -> bool:
    return supports("coordinator", "--admin-token-file")


def tls_supported() -> bool:
    return supports("coordinator", "--tls-cert")


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


def _health_serving(
    address: str, timeout: float, credentials: Optional[grpc.ChannelCredentials] = None
) -> bool:
    """One grpc.health.v1 Check of the whole server (service ""); it needs
    no token, only TLS when the server has it."""
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
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

    def __init__(
        self,
        base_dir: Path,
        workers: int = 2,
        slots: int = 4,
        tls: Optional[TlsFiles] = None,
        mtls: bool = False,
    ) -> None:
        self.base_dir = base_dir
        self.root = base_dir / "root"  # the workers' --root
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs = base_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.worker_count = workers
        self.slots = slots
        self.processes: List[Process] = []
        #: host:port of the coordinator.
        self.address = ""
        #: What clients dial: http://host:port, or https://host:port with TLS.
        self.url = ""
        self.redis_port = 0
        self.tls = tls
        self.mtls = mtls
        #: Whether the binary has tokens; without, every token here is None.
        self.auth = auth_supported()
        #: The admin token (None without auth), in the 0600 file admin_token_file.
        self.admin_token: Optional[str] = None
        self.admin_token_file = base_dir / "admin-token"
        self.worker_token: Optional[str] = None

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
        self.url = f"{'https' if self.tls else 'http'}://{self.address}"
        coordinator = [
            binary,
            "coordinator",
            "--listen",
            self.address,
            "--redis",
            f"redis://127.0.0.1:{self.redis_port}",
        ]
        if self.auth:
            # Random, never in git; 0600 like a mounted Secret.
            self.admin_token = secrets.token_urlsafe(36)
            self.admin_token_file.write_text(self.admin_token + "\n")
            self.admin_token_file.chmod(0o600)
            coordinator += ["--admin-token-file", str(self.admin_token_file)]
        if self.tls:
            coordinator += ["--tls-cert", str(self.tls.server_cert)]
            coordinator += ["--tls-key", str(self.tls.server_key)]
            if self.mtls:
                coordinator += ["--tls-client-ca", str(self.tls.ca)]
        self.processes.append(Process("coordinator", coordinator, self.logs))
        while not _health_serving(self.address, timeout=1.0, credentials=self.credentials()):
            self._check(deadline, "the coordinator's health to be SERVING")
            time.sleep(0.05)
        worker_auth: List[str] = []
        if self.auth:
            self.worker_token = self.create_token("worker")
            worker_token_file = self.base_dir / "worker-token"
            worker_token_file.write_text(self.worker_token + "\n")
            worker_token_file.chmod(0o600)
            worker_auth = ["--token-file", str(worker_token_file)]
        worker_auth += self.cli_tls_args()
        for index in range(self.worker_count):
            self.processes.append(
                Process(
                    f"worker-{index + 1}",
                    [
                        binary,
                        "worker",
                        "--coordinator",
                        self.url,
                        *worker_auth,
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
        with self.client() as client:
            while len(client.workers()) < self.worker_count:
                self._check(deadline, f"{self.worker_count} workers to register")
                time.sleep(0.05)

    def credentials(self) -> Optional[grpc.ChannelCredentials]:
        """TLS credentials for a raw channel to the coordinator (None: plaintext)."""
        if self.tls is None:
            return None
        if self.mtls:
            return grpc.ssl_channel_credentials(
                self.tls.ca.read_bytes(),
                self.tls.client_key.read_bytes(),
                self.tls.client_cert.read_bytes(),
            )
        return grpc.ssl_channel_credentials(self.tls.ca.read_bytes())

    def client_tls(self) -> Dict[str, Path]:
        """The Client keyword arguments for this cluster's TLS."""
        if self.tls is None:
            return {}
        files = {"tls_ca": self.tls.ca}
        if self.mtls:
            files.update(tls_cert=self.tls.client_cert, tls_key=self.tls.client_key)
        return files

    def cli_tls_args(self) -> List[str]:
        """The `volley` CLI/worker flags for this cluster's TLS."""
        if self.tls is None:
            return []
        args = ["--tls-ca", str(self.tls.ca)]
        if self.mtls:
            args += ["--tls-cert", str(self.tls.client_cert), "--tls-key", str(self.tls.client_key)]
        return args

    def client(self, token: Optional[str] = None, **kwargs: Any) -> Client:
        """A client of this cluster, with the admin token unless ``token``."""
        from volley import Client

        return Client(
            self.url,
            token=(self.admin_token or "") if token is None else token,
            **{**self.client_tls(), **kwargs},
        )

    def volley(self, *args: str, token: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        """Runs `volley ARGS --coordinator URL` as a client with the admin
        token (or ``token``) in VOLLEY_TOKEN."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLLEY_")}
        env["VOLLEY_COORDINATOR"] = self.url
        chosen = self.admin_token if token is None else token
        if chosen:
            env["VOLLEY_TOKEN"] = chosen
        if self.tls is not None:
            env["VOLLEY_TLS_CA"] = str(self.tls.ca)
            if self.mtls:
                env["VOLLEY_TLS_CERT"] = str(self.tls.client_cert)
                env["VOLLEY_TLS_KEY"] = str(self.tls.client_key)
        return subprocess.run(
            [str(volley_bin()), *args], capture_output=True, text=True, env=env, timeout=60
        )

    def create_token(self, role: str, tenant: Optional[str] = None) -> str:
        """`volley token create --role ROLE [--tenant T]` with the admin
        token: the new token (printed alone on stdout)."""
        args = ["token", "create", "--role", role]
        if tenant is not None:
            args += ["--tenant", tenant]
        result = self.volley(*args)
        if result.returncode != 0:
            raise RuntimeError(
                f"volley {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result.stdout.strip()

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
