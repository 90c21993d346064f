"""The chart installed on a real node as a user installs it: `helm upgrade --install` with the
images built from the Dockerfile, used as loaded into containerd (`pullPolicy: Never`), the CPU
runtime as the default runtime image. Shared by the real-node tests, the demo and the benchmark."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "modeldeploy-operator"
RELEASE = "modeldeploy-operator"
NAMESPACE = "modeldeploy-system"


def helm_binary() -> str:
    """The pinned Helm that hack/install-helm.sh caches (installing it the first time)."""
    out = subprocess.run(["bash", str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True).stdout
    return out.strip() or "helm"


def install(
    kubeconfig: Path, images: dict[str, str], *values: str, timeout_s: int = 180
) -> subprocess.CompletedProcess:
    """`images`: target -> ref (hack/images.py); `values`: more `key=value` settings. Waits until
    the operator is Ready; the caller decides what a failure means."""
    repo, tag = images["operator"].rsplit(":", 1)
    settings = [f"image.repository={repo}", f"image.tag={tag}", "image.pullPolicy=Never",
                f"runtime.image={images['runtime-cpu']}", *values]  # fmt: skip
    argv = [helm_binary(), f"--kubeconfig={kubeconfig}", "upgrade", "--install", RELEASE, str(CHART),
            "--namespace", NAMESPACE, "--create-namespace", "--wait", "--timeout", f"{timeout_s}s"]  # fmt: skip
    for setting in settings:
        argv += ["--set", setting]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 60)
