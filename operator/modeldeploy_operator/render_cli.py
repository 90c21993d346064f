"""`modeldeploy render -f CR.yaml`: the objects the operator would apply, without a cluster.

`spec.rollout.maxSurge: auto` depends on the cluster's free GPUs when an update is applied. Offline,
a GPU deployment's Deployment is printed as it is without a free GPU (maxSurge 0), and stderr
says that the operator decides at apply time; with `--kubeconfig` the Nodes, Pods and the live
Deployment are read (list and get only) and the plan is the one the operator would choose now.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import yaml

from . import api, surge
from .drift import with_spec_hash
from .reconcile import parse_spec
from .render import Settings, Target, render_children, render_pod_template
from .render.common import DEFAULT_RUNTIME_IMAGE
from .validation import validate_spec
from .versions import HPA_PREFERENCE, PDB_PREFERENCE, ApiVersions

# (target, pod template) -> the update plan; None: decided offline.
Planner = Callable[[Target, dict[str, Any]], surge.SurgePlan]


def render_documents(
    doc: dict[str, Any], settings: Settings, planner: Planner | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    if doc.get("kind") != api.KIND:
        return [], [f"kind is {doc.get('kind')!r}, expected {api.KIND}"]
    meta = doc.get("metadata") or {}
    spec, problems = parse_spec(doc.get("spec") or {})
    if spec is not None:
        problems += validate_spec(spec)
    if problems:
        return [], [str(p) for p in problems]
    target = Target(meta.get("name", "unnamed"), meta.get("namespace", "default"), meta.get("uid", "<uid>"), spec)
    template = render_pod_template(target, settings)
    plan = planner(target, template) if planner else surge.plan_surge(spec.rollout, spec.replicas, template, None)
    children = render_children(target, settings, plan=plan)
    return [with_spec_hash(c.manifest) for c in children if c.manifest is not None], []


def cluster_planner(kubeconfig: str, context: str | None) -> Planner:
    """Decides as the operator does at apply time, from the cluster `kubeconfig` points at."""
    import kubernetes

    from .kube import Kube
    from .reconcile import choose_plan

    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=config)
    kube = Kube(kubernetes.client.ApiClient(config))

    def plan(target: Target, template: dict[str, Any]) -> surge.SurgePlan:
        live = kube.get("apps/v1", "Deployment", target.namespace, target.name)
        return choose_plan(kube, target.spec, template, live)

    return plan


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="modeldeploy render", description=__doc__)
    parser.add_argument("-f", "--filename", required=True, help="ModelDeployment YAML ('-' for stdin)")
    parser.add_argument("--runtime-image", default=DEFAULT_RUNTIME_IMAGE, help="default runtime image")
    parser.add_argument("--hpa-api-version", default=HPA_PREFERENCE[0], choices=HPA_PREFERENCE)
    parser.add_argument("--pdb-api-version", default=PDB_PREFERENCE[0], choices=PDB_PREFERENCE)
    parser.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="decide maxSurge auto from this cluster's Nodes and Pods, as the operator would now "
        "(needs list on nodes and pods); without it, auto is decided when the operator applies the update",
    )
    parser.add_argument("--context", help="kubeconfig context (with --kubeconfig)")
    args = parser.parse_args(argv)
    try:
        stream = sys.stdin if args.filename == "-" else open(args.filename)  # noqa: SIM115
        with stream:
            docs = [d for d in yaml.safe_load_all(stream) if d]
    except (OSError, yaml.YAMLError) as exc:
        print(f"modeldeploy render: cannot read {args.filename}: {exc}", file=sys.stderr)
        return 2
    planner = None
    if args.kubeconfig:
        try:
            planner = cluster_planner(args.kubeconfig, args.context)
        except Exception as exc:  # a missing file, a context that does not exist
            print(f"modeldeploy render: cannot use {args.kubeconfig}: {exc}", file=sys.stderr)
            return 2
    settings = Settings(args.runtime_image, ApiVersions(hpa=args.hpa_api_version, pdb=args.pdb_api_version))
    out, failed = [], False
    for doc in docs:
        name = (doc.get("metadata") or {}).get("name", "?")
        manifests, errors = render_documents(doc, settings, planner)
        for error in errors:
            print(f"modeldeploy render: {name}: {error}", file=sys.stderr)
            failed = True
        for manifest in manifests:
            plan = surge.applied_plan(manifest) if manifest["kind"] == "Deployment" else None
            if plan is not None:  # what an update costs, where a user reads it before applying
                print(f"modeldeploy render: {name}: {plan.message}", file=sys.stderr)
        out += manifests
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
    return 1 if failed else 0
