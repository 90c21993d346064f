"""maxSurge auto end to end: Node objects with GPUs created on the test API server, the pods bound
to them as the scheduler would bind them, and the operator choosing surge 1 when a GPU is free and
0 when none is, saying so in status, and leaving an in-sync Deployment alone when GPUs come and go.

The test plays the scheduler (a binding per pod) and the kubelet (readiness, and finishing the
pods it was told to stop); the operator and the controllers are the real ones."""

from __future__ import annotations

import contextlib
import io
import json
import uuid

import kubernetes
import pytest

from .support import GROUP, PLURAL, VERSION, set_pod_ready, wait_for

PRODUCT = f"NVIDIA-TEST-{uuid.uuid4().hex[:6].upper()}"  # no other test's pods select this product


def gpu_model(name: str, namespace: str, batch: int = 8) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "file:///models/m.onnx"},
            "resources": {"gpu": 1, "gpuProduct": PRODUCT},
            "runtime": {"batching": {"maxBatchSize": batch}},
        },
    }


@pytest.fixture
def gpu_node(core: kubernetes.client.CoreV1Api):
    """A Node with two GPUs of PRODUCT, as the device plugin and GPU Feature Discovery advertise
    them; the not-ready taint the API server puts on a new Node is lifted, as the node controller
    does once a kubelet reports Ready."""
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    core.create_node({"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": PRODUCT}}})
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "2"}
    core.patch_node_status(name, {"status": {"capacity": resources, "allocatable": resources}})
    core.patch_node(name, {"spec": {"taints": None}})
    wait_for(lambda: not core.read_node(name).spec.taints, 10, "the Node without taints")
    yield name
    core.delete_node(name)


def pods_of(core, namespace: str, name: str) -> list:
    return core.list_namespaced_pod(namespace, label_selector=f"modeldeploy.dev/name={name}").items


def play_scheduler_and_kubelet(core, namespace: str, name: str, node: str) -> int:
    """Binds every unbound pod to `node`, makes it ready, and finishes every pod being deleted
    (without a kubelet a bound pod stays Terminating, holding its GPU). Returns the live pods."""
    live = 0
    for pod in pods_of(core, namespace, name):
        if pod.metadata.deletion_timestamp:
            core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
            continue
        if not pod.spec.node_name:
            body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod.metadata.name}}
            body["target"] = {"apiVersion": "v1", "kind": "Node", "name": node}
            core.create_namespaced_pod_binding(pod.metadata.name, namespace, body, _preload_content=False)
            pod = core.read_namespaced_pod(pod.metadata.name, namespace)
        if not any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            set_pod_ready(core, pod)
        live += 1
    return live


def occupy_gpu(core, namespace: str, node: str) -> str:
    """Another workload's pod on the node, holding one GPU."""
    name = f"other-{uuid.uuid4().hex[:6]}"
    container = {"name": "c", "image": "other:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    core.create_namespaced_pod(
        namespace, {"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [container]}}
    )
    return name


def status_of(custom, namespace: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}


def rolled_out(core, custom, namespace: str, name: str, node: str, generation: int) -> dict:
    def done():
        play_scheduler_and_kubelet(core, namespace, name, node)
        s = status_of(custom, namespace, name)
        ok = s.get("observedGeneration") == generation and s.get("phase") == "Ready" and s.get("replicas") == 1
        return ok and s

    return wait_for(done, 40, f"generation {generation} Ready on one pod", interval=0.5)


def strategy(apps, namespace: str, name: str) -> tuple[dict, int]:
    """The Deployment's update strategy, and its generation (which any write of its spec raises)."""
    dep = apps.read_namespaced_deployment(name, namespace)
    rolling = dep.spec.strategy.rolling_update
    return {"maxSurge": rolling.max_surge, "maxUnavailable": rolling.max_unavailable}, dep.metadata.generation


def apply(kctl, manifest: dict) -> None:
    kctl("apply", "-f", "-", input=json.dumps(manifest))


def render_against(kubeconfig, manifest: dict, tmp_path) -> str:
    from modeldeploy_operator.render_cli import main

    path = tmp_path / "cr.json"
    path.write_text(json.dumps(manifest))
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(["-f", str(path), "--kubeconfig", str(kubeconfig)]) == 0
    return err.getvalue()


def test_auto_surges_with_a_free_gpu_and_takes_the_pod_offline_without_one(
    cluster, operator, namespace, kctl, custom, apps, core, gpu_node, tmp_path
):
    name, node = "gpu", gpu_node
    selector = f"nodeSelector {{nvidia.com/gpu.product: {PRODUCT}}}"
    surges = f"update surges 1 pod: 1 free nvidia.com/gpu on {node}"
    offline = (
        f"update will take 1 of 1 replicas offline: no free nvidia.com/gpu on nodes matching {selector} "
        f"({node}: 2 of 2 nvidia.com/gpu requested)"
    )
    apply(kctl, gpu_model(name, namespace))
    rolled_out(core, custom, namespace, name, node, 1)
    # Serving on one of the two GPUs: the next update has room for a second pod.
    wait_for(lambda: status_of(custom, namespace, name).get("updateCost") == surges, 30, surges)

    # An update with a free GPU: one pod more, none unavailable, and said so while it rolls out.
    apply(kctl, gpu_model(name, namespace, batch=4))
    wait_for(lambda: strategy(apps, namespace, name)[0] == {"maxSurge": 1, "maxUnavailable": 0}, 20, "surge 1")
    wait_for(lambda: len(pods_of(core, namespace, name)) == 2, 20, "a surge pod beside the serving one")
    assert not [p for p in pods_of(core, namespace, name) if p.metadata.deletion_timestamp], "the serving pod stays"
    wait_for(lambda: status_of(custom, namespace, name).get("updateCost") == surges, 20, "the plan in status")
    rolled_out(core, custom, namespace, name, node, 2)

    # Another workload takes the last GPU: status says what the next update will cost, and the
    # Deployment, in sync, is not rewritten.
    before = strategy(apps, namespace, name)
    other = occupy_gpu(core, namespace, node)
    wait_for(lambda: status_of(custom, namespace, name).get("updateCost") == offline, 30, offline)
    assert strategy(apps, namespace, name) == before
    # `modeldeploy render --kubeconfig` says the same of the update the user is about to apply.
    assert render_against(cluster.kubeconfig, gpu_model(name, namespace, batch=2), tmp_path) == (
        f"modeldeploy render: {name}: {offline}\n"
    )

    # An update without a free GPU: no surge pod left Pending; the old pod goes first.
    apply(kctl, gpu_model(name, namespace, batch=2))
    wait_for(lambda: strategy(apps, namespace, name)[0] == {"maxSurge": 0, "maxUnavailable": 1}, 20, "surge 0")
    wait_for(lambda: status_of(custom, namespace, name).get("updateCost") == offline, 20, "the plan in status")
    rolled_out(core, custom, namespace, name, node, 3)

    # The GPU is freed: the forecast says so, and the Deployment still is not rewritten.
    before = strategy(apps, namespace, name)
    core.delete_namespaced_pod(other, namespace, grace_period_seconds=0)
    wait_for(lambda: status_of(custom, namespace, name).get("updateCost") == surges, 30, surges)
    assert strategy(apps, namespace, name) == before
    for pod in core.list_namespaced_pod(namespace).items:  # no kubelet will finish them
        core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
