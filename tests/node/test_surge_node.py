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


class Load:
    """Four keep-alive clients sending digits through the Service until stopped: (status, error) per request."""

    def __init__(self, host: str):
        self.host, self.results, self.stop = host, [], threading.Event()
        self.pixels, self.label = kit.digit(5)
        self.threads = [threading.Thread(target=self.client) for _ in range(4)]

    def client(self) -> None:
        conn = http.client.HTTPConnection(self.host, 8080, timeout=10)  # keep-alive, as client libraries do
        while not self.stop.is_set():
            try:
                status, body = kit.infer(self.host, self.pixels, conn=conn)
                ok = status == 200 and kit.label_of(body) == self.label
                self.results.append((status, "" if ok else body[:200]))
            except (OSError, http.client.HTTPException) as exc:
                self.results.append((0, repr(exc)))
                conn.close()
                time.sleep(0.05)  # a refused connection returns at once
                conn = http.client.HTTPConnection(self.host, 8080, timeout=10)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        time.sleep(2)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(2)
        self.stop.set()
        for t in self.threads:
            t.join(30)

    @property
    def failed(self) -> list[tuple[int, str]]:
        return [r for r in self.results if r != (200, "")]


def update_under_load(cluster: kit.Cluster, host: str, batch: int, expected: dict) -> Load:
    with Load(host) as load:
        generation = apply(cluster, batch=batch)
        wait_for(lambda: strategy(cluster) == expected, 30, f"strategy {expected}")
        cluster.wait_phase(NS, NAME, "Ready", timeout=180, generation=generation)
        wait_for(lambda: len(cluster.pods(NS, NAME)) == 1, 60, "the old pod gone")
    print(f"\nupdate with {expected}: {len(load.failed)} of {len(load.results)} requests failed")
    return load


def test_an_update_with_a_free_gpu_surges_and_drops_no_request_under_load(cluster, gpu_node, built_images):
    node = gpu_node
    surges = f"update surges 1 pod: 1 free nvidia.com/gpu on {node}"
    apply(cluster, batch=16)
    cluster.wait_phase(NS, NAME, "Ready", timeout=180, generation=1)
    (pod,) = cluster.ready_pods(NS, NAME)
    assert pod["spec"]["nodeName"] == node
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # One of the two GPUs held by the serving pod: the next update has room for one more.
    wait_for(lambda: cluster.status(NS, NAME).get("updateCost") == surges, 60, surges)
    host = cluster.cluster_ip(NS, NAME)
    wait_for(lambda: kit.infer(host, kit.digit(5)[0])[0] == 200, 30, "the Service answering")

    load = update_under_load(cluster, host, 8, {"maxSurge": 1, "maxUnavailable": 0})
    assert len(load.results) > 100, len(load.results)
    assert not load.failed, f"{len(load.failed)} of {len(load.results)} requests failed: {load.failed[:5]}"
    (new,) = cluster.ready_pods(NS, NAME)
    assert new["metadata"]["name"] != pod["metadata"]["name"]
    assert cluster.status(NS, NAME)["revision"] == 2

    # With one GPU on the node, held by the serving pod, the next update has to stop it first,
    # the in-sync Deployment is left as it is, and the status says what the update will cost.
    advertise(cluster, node, 1)
    offline = (
        "update will take 1 of 1 replicas offline: no free nvidia.com/gpu on any node "
        f"({node}: 1 of 1 nvidia.com/gpu requested)"
    )
    wait_for(lambda: cluster.status(NS, NAME).get("updateCost") == offline, 60, offline)
    assert strategy(cluster) == {"maxSurge": 1, "maxUnavailable": 0}, "an in-sync Deployment is not rewritten"
    # ...and it does: under the same load, that update fails requests (what the surge avoids).
    load = update_under_load(cluster, host, 4, {"maxSurge": 0, "maxUnavailable": 1})
    assert load.failed, f"none of {len(load.results)} requests failed while the only pod was replaced"
