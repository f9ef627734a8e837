"""The committed generated code matches a fresh run of generate.sh on the
current proto, so the two never drift."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
GENERATED = PACKAGE / "src" / "volley" / "_proto" / "volley" / "v1"
FILES = ("volley_pb2.py", "volley_pb2.pyi", "volley_pb2_grpc.py")


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(PACKAGE / "generate.sh"), str(tmp_path)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    for name in FILES:
        fresh = (tmp_path / "volley" / "v1" / name).read_bytes()
        committed = (GENERATED / name).read_bytes()
        assert fresh == committed, (
            f"{GENERATED / name} is out of date with proto/: run clients/python/generate.sh"
        )


def test_the_generated_modules_import_as_part_of_the_package() -> None:
    from volley._proto.volley.v1 import volley_pb2, volley_pb2_grpc

    assert vars(volley_pb2_grpc)["volley_dot_v1_dot_volley__pb2"] is volley_pb2
    assert volley_pb2.DESCRIPTOR.package == "volley.v1"
