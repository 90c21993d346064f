"""Bad input: refused by the server where the schema can say it, reported in status by the operator
where only it can judge, and never breaking what already serves."""

from __future__ import annotations

import json

import pytest

from .support import wait_for
from .test_operator import apply, children, condition, cpu_model, make_pods_ready, status_of


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"model": {"uri": "ftp://example.com/m.onnx"}}, "spec.model.uri"),
        ({"replicas": -1}, "spec.replicas"),
        ({"model": {"format": "pytorch"}}, "spec.model.format"),
        ({"runtime": {"batching": {"maxBatchSize": 0}}}, "spec.runtime.batching.maxBatchSize"),
        ({"resources": {"gpu": 0, "requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu"),
        ({"model": {"uri": "https://example.com/m.onnx", "sha256": "abc"}}, "spec.model.sha256"),
    ],
)
def test_schema_refuses_invalid_resources_naming_the_field(cluster, namespace, kctl, patch, field):
    result = kctl("apply", "-n", namespace, "-f", "-", input=json.dumps(cpu_model("bad", **patch)), check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("patch", "reason", "field"),
    [
        (
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
            "InvalidSpec",
            "spec.autoscaling.minReplicas",
        ),
        (
            {
                "model": {"format": "tensorrt", "uri": "/models/m.plan"},
                "resources": {"gpu": 1},
                "runtime": {"backend": "onnxruntime"},
            },
            "InvalidSpec",
            "spec.runtime.backend",
        ),
        ({"resources": {"gpu": 1, "gpuProduct": "a100"}}, "InvalidSpec", "spec.resources.gpuProduct"),
        ({"model": {"uri": "https://example.com/m.onnx"}}, "InvalidSpec", "spec.model.sha256"),
        ({"auth": {"secretName": "missing-token"}}, "AuthSecretInvalid", "spec.auth.secretName"),
    ],
)
def test_operator_reports_what_only_it_can_judge_and_builds_nothing(
    operator, namespace, kctl, custom, patch, reason, field
):
    apply(kctl, namespace, cpu_model("judged", **patch))
    status = wait_for(lambda: (s := status_of(custom, namespace, "judged")).get("phase") and s, 20, "a status")
    degraded = condition(status, "Degraded")
    assert (status["phase"], degraded["status"], degraded["reason"]) == ("Degraded", "True", reason)
    assert field in degraded["message"]
    assert condition(status, "Ready")["status"] == "False"
    assert children(kctl, namespace) == {}
    events = wait_for(
        lambda: (
            kctl("get", "events", "-n", namespace, "-o", "json").stdout.count(reason)
            and json.loads(kctl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        ),
        10,
        "an event",
    )
    assert any(e["type"] == "Warning" and e["reason"] == reason for e in events)
    described = kctl("describe", "mdep", "judged", "-n", namespace).stdout
    assert field in described


def test_auth_secret_created_later_unblocks_the_resource(operator, namespace, kctl, core, custom):
    apply(kctl, namespace, cpu_model("later", auth={"secretName": "late-token"}))
    wait_for(
        lambda: condition(status_of(custom, namespace, "later"), "Degraded").get("reason") == "AuthSecretInvalid",
        20,
        "AuthSecretInvalid",
    )
    core.create_namespaced_secret(namespace, {"metadata": {"name": "late-token"}, "stringData": {"token": "t0k"}})
    wait_for(lambda: "Deployment" in children(kctl, namespace), 20, "the Deployment once the Secret exists")
    env = json.loads(kctl("get", "deployment", "later", "-n", namespace, "-o", "json").stdout)
    token = next(
        e for e in env["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "MODELDEPLOY_AUTH_TOKEN"
    )
    assert token["valueFrom"]["secretKeyRef"] == {"name": "late-token", "key": "token"}
    wait_for(
        lambda: condition(status_of(custom, namespace, "later"), "Degraded").get("status") == "False",
        20,
        "Degraded cleared",
    )


def test_bad_update_never_breaks_what_is_serving(operator, namespace, kctl, core, custom, apps):
    apply(kctl, namespace, cpu_model("serving"))
    wait_for(lambda: make_pods_ready(core, namespace, "serving") == 1, 20, "a pod")
    wait_for(lambda: status_of(custom, namespace, "serving").get("phase") == "Ready", 20, "Ready")
    template_before = apps.read_namespaced_deployment("serving", namespace).spec.template.to_dict()
    apply(kctl, namespace, cpu_model("serving", runtime={"precision": "int8"}))  # int8 needs a GPU
    status = wait_for(
        lambda: (s := status_of(custom, namespace, "serving")).get("observedGeneration") == 2 and s,
        20,
        "generation 2 judged",
    )
    assert condition(status, "Degraded")["status"] == "True"
    assert "spec.runtime.precision" in condition(status, "Degraded")["message"]
    assert condition(status, "Ready")["status"] == "True", "the old pods still serve"
    assert apps.read_namespaced_deployment("serving", namespace).spec.template.to_dict() == template_before
