"""The real-node tier: a single-node Kubernetes on this machine (hack/realnode.py), the images built
from the Dockerfile (hack/images.py) and loaded into its containerd, and the chart installed with
helm, so the operator runs in the cluster under the chart's ServiceAccount.

Every signal the operator acts on comes from the kubelet: probes, restarts, termination
messages, image pull errors. Where this machine cannot run a node (not root, no cgroups) the tier
is skipped with the reason; it never passes without having run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pytest
from e2e.support import ROOT

sys.path.insert(0, str(ROOT / "hack"))
import chart  # noqa: E402
import images  # noqa: E402
import realnode  # noqa: E402

from .kit import Cluster  # noqa: E402

OPERATOR_NAMESPACE, RELEASE = chart.NAMESPACE, chart.RELEASE


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    reason = realnode.why_not() or images.have_podman()
    if reason:
        pytest.skip(f"no real node on this machine: {reason}")
    timings = {}
    refs = {}
    for target in images.TARGETS:
        started = time.monotonic()
        try:
            refs[target] = images.build(target)
        except images.ImageError as exc:
            pytest.fail(f"the {target} image could not be built from the Dockerfile: {exc}")
        timings[target] = time.monotonic() - started
    print(f"\nimages: {refs} (build or cache check: {timings})")
    return refs


@pytest.fixture(scope="session")
def node(built_images):
    # A short path: containerd and the kubelet put sockets below it.
    workdir = Path(tempfile.mkdtemp(prefix="mdnode-"))
    rn = realnode.RealNode(workdir, images=tuple(built_images.values()))
    try:
        rn.start()
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"the real node could not start: {exc}")
    print(f"\nreal node Ready in {rn.timings['node_ready_s']:.1f} s (logs in {workdir / 'logs'})")
    yield rn
    rn.stop()
    print(f"\nreal node stopped in {rn.timings['teardown_s']:.1f} s")


@pytest.fixture(scope="session")
def cluster(node, built_images) -> Cluster:
    """The node with the chart installed: the operator in the cluster, the CPU runtime image as
    its default, images used as loaded (`Never` pull), as a user would install it."""
    installed = chart.install(node.kubeconfig, built_images)
    assert installed.returncode == 0, f"helm install failed: {installed.stderr or installed.stdout}"
    return Cluster(node.kubeconfig)
