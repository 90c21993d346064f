"""Everything the operator renders is a valid Kubernetes object, checked strictly (unknown fields
are errors) against the schemas of current Kubernetes releases with the GA API versions."""

from __future__ import annotations

import kubernetes_validate
import pytest
from modeldeploy_operator.render import render_children
from modeldeploy_operator.render_cli import render_documents
from modeldeploy_operator.versions import ApiVersions
from operator_helpers import EVERYTHING_ON, SETTINGS, example_docs, make_target, merged

# The oldest Kubernetes the project targets and the newest kubernetes-validate knows.
K8S_VERSIONS = sorted({"1.30.0", kubernetes_validate.latest_version()})
EXAMPLES = example_docs()

SPECS = {
    "defaults": {},
    "cpu-only": {"resources": {"gpu": 0, "requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}},
    "everything-on": EVERYTHING_ON,
    "url-and-auth": {
        "model": {"uri": "https://example.com/m.onnx", "sha256": "cd" * 32, "format": "onnx"},
        "auth": {"secretName": "token", "secretKey": "bearer"},
        "runtime": {"env": [{"name": "OMP_NUM_THREADS", "value": "2"}], "imagePullPolicy": "IfNotPresent"},
    },
    "s3-with-secret": {
        "model": {
            "uri": "s3://models/r50/model.onnx",
            "s3": {"endpoint": "http://minio.minio:9000", "region": "us-east-1", "addressing": "path"},
            "credentials": {"secretName": "minio"},
        },
    },
    "gcs-with-key-and-identity": {
        "model": {"uri": "gs://models/r50/model.onnx", "credentials": {"secretName": "gcs-key"}},
        "serviceAccountName": "model-reader",
        "runtime": {"cache": {"claimName": "model-cache"}},
    },
    "engine-paused-deny-all": {
        "model": {"uri": "pvc://engines/r50.plan", "format": "tensorrt"},
        "rollout": {"paused": True, "maxSurge": "25%", "maxUnavailable": "25%"},
        "networkPolicy": {"allowFrom": []},
        "podDisruptionBudget": {"maxUnavailable": "30%"},
    },
    "scaled-on-cpu-with-behavior": {
        "resources": {"requests": {"cpu": "1"}},
        "autoscaling": {
            "enabled": True,
            "targetCpuUtilizationPercentage": 60,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
        "scheduling": {
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
            "priorityClassName": "inference",
        },
    },
}


def assert_valid(manifest: dict, version: str) -> None:
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']} invalid for {version} at {path}: {exc.message}")


def test_the_ga_api_versions_are_the_default():
    assert ApiVersions() == ApiVersions(hpa="autoscaling/v2", pdb="policy/v1")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_rendered_children_validate_strictly(spec, version):
    rendered = [c.manifest for c in render_children(make_target(**spec), SETTINGS) if c.manifest is not None]
    assert len(rendered) >= 4
    for manifest in rendered:
        assert_valid(manifest, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("example", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_examples_render_to_valid_objects(example, version):
    _, doc = example
    manifests, errors = render_documents(doc, SETTINGS)
    assert errors == []
    assert {m["kind"] for m in manifests} >= {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"}
    for manifest in manifests:
        assert_valid(manifest, version)


def test_there_are_examples_to_check():
    assert len(EXAMPLES) >= 2


def test_strict_validation_does_catch_an_unknown_field():
    # Proof that the checks above can fail: one misspelt field in an otherwise rendered Deployment.
    deployment = render_children(make_target(), SETTINGS)[0].manifest
    broken = merged(deployment, {"spec": {"template": {"spec": {"nodeSelectors": {"a": "b"}}}}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
