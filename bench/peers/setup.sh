#!/usr/bin/env bash
# Creates the benchmark venv at $VENV (default <repo>/target/bench-venv) if
# missing and installs the pinned peers from requirements.txt. Idempotent:
# silent when the venv already matches requirements.txt. Logs go to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
VENV="${VENV:-$repo/target/bench-venv}"
PYTHON="${PYTHON:-python3}"
req="$here/requirements.txt"
stamp="$VENV/.volley-peers-requirements"

if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating venv at $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
echo "setup: installing pinned peers into $VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
"$VENV/bin/python" -c 'import dask, distributed, celery, ray, psutil, redis' >&2
cp "$req" "$stamp"
echo "setup: done" >&2
