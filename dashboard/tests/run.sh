#!/usr/bin/env bash
# The dashboard's browser checks against the real thing: `volley up` (a real
# redis-server, a coordinator serving --dashboard-listen, two workers, all
# separate processes), a finished 20,000-op batch, a batch that keeps
# running while the checks look at it, and Debian's chromium driven by
# Playwright (no browser download: `executable_path`).
#
#   dashboard/tests/run.sh                    # needs target/debug/volley (cargo build --bin volley)
#   SCREENSHOTS=docs/dashboard dashboard/tests/run.sh   # also refreshes the pictures in docs/
#   VOLLEY_DASHBOARD_SCALE_OPS=100000 dashboard/tests/run.sh
#       # also a finished batch of that many ops, whose page must be
#       # interactive within 2 s; the times (cold, then warm) are printed last
#   PYTEST_ADDOPTS="-k interactive" dashboard/tests/run.sh   # only some checks
#
# Installs what is missing: redis-server and chromium with apt-get, the
# Python packages (dashboard/tests/requirements.txt) in a venv under
# target/. Every check must run: a skipped one fails this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
volley="${VOLLEY_BIN:-$repo/target/debug/volley}"
venv="$repo/target/dashboard-venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

if [ ! -x "$volley" ]; then
  echo "dashboard/tests/run.sh: no volley binary at $volley (cargo build --bin volley)" >&2
  exit 1
fi
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
chromium="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || apt_install chromium
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$here/requirements.txt"

