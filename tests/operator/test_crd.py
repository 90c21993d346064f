"""The CRD generated from the pydantic models: committed up to date, documented, and refusing what
the models refuse. The examples are checked against its schema as the API server would."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import yaml
from modeldeploy_operator import api, crd
from operator_helpers import example_docs, merged

CRD = crd.build_crd()
(VERSION,) = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]
STATUS_SCHEMA = SCHEMA["properties"]["status"]
EXAMPLES = example_docs()


def walk(node: dict[str, Any], path: str):
    """(path, schema) for every node below `node`, through properties, items and map values."""
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")
    for i, branch in enumerate(node.get("anyOf") or []):
        yield from walk(branch, f"{path}|{i}")


def as_json_schema(node: Any) -> Any:
    """The structural schema as plain JSON Schema, strict the way `kubectl apply` is (the server's
    strict field validation refuses unknown fields): closed objects unless they preserve unknown
    fields; the x-kubernetes-* markers dropped (int-or-string already carries its anyOf)."""
    if isinstance(node, list):
        return [as_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: {name: as_json_schema(v) for name, v in value.items()} if k == "properties" else as_json_schema(value)
        for k, value in node.items()
        if not k.startswith("x-kubernetes-")
    }
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


VALIDATOR = jsonschema.Draft7Validator(as_json_schema(SCHEMA))


def errors_of(doc: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting as the API server does it: a missing field with a default gets it,
    and the defaulted value is then defaulted in turn."""
    if isinstance(obj, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = apply_defaults(sub, obj[key])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in obj]
    return obj


