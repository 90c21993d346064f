#!/usr/bin/env bash
# Regenerate the Python stubs of the v2 gRPC API (runtime/modeldeploy_runtime/v2grpc/) from
# grpc_service.proto. grpcio-tools is needed here only, never at run time:
#   .venv/bin/pip install 'grpcio-tools==1.85.1'
#   bash hack/gen-grpc.sh
# The generated files are committed; `bash hack/gen-grpc.sh --check` fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=runtime
if [[ "${1:-}" == "--check" ]]; then
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
fi
"$PY" -m grpc_tools.protoc -I runtime --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  runtime/modeldeploy_runtime/v2grpc/grpc_service.proto
if [[ "${1:-}" == "--check" ]]; then
  for f in grpc_service_pb2.py grpc_service_pb2.pyi grpc_service_pb2_grpc.py; do
    diff -q "$OUT/modeldeploy_runtime/v2grpc/$f" "runtime/modeldeploy_runtime/v2grpc/$f"
  done
  echo "gRPC stubs are up to date"
fi