work="$(mktemp -d)"
up_pid=""
file_pid=""
cleanup() {
  if [ -n "$file_pid" ]; then
    kill -INT "$file_pid" 2>/dev/null || true
    wait "$file_pid" 2>/dev/null || true
  fi
  if [ -n "$up_pid" ]; then
    kill -INT "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
"$volley" up --listen 127.0.0.1:0 --workers 2 --allow-shell --root "$work" \
  >"$work/up.out" 2>"$work/up.err" </dev/null &
up_pid=$!
for _ in $(seq 1 300); do
  grep -q "ready at" "$work/up.out" 2>/dev/null && break
  if ! kill -0 "$up_pid" 2>/dev/null; then
    cat "$work/up.err" >&2
    echo "dashboard/tests/run.sh: volley up exited" >&2
    exit 1
  fi
  sleep 0.2
done
export VOLLEY_COORDINATOR
VOLLEY_COORDINATOR="$(grep -o 'http://[0-9.:]*' "$work/up.out" | head -1)"
export VOLLEY_TOKEN
VOLLEY_TOKEN="$(grep -o 'VOLLEY_TOKEN=[0-9a-f]*' "$work/up.err" | head -1 | cut -d= -f2)"
dashboard="$(grep -o '\[up\] dashboard *http://[0-9.:]*' "$work/up.err" | grep -o 'http://[0-9.:]*')"
[ -n "$VOLLEY_COORDINATOR" ] && [ -n "$VOLLEY_TOKEN" ] && [ -n "$dashboard" ] || {
  cat "$work/up.err" >&2
  echo "dashboard/tests/run.sh: no coordinator, token or dashboard in volley up's lines" >&2
  exit 1
}

# 20,000 ops: a build, two fan-outs of 10,000, a report.
cat >"$work/big.yaml" <<'EOF'
name: twenty-thousand
ops:
  - {id: build, kind: echo, args: {text: built}}
  - id: unit
    kind: noop
    after: [build]
    foreach: {range: [1, 10000]}
  - id: lint
    kind: noop
    after: [build]
    foreach: {range: [1, 9998]}
  - {id: report, kind: echo, after: [unit, lint], args: {text: done}}
EOF
# Runs for about a minute, one op at a time, so its page has to change.
cat >"$work/running.yaml" <<'EOF'
name: still-running
max_parallel: 1
ops:
  - id: step
    kind: sleep
    foreach: {range: [1, 60]}
    args: {ms: 1000}
  - {id: fetch, kind: shell, args: {cmd: "echo fetched; echo a warning >&2"}}
  - {id: summary, kind: echo, after: [step, fetch], args: {text: "all steps done"}}
EOF
"$volley" submit "$work/big.yaml" --watch --output json >"$work/big.json"
big="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["batch_id"])' "$work/big.json")"
scale=""
if [ -n "${VOLLEY_DASHBOARD_SCALE_OPS:-}" ]; then
  # A build, fan-outs of 10,000 (a foreach's most), a report:
  # VOLLEY_DASHBOARD_SCALE_OPS ops in all.
  left=$((VOLLEY_DASHBOARD_SCALE_OPS - 2))
  fans=()
  {
    echo "name: scale-$VOLLEY_DASHBOARD_SCALE_OPS"
    echo "ops:"
    echo "  - {id: build, kind: echo, args: {text: built}}"
    while [ "$left" -gt 0 ]; do
      n=$((left < 10000 ? left : 10000))
      fans+=("shard${#fans[@]}")
      echo "  - {id: ${fans[-1]}, kind: noop, after: [build], foreach: {range: [1, $n]}}"
      left=$((left - n))
    done
    echo "  - {id: report, kind: echo, after: [$(IFS=,; echo "${fans[*]}")], args: {text: done}}"
  } >"$work/scale.yaml"
  "$volley" submit "$work/scale.yaml" --watch --output json >"$work/scale.json"
  scale="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["batch_id"])' "$work/scale.json")"
fi
running="$("$volley" submit "$work/running.yaml" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["batch_id"])')"

# A small finished batch, exported, and a file dashboard with nothing open
# (`volley dashboard`, no --file) that a browser drops the export on.
printf '%s\n' "name: small" "ops:" \
  "  - {id: hello, kind: shell, args: {cmd: 'echo hello', env: {API_TOKEN: never-shown}}}" \
  "  - {id: bye, kind: echo, after: [hello], args: {text: bye}}" >"$work/small.yaml"
small="$("$volley" submit "$work/small.yaml" --watch --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["batch_id"])')"
"$volley" export "$small" >"$work/small-export.json"
"$volley" dashboard --listen 127.0.0.1:0 --max-file-bytes 1000000 \
  >"$work/file.out" 2>"$work/file.err" </dev/null &
file_pid=$!
for _ in $(seq 1 100); do
  grep -q "http://" "$work/file.out" 2>/dev/null && break
  sleep 0.1
done
file_dashboard="$(grep -o 'http://[0-9.:]*' "$work/file.out" | head -1)"
[ -n "$file_dashboard" ] || { cat "$work/file.err" >&2; echo "dashboard/tests/run.sh: volley dashboard printed no URL" >&2; exit 1; }

export VOLLEY_DASHBOARD_FILE_URL="$file_dashboard"
export VOLLEY_DASHBOARD_EXPORT="$work/small-export.json"
export VOLLEY_DASHBOARD_FILE_MAX_BYTES=1000000
export VOLLEY_DASHBOARD_URL="$dashboard"
export VOLLEY_DASHBOARD_TOKEN="$VOLLEY_TOKEN"
export VOLLEY_DASHBOARD_BIG_BATCH="$big"
export VOLLEY_DASHBOARD_RUNNING_BATCH="$running"
export VOLLEY_DASHBOARD_SCALE_BATCH="$scale"
export VOLLEY_DASHBOARD_TIMINGS="$work/timings.txt"
export VOLLEY_DASHBOARD_SCREENSHOTS="${SCREENSHOTS:-$work/screenshots}"
export CHROMIUM="$chromium"
mkdir -p "$VOLLEY_DASHBOARD_SCREENSHOTS"
cd "$repo"
status=0
"$venv/bin/python" -m pytest -q -rs -p no:cacheprovider "$here/test_dashboard.py" | tee "$work/pytest.out" || status=$?
if [ -s "$work/timings.txt" ]; then
  echo "time to interactive (navigation until the header, the critical path and the DAG are shown):"
  cat "$work/timings.txt"
fi
[ "$status" = 0 ] || exit "$status"
if grep -qE '[0-9]+ skipped' "$work/pytest.out"; then
  echo "dashboard/tests/run.sh: a check was skipped; every one must run" >&2
  exit 1
fi
