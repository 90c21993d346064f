"""Turns what the API shows (a Deployment, its ReplicaSets and pods) into a small, typed picture of
one rollout. Pure: raw dicts in, frozen dataclasses out, so the decisions built on it are testable
without a cluster."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import modeldeploy_contract as contract

from . import naming

# The runtime writes "<prefix>: ..." to its termination log when it refuses to start (the contract);
# each is decisive on the first occurrence.
RUNTIME_REASONS = {f"{prefix}:": reason for prefix, reason in contract.TERMINATION_REASONS.items()}
IMAGE_PULL_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError"}


@dataclass(frozen=True)
class Condition:
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class PodFailure:
    reason: str
    message: str
    pod: str


@dataclass(frozen=True)
class PodState:
    name: str
    template_hash: str
    ready: bool
    restarts: int
    waiting_reason: str | None = None
    waiting_message: str = ""
    terminated_reason: str | None = None  # of the current or the last instance
    terminated_message: str = ""
    ip: str = ""  # status.podIP: where the operator scrapes the pod's metrics port


@dataclass(frozen=True)
class RolloutState:
    exists: bool
    generation: int = 0
    observed_generation: int = 0
    desired: int = 0
    replicas: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    revision: int | None = None
    paused: bool = False
    conditions: dict[str, Condition] = field(default_factory=dict)
    pod_template_hash: str | None = None  # of the ReplicaSet of the current revision
    new_pods: tuple[PodState, ...] = ()  # pods of the ReplicaSet of the current revision

    @property
    def synced(self) -> bool:
        """The Deployment controller has seen the latest template."""
        return self.exists and self.observed_generation >= self.generation


ABSENT = RolloutState(exists=False)


def _revision(obj: dict[str, Any]) -> int | None:
    value = (obj.get("metadata", {}).get("annotations") or {}).get(naming.REVISION_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def pod_state(pod: dict[str, Any]) -> PodState:
    meta, status = pod.get("metadata", {}), pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    statuses = list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    waiting_reason, waiting_message = None, ""
    terminated_reason, terminated_message = None, ""
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting_reason is None:
            waiting_reason, waiting_message = waiting["reason"], waiting.get("message") or ""
        for slot in ("state", "lastState"):
            terminated = (s.get(slot) or {}).get("terminated") or {}
            if terminated and terminated_reason is None:
                terminated_reason = terminated.get("reason") or "Error"
                terminated_message = (terminated.get("message") or "").strip()
    return PodState(
        name=meta.get("name", ""),
        template_hash=(meta.get("labels") or {}).get(naming.TEMPLATE_HASH_LABEL, ""),
        ready=conditions.get("Ready") == "True",
        restarts=restarts,
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        terminated_reason=terminated_reason,
        terminated_message=terminated_message,
        ip=status.get("podIP") or "",
    )


def observe_rollout(
    deployment: dict[str, Any] | None, replicasets: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> RolloutState:
    if deployment is None:
        return ABSENT
    meta, spec, status = deployment["metadata"], deployment.get("spec") or {}, deployment.get("status") or {}
    revision = _revision(deployment)
    new_hash = None
    for rs in replicasets:
        if revision is not None and _revision(rs) == revision:
            new_hash = (rs["metadata"].get("labels") or {}).get(naming.TEMPLATE_HASH_LABEL)
    new_pods = tuple(
        pod_state(p)
        for p in pods
        if new_hash
        and (p["metadata"].get("labels") or {}).get(naming.TEMPLATE_HASH_LABEL) == new_hash
        and not p["metadata"].get("deletionTimestamp")
    )
    return RolloutState(
        exists=True,
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        desired=1 if spec.get("replicas") is None else int(spec["replicas"]),  # the API default
        replicas=int(status.get("replicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        revision=revision,
        paused=bool(spec.get("paused")),
        conditions={
            c["type"]: Condition(c.get("status", "Unknown"), c.get("reason") or "", c.get("message") or "")
            for c in status.get("conditions") or []
        },
        pod_template_hash=new_hash,
        new_pods=tuple(sorted(new_pods, key=lambda p: p.name)),
    )


def replicaset_revision(replicasets: list[dict[str, Any]], pod_template_hash: str) -> int | None:
    """The revision the ReplicaSet with this hash has now: a rollback to it gives it a new one."""
    for rs in replicasets:
        if (rs["metadata"].get("labels") or {}).get(naming.TEMPLATE_HASH_LABEL) == pod_template_hash:
            return _revision(rs)
    return None


def replicaset_template(replicasets: list[dict[str, Any]], pod_template_hash: str) -> dict[str, Any] | None:
    """The pod template of the ReplicaSet with this hash, as a Deployment template: without the
    label the Deployment controller adds to it."""
    for rs in replicasets:
        if (rs["metadata"].get("labels") or {}).get(naming.TEMPLATE_HASH_LABEL) == pod_template_hash:
            template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
            meta = template.setdefault("metadata", {})
            (meta.get("labels") or {}).pop(naming.TEMPLATE_HASH_LABEL, None)
            meta.pop("creationTimestamp", None)
            return template
    return None


def pod_failure(pod: PodState, crash_loop_restarts: int) -> PodFailure | None:
    """Why this pod shows the rollout cannot succeed, or None. A ready pod never has failed."""
    if pod.ready:
        return None
    message = pod.terminated_message
    for prefix, reason in RUNTIME_REASONS.items():
        if message.startswith(prefix):
            return PodFailure(reason, message, pod.name)
    if pod.waiting_reason in IMAGE_PULL_REASONS:
        return PodFailure("ImagePullFailed", pod.waiting_message or pod.waiting_reason, pod.name)
    if pod.waiting_reason in CONFIG_REASONS:
        return PodFailure(pod.waiting_reason, pod.waiting_message, pod.name)
    if pod.terminated_reason == "OOMKilled":
        return PodFailure(
            "OOMKilled", message or "the container ran out of memory: raise spec.resources.limits.memory", pod.name
        )
    if pod.waiting_reason == "CrashLoopBackOff" and pod.restarts >= crash_loop_restarts:
        detail = message.splitlines()[-1] if message else pod.waiting_message
        return PodFailure(
            "CrashLoopBackOff", f"restarted {pod.restarts} times; last exit: {detail}".rstrip(": "), pod.name
        )
    return None
