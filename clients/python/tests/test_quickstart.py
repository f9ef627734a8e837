"""The README's example (examples/quickstart.py) runs end to end."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from cluster import Cluster, auth_supported

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
README = Path(__file__).resolve().parent.parent / "README.md"


def example_env(token: Optional[str]) -> Dict[str, str]:
    """The environment of the example: the token in VOLLEY_TOKEN, as a user
    would export it, and no other VOLLEY_ setting of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLLEY_")}
    if token:
        env["VOLLEY_TOKEN"] = token
    return env


def test_quickstart_runs(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), cluster.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=example_env(cluster.admin_token),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "batch_submitted" in lines[0]
    assert "batch_finished" in lines[7]
    assert any("'HELLO, WORLD'" in line and line.startswith("save") for line in lines)
    assert lines[-1].startswith("succeeded in ")


def test_the_readme_shows_the_quickstart_as_it_is() -> None:
    example = EXAMPLE.read_text()
    body = example[example.index("import sys") :]
    assert body in README.read_text(), "README.md's example differs from examples/quickstart.py"


def exported_token(up: subprocess.Popen[str], deadline: float) -> str:
    """The token of `export VOLLEY_TOKEN=...`, which `volley up` prints on
    stderr with how to use the cluster. Reads stderr on a thread (and keeps
    draining it, so `volley up` never blocks on a full pipe)."""
    assert up.stderr is not None
    stderr = up.stderr
    lines: List[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stderr:
            lines.append(line)
            if "export VOLLEY_TOKEN=" in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    found.wait(max(deadline - time.monotonic(), 0))
    for line in lines:
        if "export VOLLEY_TOKEN=" in line:
            words = shlex.split(line[line.index("export VOLLEY_TOKEN=") :])
            return words[1].split("=", 1)[1]
    raise AssertionError(
        "volley up printed no `export VOLLEY_TOKEN=` on stderr:\n" + "".join(lines)
    )


def test_quickstart_against_volley_up(tmp_path: Path) -> None:
    """What a new user does: `volley up`, then the quickstart, then Ctrl-C."""
    import signal

    from cluster import volley_bin

    up = subprocess.Popen(
        [
            str(volley_bin()),
            "up",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--allow-shell",
            "--root",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert up.stdout is not None
        ready = up.stdout.readline()
        assert ready.startswith("volley up: ready at http://"), ready + (
            up.stderr.read() if up.poll() is not None and up.stderr else ""
        )
        address = ready.rsplit("http://", 1)[1].strip()
        token = exported_token(up, deadline=time.monotonic() + 30) if auth_supported() else None
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), address],
            capture_output=True,
            text=True,
            timeout=60,
            env=example_env(token),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1].startswith("succeeded in ")
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert code == 0
