"""Hand edits of the children that decide who reaches the model (the Service, the NetworkPolicy)
are repaired from their watch events, in seconds, with an operator whose resync is ten minutes
away: on its own cluster, so that the suite's operator (resync every 3 s) cannot do it instead."""

from __future__ import annotations

import kubernetes
import pytest

from .support import ROOT, Operator, wait_for
from .test_operator import apply, children, cpu_model

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    import sys

    sys.path.insert(0, str(ROOT / "hack"))
    from localcluster import LocalCluster

    local = LocalCluster(tmp_path_factory.mktemp("quiet-cluster")).start(crds=ROOT / "crds")
    op = Operator(local.kubeconfig, tmp_path_factory.mktemp("quiet-operator"), resync_seconds=600).start()
    yield local
    op.stop()
    local.stop()


@pytest.fixture
def quiet_kctl(quiet):
    from .conftest import kubectl

    return lambda *args, **kw: kubectl(quiet.kubeconfig, *args, **kw)


def test_a_hand_edited_service_and_a_deleted_policy_are_repaired_before_any_resync(quiet, quiet_kctl):
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(quiet.kubeconfig), client_configuration=config)
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
    quiet_kctl("create", "namespace", "edits")
    apply(quiet_kctl, "edits", cpu_model("edited"))
    wait_for(lambda: len(children(quiet_kctl, "edits")) == 4, 20, "the children")

    def ports() -> list[tuple[str, int]]:
        return sorted((p.name, p.port) for p in core.read_namespaced_service("edited", "edits").spec.ports)

    quiet_kctl("patch", "svc", "edited", "-n", "edits", "--type=json",
               "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":9999}]')  # fmt: skip
    wait_for(
        lambda: ports() == [("grpc", 8081), ("http", 8080), ("metrics", 9091)],
        10,
        f"the ports restored (now {ports()})",
    )
    quiet_kctl("delete", "networkpolicy", "edited", "-n", "edits")
    wait_for(lambda: "NetworkPolicy" in children(quiet_kctl, "edits"), 10, "the NetworkPolicy recreated")
