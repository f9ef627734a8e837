#!/usr/bin/env bash
# Regenerates the Python code for proto/proto/volley/v1/volley.proto:
# volley_pb2.py, volley_pb2.pyi and volley_pb2_grpc.py under
# src/volley/_proto/volley/v1/ (or under OUT_DIR/volley/v1/ when given),
# with the import between them made relative so the package imports as
# `volley._proto.volley.v1`.
#
# Usage: clients/python/generate.sh [OUT_DIR]
# Needs grpcio-tools (pip install -e 'clients/python[dev]'); $PYTHON picks
# the interpreter (default: python3). The output is committed, and a test
# checks it matches a fresh run of this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto_root="$here/../../proto/proto"
out="${1:-$here/src/volley/_proto}"
python="${PYTHON:-python3}"

mkdir -p "$out/volley/v1"
"$python" -m grpc_tools.protoc \
  --proto_path="$proto_root" \
  --python_out="$out" \
  --pyi_out="$out" \
  --grpc_python_out="$out" \
  volley/v1/volley.proto

# protoc writes `from volley.v1 import volley_pb2`, which would resolve
# against this package (also named `volley`): import the sibling instead.
grpc_file="$out/volley/v1/volley_pb2_grpc.py"
sed 's/^from volley\.v1 import volley_pb2 as /from . import volley_pb2 as /' \
  "$grpc_file" > "$grpc_file.tmp"
mv "$grpc_file.tmp" "$grpc_file"
if grep -q '^from volley\.v1 ' "$grpc_file"; then
  echo "generate.sh: could not fix the imports of $grpc_file" >&2
  exit 1
fi
