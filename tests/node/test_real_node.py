"""The product as users run it, on a real node: `helm install`, `kubectl apply -f
examples/digits-cpu.yaml`, v2 requests through the Service, and the three ways a rollout fails,
each signalled by the kubelet alone (a termination message, an image pull error, a crash loop)
and each rolled back by the operator running in the cluster. The tests run in file order: each
failure is an update of the same serving resource, as a user's would be."""

from __future__ import annotations

import http.client
import json
import threading
import time

import nodehost  # hack/, on the path through conftest
import pytest
from e2e.support import wait_for

from . import kit
from .conftest import OPERATOR_NAMESPACE, RELEASE

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(900)]
NS = "digits"
NAME = "digits"


def test_pods_cannot_reach_past_this_machine(node):
    """Asserted on the rules, never by dialling out: pods talk to each other and to the API
    server's port; anything else they send is dropped."""
    rules = nodehost.firewall_rules()
    bridge = nodehost.BRIDGE
    assert f"-A {nodehost.FWD_CHAIN} -i {bridge} -o {bridge} -j ACCEPT" in rules
    assert f"-A {nodehost.FWD_CHAIN} -i {bridge} -j DROP" in rules
    assert f"-A {nodehost.IN_CHAIN} -i {bridge} -j DROP" in rules
    for builtin, chain in (("FORWARD", nodehost.FWD_CHAIN), ("INPUT", nodehost.IN_CHAIN)):
        first = nodehost.sh("iptables", "-S", builtin).stdout.splitlines()[1]
        assert first == f"-A {builtin} -j {chain}", first


def test_the_chart_runs_the_operator_in_the_cluster_and_helm_test_passes(cluster, built_images):
    (pod,) = cluster.get(
        "pods",
        namespace=OPERATOR_NAMESPACE,
        selector="app.kubernetes.io/name=modeldeploy-operator,app.kubernetes.io/component!=test",
    )["items"]
    assert pod["spec"]["serviceAccountName"] == RELEASE
    assert pod["spec"]["containers"][0]["image"] == built_images["operator"]
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0, status
    test = cluster.helm("test", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--logs", "--timeout", "120s")
    assert "operator healthy, metrics served" in test.stdout, test.stdout


@pytest.fixture(scope="module")
def digits(cluster):
    cluster.kubectl("create", "namespace", NS)
    cluster.kubectl("apply", "-n", NS, "-f", str(kit.EXAMPLE))
    yield cluster
    cluster.kubectl("delete", "namespace", NS, "--wait=false")


def assert_serving(cluster: kit.Cluster, image: str, replicas: int = 2) -> None:
    """Every replica of `image` Ready through its readiness probe, and the Service answering."""
    wait_for(lambda: len(cluster.ready_pods(NS, NAME, image)) == replicas, 120, f"{replicas} Ready pods of {image}")
    host = cluster.cluster_ip(NS, NAME)
    for i in range(10):
        pixels, label = kit.digit(i)
        status, body = kit.infer(host, pixels)
        assert status == 200, body
        assert kit.label_of(body) == label


def patch(cluster: kit.Cluster, spec: dict) -> int:
    out = cluster.kubectl(
        "patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": spec}), "-o", "json"
    )
    return json.loads(out)["metadata"]["generation"]


def assert_rolled_back(cluster: kit.Cluster, generation: int, reason: str, image: str) -> dict:
    """Phase RolledBack for `generation`, said in `kubectl get` and `describe`, and the known good
    pods serving again."""
    status = cluster.wait_phase(NS, NAME, "RolledBack", timeout=240, generation=generation)
    assert status["rollback"]["reason"] == reason, status
    assert status["rollback"]["failedGeneration"] == generation
    table = cluster.kubectl("get", "mdep", NAME, "-n", NS)
    assert "RolledBack" in table, table
    described = cluster.kubectl("describe", "mdep", NAME, "-n", NS)
    assert f"generation {generation} failed ({reason})" in described, described
    wait_for(lambda: cluster.deployment_image(NS, NAME) == image, 30, "the known good template applied")
    assert_serving(cluster, image)
    return status


def test_digits_example_becomes_ready_through_real_probes_and_answers_through_the_service(digits, built_images):
    status = digits.wait_phase(NS, NAME, "Ready", timeout=180)
    assert status["readyReplicas"] == 2 and status["lastKnownGood"]["generation"] == 1
    assert_serving(digits, built_images["runtime-cpu"])
    pod = digits.ready_pods(NS, NAME)[0]
    (container,) = pod["status"]["containerStatuses"]
    assert container["restartCount"] == 0, container
    # The uid the image was built for, as the kubelet runs it.
    assert digits.kubectl("exec", "-n", NS, pod["metadata"]["name"], "--", "id", "-u").strip() == "10001"
    assert "2/2" in digits.kubectl("get", "mdep", NAME, "-n", NS)


def test_an_impossible_latency_budget_is_refused_by_the_runtime_and_rolled_back(digits, built_images):
    generation = patch(digits, {"runtime": {"latencyBudget": {"p95Milliseconds": 0.001}}})
    status = assert_rolled_back(digits, generation, "LatencyBudgetExceeded", built_images["runtime-cpu"])
    # The message is the runtime's own termination message, as the kubelet reported it.
    assert status["rollback"]["message"].count("latency budget exceeded: p95 ") == 1, status["rollback"]
    assert "> 0.001 ms" in status["rollback"]["message"]


def test_an_image_that_does_not_exist_is_rolled_back_with_the_kubelets_pull_error(digits, built_images):
    missing = "localhost/modeldeploy/does-not-exist:0"  # localhost: containerd dials only 127.0.0.1
    generation = patch(digits, {"runtime": {"image": missing, "latencyBudget": {"p95Milliseconds": 50}}})
    status = assert_rolled_back(digits, generation, "ImagePullFailed", built_images["runtime-cpu"])
    message = status["rollback"]["message"]
    assert missing in message and ("ErrImagePull" in message or "ImagePullBackOff" in message or "pull" in message)


def test_a_container_that_crashes_at_start_is_rolled_back_after_crash_loop_backoff(digits, built_images):
    """The operator image as the runtime image: its ENTRYPOINT refuses `serve` and exits 2, a
    mistake a kubelet can only answer with restarts."""
    generation = patch(digits, {"runtime": {"image": built_images["operator"]}, "rollout": {"crashLoopRestarts": 1}})
    status = assert_rolled_back(digits, generation, "CrashLoopBackOff", built_images["runtime-cpu"])
    assert "restarted" in status["rollback"]["message"]


def test_deleting_a_pod_under_load_fails_no_request(digits, built_images):
    generation = patch(digits, {"runtime": {"image": None}, "rollout": {"crashLoopRestarts": 3}})
    digits.wait_phase(NS, NAME, "Ready", timeout=180, generation=generation)
    assert_serving(digits, built_images["runtime-cpu"])
    host = digits.cluster_ip(NS, NAME)
    pixels, label = kit.digit(3)
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
        victim = digits.ready_pods(NS, NAME)[0]["metadata"]["name"]
        digits.kubectl("delete", "pod", victim, "-n", NS, "--wait=false")
        wait_for(lambda: victim not in {p["metadata"]["name"] for p in digits.get("pods", namespace=NS)["items"]},
                 60, f"pod {victim} gone")  # fmt: skip
        wait_for(lambda: len(digits.ready_pods(NS, NAME)) == 2, 60, "a replacement pod Ready")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    failed = [r for r in results if r != (200, "")]
    assert len(results) > 100, len(results)
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
