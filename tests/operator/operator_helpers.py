"""Builders shared by the operator's unit tests: specs and targets for the renderers, and raw
Deployment / ReplicaSet / Pod dicts shaped as the API returns them, for the rollout observation.

Only what a test varies is a parameter; everything else is the smallest valid object."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from modeldeploy_operator import api, naming
from modeldeploy_operator.render import Settings, Target

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NAME, NAMESPACE, UID = "m", "team-a", "0d6c3f2e-1111-4222-8333-944455556666"
SETTINGS = Settings()
# The smallest valid spec: one GPU (the API's default) and a model baked into the image.
BASE_SPEC: dict[str, Any] = {"model": {"uri": "/models/m.onnx"}}

# Every optional feature switched on, so each branch of each renderer runs.
EVERYTHING_ON = {
    "model": {"uri": "pvc://models/r50/model.onnx", "name": "r50"},
    "resources": {"gpu": 2, "gpuProduct": "NVIDIA-H100-80GB-HBM3", "requests": {"cpu": "2", "memory": "8Gi"}},
    "scheduling": {"tolerations": [{"key": "dedicated", "operator": "Exists"}], "nodeSelector": {"pool": "gpu"}},
    "autoscaling": {
        "enabled": True,
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetCpuUtilizationPercentage": 70,
        "metrics": [
            {"name": "modeldeploy_queue_depth", "targetAverageValue": "8"},
            {"name": "modeldeploy_inflight_requests", "targetAverageValue": "500m"},
        ],
    },
    "networkPolicy": {"allowMetricsFrom": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]},
    "auth": {"secretName": "r50-token"},
    "podDisruptionBudget": {"minAvailable": "50%"},
}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, nested dicts merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_spec(**override: Any) -> api.ModelDeploymentSpec:
    return api.ModelDeploymentSpec.model_validate(merged(BASE_SPEC, override))


def make_target(name: str = NAME, **override: Any) -> Target:
    return Target(name, NAMESPACE, UID, make_spec(**override))


def example_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every ModelDeployment in examples/."""
    out = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == api.KIND:
                out.append((path.name, doc))
    return out


def env_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runtime container's env of a Deployment, by name."""
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


# ---- raw objects as the API shows them ----------------------------------------------------------


def condition(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def deployment(
    *,
    generation: int = 2,
    observed_generation: int | None = None,
    desired: int | None = 2,
    replicas: int | None = None,
    updated: int | None = None,
    ready: int | None = None,
    available: int | None = None,
    revision: int | None = 2,
    paused: bool = False,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Deployment whose controller has seen `generation`, with every count at `desired` unless
    given: the picture of a finished rollout, from which each test changes one thing."""
    n = desired if desired is not None else 1
    spec: dict[str, Any] = {"selector": {"matchLabels": naming.selector_labels(NAME)}}
    if desired is not None:
        spec["replicas"] = desired
    if paused:
        spec["paused"] = True
    annotations = {naming.REVISION_ANNOTATION: str(revision)} if revision is not None else {}
    return {
        "metadata": {"name": NAME, "namespace": NAMESPACE, "generation": generation, "annotations": annotations},
        "spec": spec,
        "status": {
            "observedGeneration": generation if observed_generation is None else observed_generation,
            "replicas": n if replicas is None else replicas,
            "updatedReplicas": n if updated is None else updated,
            "readyReplicas": n if ready is None else ready,
            "availableReplicas": n if available is None else available,
            "conditions": conditions
            if conditions is not None
            else [
                condition("Available", "True", "MinimumReplicasAvailable"),
                condition("Progressing", "True", "NewReplicaSetAvailable"),
            ],
        },
    }


def replicaset(revision: int, template_hash: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    labels = {**naming.selector_labels(NAME), naming.TEMPLATE_HASH_LABEL: template_hash}
    pod_template = template or {
        "metadata": {"labels": dict(labels), "creationTimestamp": None},
        "spec": {"containers": [{"name": "runtime", "image": f"runtime:{revision}"}]},
    }
    return {
        "metadata": {
            "name": f"{NAME}-{template_hash}",
            "labels": labels,
            "annotations": {naming.REVISION_ANNOTATION: str(revision)},
        },
        "spec": {"template": pod_template},
    }


def container_status(
    *,
    restarts: int = 0,
    ready: bool = False,
    waiting: str | None = None,
    waiting_message: str = "",
    terminated: str | None = None,
    terminated_message: str = "",
    last_terminated: str | None = None,
    last_message: str = "",
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if waiting:
        state["waiting"] = {"reason": waiting, "message": waiting_message}
    elif terminated:
        state["terminated"] = {"reason": terminated, "message": terminated_message, "exitCode": 1}
    else:
        state["running"] = {"startedAt": "2024-01-01T00:00:00Z"}
    status: dict[str, Any] = {"name": "runtime", "ready": ready, "restartCount": restarts, "state": state}
    if last_terminated:
        status["lastState"] = {"terminated": {"reason": last_terminated, "message": last_message, "exitCode": 1}}
    return status


def pod(
    name: str,
    template_hash: str,
    *,
    ready: bool = False,
    deleting: bool = False,
    init: list[dict[str, Any]] | None = None,
    **container: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {**naming.selector_labels(NAME), naming.TEMPLATE_HASH_LABEL: template_hash},
    }
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [condition("Ready", "True" if ready else "False")],
        "containerStatuses": [container_status(ready=ready, **container)],
    }
    if init is not None:
        status["initContainerStatuses"] = init
    return {"metadata": meta, "status": status}
