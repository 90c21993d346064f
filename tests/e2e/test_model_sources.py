"""The pre-flight check of s3:// models, on the real control plane against moto's S3 server (IAM
authentication on): a source that cannot work is Degraded with the reason and the field to fix, an
Event says so, and no Deployment is created; fixing the spec lets it proceed."""

from __future__ import annotations

import base64
import sys

import pytest

from .support import ROOT, wait_for
from .test_operator import apply, children, condition, cpu_model, status_of
from .test_refusals import events_of

sys.path.insert(0, str(ROOT / "hack"))
from objectstores import MotoS3  # noqa: E402
from ports import free_port  # noqa: E402

pytest.importorskip("boto3")
pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def moto():
    server = MotoS3().start()
    server.put("models", "digits/m.onnx", b"not really a model: the operator never reads it")
    server.put("models", "ir/m.xml", b"<?xml version='1.0'?><net/>")  # an OpenVINO IR without its .bin
    yield server
    server.stop()


def secret(kctl, namespace: str, name: str, **data: str) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    apply(kctl, namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded})


def s3_model(moto, uri: str = "s3://models/digits/m.onnx", endpoint: str | None = None, **model) -> dict:
    s3 = {"endpoint": endpoint or moto.endpoint, "region": moto.region, "addressing": "path"}
    return cpu_model("m", model={"uri": uri, "s3": s3, **model})


def degraded(custom, namespace: str, reason: str, generation: int = 1) -> dict:
    return wait_for(
        lambda: (
            (s := status_of(custom, namespace, "m")).get("observedGeneration") == generation
            and condition(s, "Degraded").get("reason") == reason
            and s
        ),
        30,
        f"generation {generation} Degraded with {reason}",
    )


CASES = {
    # name -> (uri, secret data or None for no Secret, endpoint or None, reason, field, words of the fix)
    "wrong-key": (
        "s3://models/digits/nothing.onnx",
        "good",
        None,
        "ModelSourceNotFound",
        "spec.model.uri",
        "fix the key in the URI",
    ),
    "missing-bucket": (
        "s3://no-such-bucket/m.onnx",
        "good",
        None,
        "ModelSourceNotFound",
        "spec.model.uri",
        "bucket 'no-such-bucket' does not exist",
    ),
    "wrong-secret": (
        "s3://models/digits/m.onnx",
        "wrong",
        None,
        "ModelSourceInvalidCredentials",
        "spec.model.credentials.secretName",
        "put valid AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in it",
    ),
    "secret-missing-a-key": (
        "s3://models/digits/m.onnx",
        "partial",
        None,
        "ModelSourceSecretInvalid",
        "spec.model.credentials.secretName",
        "has no (or an empty) AWS_SECRET_ACCESS_KEY",
    ),
    "no-such-secret": (
        "s3://models/digits/m.onnx",
        None,
        None,
        "ModelSourceSecretInvalid",
        "spec.model.credentials.secretName",
        "does not exist in this namespace",
    ),
    "unreachable-endpoint": (
        "s3://models/digits/m.onnx",
        "good",
        "closed",
        "ModelSourceUnreachable",
        "spec.model.s3.endpoint",
        "cannot be reached from the operator",
    ),
}


