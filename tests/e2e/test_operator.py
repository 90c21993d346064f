"""The operator end to end: `kubectl apply` a ModelDeployment, watch what appears in the cluster."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from .support import GROUP, PLURAL, ROOT, VERSION, set_pod_ready, wait_for

CHILD_KINDS = ("deployment", "service", "networkpolicy", "poddisruptionbudget", "horizontalpodautoscaler")


def cpu_model(name: str, **spec) -> dict:
    base = {"model": {"uri": "file:///models/m.onnx"}, "resources": {"gpu": 0, "requests": {"cpu": "500m"}}}
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": base}


def apply(kctl, namespace: str, manifest: dict) -> None:
    kctl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def get_cr(custom, namespace: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def status_of(custom, namespace: str, name: str) -> dict:
    return get_cr(custom, namespace, name).get("status") or {}


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def children(kctl, namespace: str) -> dict[str, list[str]]:
    out = kctl("get", ",".join(CHILD_KINDS), "-n", namespace, "-o", "json").stdout
    found: dict[str, list[str]] = {}
    for item in json.loads(out)["items"]:
        found.setdefault(item["kind"], []).append(item["metadata"]["name"])
    return found


def make_pods_ready(core, namespace: str, name: str) -> int:
    pods = core.list_namespaced_pod(namespace, label_selector=f"modeldeploy.dev/name={name}").items
    for pod in pods:
        if not pod.metadata.deletion_timestamp:
            set_pod_ready(core, pod)
    return len(pods)


def test_create_makes_every_child_owned_by_the_resource(operator, namespace, kctl, custom, apps, core):
    apply(kctl, namespace, cpu_model("m1", replicas=2, autoscaling={"enabled": False}))
    found = wait_for(lambda: (c := children(kctl, namespace)) and len(c) == 4 and c, 20, "the children")
    assert found == {"Deployment": ["m1"], "Service": ["m1"], "NetworkPolicy": ["m1"], "PodDisruptionBudget": ["m1"]}
    uid = get_cr(custom, namespace, "m1")["metadata"]["uid"]
    dep = apps.read_namespaced_deployment("m1", namespace)
    assert [(r.kind, r.uid, r.controller) for r in dep.metadata.owner_references] == [("ModelDeployment", uid, True)]
    container = dep.spec.template.spec.containers[0]
    assert container.image == "registry.local/modeldeploy/runtime:test"
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.security_context.read_only_root_filesystem is True
    # maxSurge auto: pods without GPUs always surge by one; one of the two may be unavailable.
    assert (dep.spec.strategy.rolling_update.max_surge, dep.spec.strategy.rolling_update.max_unavailable) == (1, 1)

    status = wait_for(
        lambda: (s := status_of(custom, namespace, "m1")).get("phase") == "Progressing" and s, 20, "phase Progressing"
    )
    assert status["observedGeneration"] == 1
    assert condition(status, "Ready")["status"] == "False"
    wait_for(lambda: make_pods_ready(core, namespace, "m1") == 2, 20, "two pods to play kubelet for")
    status = wait_for(lambda: (s := status_of(custom, namespace, "m1")).get("phase") == "Ready" and s, 20, "Ready")
    assert status["ready"] == "2/2"
    assert condition(status, "Ready")["status"] == "True"
    assert status["endpoint"] == f"http://m1.{namespace}.svc:8080"
    header, row = (line.split() for line in kctl("get", "mdep", "m1", "-n", namespace).stdout.splitlines()[:2])
    assert header == [
        "NAME", "MODEL", "FORMAT", "READY", "PHASE", "REVISION", "PROVIDER", "PRECISION", "GPU", "WARMUP-P95-MS", "AGE"
    ]  # fmt: skip
    assert row[:5] == ["m1", "m1", "onnx", "2/2", "Ready"]
    events = kctl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=m1").stdout
    assert "RolloutComplete" in events


def test_spec_change_rolls_a_new_replicaset_and_generation_follows(operator, namespace, kctl, custom, apps, core):
    apply(kctl, namespace, cpu_model("m2"))
    wait_for(lambda: make_pods_ready(core, namespace, "m2") == 1, 20, "a pod")
    wait_for(lambda: status_of(custom, namespace, "m2").get("phase") == "Ready", 20, "Ready")
    apply(kctl, namespace, cpu_model("m2", runtime={"batching": {"maxBatchSize": 4}}))

    def rolled():
        rs = apps.list_namespaced_replica_set(namespace, label_selector="modeldeploy.dev/name=m2").items
        return len(rs) == 2 and rs

    wait_for(rolled, 20, "a second ReplicaSet")
    # The status of the reconcile that applied generation 2 may predate the controller's revision
    # bump (the old pod now serves until the surge pod is ready): the next one reports it.
    wait_for(
        lambda: (s := status_of(custom, namespace, "m2")).get("observedGeneration") == 2 and s.get("revision") == 2,
        20,
        "observedGeneration 2 at revision 2",
    )
    env = apps.read_namespaced_deployment("m2", namespace).spec.template.spec.containers[0].env
    assert {"MODELDEPLOY_MAX_BATCH_SIZE": "4"}.items() <= {e.name: e.value for e in env}.items()


def test_scale_subresource_scales_the_deployment(operator, namespace, kctl, apps):
    apply(kctl, namespace, cpu_model("m3"))
    wait_for(lambda: apps.read_namespaced_deployment("m3", namespace), 20, "the Deployment")
    kctl("scale", "mdep", "m3", "-n", namespace, "--replicas=3")
    wait_for(lambda: apps.read_namespaced_deployment("m3", namespace).spec.replicas == 3, 20, "3 replicas")


def test_children_switched_off_are_deleted_and_come_back(operator, namespace, kctl, apps):
    apply(kctl, namespace, cpu_model("m4"))
    wait_for(lambda: "NetworkPolicy" in children(kctl, namespace), 20, "the NetworkPolicy")
    apply(
        kctl,
        namespace,
        cpu_model(
            "m4",
            networkPolicy={"enabled": False},
            podDisruptionBudget={"enabled": False},
            autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 5},
        ),
    )
    found = wait_for(
        lambda: (
            (c := children(kctl, namespace))
            and "NetworkPolicy" not in c
            and "PodDisruptionBudget" not in c
            and "HorizontalPodAutoscaler" in c
            and c
        ),
        20,
        "NetworkPolicy and PDB gone, HPA there",
    )
    assert found["HorizontalPodAutoscaler"] == ["m4"]
    hpa = json.loads(kctl("get", "hpa", "m4", "-n", namespace, "-o", "json").stdout)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    managers = apps.read_namespaced_deployment("m4", namespace).metadata.managed_fields
    ours = [m for m in managers if m.manager == "modeldeploy-operator"]
    assert ours and all("f:replicas" not in json.dumps(m.fields_v1.get("f:spec", {})) for m in ours), (
        "with an HPA the operator must not own spec.replicas"
    )
    apply(kctl, namespace, cpu_model("m4"))
    wait_for(
        lambda: (
            (c := children(kctl, namespace))
            and "NetworkPolicy" in c
            and "PodDisruptionBudget" in c
            and "HorizontalPodAutoscaler" not in c
        ),
        20,
        "NetworkPolicy and PDB back, HPA gone",
    )


def test_switching_autoscaling_on_keeps_the_pods_until_the_hpa_takes_over(operator, namespace, kctl, apps):
    """Server-side apply drops a field its manager stops sending, and a Deployment without replicas
    has one: without a handover, 3 replicas would fall to 1, then the HPA would scale to its minimum."""
    import threading
    import time

    apply(kctl, namespace, cpu_model("m-hpa", replicas=3))
    wait_for(lambda: apps.read_namespaced_deployment("m-hpa", namespace).spec.replicas == 3, 20, "3 replicas")
    seen: list[int] = []
    stop = threading.Event()

    def record() -> None:
        while not stop.is_set():
            seen.append(apps.read_namespaced_deployment("m-hpa", namespace).spec.replicas)
            time.sleep(0.05)

    recorder = threading.Thread(target=record)
    recorder.start()
    try:
        apply(kctl, namespace, cpu_model("m-hpa", replicas=3, autoscaling={"enabled": True, "minReplicas": 2}))
        wait_for(lambda: "HorizontalPodAutoscaler" in children(kctl, namespace), 20, "the HPA")
        time.sleep(3)  # the HPA controller syncs a new HPA at once
    finally:
        stop.set()
        recorder.join(10)
    assert seen and set(seen) == {3}, f"replicas seen during the switch: {sorted(set(seen))}"
    managers = apps.read_namespaced_deployment("m-hpa", namespace).metadata.managed_fields
    assert not any(
        m.manager == "modeldeploy-operator" and "f:replicas" in json.dumps(m.fields_v1.get("f:spec", {}))
        for m in managers
    ), "with an HPA the operator must not own spec.replicas"


def test_delete_garbage_collects_every_child(operator, namespace, kctl):
    apply(kctl, namespace, cpu_model("m5", autoscaling={"enabled": True}))
    wait_for(lambda: len(children(kctl, namespace)) == 5, 20, "five children")
    kctl("delete", "mdep", "m5", "-n", namespace, "--wait=true", "--timeout=30s")
    left: dict = {}

    def collected() -> bool:
        left.clear()
        left.update(children(kctl, namespace))
        return not left

    try:
        wait_for(collected, 30, "every child garbage-collected")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still there: {left}") from None


def test_drift_is_restored(operator, namespace, kctl, apps):
    apply(kctl, namespace, cpu_model("m6"))
    wait_for(lambda: len(children(kctl, namespace)) == 4, 20, "the children")
    kctl("delete", "service", "m6", "-n", namespace)
    kctl("set", "image", "deployment/m6", "runtime=evil/image:1", "-n", namespace)
    kctl(
        "patch",
        "networkpolicy",
        "m6",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/ingress","value":[{}]}]',
    )
    wait_for(lambda: "Service" in children(kctl, namespace), 20, "the Service restored")
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("m6", namespace).spec.template.spec.containers[0].image
            == "registry.local/modeldeploy/runtime:test"
        ),
        20,
        "the image restored",
    )
    policy = json.loads(kctl("get", "networkpolicy", "m6", "-n", namespace, "-o", "json").stdout)
    wait_for(
        lambda: (
            json.loads(kctl("get", "networkpolicy", "m6", "-n", namespace, "-o", "json").stdout)["spec"]["ingress"][
                0
            ].get("from")
            == [{"podSelector": {}}]
        ),
        20,
        f"ingress restored (was {policy['spec']})",
    )


WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def writes_in(cluster, namespace: str, since: int) -> list[str]:
    """Writes to objects in `namespace` audited after the first `since` audit events, except the
    controller-manager's own (it owns Deployment and ReplicaSet status)."""
    out = []
    for event in cluster.audited()[since:]:
        ref = event.get("objectRef") or {}
        if (
            event.get("verb") in WRITE_VERBS
            and ref.get("namespace") == namespace
            and "kube-controller-manager" not in event.get("userAgent", "")
        ):
            out.append(f"{event['verb']} {ref.get('resource')}/{ref.get('subresource', '')} {ref.get('name', '')}")
    return out


