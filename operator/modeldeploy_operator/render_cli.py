"""`modeldeploy render -f CR.yaml`: the objects the operator would apply, without a cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from . import api
from .drift import with_spec_hash
from .reconcile import parse_spec
from .render import Settings, Target, render_children
from .render.common import DEFAULT_RUNTIME_IMAGE
from .validation import validate_spec
from .versions import HPA_PREFERENCE, PDB_PREFERENCE, ApiVersions


def render_documents(doc: dict[str, Any], settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    if doc.get("kind") != api.KIND:
        return [], [f"kind is {doc.get('kind')!r}, expected {api.KIND}"]
    meta = doc.get("metadata") or {}
    spec, problems = parse_spec(doc.get("spec") or {})
    if spec is not None:
        problems += validate_spec(spec)
    if problems:
        return [], [str(p) for p in problems]
    target = Target(meta.get("name", "unnamed"), meta.get("namespace", "default"), meta.get("uid", "<uid>"), spec)
    return [with_spec_hash(c.manifest) for c in render_children(target, settings) if c.manifest is not None], []


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="modeldeploy render", description=__doc__)
    parser.add_argument("-f", "--filename", required=True, help="ModelDeployment YAML ('-' for stdin)")
    parser.add_argument("--runtime-image", default=DEFAULT_RUNTIME_IMAGE, help="default runtime image")
    parser.add_argument("--hpa-api-version", default=HPA_PREFERENCE[0], choices=HPA_PREFERENCE)
    parser.add_argument("--pdb-api-version", default=PDB_PREFERENCE[0], choices=PDB_PREFERENCE)
    args = parser.parse_args(argv)
    try:
        stream = sys.stdin if args.filename == "-" else open(args.filename)  # noqa: SIM115
        with stream:
            docs = [d for d in yaml.safe_load_all(stream) if d]
    except (OSError, yaml.YAMLError) as exc:
        print(f"modeldeploy render: cannot read {args.filename}: {exc}", file=sys.stderr)
        return 2
    settings = Settings(args.runtime_image, ApiVersions(hpa=args.hpa_api_version, pdb=args.pdb_api_version))
    out, failed = [], False
    for doc in docs:
        manifests, errors = render_documents(doc, settings)
        for error in errors:
            name = (doc.get("metadata") or {}).get("name", "?")
            print(f"modeldeploy render: {name}: {error}", file=sys.stderr)
            failed = True
        out += manifests
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
    return 1 if failed else 0
