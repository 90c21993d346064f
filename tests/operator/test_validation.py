"""What only the operator can judge: each problem names the field and says how to fix it; valid
specs have none; the auth Secret is checked as read from the API."""

from __future__ import annotations

import base64

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
        {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "spec.podDisruptionBudget",
        "set minAvailable or maxUnavailable, not both",
    ),
    "pdb-min-not-a-percentage": (
        {"podDisruptionBudget": {"minAvailable": "half"}},
        "spec.podDisruptionBudget.minAvailable",
        "like '25%'",
    ),
    "gpu-in-limits": (
        {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "spec.resources",
        "set GPUs with spec.resources.gpu",
    ),
}


@pytest.mark.parametrize("spec, field, fix", PROBLEMS.values(), ids=PROBLEMS.keys())
def test_each_problem_names_its_field_and_the_fix(spec, field, fix):
    problems = validate_spec(make_spec(**spec))
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
    assert validate_spec(make_spec(**spec)) == []


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


@pytest.mark.parametrize(
    "body, keys", [(secret(password="x", user="y"), "password, user"), ({"metadata": {}, "data": None}, "none")]
)
def test_a_missing_key_lists_the_keys_there_are(body, keys):
    (problem,) = check_auth_secret(AUTH, body)
    assert problem.field == "spec.auth.secretKey"
    assert f"(keys: {keys})" in problem.message
    assert "set spec.auth.secretKey or add the key" in problem.message


@pytest.mark.parametrize("value", ["", "  \n"], ids=["empty", "whitespace"])
def test_an_empty_token_is_refused(value):
    (problem,) = check_auth_secret(AUTH, secret(token=value))
    assert problem.field == "spec.auth.secretKey"
    assert "is empty: put the token in it" in problem.message


def test_problem_prints_as_field_then_message():
    assert str(Problem("spec.x", "is wrong: fix it")) == "spec.x: is wrong: fix it"