def operator_reads_in(cluster, namespace: str, since: int) -> list[str]:
    """Reads (GET, LIST) by the operator's own code of objects in `namespace`, audited after the
    first `since` events; kopf's watches (another client) are not among them."""
    out = []
    for event in cluster.audited()[since:]:
        ref = event.get("objectRef") or {}
        if (
            event.get("verb") in ("get", "list")
            and ref.get("namespace") == namespace
            and "OpenAPI-Generator" in event.get("userAgent", "")
        ):
            out.append(f"{event['verb']} {ref.get('resource')} {ref.get('name', '')}")
    return out


def test_in_sync_resync_reads_and_writes_nothing(operator, cluster, namespace, kctl, custom, core):
    apply(kctl, namespace, cpu_model("m7"))
    wait_for(lambda: make_pods_ready(core, namespace, "m7") == 1, 20, "a pod")
    wait_for(lambda: status_of(custom, namespace, "m7").get("phase") == "Ready", 20, "Ready")
    reconciles = operator.metric("modeldeploy_operator_reconciles_total", result="ok")
    wait_for(
        lambda: operator.metric("modeldeploy_operator_reconciles_total", result="ok") > reconciles,
        10,
        "a reconcile to settle",
    )
    since = len(cluster.audited())
    reconciles = operator.metric("modeldeploy_operator_reconciles_total", result="ok")
    resources = len(custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
    # Every resource in the cluster is resynced every 3 s: twice that many reconciles cover m7 twice.
    wait_for(
        lambda: operator.metric("modeldeploy_operator_reconciles_total", result="ok") >= reconciles + 2 * resources + 1,
        15,
        "the resource reconciled twice more (resync every 3 s)",
    )
    assert writes_in(cluster, namespace, since) == []
    assert operator_reads_in(cluster, namespace, since) == []


def test_operator_restart_converges_without_duplicates(cluster, tmp_path, namespace, kctl, custom, operator):
    operator.kill()
    try:
        apply(kctl, namespace, cpu_model("m8"))
        apply(kctl, namespace, cpu_model("m9", autoscaling={"enabled": True}))
        operator.start()
        wait_for(lambda: len(children(kctl, namespace).get("Deployment", [])) == 2, 20, "both Deployments")
        operator.kill()  # killed mid-way, then back
        operator.start()
        found = wait_for(
            lambda: (c := children(kctl, namespace)) and sum(map(len, c.values())) == 9 and c, 20, "all nine children"
        )
        assert {k: sorted(v) for k, v in found.items()} == {
            "Deployment": ["m8", "m9"],
            "Service": ["m8", "m9"],
            "NetworkPolicy": ["m8", "m9"],
            "PodDisruptionBudget": ["m8", "m9"],
            "HorizontalPodAutoscaler": ["m9"],
        }
        for name in ("m8", "m9"):
            wait_for(lambda n=name: status_of(custom, namespace, n).get("observedGeneration") == 1, 20, "status")
    finally:
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_apply_cleanly_and_reconcile(operator, namespace, kctl, core, custom, example: Path):
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "resnet50-token"}, "stringData": {"token": "s3cret"}}
    )
    kctl("apply", "-n", namespace, "-f", str(example))
    for doc in yaml.safe_load_all(example.read_text()):
        name = doc["metadata"]["name"]
        status = wait_for(
            lambda n=name: (s := status_of(custom, namespace, n)).get("observedGeneration") and s,
            20,
            f"{name} reconciled",
        )
        assert condition(status, "Degraded")["status"] == "False", status
        assert "Deployment" in children(kctl, namespace)


def test_operator_serves_metrics_and_liveness(operator):
    with urllib.request.urlopen(operator.health_url, timeout=2) as resp:
        assert resp.status == 200
    assert operator.metric("modeldeploy_operator_reconcile_duration_seconds_count") >= 0
