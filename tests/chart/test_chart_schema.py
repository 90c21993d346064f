"""values.schema.json: typos and bad types fail `helm install` with the key's name, not silently."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from chart_helpers import CHART, NON_DEFAULT_VALUES

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def test_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("values", [DEFAULTS, NON_DEFAULT_VALUES], ids=["defaults", "non-defaults"])
def test_shipped_and_example_values_satisfy_the_schema(values):
    jsonschema.Draft7Validator(SCHEMA).validate(values)


def _walk_schema(schema: dict, path: str):
    """Yields (path, node) for every object and property node, following local $refs."""
    if "$ref" in schema:
        target = SCHEMA
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk_schema(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from _walk_schema(schema["items"], f"{path}[]")


def test_every_value_has_a_description_and_every_object_is_closed():
    for path, node in _walk_schema(SCHEMA, ""):
        if not path or path.endswith("[]") or path == "global":
            continue
        assert node.get("description"), f"{path} has no description"
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
    assert SCHEMA["additionalProperties"] is False


def _leaf_paths(values: dict, prefix: str = ""):
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and not path.endswith(("annotations", "labels", "Selector")):
            yield from _leaf_paths(value, path)
        else:
            yield path


def test_every_value_in_values_yaml_is_in_the_schema():
    described = {path for path, _ in _walk_schema(SCHEMA, "")}
    for path in _leaf_paths(DEFAULTS):
        assert path in described or path.rsplit(".", 1)[0] in described, f"{path} missing from the schema"


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"imagee": {"tag": "x"}}, "imagee"),
        ({"image": {"tagg": "x"}}, "tagg"),
        ({"watch": {"allNamespace": False}}, "allNamespace"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"grafana": {"dashboards": {"enabled": True}}}, "dashboards"),
        ({"crds": {"instal": False}}, "instal"),
        ({"resources": {"request": {"cpu": "1"}}}, "request"),
        ({"tolerations": [{"key": "a", "effects": "NoSchedule"}]}, "effects"),
    ],
)
def test_unknown_keys_are_refused_by_name(render, values, key):
    result = render(values)
    assert result.returncode != 0
    assert f"Additional property {key} is not allowed" in result.stderr


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"resyncSeconds": "thirty"}, "resyncSeconds: Invalid type. Expected: integer"),
        ({"resyncSeconds": 1}, "resyncSeconds: Must be greater than or equal to 5"),
        ({"logLevel": "verbose"}, "logLevel: logLevel must be one of the following"),
        ({"crds": {"install": "yes"}}, "crds.install: Invalid type. Expected: boolean"),
        ({"metrics": {"port": 70000}}, "metrics.port: Must be less than or equal to 65535"),
        ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy: image.pullPolicy must be one of"),
        ({"image": {"digest": "abc"}}, "image.digest: Does not match pattern"),
        ({"watch": {"allNamespaces": False, "namespaces": ["Team_A"]}}, "watch.namespaces.0: Does not match"),
        ({"metrics": {"serviceMonitor": {"interval": "30"}}}, "metrics.serviceMonitor.interval"),
        ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory"),
        ({"podLabels": {"team": 7}}, "podLabels.team: Invalid type. Expected: string"),
    ],
)
def test_bad_types_and_values_are_refused_by_key(render, values, where):
    result = render(values)
    assert result.returncode != 0
    assert where in result.stderr


def test_watching_a_list_needs_the_list(render):
    result = render({"watch": {"allNamespaces": False}})
    assert result.returncode != 0
    assert "watch.namespaces" in result.stderr


def test_a_namespace_list_with_all_namespaces_is_refused(render):
    result = render({"watch": {"namespaces": ["team-a"]}})
    assert result.returncode != 0
    assert "watch.namespaces" in result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"watch": {"allNamespaces": False}}, "watch.namespaces is empty while watch.allNamespaces is false"),
        ({"watch": {"namespaces": ["team-a"]}}, "watch.namespaces is set while watch.allNamespaces is true"),
        ({"metrics": {"port": 8081}}, "metrics.port and health.port are both 8081"),
    ],
)
def test_templates_refuse_contradictions_even_without_the_schema(render, values, message):
    result = render(values, "--skip-schema-validation")
    assert result.returncode != 0
    assert message in result.stderr