@pytest.mark.parametrize("uri, data, endpoint, reason, field, fix", CASES.values(), ids=CASES.keys())
def test_a_source_that_cannot_work_builds_nothing_and_says_why(
    operator, namespace, kctl, custom, moto, uri, data, endpoint, reason, field, fix
):
    keys = moto.keys.env()
    if data == "wrong":
        keys["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    if data == "partial":
        keys.pop("AWS_SECRET_ACCESS_KEY")
    if data is not None:
        secret(kctl, namespace, "s3-credentials", **keys)
    closed = f"http://127.0.0.1:{free_port()}" if endpoint == "closed" else None
    apply(kctl, namespace, s3_model(moto, uri, closed, credentials={"secretName": "s3-credentials"}))
    status = degraded(custom, namespace, reason)
    message = condition(status, "Degraded")["message"]
    assert f"{field}: " in message and fix in message, message
    assert status["phase"] == "Degraded"
    assert moto.keys.secret_access_key not in message  # nothing of the Secret is shown
    warnings = wait_for(
        lambda: [e for e in events_of(kctl, namespace, "m") if (e["reason"], e["type"]) == (reason, "Warning")],
        20,
        f"a {reason} Warning Event",
    )
    assert field in warnings[0]["message"]
    assert "Deployment" not in children(kctl, namespace)


def test_an_openvino_ir_without_its_bin_builds_nothing(operator, namespace, kctl, custom, moto):
    secret(kctl, namespace, "s3-credentials", **moto.keys.env())
    credentials = {"secretName": "s3-credentials"}
    apply(kctl, namespace, s3_model(moto, "s3://models/ir/m.xml", format="openvino", credentials=credentials))
    message = condition(degraded(custom, namespace, "ModelSourceNotFound"), "Degraded")["message"]
    assert "spec.model.uri: " in message and "no object 'ir/m.bin' in bucket 'models'" in message, message
    assert "Deployment" not in children(kctl, namespace)
    moto.put("models", "ir/m.bin", b"\0" * 16)
    # A failed check is asked again at the next reconcile: a spec change brings it at once.
    apply(kctl, namespace, s3_model(moto, "s3://models/ir/m.xml", format="openvino", credentials=credentials,
                                    name="ir"))  # fmt: skip
    wait_for(lambda: "Deployment" in children(kctl, namespace), 30, "the Deployment, once the .bin is there")


def test_fixing_the_spec_lets_it_proceed(operator, namespace, kctl, custom, moto):
    secret(kctl, namespace, "s3-credentials", **moto.keys.env())
    credentials = {"secretName": "s3-credentials"}
    apply(kctl, namespace, s3_model(moto, "s3://models/digits/typo.onnx", credentials=credentials))
    degraded(custom, namespace, "ModelSourceNotFound")
    assert "Deployment" not in children(kctl, namespace)
    apply(kctl, namespace, s3_model(moto, credentials=credentials))
    wait_for(lambda: "Deployment" in children(kctl, namespace), 30, "the Deployment, once the key is right")
    status = wait_for(
        lambda: (s := status_of(custom, namespace, "m")).get("observedGeneration") == 2 and s, 20, "generation 2"
    )
    assert condition(status, "Degraded")["status"] == "False"
    pod = kctl("get", "deployment", "m", "-n", namespace, "-o", "jsonpath={.spec.template.spec.containers[0].env}")
    env = pod.stdout
    assert "MODELDEPLOY_S3_ENDPOINT" in env and '"secretKeyRef":{"key":"AWS_SECRET_ACCESS_KEY"' in env.replace(" ", "")


def test_pod_identity_is_checked_only_as_far_as_the_operator_can(operator, namespace, kctl, custom, moto):
    apply(
        kctl, namespace, {**s3_model(moto), "spec": {**s3_model(moto)["spec"], "serviceAccountName": "models-reader"}}
    )
    wait_for(lambda: "Deployment" in children(kctl, namespace), 30, "the Deployment")
    events = wait_for(
        lambda: [e for e in events_of(kctl, namespace, "m") if e["reason"] == "ModelSourcePartlyChecked"],
        20,
        "the note of what was not checked",
    )
    assert "ServiceAccount 'models-reader'" in events[0]["message"]
    assert "checked only when a pod starts" in events[0]["message"]
    sa = kctl("get", "deployment", "m", "-n", namespace, "-o", "jsonpath={.spec.template.spec.serviceAccountName}")
    assert sa.stdout == "models-reader"


@pytest.fixture(scope="module")
def gcs():
    pytest.importorskip("google.cloud.storage")
    from objectstores import FakeGcs

    server = FakeGcs().start()
    server.put("gcs-models", "m.onnx", b"not really a model")
    yield server
    server.stop()


@pytest.mark.parametrize(
    "uri, words",
    [
        ("gs://gcs-models/nothing.onnx", "no object 'nothing.onnx' in bucket 'gcs-models'"),
        ("gs://no-such-bucket/m.onnx", "bucket 'no-such-bucket' does not exist"),
    ],
    ids=["wrong-key", "missing-bucket"],
)
def test_a_gcs_source_that_cannot_work_builds_nothing(operator, namespace, kctl, custom, gcs, uri, words):
    apply(kctl, namespace, cpu_model("m", model={"uri": uri, "gcs": {"endpoint": gcs.endpoint}}))
    status = degraded(custom, namespace, "ModelSourceNotFound")
    message = condition(status, "Degraded")["message"]
    assert "spec.model.uri: " in message and words in message, message
    assert "Deployment" not in children(kctl, namespace)
    apply(kctl, namespace, cpu_model("m", model={"uri": "gs://gcs-models/m.onnx", "gcs": {"endpoint": gcs.endpoint}}))
    wait_for(lambda: "Deployment" in children(kctl, namespace), 30, "the Deployment, once the URI is right")