def without_empties(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: without_empties(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [without_empties(v) for v in value]
    return value


# ---- committed files ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", crd.OUTPUTS, ids=[str(p.relative_to(crd.ROOT)) for p in crd.OUTPUTS])
def test_committed_crd_is_what_the_models_generate(path):
    assert path.exists(), f"{path.relative_to(crd.ROOT)} is missing: run `python -m modeldeploy_operator.crd`"
    assert path.read_text() == crd.render_yaml(), (
        f"{path.relative_to(crd.ROOT)} is stale: run `python -m modeldeploy_operator.crd` and commit it"
    )


def test_check_command_passes_on_the_committed_files():
    proc = subprocess.run(
        [sys.executable, "-m", "modeldeploy_operator.crd", "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_check_command_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "crds" / crd.CRD_FILE
    stale.parent.mkdir()
    stale.write_text(crd.render_yaml().replace("Fewest replicas.", "Fewest pods."))
    monkeypatch.setattr(crd, "ROOT", tmp_path)
    monkeypatch.setattr(crd, "OUTPUTS", [stale])
    assert crd.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert crd.main([]) == 0  # regenerates...
    assert crd.main(["--check"]) == 0  # ...and then it is fresh


def test_committed_crd_parses_to_the_generated_object():
    assert yaml.safe_load(crd.OUTPUTS[0].read_text()) == CRD


# ---- shape of the CRD ---------------------------------------------------------------------------


def test_names_scope_and_subresources():
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "modeldeployments.modeldeploy.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelDeployment"
    assert "mdep" in spec["names"]["shortNames"]
    assert VERSION["name"] == "v1alpha1" and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"]["status"] == {}
    assert VERSION["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns_show_model_format_ready_phase_revision_hardware_age():
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"]]
    assert columns == [
        "Model", "Format", "Ready", "Phase", "Revision", "Provider", "Precision", "GPU", "Warmup-p95-ms", "Analysis", "Age"
    ]  # fmt: skip
    wide_only = [c["name"] for c in VERSION["additionalPrinterColumns"] if c.get("priority")]
    assert wide_only == ["Analysis"]
    for column in VERSION["additionalPrinterColumns"]:
        section, *path = column["jsonPath"].lstrip(".").split(".")
        if section == "status":
            node = STATUS_SCHEMA
            for part in path:
                assert part in node["properties"], column
                node = node["properties"][part]


def test_every_spec_property_is_documented():
    undocumented = [
        path
        for path, node in walk(SPEC_SCHEMA, "spec")
        for name, child in (node.get("properties") or {}).items()
        if not (child.get("description") or "").strip()
    ]
    assert undocumented == []


def test_every_status_property_is_documented():
    undocumented = [
        f"{path}.{name}"
        for path, node in walk(STATUS_SCHEMA, "status")
        for name, child in (node.get("properties") or {}).items()
        if not (child.get("description") or "").strip()
    ]
    assert undocumented == []


def test_status_schema_requires_nothing():
    assert [path for path, node in walk(STATUS_SCHEMA, "status") if "required" in node] == []


def test_status_schema_sets_no_defaults():
    assert [path for path, node in walk(STATUS_SCHEMA, "status") if "default" in node] == []


def test_schema_is_structural():
    # No $ref left, exactly one type per node (anyOf only for int-or-string), no
    # additionalProperties beside properties: what apiextensions.k8s.io/v1 insists on.
    for path, node in walk(SCHEMA, "root"):
        assert "$ref" not in node, path
        assert "properties" not in node or "additionalProperties" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
        else:
            assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), path


@pytest.mark.parametrize("path, node", [(p, n) for p, n in walk(SPEC_SCHEMA, "spec") if "default" in n])
def test_every_default_is_valid_for_its_own_field(path, node):
    assert list(jsonschema.Draft7Validator(as_json_schema(node)).iter_errors(node["default"])) == [], path


@pytest.mark.parametrize(
    "raw",
    [{"model": {"uri": "/m.onnx"}}, *[doc["spec"] for _, doc in EXAMPLES]],
    ids=["minimal", *[name for name, _ in EXAMPLES]],
)
def test_schema_defaults_agree_with_the_models(raw):
    # What the API server stores after defaulting must parse to what the operator assumes.
    defaulted = apply_defaults(SPEC_SCHEMA, copy.deepcopy(raw))
    model = api.ModelDeploymentSpec.model_validate(raw)
    assert api.ModelDeploymentSpec.model_validate(defaulted) == model
    dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    if "gpu" not in raw.get("resources", {}):  # derived from the engine, so no schema default
        assert "gpu" not in defaulted.get("resources", {})
        del dumped["resources"]["gpu"]
    assert without_empties(defaulted) == without_empties(dumped)


# ---- examples and invalid resources against the schema -----------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_examples_validate_against_the_crd_schema(example):
    _, doc = example
    assert errors_of(doc) == []


BASE = {
    "apiVersion": "modeldeploy.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "m"},
    "spec": {"model": {"uri": "/models/m.onnx"}},
}
INVALID = {
    "uri-scheme": ({"model": {"uri": "ftp://bucket/m.onnx"}}, "spec.model.uri"),
    "s3-without-key": ({"model": {"uri": "s3://bucket/"}}, "spec.model.uri"),
    "s3-bucket-uppercase": ({"model": {"uri": "s3://Bucket/m.onnx"}}, "spec.model.uri"),
    "gs-without-bucket": ({"model": {"uri": "gs:///m.onnx"}}, "spec.model.uri"),
    "s3-endpoint-not-a-url": (
        {"model": {"uri": "s3://models/m.onnx", "s3": {"endpoint": "minio:9000"}}},
        "spec.model.s3.endpoint",
    ),
    "s3-addressing": (
        {"model": {"uri": "s3://models/m.onnx", "s3": {"addressing": "dns"}}},
        "spec.model.s3.addressing",
    ),
    "s3-region": ({"model": {"uri": "s3://models/m.onnx", "s3": {"region": "EU West"}}}, "spec.model.s3.region"),
    "credentials-secret-name": (
        {"model": {"uri": "s3://models/m.onnx", "credentials": {"secretName": "My_Secret"}}},
        "spec.model.credentials.secretName",
    ),
    "credentials-without-name": (
        {"model": {"uri": "s3://models/m.onnx", "credentials": {}}},
        "spec.model.credentials",
    ),
    "service-account-name": ({"serviceAccountName": "Not Valid"}, "spec.serviceAccountName"),
    "pvc-without-path": ({"model": {"uri": "pvc://models"}}, "spec.model.uri"),
    "format": ({"model": {"format": "pytorch"}}, "spec.model.format"),
    "sha256": ({"model": {"sha256": "not-a-digest"}}, "spec.model.sha256"),
    "negative-replicas": ({"replicas": -1}, "spec.replicas"),
    "too-many-gpus": ({"resources": {"gpu": 17}}, "spec.resources.gpu"),
    "gpu-product-label": ({"resources": {"gpuProduct": "A100 80GB"}}, "spec.resources.gpuProduct"),
    "quantity": ({"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu"),
    "batch-size-zero": ({"runtime": {"batching": {"maxBatchSize": 0}}}, "spec.runtime.batching.maxBatchSize"),
    "precision": ({"runtime": {"precision": "fp8"}}, "spec.runtime.precision"),
    "backend": ({"runtime": {"backend": "torch"}}, "spec.runtime.backend"),
    "pull-policy": ({"runtime": {"imagePullPolicy": "Sometimes"}}, "spec.runtime.imagePullPolicy"),
    "gate": ({"runtime": {"latencyBudget": {"gate": "strict"}}}, "spec.runtime.latencyBudget.gate"),
    "cpu-target": (
        {"autoscaling": {"targetCpuUtilizationPercentage": 0}},
        "spec.autoscaling.targetCpuUtilizationPercentage",
    ),
    "metric-target": (
        {"autoscaling": {"metrics": [{"name": "q", "targetAverageValue": "many"}]}},
        "spec.autoscaling.metrics.0.targetAverageValue",
    ),
    "metric-without-target": ({"autoscaling": {"metrics": [{"name": "q"}]}}, "spec.autoscaling.metrics.0"),
    "auth-without-secret": ({"auth": {"secretKey": "token"}}, "spec.auth"),
    "auth-secret-name": ({"auth": {"secretName": "My_Secret"}}, "spec.auth.secretName"),
    "deadline": ({"rollout": {"progressDeadlineSeconds": 0}}, "spec.rollout.progressDeadlineSeconds"),
    "surge-float": ({"rollout": {"maxSurge": 1.5}}, "spec.rollout.maxSurge"),
    "unknown-field": ({"replica": 2}, "spec"),
    "unknown-nested-field": ({"rollout": {"autoRollBack": False}}, "spec.rollout"),
}


@pytest.mark.parametrize("change, field", INVALID.values(), ids=INVALID.keys())
def test_invalid_resources_are_refused_at_the_field(change, field):
    errors = errors_of(merged(BASE, {"spec": change}))
    assert errors, "accepted"
    assert any(e.split(":")[0] == field for e in errors), errors


def test_a_resource_without_model_is_refused():
    assert any("'model' is a required property" in e for e in errors_of({**BASE, "spec": {"replicas": 1}}))


def test_a_resource_without_spec_is_refused():
    assert any("'spec' is a required property" in e for e in errors_of({k: v for k, v in BASE.items() if k != "spec"}))


@pytest.mark.parametrize(
    "change",
    [change for change, _ in INVALID.values()],
    ids=INVALID.keys(),
)
def test_the_models_refuse_what_the_schema_refuses(change):
    with pytest.raises(Exception, match="validation error"):
        api.ModelDeploymentSpec.model_validate(merged(BASE["spec"], change))


def test_free_form_kubernetes_objects_pass_through_the_schema():
    doc = merged(
        BASE,
        {
            "spec": {
                "scheduling": {"affinity": {"nodeAffinity": {"anything": [1, 2]}}, "tolerations": [{"key": "k"}]},
                "autoscaling": {"behavior": {"scaleUp": {"selectPolicy": "Max"}}},
                "runtime": {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
                "networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
            }
        },
    )
    assert errors_of(doc) == []


def test_status_as_the_operator_writes_it_validates():
    from modeldeploy_operator.status import status_to_dict

    status = api.ModelDeploymentStatus(
        observed_generation=3,
        phase=api.Phase.ROLLED_BACK,
        conditions=[api.Condition(type="Ready", status="True", reason="Available", last_transition_time="t")],
        last_known_good=api.KnownGood(revision=1, generation=1, template_hash="h", pod_template_hash="p", time="t"),
        rollback=api.RollbackRecord(failed_generation=3, reason="OOMKilled", time="t", rolled_back=True),
        rollback_count=1,
    )
    assert errors_of({**BASE, "status": status_to_dict(status)}) == []
    assert errors_of({**BASE, "status": {"phase": "Exploded"}}) != []
