"""The README's example (examples/quickstart.py) runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cluster import Cluster

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
README = Path(__file__).resolve().parent.parent / "README.md"


def test_quickstart_runs(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), cluster.address],
        capture_output=True,
        text=True,
        timeout=60,
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
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), address],
            capture_output=True,
            text=True,
            timeout=60,
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
