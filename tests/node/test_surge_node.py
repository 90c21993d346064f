"""maxSurge auto on a real node: the node advertises `nvidia.com/gpu` as an extended resource (a
JSON patch of its status capacity, the documented way; the kubelet carries it into allocatable and
the scheduler counts it), and an update of a one-replica deployment holding one of its GPUs surges
a second pod and drops no request under load through the Service. The runtime is the CPU image:
`runtime.requireGpu: false` lets a pod that holds a GPU serve on the CPU."""

from __future__ import annotations

import http.client
import json
import threading
import time

import kubernetes
import pytest
import yaml
from e2e.support import wait_for

from . import kit

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(600)]
NS = "surge"
NAME = "digits"


def advertise(cluster: kit.Cluster, node: str, gpus: int | None) -> None:
    """Sets (None: removes) the node's nvidia.com/gpu capacity through the status subresource
    (kubectl 1.20 has no `patch --subresource`)."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=config)
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
    path = "/status/capacity/nvidia.com~1gpu"
    op = {"op": "remove", "path": path} if gpus is None else {"op": "add", "path": path, "value": str(gpus)}
    core.patch_node_status(node, [op])


def allocatable_gpus(cluster: kit.Cluster, node: str) -> str | None:
    return cluster.get("node", node)["status"].get("allocatable", {}).get("nvidia.com/gpu")


def strategy(cluster: kit.Cluster) -> dict:
    return cluster.get("deployment", NAME, NS)["spec"]["strategy"]["rollingUpdate"]


@pytest.fixture(scope="module")
def gpu_node(cluster):
    (node,) = [n["metadata"]["name"] for n in cluster.get("nodes")["items"]]
    advertise(cluster, node, 2)
    wait_for(lambda: allocatable_gpus(cluster, node) == "2", 30, "2 nvidia.com/gpu allocatable")
    cluster.kubectl("create", "namespace", NS)
    yield node
    cluster.kubectl("delete", "namespace", NS, "--wait=false")
    advertise(cluster, node, None)


def apply(cluster: kit.Cluster, batch: int) -> int:
    doc = yaml.safe_load(kit.EXAMPLE.read_text())
    doc["spec"].update(replicas=1, resources={**doc["spec"]["resources"], "gpu": 1})
    doc["spec"]["runtime"].update(requireGpu=False, batching={"maxBatchSize": batch})
    out = cluster.kubectl("apply", "-n", NS, "-f", "-", "-o", "json", input=json.dumps(doc))
    return json.loads(out)["metadata"]["generation"]


def test_an_update_with_a_free_gpu_surges_and_drops_no_request_under_load(cluster, gpu_node, built_images):
    node = gpu_node
    surges = f"update surges 1 pod: 1 free nvidia.com/gpu on {node}"
    apply(cluster, batch=16)
    cluster.wait_phase(NS, NAME, "Ready", timeout=180, generation=1)
    (pod,) = cluster.ready_pods(NS, NAME)
    assert pod["spec"]["nodeName"] == node
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # One of the two GPUs held by the serving pod: the next update has room for one more.
    wait_for(lambda: cluster.status(NS, NAME).get("updateCost") == surges, 30, surges)
    host = cluster.cluster_ip(NS, NAME)
    pixels, label = kit.digit(5)
    wait_for(lambda: kit.infer(host, pixels)[0] == 200, 30, "the Service answering")

    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection(host, 8080, timeout=10)  # keep-alive, as client libraries do
        while not stop.is_set():
            try:
                status, body = kit.infer(host, pixels, conn=conn)
                results.append((status, "" if status == 200 and kit.label_of(body) == label else body[:200]))
            except (OSError, http.client.HTTPException) as exc:
                results.append((0, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection(host, 8080, timeout=10)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        generation = apply(cluster, batch=8)
        wait_for(lambda: strategy(cluster) == {"maxSurge": 1, "maxUnavailable": 0}, 30, "surge 1, none unavailable")
        status = cluster.wait_phase(NS, NAME, "Ready", timeout=180, generation=generation)
        assert status["revision"] == 2
        wait_for(lambda: len(cluster.pods(NS, NAME)) == 1, 60, "the old pod gone")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    failed = [r for r in results if r != (200, "")]
    assert len(results) > 100, len(results)
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    (new,) = cluster.ready_pods(NS, NAME)
    assert new["metadata"]["name"] != pod["metadata"]["name"]

    # With one GPU on the node, held by the serving pod, the next update has to stop it first.
    advertise(cluster, node, 1)
    offline = (
        "update will take 1 of 1 replicas offline: no free nvidia.com/gpu on any node "
        f"({node}: 1 of 1 nvidia.com/gpu requested)"
    )
    wait_for(lambda: cluster.status(NS, NAME).get("updateCost") == offline, 60, offline)
    assert strategy(cluster) == {"maxSurge": 1, "maxUnavailable": 0}, "an in-sync Deployment is not rewritten"
