#!/usr/bin/env bash
# Runs N independent noop ops (default 10,000) on a real cluster: its own
# redis-server on a free port, one coordinator and three workers, all
# separate `volley` processes; prints the batch's wall time and throughput.
# Usage: bench/noop-cluster.sh [N] [WORKERS]   (builds target/release/volley)
set -euo pipefail
cd "$(dirname "$0")/.."
ops=${1:-10000}
workers=${2:-3}
cargo build --release --quiet --bin volley
volley=target/release/volley
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done

port=$(free_port)
VOLLEY_LOG=warn $volley coordinator --listen "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port" &
pids+=($!)
for number in $(seq 1 "$workers"); do
  VOLLEY_LOG=warn $volley worker --coordinator "http://127.0.0.1:$port" --slots 64 --id "w$number" &
  pids+=($!)
done
until [ "$($volley workers --coordinator "http://127.0.0.1:$port" --output json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)" = "$workers" ]; do sleep 0.05; done

python3 - "$ops" > "$work/batch.json" <<'PY'
import json, sys
count = int(sys.argv[1])
print(json.dumps({"name": f"noop-{count}", "ops": [{"id": f"n{i}", "kind": "noop"} for i in range(count)]}))
PY
start=$(date +%s%N)
$volley submit "$work/batch.json" --coordinator "http://127.0.0.1:$port" --watch --output json > "$work/report.json"
end=$(date +%s%N)
python3 - "$work/report.json" "$start" "$end" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
client_ms = (int(sys.argv[3]) - int(sys.argv[2])) / 1e6
ops = len(report["ops"])
succeeded = sum(op["state"] == "succeeded" for op in report["ops"])
print(f"{ops} noop ops, {succeeded} succeeded, state {report['state']}")
print(f"batch wall {report['wall_ms']} ms ({ops / max(report['wall_ms'], 1) * 1000:.0f} ops/s); "
      f"client submit+watch+report {client_ms:.0f} ms")
PY
