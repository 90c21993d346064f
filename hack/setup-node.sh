#!/usr/bin/env bash
# What a real node needs beyond the control plane, all from Debian: containerd, runc, the CNI
# plugins, iptables/conntrack, podman and debootstrap (the images), then the base image that
# stands in for python:3.11-slim-bookworm. Needs root; without it this says why and does nothing,
# and the real-node tests skip with that reason.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "$(id -u)" != 0 ]]; then
  echo "real node: skipped (needs root); the real-node tests will skip" >&2
  exit 0
fi
need=()
for pkg in containerd runc containernetworking-plugins iptables conntrack iproute2 socat debootstrap podman; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
"$root/.venv/bin/python" "$root/hack/images.py" base >/dev/null
