"""How an update replaces the runtime pods, and what it costs. Pure.

With `spec.rollout.maxSurge: auto` an update starts one extra pod before it stops an old one, but
only where the cluster has room for that pod: a node the pod may run on (its nodeSelector, required
node affinity and tolerations, as rendered) with a free GPU of every kind it requests, counted as
the node's allocatable minus the requests of the pods bound to it that have not finished. Without
room the update falls back to maxSurge 0 (a pod is stopped first), and says so: the surge pod
would only wait, Pending, until the progress deadline.

The decision is taken when an update is applied and kept in an annotation of the Deployment, so a
Deployment in sync is never rewritten because a GPU somewhere was taken or freed. Matching a pod to
nodes (selectors, affinity operators, taints) is here too, over the usual size, because the
message of a plan names what matched and what did not.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from . import api
from .drift import is_subset
from .naming import content_hash

AUTO = "auto"
PLAN_ANNOTATION = f"{api.GROUP}/update-plan"
GPU_RESOURCE = re.compile(r"^([a-z0-9.-]+/gpu|nvidia\.com/mig-.+|gpu\.intel\.com/.+)$")
TERMINAL_PHASES = ("Succeeded", "Failed")
SCHEDULING_EFFECTS = ("NoSchedule", "NoExecute")  # PreferNoSchedule does not keep a pod off
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
NAMED_NODES = 3  # nodes named in a message; the rest are counted


@dataclass(frozen=True)
class Inventory:
    """Nodes and pods as listed from the API; `error` says why they could not be."""

    nodes: tuple[dict[str, Any], ...] = ()
    pods: tuple[dict[str, Any], ...] = ()
    error: str = ""


@dataclass(frozen=True)
class SurgePlan:
    max_surge: int | str
    max_unavailable: int | str
    message: str
    auto: bool = False  # decided by maxSurge auto (so kept until the next update)

    def annotation(self, pod_template: dict[str, Any]) -> str:
        """The plan as kept on the Deployment, with the hash of the pod template it was decided for."""
        return json.dumps(
            {
                "auto": self.auto,
                "maxSurge": self.max_surge,
                "maxUnavailable": self.max_unavailable,
                "message": self.message,
                "template": content_hash(pod_template),
            },
            sort_keys=True,
        )


# ---- what a pod needs, where it may go ----------------------------------------------------------


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, ArithmeticError, TypeError):
        return Decimal(0)


def _container_gpus(container: dict[str, Any]) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    # An extended resource's request defaults to its limit and may not differ from it.
    wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {k: _amount(v) for k, v in wanted.items() if GPU_RESOURCE.match(k) and _amount(v) > 0}


def gpu_requests(pod_spec: dict[str, Any]) -> dict[str, Decimal]:
    """GPUs one pod holds, by resource name: its containers' sum, or its largest init container's."""
    total: dict[str, Decimal] = {}
    for container in pod_spec.get("containers") or []:
        for name, n in _container_gpus(container).items():
            total[name] = total.get(name, Decimal(0)) + n
    for container in pod_spec.get("initContainers") or []:
        for name, n in _container_gpus(container).items():
            total[name] = max(total.get(name, Decimal(0)), n)
    return total


def _expression_matches(expr: dict[str, Any], value: str | None) -> bool:
    op, values = expr.get("operator"), expr.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            left, right = int(value), int(values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False


def _term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"].get("labels") or {}
    expressions, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term selects no node
    fields_of = {"metadata.name": node["metadata"]["name"]}
    return all(_expression_matches(e, labels.get(e.get("key"))) for e in expressions) and all(
        _expression_matches(f, fields_of.get(f.get("key"))) for f in fields
    )


def required_terms(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    node_affinity = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    return list(required.get("nodeSelectorTerms") or [])


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    op = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return op == "Exists"  # no key and Exists: every taint
    if toleration["key"] != taint.get("key"):
        return False
    return op == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


def why_not_on(node: dict[str, Any], pod_spec: dict[str, Any]) -> str:
    """Why a pod of `pod_spec` may not run on `node`, or "" when it may."""
    labels = node["metadata"].get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return f"label {key} is {labels[key]!r}" if key in labels else f"no label {key}"
    terms = required_terms(pod_spec)
    if terms and not any(_term_matches(t, node) for t in terms):
        return "the required node affinity does not match"
    spec = node.get("spec") or {}
    taints = list(spec.get("taints") or []) + ([UNSCHEDULABLE_TAINT] if spec.get("unschedulable") else [])
    tolerations = pod_spec.get("tolerations") or []
    for taint in taints:
        if taint.get("effect") in SCHEDULING_EFFECTS and not any(tolerates(t, taint) for t in tolerations):
            value = f"={taint['value']}" if taint.get("value") else ""
            return f"taint {taint.get('key')}{value}:{taint.get('effect')} not tolerated"
    return ""


def free_gpus(node: dict[str, Any], pods: tuple[dict[str, Any], ...], names: list[str]) -> dict[str, Decimal]:
    """Allocatable minus what the unfinished pods bound to the node request (a terminating pod
    holds its GPUs until it is gone)."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    free = {name: _amount(allocatable.get(name, "0")) for name in names}
    node_name = node["metadata"]["name"]
    for pod in pods:
        spec, phase = pod.get("spec") or {}, (pod.get("status") or {}).get("phase")
        if spec.get("nodeName") != node_name or phase in TERMINAL_PHASES:
            continue
        for name, n in gpu_requests(spec).items():
            if name in free:
                free[name] -= n
    return free


