#!/usr/bin/env bash
# Builds Kubernetes 1.20 from Debian's source package, offline, and caches the binaries: the control
# plane (kube-apiserver, kube-controller-manager, kube-scheduler) and the node (kubelet, kube-proxy),
# all from one tree, and the pod sandbox's `pause` binary from the same tree's build/pause. Nothing on PyPI or Debian ships these binaries and there is no Docker engine
# for kind/k3s, so this is how tests get a real cluster. See README "Tests".
set -euo pipefail

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
BIN="$CACHE/k8s-bin"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy pause)
missing=()
for c in "${COMPONENTS[@]}"; do [[ -x "$BIN/$c" ]] || missing+=("$c"); done
if ((${#missing[@]} == 0)); then
  echo "kubernetes binaries cached in $BIN"
  exit 0
fi

need=()
for pkg in golang-go rsync etcd-server openssl golang-github-modern-go-reflect2-dev gcc libc6-dev; do
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

# Only the missing ones are built. KUBE_STATIC_OVERRIDES makes the kubelet static like the rest,
# so the cached binaries run on any machine of this kind.
mkdir -p "$BIN"
what=()
for c in "${missing[@]}"; do [[ "$c" == pause ]] || what+=("cmd/$c"); done
if ((${#what[@]})); then
  echo "building ${what[*]} from Debian's kubernetes source (about 6-15 min on two cores)" >&2
  (cd "$work/src" && env -u GOFLAGS CGO_ENABLED=0 KUBE_STATIC_OVERRIDES=kubelet \
     GOCACHE="$work/gocache" make WHAT="${what[*]}" >"$work/build.log" 2>&1) || {
    tail -n 50 "$work/build.log"; exit 1; }
  for c in "${what[@]}"; do
    install -m 0755 "$(find "$work/src/_output" -type f -name "${c#cmd/}" | head -n1)" "$BIN/"
  done
fi
# The sandbox process of every pod; static, so the image is this one file.
if [[ ! -x "$BIN/pause" ]]; then
  gcc -Os -static -o "$BIN/pause" "$work/src/build/pause/linux/pause.c"
fi
echo "kubernetes binaries built into $BIN"
