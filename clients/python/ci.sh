#!/usr/bin/env bash
# The Python client's checks, runnable with no input on a clean machine
# (CI=true): a venv in <repo>/target/python-venv (reused when present), the
# package installed editable with its dev extras, lints, type checks, then
# the test suite against a real cluster started from $VOLLEY_BIN (default:
# <repo>/target/debug/volley, which the caller must have built).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/python-venv"
export VOLLEY_BIN="${VOLLEY_BIN:-$repo/target/debug/volley}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

if [ ! -x "$VOLLEY_BIN" ]; then
  echo "clients/python/ci.sh: no volley binary at $VOLLEY_BIN" >&2
  echo "  build it first (cargo build --bin volley) or set VOLLEY_BIN" >&2
  exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "--- installing redis-server"
  apt_install redis-server
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
  echo "clients/python/ci.sh: needs Python >= 3.9 as $python (set PYTHON)" >&2
  exit 1
fi

if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "--- creating $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv"; then
    # Debian and Ubuntu ship venv (ensurepip) separately.
    rm -rf "$venv"
    minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt_install "python$minor-venv" || apt_install python3-venv
    "$python" -m venv "$venv"
  fi
fi

# Reinstall only when the package's requirements changed.
stamp="$venv/.volley-client-installed"
want="$(cat "$here/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
  || ! "$venv/bin/python" -c 'import volley, grpc_tools, pytest' >/dev/null 2>&1; then
  echo "--- installing clients/python[dev]"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$here[dev]"
  echo "$want" > "$stamp"
fi

cd "$here"
echo "--- ruff"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
echo "--- mypy"
"$venv/bin/mypy" src tests examples
echo "--- pytest (VOLLEY_BIN=$VOLLEY_BIN)"
"$venv/bin/python" -m pytest tests
