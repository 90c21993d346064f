"""The golden set gate end to end on a real node: golden sets written on this machine with
`modeldeploy validate --write-golden` from the digits model the runtime image carries, served to
the pods over HTTP by a pod of the cluster, and a ModelDeployment updated first to a golden set
its model agrees with (it rolls out and becomes the known good revision), then to one it
disagrees with (the runtime refuses readiness and the operator rolls back, with the figures in
status and in the Events)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from e2e.support import ROOT, wait_for
from modeldeploy_runtime.tools import validate_cli

from . import kit

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(900)]
NS = "golden"
NAME = "digits"
FILES = "golden-files"
MODEL = ROOT / "examples" / "models" / "digits-mlp.onnx"  # the file the image has at /opt/modeldeploy/models
SAMPLES = 64
WRONG = 24  # samples whose expected class is shifted: 40 of 64 agree, 0.625


def golden_sets(workdir: Path) -> dict[str, Path]:
    good = workdir / "good.npz"
    argv = [str(MODEL), "--write-golden", str(good), "--samples", str(SAMPLES), "--input-range", "0,16"]
    assert validate_cli.main(argv) == 0
    with np.load(good) as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    # Expected classes of some samples moved by one, as from a trusted model with another class order.
    arrays["output:label"][:WRONG] = (arrays["output:label"][:WRONG] + 1) % 10
    arrays["output:probabilities"][:WRONG] = np.roll(arrays["output:probabilities"][:WRONG], 1, axis=1)
    bad = workdir / "bad.npz"
    np.savez(bad, **arrays)
    return {"good": good, "bad": bad}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_server(cluster: kit.Cluster, image: str, files: dict[str, Path]) -> str:
    """A pod of the runtime image serving the files (from a ConfigMap) over HTTP; its base URL."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": FILES},
        "binaryData": {p.name: base64.b64encode(p.read_bytes()).decode() for p in files.values()},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": FILES, "labels": {"app": FILES}},
        "spec": {
            "containers": [
                {
                    "name": "http",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-m", "http.server", "8000", "--directory", "/files"],
                    "ports": [{"containerPort": 8000}],
                    "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "files", "mountPath": "/files", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "files", "configMap": {"name": FILES}}],
        },
    }
    for manifest in (configmap, pod):
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(manifest))

    def ready_ip():
        status = cluster.get("pod", FILES, NS).get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        return ready and status.get("podIP")

    return f"http://{wait_for(ready_ip, 120, 'the file server pod Ready')}:8000"


@pytest.fixture(scope="module")
def golden(cluster, built_images, tmp_path_factory):
    cluster.kubectl("create", "namespace", NS)
    doc = yaml.safe_load(kit.EXAMPLE.read_text())
    spec = copy.deepcopy(doc)
    spec["spec"]["replicas"] = 1
    # The gate before ready is under test, not the bake after it: without analysis a revision that
    # passes its golden set is known good as soon as it is available.
    spec["spec"].setdefault("rollout", {})["analysis"] = {"enabled": False}
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(spec))
    files = golden_sets(tmp_path_factory.mktemp("golden"))
    base = file_server(cluster, built_images["runtime-cpu"], files)
    yield cluster, base, files
    cluster.kubectl("delete", "namespace", NS, "--wait=false")


def patch(cluster: kit.Cluster, spec: dict) -> int:
    out = cluster.kubectl(
        "patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": spec}), "-o", "json"
    )
    return json.loads(out)["metadata"]["generation"]


def golden_env(cluster: kit.Cluster) -> str | None:
    container = cluster.get("deployment", NAME, NS)["spec"]["template"]["spec"]["containers"][0]
    return next((e.get("value") for e in container["env"] if e["name"] == "MODELDEPLOY_GOLDEN_SET_PATH"), None)


def assert_answers(cluster: kit.Cluster) -> None:
    wait_for(lambda: len(cluster.ready_pods(NS, NAME)) == 1, 120, "1 Ready pod")
    host = cluster.cluster_ip(NS, NAME)
    for i in range(5):
        pixels, label = kit.digit(i)
        status, body = kit.infer(host, pixels)
        assert status == 200 and kit.label_of(body) == label, body


def test_a_golden_set_the_model_agrees_with_rolls_out_and_becomes_known_good(golden):
    cluster, base, files = golden
    cluster.wait_phase(NS, NAME, "Ready", timeout=180)
    good = files["good"]
    generation = patch(cluster, {"model": {"goldenSet": {"uri": f"{base}/{good.name}", "sha256": sha256(good)}}})
    status = cluster.wait_phase(NS, NAME, "Ready", timeout=180, generation=generation)
    wait_for(
        lambda: cluster.status(NS, NAME).get("lastKnownGood", {}).get("generation") == generation,
        60,
        f"generation {generation} known good",
    )
    assert status.get("rollback") is None, status
    assert golden_env(cluster) == f"{base}/{good.name}"
    assert_answers(cluster)


def test_a_golden_set_the_model_disagrees_with_is_refused_and_rolled_back_with_the_figures(golden):
    cluster, base, files = golden
    bad = files["bad"]
    generation = patch(cluster, {"model": {"goldenSet": {"uri": f"{base}/{bad.name}", "sha256": sha256(bad)}}})
    status = cluster.wait_phase(NS, NAME, "RolledBack", timeout=240, generation=generation)
    rollback = status["rollback"]
    assert rollback["reason"] == "GoldenSetMismatch" and rollback["failedGeneration"] == generation, rollback
    figures = (
        'golden set mismatch: output "label" top-1 agreement 0.62 < 0.99; '
        f'output "probabilities" top-1 agreement 0.62 < 0.99 on {SAMPLES} inputs'
    )
    assert rollback["message"] == figures, rollback
    assert "GoldenSetMismatch" in cluster.kubectl("describe", "mdep", NAME, "-n", NS)
    events = [e for e in cluster.events(NS, NAME) if e["reason"] == "GoldenSetMismatch"]
    assert events and figures in events[-1]["message"] and events[-1]["type"] == "Warning", events
    # The known good template (with the golden set it agrees with) is back, and serves.
    wait_for(lambda: golden_env(cluster) == f"{base}/{files['good'].name}", 30, "the known good template applied")
    assert_answers(cluster)
