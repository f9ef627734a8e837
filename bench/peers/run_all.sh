#!/usr/bin/env bash
# Runs setup.sh, then every peer system x workload once; prints one JSON
# object per line (JSONL) on stdout, logs on stderr.
# Usage: bench/peers/run_all.sh [--smoke]     (--smoke: tiny sizes)
# Each run gets 300 s; a run that fails or times out is recorded as
# {"system","workload","error"}. Leftover processes of a run are swept by the
# run's marker (see README.md) whatever happened.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export VENV="${VENV:-$repo/target/bench-venv}"

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done

"$here/setup.sh" || { echo "run_all: setup failed" >&2; exit 1; }
py="$VENV/bin/python"

systems=(dask celery ray)
workloads=(W1 W2 W3 W4)
declare -A smoke_size=([W1]=200 [W2]=20 [W3]=100 [W4]=20)
run_timeout=300

read -r load1 _ < /proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.7) }'; then
  echo "run_all: warning: load average is $load1 before starting; other work on this machine will skew the numbers" >&2
fi

skewlog="$(mktemp)"
trap 'rm -f "$skewlog"' EXIT

for system in "${systems[@]}"; do
  for workload in "${workloads[@]}"; do
    run_id="$(date +%s)-$$-$system-$workload"
    size_args=()
    [ "$smoke" = 1 ] && size_args=(--size "${smoke_size[$workload]}")
    echo "run_all: $system $workload ${size_args[*]:-}" >&2
    out="$(timeout --foreground -k 10 "$run_timeout" "$py" "$here/peer_bench.py" --system "$system" \
      --workload "$workload" "${size_args[@]}" --run-id "$run_id" --timeout $((run_timeout - 15)) \
      --skew-file "$skewlog")"
    rc=$?
    "$py" "$here/peer_bench.py" --sweep "$run_id" || true
    "$py" - "$system" "$workload" "$rc" "$run_timeout" "$out" <<'PY'
import json, sys
system, workload, rc, limit, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
obj = None
for line in reversed(out.splitlines()):
    try:
        cand = json.loads(line)
    except ValueError:
        continue
    if isinstance(cand, dict):
        obj = cand
        break
if obj is None:
    if rc in (124, 137):
        error = f"timeout after {limit} s"
    else:
        error = f"no JSON result (exit code {rc})"
    obj = {"system": system, "workload": workload, "error": error}
print(json.dumps(obj), flush=True)
PY
  done
done
if [ -s "$skewlog" ]; then
  echo "run_all: warning: other processes competed for the CPU during these runs:" >&2
  sed 's/^/run_all:   /' "$skewlog" >&2
fi
