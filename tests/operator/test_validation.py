"""What only the operator can judge: each problem names the field and says how to fix it; valid
specs have none; the auth Secret is checked as read from the API."""

from __future__ import annotations

import base64

import pydantic
import pytest
from modeldeploy_operator import api
from modeldeploy_operator.validation import Problem, check_auth_secret, validate_spec
from operator_helpers import EVERYTHING_ON, example_docs, make_spec

CPU = {"resources": {"gpu": 0}}
SCALED = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}

# id -> (spec, field named, words of the fix)
PROBLEMS = {
    "url-without-sha256": ({"model": {"uri": "https://e.com/m.onnx"}}, "spec.model.sha256", "sha256sum"),
    "engine-on-onnxruntime": (
        {"model": {"format": "tensorrt"}, "runtime": {"backend": "onnxruntime"}},
        "spec.runtime.backend",
        "set spec.runtime.backend to tensorrt",
    ),
    "onnx-on-tensorrt": (
        {"model": {"format": "onnx"}, "runtime": {"backend": "tensorrt"}},
        "spec.runtime.backend",
        "modeldeploy optimize --engine",
    ),
    "engine-without-gpu": (
        {"model": {"format": "tensorrt"}, **CPU},
        "spec.resources.gpu",
        "set spec.resources.gpu to 1",
    ),
    "fp16-on-cpu": ({"runtime": {"precision": "fp16"}, **CPU}, "spec.runtime.precision", "set spec.resources.gpu >= 1"),
    "int8-on-cpu": ({"runtime": {"precision": "int8"}, **CPU}, "spec.runtime.precision", "modeldeploy optimize --int8"),
    "bf16-on-onnxruntime": ({"runtime": {"precision": "bf16"}, **CPU}, "spec.runtime.precision", "backend openvino"),
    "ir-on-onnxruntime": (
        {"model": {"format": "openvino", "uri": "/m/model.xml"}, "runtime": {"backend": "onnxruntime"}, **CPU},
        "spec.runtime.backend",
        "set spec.runtime.backend to openvino or auto",
    ),
    "tflite-on-onnxruntime": (
        {"model": {"format": "tflite", "uri": "/m.tflite"}, "runtime": {"backend": "onnxruntime"}, **CPU},
        "spec.runtime.backend",
        "set spec.runtime.backend to litert, or omit it",
    ),
    "tflite-on-openvino": (
        {"model": {"format": "tflite", "uri": "/m.tflite"}, "runtime": {"backend": "openvino"}, **CPU},
        "spec.runtime.backend",
        "backend openvino cannot serve spec.model.format tflite",
    ),
    "tflite-on-tensorrt": (
        {
            "model": {"format": "tflite", "uri": "/m.tflite"},
            "runtime": {"backend": "tensorrt"},
            "resources": {"gpu": 1},
        },
        "spec.runtime.backend",
        "set spec.runtime.backend to litert",
    ),
    "onnx-on-litert": (
        {"runtime": {"backend": "litert"}, **CPU},
        "spec.runtime.backend",
        "set spec.runtime.backend to onnxruntime or openvino or auto",
    ),
    "ir-on-litert": (
        {"model": {"format": "openvino", "uri": "/m/model.xml"}, "runtime": {"backend": "litert"}, **CPU},
        "spec.runtime.backend",
        "litert cannot read an OpenVINO IR",
    ),
    "ir-not-xml": (
        {"model": {"format": "openvino", "uri": "pvc://models/model.onnx"}, **CPU},
        "spec.model.uri",
        "give the URI of the .xml",
    ),
    "ir-at-fp16": (
        {
            "model": {"format": "openvino", "uri": "/m/model.xml"},
            "runtime": {"precision": "fp16"},
            "resources": {"gpu": 1},
        },
        "spec.runtime.precision",
        "set fp32 or bf16",
    ),
    "xml-as-onnx": (
        {"model": {"uri": "s3://models/ir/model.xml"}, **CPU},
        "spec.model.format",
        "set spec.model.format to openvino",
    ),
    "gpu-product-without-gpu": (
        {"resources": {"gpu": 0, "gpuProduct": "NVIDIA-A100-SXM4-80GB"}},
        "spec.resources.gpuProduct",
        "request a GPU or remove gpuProduct",
    ),
    "gpu-product-unknown-format": (
        {"resources": {"gpu": 1, "gpuProduct": "A100"}},
        "spec.resources.gpuProduct",
        "kubectl get nodes -L nvidia.com/gpu.product",
    ),
    "min-above-max": (
        {"autoscaling": {**SCALED, "minReplicas": 5, "maxReplicas": 2}, "resources": {"requests": {"cpu": "1"}}},
        "spec.autoscaling.minReplicas",
        "make minReplicas <= maxReplicas",
    ),
    "cpu-target-without-cpu-request": (
        {"autoscaling": {**SCALED, "targetCpuUtilizationPercentage": 70}},
        "spec.resources.requests.cpu",
        "set a CPU request",
    ),
    "default-cpu-scaling-without-cpu-request": (
        {"autoscaling": SCALED},
        "spec.resources.requests.cpu",
        "scale on spec.autoscaling.metrics only",
    ),
    "surge-not-a-percentage": ({"rollout": {"maxSurge": "25"}}, "spec.rollout.maxSurge", "like '25%'"),
    "unavailable-not-a-percentage": (
        {"rollout": {"maxUnavailable": "one"}},
        "spec.rollout.maxUnavailable",
        "like '25%'",
    ),
    "percent-above-100": ({"rollout": {"maxUnavailable": "150%"}}, "spec.rollout.maxUnavailable", "like '25%'"),
    "surge-and-unavailable-zero": (
        {"rollout": {"maxSurge": 0, "maxUnavailable": 0}},
        "spec.rollout.maxUnavailable",
        "set maxUnavailable 1",
    ),
    "surge-and-unavailable-zero-percent": (
        {"rollout": {"maxSurge": "0%", "maxUnavailable": "0%"}},
        "spec.rollout.maxUnavailable",
        "set maxUnavailable 1",
    ),
    "pdb-both": (
        {"replicas": 3, "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "spec.podDisruptionBudget",
        "set minAvailable or maxUnavailable, not both",
    ),
    "pdb-min-not-a-percentage": (
        {"podDisruptionBudget": {"minAvailable": "half"}},
        "spec.podDisruptionBudget.minAvailable",
        "like '25%'",
    ),
    "name-starts-with-a-digit": ({}, "metadata.name", "DNS-1035"),
    "uri-without-host": (
        {"model": {"uri": "https:///m.onnx", "sha256": "ab" * 32}},
        "spec.model.uri",
        "https://HOST/path",
    ),
    "negative-cpu": ({"resources": {"requests": {"cpu": "-1"}}}, "spec.resources.requests.cpu", "at least 0"),
    "request-above-limit": (
        {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        "spec.resources.requests.memory",
        "lower the request or raise the limit",
    ),
    "gpu-as-a-resource-name": (
        {"resources": {"requests": {"gpu": "1"}}},
        "spec.resources.requests.gpu",
        "GPUs are set with spec.resources.gpu",
    ),
    "negative-surge": ({"rollout": {"maxSurge": -1}}, "spec.rollout.maxSurge", "between 0 and"),
    "negative-pdb-min": (
        {"podDisruptionBudget": {"minAvailable": -1}},
        "spec.podDisruptionBudget.minAvailable",
        "between 0 and",
    ),
    "pdb-keeps-every-pod": (
        {"replicas": 1, "podDisruptionBudget": {"minAvailable": 2}},
        "spec.podDisruptionBudget.minAvailable",
        "no pod could ever be evicted",
    ),
    "pdb-keeps-every-pod-in-percent": (
        {"replicas": 3, "podDisruptionBudget": {"minAvailable": "100%"}},
        "spec.podDisruptionBudget.minAvailable",
        "maxUnavailable: 1",
    ),
    "pdb-keeps-the-autoscaling-minimum": (
        {
            "resources": {"requests": {"cpu": "1"}},
            "autoscaling": {**SCALED, "minReplicas": 2},
            "podDisruptionBudget": {"minAvailable": 2},
        },
        "spec.podDisruptionBudget.minAvailable",
        "below the replica count",
    ),
    "metric-target-negative": (
        {
            "autoscaling": {**SCALED, "metrics": [{"name": "q", "targetAverageValue": "-1"}]},
        },
        "spec.autoscaling.metrics[0].targetAverageValue",
        "greater than 0",
    ),
    "env-duplicate": (
        {"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
        "spec.runtime.env[1].name",
        "already set by spec.runtime.env[0]",
    ),
    "env-clashes-with-the-runtime": (
        {"runtime": {"env": [{"name": "MODELDEPLOY_PORT", "value": "9000"}]}},
        "spec.runtime.env[0].name",
        "set by the operator",
    ),
    "env-value-not-a-string": (
        {"runtime": {"env": [{"name": "A", "value": 5}]}},
        "spec.runtime.env[0].value",
        "quote it",
    ),
    "env-unknown-key": (
        {"runtime": {"env": [{"name": "A", "valu": "1"}]}},
        "spec.runtime.env[0].valu",
        "is not a field here",
    ),
    "env-unknown-source": (
        {"runtime": {"env": [{"name": "A", "valueFrom": {"secretRef": {"name": "s"}}}]}},
        "spec.runtime.env[0].valueFrom",
        "exactly one of",
    ),
    "env-bad-name": ({"runtime": {"env": [{"name": "1 A", "value": "x"}]}}, "spec.runtime.env[0].name", "not an"),
    "peer-empty": ({"networkPolicy": {"allowFrom": [{}]}}, "spec.networkPolicy.allowFrom[0]", "is empty"),
    "peer-typo": (
        {"networkPolicy": {"allowFrom": [{"podSelectr": {}}]}},
        "spec.networkPolicy.allowFrom[0].podSelectr",
        "a typo?",
    ),
    "peer-bad-cidr": (
        {"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}},
        "spec.networkPolicy.allowFrom[0].ipBlock.cidr",
        "is not a CIDR",
    ),
    "peer-except-outside": (
        {"networkPolicy": {"allowMetricsFrom": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}},
        "spec.networkPolicy.allowMetricsFrom[0].ipBlock.except[0]",
        "must lie inside",
    ),
    "peer-ipblock-with-selector": (
        {"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}},
        "spec.networkPolicy.allowFrom[0]",
        "make two entries",
    ),
    "selector-value-not-a-string": (
        {"networkPolicy": {"allowFrom": [{"podSelector": {"matchLabels": {"app": 1}}}]}},
        "spec.networkPolicy.allowFrom[0].podSelector.matchLabels.app",
        "must be a string",
    ),
    "gpu-in-limits": (
        {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "spec.resources",
        "set GPUs with spec.resources.gpu",
    ),
}


NAMES = {"name-starts-with-a-digit": "1model"}


@pytest.mark.parametrize("spec, field, fix", PROBLEMS.values(), ids=PROBLEMS.keys())
def test_each_problem_names_its_field_and_the_fix(spec, field, fix, request):
    name = NAMES.get(request.node.callspec.id, "m")
    problems = validate_spec(make_spec(**spec), name)
    assert [p.field for p in problems] == [field]
    (problem,) = problems
    assert fix in problem.message
    assert str(problem).startswith(f"{field}: ")


VALID = {
    **{name: doc["spec"] for name, doc in example_docs()},
    "minimal": {},
    "everything-on": EVERYTHING_ON,
    "engine-on-gpu": {"model": {"format": "tensorrt", "uri": "/m.plan"}, "resources": {"gpu": 1}},
    "fp16-on-gpu": {"runtime": {"precision": "fp16"}, "resources": {"gpu": 1, "gpuProduct": "NVIDIA-L4"}},
    "url-with-sha256": {"model": {"uri": "https://e.com/m.onnx", "sha256": "ab" * 32}},
    "bf16-on-openvino": {"runtime": {"backend": "openvino", "precision": "bf16"}, **CPU},
    "tflite-on-litert": {"model": {"format": "tflite", "uri": "/m.tflite"}, **CPU},
    "ir-default-backend": {"model": {"format": "openvino", "uri": "pvc://models/ir/model.xml"}, **CPU},
    "ir-on-auto-bf16": {
        "model": {"format": "openvino", "uri": "https://e.com/m.xml?token=t", "sha256": "ab" * 32},
        "runtime": {"backend": "auto", "precision": "bf16"},
        **CPU,
    },
    "scaled-on-metrics-only": {
        **CPU,
        "autoscaling": {**SCALED, "metrics": [{"name": "modeldeploy_inflight_requests", "targetAverageValue": "4"}]},
    },
    "percentages": {
        "rollout": {"maxSurge": "100%", "maxUnavailable": "0%"},
        "podDisruptionBudget": {"maxUnavailable": "0%"},
    },
    "surge-one-unavailable-zero": {"rollout": {"maxSurge": 1, "maxUnavailable": 0}},
    "pdb-off-with-both": {"podDisruptionBudget": {"enabled": False, "minAvailable": 1, "maxUnavailable": 1}},
    "autoscaling-off-min-above-max": {"autoscaling": {"enabled": False, "minReplicas": 5, "maxReplicas": 2}},
}


@pytest.mark.parametrize("spec", VALID.values(), ids=VALID.keys())
def test_valid_specs_have_no_problems(spec):
    assert validate_spec(make_spec(**spec), "m") == []


@pytest.mark.parametrize("name", ["1model", "my.model", "a" * 64, "Model", "m-", "-m"])
def test_a_name_no_service_may_have_is_refused(name):
    assert [p.field for p in validate_spec(make_spec(), name)] == ["metadata.name"]


@pytest.mark.parametrize("name", ["m", "resnet-50", "a" * 63])
def test_a_dns_label_name_is_fine(name):
    assert validate_spec(make_spec(), name) == []


@pytest.mark.parametrize("value", ["1.2.3", "lots", "1Gb"])
def test_a_malformed_quantity_is_refused_by_the_schema_and_the_operator(value):
    with pytest.raises(pydantic.ValidationError):
        make_spec(resources={"requests": {"cpu": value}})
    spec = make_spec()
    spec.resources.requests["cpu"] = value  # as an object stored before the schema said so
    assert [p.field for p in validate_spec(spec)] == ["spec.resources.requests.cpu"]


@pytest.mark.parametrize(
    "spec",
    [
        {"replicas": 2**31},
        {"rollout": {"progressDeadlineSeconds": 2**31}},
        {"autoscaling": {"maxReplicas": 2**31}},
    ],
    ids=["replicas", "progressDeadlineSeconds", "maxReplicas"],
)
def test_counts_past_int32_are_refused_by_the_schema(spec):
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 2147483647"):
        make_spec(**spec)


def test_env_entries_that_work_pass():
    env = [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "MODELDEPLOY_LOG_LEVEL", "value": "debug"},  # the operator does not set it
        {"name": "C", "value": ""},
    ]
    assert validate_spec(make_spec(runtime={"env": env})) == []


def test_peers_that_work_pass():
    peers = [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
        {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}},
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}},
    ]
    assert validate_spec(make_spec(networkPolicy={"allowFrom": peers})) == []


def test_peers_of_a_disabled_policy_are_not_judged():
    assert validate_spec(make_spec(networkPolicy={"enabled": False, "allowFrom": [{}]})) == []


def test_gpu_in_requests_and_limits_is_one_problem():
    spec = make_spec(resources={"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}})
    assert len(validate_spec(spec)) == 1


def test_independent_mistakes_are_all_reported():
    spec = make_spec(model={"uri": "http://e.com/m.onnx"}, runtime={"precision": "int8"}, **CPU)
    assert {p.field for p in validate_spec(spec)} == {"spec.model.sha256", "spec.runtime.precision"}


# ---- the auth Secret ----------------------------------------------------------------------------

AUTH = api.Auth(secret_name="m-token")


def secret(**data: str) -> dict:
    return {
        "metadata": {"name": "m-token"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_no_auth_needs_no_secret():
    assert check_auth_secret(None, None) == []


def test_a_secret_with_the_token_is_fine():
    assert check_auth_secret(AUTH, secret(token="s3cret")) == []
    assert check_auth_secret(api.Auth(secret_name="m-token", secret_key="bearer"), secret(bearer="x")) == []


def test_a_missing_secret_says_how_to_create_it():
    (problem,) = check_auth_secret(AUTH, None)
    assert problem.field == "spec.auth.secretName"
    assert "'m-token' does not exist" in problem.message
    assert "kubectl create secret generic m-token --from-literal=token=TOKEN" in problem.message


@pytest.mark.parametrize("body", [secret(password="x", user="y"), {"metadata": {}, "data": None}])
def test_a_missing_key_names_no_other_key_of_the_secret(body):
    """Whoever may read the resource reads its status, and may not be allowed to read the Secret."""
    (problem,) = check_auth_secret(AUTH, body)
    assert problem.field == "spec.auth.secretKey"
    assert "set spec.auth.secretKey or add the key" in problem.message
    assert "password" not in problem.message and "user" not in problem.message
    assert "keys" not in problem.message


@pytest.mark.parametrize("value", ["", "  \n"], ids=["empty", "whitespace"])
def test_an_empty_token_is_refused(value):
    (problem,) = check_auth_secret(AUTH, secret(token=value))
    assert problem.field == "spec.auth.secretKey"
    assert "is empty: put the token in it" in problem.message


def test_problem_prints_as_field_then_message():
    assert str(Problem("spec.x", "is wrong: fix it")) == "spec.x: is wrong: fix it"
