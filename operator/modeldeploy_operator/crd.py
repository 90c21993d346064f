"""Generates the ModelDeployment CRD from the pydantic models.

pydantic emits JSON Schema with `$ref`s and `anyOf: [X, null]` for optional fields; Kubernetes wants
a structural OpenAPI v3 schema: everything inlined, one type per node, no `additionalProperties`
beside `properties`. `openapi_schema` does that translation.

    python -m modeldeploy_operator.crd            # rewrites crds/, the chart's copy, README's reference
    python -m modeldeploy_operator.crd --check    # exits 1 when they are stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from . import api

DROP_KEYS = {"title"}
ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = f"{api.GROUP}_{api.PLURAL}.yaml"
OUTPUTS = [ROOT / "crds" / CRD_FILE, ROOT / "charts" / "modeldeploy-operator" / "files" / "crds" / CRD_FILE]


def openapi_schema(model: type[api.Model], *, with_defaults: bool) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return _convert(schema, defs, with_defaults)


def without_required(node: Any) -> Any:
    """Status fields are never required by the schema: a status written by an older operator must
    stay valid under a newer CRD (the 1.20 API server validates it on every metadata update too)."""
    if isinstance(node, dict):
        return {k: without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [without_required(v) for v in node]
    return node


def _convert(node: dict[str, Any], defs: dict[str, Any], with_defaults: bool) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # the field's own description wins over the model's
        if "properties" in target and not target.get("required") and "default" not in node:
            node["default"] = {}  # a sub-object with defaults of its own: materialise it
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) == 1:
            merged = _convert(branches[0], defs, with_defaults)
            node = {**merged, **node}
            if node.get("default", 0) is None:
                node.pop("default")
        else:
            node["anyOf"] = branches
    if node.get("x-kubernetes-preserve-unknown-fields"):
        keep = {k: node[k] for k in ("description", "default") if k in node}
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True, **keep}
    if node.get("x-kubernetes-int-or-string"):
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        node.pop("type", None)
        if node.get("default", 0) is None:
            node.pop("default")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROP_KEYS or (key == "default" and not with_defaults):
            continue
        if key == "properties":
            out[key] = {k: _convert(v, defs, with_defaults) for k, v in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = _convert(value, defs, with_defaults)
        elif key == "additionalProperties":
            if isinstance(value, dict) and "properties" not in node:
                out[key] = _convert(value, defs, with_defaults)
        else:
            out[key] = value
    if "properties" in out:
        out["type"] = "object"
    return out


PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".status.modelName", "description": "Served model name"},
    {"name": "Format", "type": "string", "jsonPath": ".spec.model.format", "description": "The model format"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready", "description": "Ready over desired pods"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase"},
    {"name": "Revision", "type": "integer", "jsonPath": ".status.revision", "description": "Deployment revision"},
    {"name": "Provider", "type": "string", "jsonPath": ".status.hardware.provider", "description": "Provider in use"},
    {"name": "Precision", "type": "string", "jsonPath": ".status.hardware.precision", "description": "Precision"},
    {"name": "GPU", "type": "string", "jsonPath": ".status.hardware.gpuProduct", "description": "GPU product"},
    {
        "name": "Warmup-p95-ms",
        "type": "number",
        "jsonPath": ".status.hardware.warmupP95Milliseconds",
        "description": "Warm-up p95 latency (ms)",
    },
    {
        "name": "Analysis",
        "type": "string",
        "jsonPath": ".status.analysis.phase",
        "description": "Post-rollout analysis",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    spec_schema = openapi_schema(api.ModelDeploymentSpec, with_defaults=True)
    status_schema = without_required(openapi_schema(api.ModelDeploymentStatus, with_defaults=False))
    spec_schema["description"] = "What to serve and how: the model, the runtime, resources, scaling, rollout."
    status_schema["description"] = "What the operator observed. Written by the operator only."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["all", "modeldeploy"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A model served on GPUs (or CPUs) with the Open Inference Protocol v2, rolled out "
                                "with automatic rollback to the last known good revision."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


README = ROOT / "README.md"
REFERENCE_START, REFERENCE_END = "<!-- crd-reference:start -->", "<!-- crd-reference:end -->"


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (Kubernetes)"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if node.get("type") == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if node.get("type") == "object" and "additionalProperties" in node:
        return "map of string"
    return node.get("type", "object")


def _rows(node: dict[str, Any], path: str) -> list[str]:
    rows = []
    required = set(node.get("required", []))
    for key, child in node.get("properties", {}).items():
        here = f"{path}.{key}"
        default = child.get("default")
        shown = "" if default in (None, {}) else f"`{json.dumps(default)}`"
        if key in required:
            shown = "required"
        description = " ".join(child.get("description", "").split()).replace("|", "\\|")
        rows.append(f"| `{here}` | {_type_of(child)} | {shown} | {description} |")
        items = child.get("items", {})
        if "properties" in child:
            rows += _rows(child, here)
        elif "properties" in items:
            rows += _rows(items, f"{here}[]")
    return rows


def reference_markdown() -> str:
    """The spec reference for README.md, generated from the same schema as the CRD."""
    schema = openapi_schema(api.ModelDeploymentSpec, with_defaults=True)
    header = ["| field | type | default | description |", "|---|---|---|---|"]
    return "\n".join(header + _rows(schema, "spec"))


def readme_with_reference(text: str) -> str:
    start, end = text.index(REFERENCE_START) + len(REFERENCE_START), text.index(REFERENCE_END)
    return text[:start] + "\n" + reference_markdown() + "\n" + text[end:]


def render_yaml() -> str:
    header = "# Generated from operator/modeldeploy_operator/api.py by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the ModelDeployment CRD.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed CRD files are stale")
    args = parser.parse_args(argv)
    text = render_yaml()
    wanted = {p: text for p in OUTPUTS}
    if README.exists() and REFERENCE_START in README.read_text():
        wanted[README] = readme_with_reference(README.read_text())
    stale = [p for p, content in wanted.items() if not p.exists() or p.read_text() != content]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is stale: run `make crds`", file=sys.stderr)
        return 1 if stale else 0
    for p, content in wanted.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