# ---- the decision -------------------------------------------------------------------------------


def _count(value: int | str, replicas: int, *, round_up: bool) -> int:
    """A maxSurge / maxUnavailable value as a number of pods, rounded as the Deployment controller does."""
    if isinstance(value, int):
        return value
    if value.endswith("%"):
        exact = Decimal(value[:-1]) * replicas / 100
        return int(math.ceil(exact) if round_up else math.floor(exact))
    return int(value)


def _plural(n: int | Decimal, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _offline(unavailable: int, replicas: int) -> str:
    unavailable = min(max(unavailable, 1), replicas)
    at_a_time = " at a time" if unavailable < replicas else ""
    return f"{unavailable} of {replicas} replicas offline{at_a_time}"


def _where(pod_spec: dict[str, Any]) -> str:
    parts = []
    selector = pod_spec.get("nodeSelector") or {}
    if selector:
        parts.append("nodeSelector {" + ", ".join(f"{k}: {v}" for k, v in sorted(selector.items())) + "}")
    if required_terms(pod_spec):
        parts.append("the required node affinity")
    if any(t.get("key") not in (None, "", "nvidia.com/gpu") for t in pod_spec.get("tolerations") or []):
        parts.append("the tolerations")
    return "nodes matching " + " and ".join(parts) if parts else "any node"


def _names(nodes: list[str]) -> str:
    shown = ", ".join(nodes[:NAMED_NODES])
    rest = len(nodes) - NAMED_NODES
    return f"{shown} and {_plural(rest, 'more node')}" if rest > 0 else shown


def find_room(pod_spec: dict[str, Any], inventory: Inventory) -> tuple[bool, str]:
    """Whether one more pod of `pod_spec` fits on some node, and what was found, for the message."""
    need = gpu_requests(pod_spec)
    names = sorted(need)
    what = " and ".join(names)
    if inventory.error:
        return False, f"could not read nodes and pods to find a free {what} ({inventory.error})"
    fits: list[str] = []
    total_free: dict[str, Decimal] = {n: Decimal(0) for n in names}
    notes: list[str] = []
    for node in sorted(inventory.nodes, key=lambda n: n["metadata"]["name"]):
        node_name = node["metadata"]["name"]
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        if not any(_amount(allocatable.get(n, "0")) > 0 for n in names):
            continue
        why = why_not_on(node, pod_spec)
        if why:
            notes.append(f"{node_name}: {why}")
            continue
        free = free_gpus(node, inventory.pods, names)
        if all(free[n] >= need[n] for n in names):
            fits.append(node_name)
            for n in names:
                total_free[n] += free[n]
        else:
            n = names[0] if len(names) == 1 else next(n for n in names if free[n] < need[n])
            in_use = _amount(allocatable.get(n, "0")) - free[n]
            notes.append(f"{node_name}: {in_use} of {_amount(allocatable.get(n, '0'))} {n} requested")
    if fits:
        counts = " and ".join(f"{total_free[n]} free {n}" for n in names)
        return True, f"{counts} on {_names(fits)}"
    found = f"no free {what} on {_where(pod_spec)}"
    if notes:
        shown = "; ".join(notes[:NAMED_NODES])
        more = f"; {_plural(len(notes) - NAMED_NODES, 'more node')}" if len(notes) > NAMED_NODES else ""
        return False, f"{found} ({shown}{more})"
    return False, f"{found} (no such node has {what} allocatable)"


def _unavailable(rollout: api.Rollout, surge: int, replicas: int) -> int | str:
    """The user's maxUnavailable as written; unset, 0 when one pod surges for a single replica
    (so nothing is dropped), else 1."""
    if rollout.max_unavailable is not None:
        return rollout.max_unavailable
    return 0 if surge > 0 and replicas <= 1 else 1


def explicit_plan(rollout: api.Rollout, replicas: int) -> SurgePlan:
    surge = rollout.max_surge
    assert surge != AUTO
    surges = _count(surge, replicas, round_up=True)
    unavailable = _unavailable(rollout, surges, replicas)
    if replicas == 0:
        return SurgePlan(surge, unavailable, "no pods to replace: replicas is 0")
    offline = _count(unavailable, replicas, round_up=False)
    if surges > 0:
        message = f"update surges {_plural(surges, 'pod')} (spec.rollout.maxSurge {surge})"
        if offline > 0:
            message += f" and takes up to {_offline(offline, replicas)}"
        return SurgePlan(surge, unavailable, message)
    return SurgePlan(surge, unavailable, f"update will take {_offline(offline, replicas)} (spec.rollout.maxSurge 0)")


def plan_surge(
    rollout: api.Rollout, replicas: int, pod_template: dict[str, Any], inventory: Inventory | None
) -> SurgePlan:
    """The strategy of the next update. `inventory` None: not read (`modeldeploy render` offline),
    so a GPU pod's surge is left to the operator."""
    if rollout.max_surge != AUTO:
        return explicit_plan(rollout, replicas)
    pod_spec = pod_template.get("spec") or {}
    need = gpu_requests(pod_spec)
    if replicas == 0:
        unavailable = _unavailable(rollout, 0, replicas)
        surges = 0 if _count(unavailable, 1, round_up=False) > 0 else 1  # never both 0
        return SurgePlan(surges, unavailable, "no pods to replace: replicas is 0", auto=True)

    def surge(why: str) -> SurgePlan:
        unavailable = _unavailable(rollout, 1, replicas)
        offline = _count(unavailable, replicas, round_up=False)
        also = f"; it takes up to {_offline(offline, replicas)}" if offline > 0 else ""
        return SurgePlan(1, unavailable, f"update surges 1 pod: {why}{also}", auto=True)

    if not need:
        return surge("the pods request no GPU")
    what = " and ".join(sorted(need))
    if inventory is None:
        unavailable = _unavailable(rollout, 0, replicas)
        if _count(unavailable, replicas, round_up=False) == 0:
            return surge(f"maxUnavailable is 0, so it waits for a free {what} if there is none")
        offline = _offline(_count(unavailable, replicas, round_up=False), replicas)
        return SurgePlan(
            0,
            unavailable,
            f"maxSurge auto is decided by the operator when it applies an update: it surges 1 pod if the "
            f"cluster has a free {what} for it, else the update will take {offline}",
            auto=True,
        )
    room, found = find_room(pod_spec, inventory)
    if room:
        return surge(found)
    unavailable = _unavailable(rollout, 0, replicas)
    offline = _count(unavailable, replicas, round_up=False)
    if offline == 0:  # the user forbids taking a pod offline: surge, and wait for a GPU
        return surge(f"it waits Pending for a free GPU, as spec.rollout.maxUnavailable is 0: {found}")
    return SurgePlan(0, unavailable, f"update will take {_offline(offline, replicas)}: {found}", auto=True)


# ---- keeping a decision until the next update ---------------------------------------------------


def _recorded(deployment: dict[str, Any] | None) -> tuple[SurgePlan, str] | None:
    raw = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(PLAN_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        plan = SurgePlan(data["maxSurge"], data["maxUnavailable"], str(data["message"]), bool(data["auto"]))
        template = str(data.get("template") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    ok = all(
        (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str)
        for v in (plan.max_surge, plan.max_unavailable)
    )
    return (plan, template) if ok else None


def applied_plan(deployment: dict[str, Any] | None) -> SurgePlan | None:
    """The plan recorded on a live (or rendered) Deployment, or None."""
    recorded = _recorded(deployment)
    return recorded[0] if recorded else None


def kept_plan(
    rollout: api.Rollout, pod_template: dict[str, Any], deployment: dict[str, Any] | None
) -> SurgePlan | None:
    """The auto plan of the live Deployment while its pod template stays as it is (no update is
    being applied), so that it is not rewritten; None when a plan must be decided now. The same
    template is the one the plan was decided for (a field removed from the spec changes it) and
    still what is live (a hand edit that the apply would undo is an update too)."""
    if rollout.max_surge != AUTO:
        return None
    recorded = _recorded(deployment)
    if recorded is None or not recorded[0].auto:
        return None
    plan, template_hash = recorded
    if rollout.max_unavailable is not None and plan.max_unavailable != rollout.max_unavailable:
        return None  # the user changed maxUnavailable: decide again
    live_template = ((deployment or {}).get("spec") or {}).get("template")
    same = template_hash == content_hash(pod_template) and is_subset(pod_template, live_template)
    return plan if same else None
