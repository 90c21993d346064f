"""The end-to-end suite runs against a real etcd + kube-apiserver + kube-controller-manager
started once for the session (hack/localcluster.py), with the CRD installed from crds/ before the
controller-manager starts, so its garbage collector watches ModelDeployments from the start."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import kubernetes
import pytest

from .support import ROOT, Operator

sys.path.insert(0, str(ROOT / "hack"))
from localcluster import LocalCluster  # noqa: E402

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("cluster")
    local = LocalCluster(workdir)
    try:
        local.start(crds=ROOT / "crds")
    except RuntimeError as exc:
        pytest.fail(f"the local control plane could not start: {exc}")
    yield local
    local.stop()


def kubectl(kubeconfig: Path, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, input=input, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


@pytest.fixture(scope="session")
def api_client(cluster: LocalCluster) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=config)
    return kubernetes.client.ApiClient(config)


@pytest.fixture(scope="session")
def core(api_client) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api_client)


@pytest.fixture(scope="session")
def custom(api_client) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory):
    op = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator")).start()
    yield op
    op.stop()


@pytest.fixture
def namespace(cluster: LocalCluster, core: kubernetes.client.CoreV1Api, request: pytest.FixtureRequest):
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def kctl(cluster: LocalCluster):
    """kubectl against the test cluster, as a user would run it."""
    return lambda *args, **kw: kubectl(cluster.kubeconfig, *args, **kw)
