"""The post-rollout analysis on a real node, under a load generator through the Service: the
operator in the cluster scrapes the new pods' metrics port itself. A revision that goes slow under
concurrency (it passes its batch-1 warm-up budget) is rolled back within interval x consecutive
intervals + 10 s while traffic keeps flowing; a healthy one passes its bake and becomes known good.

The slow revision is a plausible mistake, not a test hook: a longer batching queue delay
(`maxQueueDelayMicroseconds`) makes every request wait for batchmates that a few concurrent clients
never supply. The warm-up runs the model directly, batch 1, so the latency gate cannot see it."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
import yaml
from e2e.support import wait_for

from . import kit
from .conftest import OPERATOR_NAMESPACE, RELEASE

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(900)]
NS = NAME = "bake"
INTERVAL, CONSECUTIVE, BAKE = 3, 3, 24
ANALYSIS = {
    "bakeSeconds": BAKE,
    "intervalSeconds": INTERVAL,
    "consecutiveIntervals": CONSECUTIVE,
    "maxP95Milliseconds": 30,
    "maxP95Ratio": 5,  # generous: the baseline is a few ms on two cores shared with other work
    "minRequests": 20,
}


class Load:
    """Four keep-alive clients sending digits to the Service's ClusterIP; every answer recorded."""

    def __init__(self, host: str, clients: int = 4):
        self.host, self.stop, self.results = host, threading.Event(), []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.pixels, self.label = kit.digit(5)

    def _client(self) -> None:
        conn = http.client.HTTPConnection(self.host, 8080, timeout=10)
        while not self.stop.is_set():
            try:
                status, body = kit.infer(self.host, self.pixels, conn=conn)
                ok = status == 200 and kit.label_of(body) == self.label
                self.results.append((time.time(), status, "" if ok else body[:200]))
            except (OSError, http.client.HTTPException) as exc:
                self.results.append((time.time(), 0, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection(self.host, 8080, timeout=10)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def assert_flowed(self) -> None:
        failed = [r for r in self.results if r[1:] != (200, "")]
        assert len(self.results) > 200, len(self.results)
        assert not failed, f"{len(failed)} of {len(self.results)} requests failed: {failed[:5]}"
        times = sorted(r[0] for r in self.results)
        gap, began = max((b - a, a) for a, b in zip(times, times[1:], strict=False))
        # Under the full suite this read 3.4 s (twice) and 6.8 s, every request answered, right as the
        # last slow pod stopped accepting (not understood yet; see the stop-23 note). Alone: 0.2 s.
        # 8 s still catches a freeze that stays under the clients' 10 s timeout.
        when = time.strftime("%H:%M:%S", time.localtime(began))
        assert gap < 8.0, f"no answer for {gap:.1f} s from {when} (the node's logs have what happened then)"


def epoch(rfc3339: str) -> float:
    return time.mktime(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def patch(cluster: kit.Cluster, spec: dict) -> int:
    out = cluster.kubectl(
        "patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": spec}), "-o", "json"
    )
    return json.loads(out)["metadata"]["generation"]


@pytest.fixture(scope="module")
def bake(cluster):
    cluster.kubectl("create", "namespace", NS)
    doc = yaml.safe_load(kit.EXAMPLE.read_text())
    doc["metadata"]["name"] = NAME
    doc["spec"]["rollout"] = {"analysis": ANALYSIS}
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(doc))
    cluster.wait_phase(NS, NAME, "Ready", timeout=180)
    wait_for(lambda: len(cluster.ready_pods(NS, NAME)) == 2, 120, "2 Ready pods")
    yield cluster
    cluster.kubectl("delete", "namespace", NS, "--wait=false")


def test_status_and_kubectl_get_say_what_the_pods_really_run_on(bake):
    hardware = wait_for(lambda: bake.status(NS, NAME).get("hardware"), 60, "status.hardware")
    assert (hardware["backend"], hardware["provider"], hardware["precision"]) == (
        "onnxruntime", "CPUExecutionProvider", "fp32"
    )  # fmt: skip
    assert "gpuProduct" not in hardware and 0 < hardware["warmupP95Milliseconds"] < 50
    table = bake.kubectl("get", "mdep", NAME, "-n", NS)
    assert "PROVIDER" in table.splitlines()[0] and "CPUExecutionProvider" in table, table
    print(f"\n{table}")
    # The operator, identified by the chart's labels and namespace, may scrape the metrics port.
    policy = bake.get("networkpolicy", NAME, NS)
    (metrics_rule,) = [r for r in policy["spec"]["ingress"] if r["ports"] == [{"protocol": "TCP", "port": "metrics"}]]
    assert metrics_rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "modeldeploy-operator", "app.kubernetes.io/instance": RELEASE}
            },
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE}},
        }
    ]


def test_a_revision_that_goes_slow_under_load_is_rolled_back_while_traffic_flows(bake):
    with Load(bake.cluster_ip(NS, NAME)) as load:
        time.sleep(4 * INTERVAL)  # the known good revision's figures, recorded while it serves
        generation = patch(bake, {"runtime": {"batching": {"maxQueueDelayMicroseconds": 100000}}})
        baking = wait_for(
            lambda: (a := bake.status(NS, NAME).get("analysis")) and a["phase"] == "Baking" and a, 180, "the bake"
        )
        assert baking["baseline"]["requests"] >= 20 and baking["baseline"]["p95Milliseconds"] < 30, baking
        status = bake.wait_phase(NS, NAME, "RolledBack", timeout=120, generation=generation)
        rollback, analysis = status["rollback"], status["analysis"]
        assert rollback["reason"] == "AnalysisFailed" and analysis["phase"] == "Failed", status
        assert f"ms > 30 ms for {CONSECUTIVE} of {CONSECUTIVE} intervals" in rollback["message"], rollback
        took = epoch(rollback["time"]) - epoch(analysis["startTime"])
        assert took <= INTERVAL * CONSECUTIVE + 10, f"rolled back {took:.0f} s after the bake began"
        wait_for(lambda: len(bake.ready_pods(NS, NAME)) == 2, 120, "the known good pods serving again")
        time.sleep(2)
    load.assert_flowed()
    events = bake.events(NS, NAME)
    assert any(e["reason"] == "AnalysisFailed" and "for 3 of 3 intervals" in e["message"] for e in events), events
    print(f"\nrolled back {took:.0f} s after the bake began: {rollback['message']}; {len(load.results)} requests")


def test_a_healthy_revision_under_the_same_load_passes_its_bake_and_becomes_known_good(bake):
    with Load(bake.cluster_ip(NS, NAME)) as load:
        time.sleep(2 * INTERVAL)
        generation = patch(bake, {"runtime": {"batching": {"maxQueueDelayMicroseconds": 0, "maxBatchSize": 8}}})

        def passed():
            s = bake.status(NS, NAME)
            a = s.get("analysis") or {}
            return s.get("observedGeneration") == generation and a.get("phase") == "Passed" and s

        status = wait_for(passed, 240, "the bake passed")
        time.sleep(1)
    assert status["lastKnownGood"]["generation"] == generation, status
    assert status["phase"] == "Ready" and status["rollbackCount"] == 1
    assert "within the limits" in status["analysis"]["message"]
    load.assert_flowed()
    events = bake.events(NS, NAME)
    assert any(e["reason"] == "AnalysisPassed" for e in events), events
