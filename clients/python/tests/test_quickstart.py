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
