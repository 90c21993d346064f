#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager 1.20 from Debian's source package, offline,
# and caches them. Nothing on PyPI or Debian ships these binaries and there is no Docker engine
# for kind/k3s, so this is how tests get a real control plane. See README "Tests".
set -euo pipefail

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
BIN="$CACHE/k8s-bin"
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]]; then
  echo "control plane binaries cached in $BIN"
  exit 0
fi

need=()
for pkg in golang-go rsync etcd-server openssl golang-github-modern-go-reflect2-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sources" "$work/lists/partial"
sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$work/sources/src.sources"
apt_src=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/sources"
         -o "Dir::State::Lists=$work/lists")
apt-get "${apt_src[@]}" update -qq
(cd "$work" && apt-get "${apt_src[@]}" source --download-only kubernetes >/dev/null)
tarball="$(ls "$work"/kubernetes_*.orig.tar.* | head -n1)"
mkdir -p "$work/src"
tar -xf "$tarball" -C "$work/src" --strip-components=1

# The vendored reflect2 v1.0.1 segfaults the apiserver under Go >= 1.18; Debian's copy does not.
rm -rf "$work/src/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$work/src/vendor/github.com/modern-go/reflect2"
rm -f "$work/src/vendor/github.com/modern-go/reflect2/go.mod"

(cd "$work/src" && env -u GOFLAGS CGO_ENABLED=0 GOCACHE="$work/gocache" \
   make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1) || {
  tail -n 50 "$work/build.log"; exit 1; }
mkdir -p "$BIN"
out="$(dirname "$(find "$work/src/_output" -type f -name kube-apiserver | head -n1)")"
install -m 0755 "$out/kube-apiserver" "$out/kube-controller-manager" "$BIN/"
echo "control plane binaries built into $BIN"
