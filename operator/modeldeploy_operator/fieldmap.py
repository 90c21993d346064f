"""Where in the spec a child's field comes from. Pure.

The API server names the field of the child it refused (`spec.ingress[0].from[0].ipBlock.cidr` of a
NetworkPolicy); the user wrote `spec.networkPolicy.allowFrom[0].ipBlock.cidr`. Each rule below
follows one renderer backwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .kube import Refused
from .render import Target
from .render.deployment import GPU_PRODUCT_LABEL, GPU_RESOURCE, runtime_env
from .validation import Problem

POD = r"spec\.template\.spec"
CONTAINER = POD + r"\.containers\[(?:0|name=\"runtime\")\]"
Rule = tuple[str, Callable[[re.Match[str], Target], str | None]]


def _index(value: str, names: list[str]) -> int | None:
    """`3` or `name="X"` (how server-side apply names a list entry by its key)."""
    if value.isdigit():
        return int(value)
    keyed = re.fullmatch(r'name="(.*)"', value)
    return names.index(keyed.group(1)) if keyed and keyed.group(1) in names else None


def _env(m: re.Match[str], t: Target) -> str | None:
    user = t.spec.runtime.env
    rendered = [e.get("name") for e in runtime_env(t)]
    i = _index(m.group(1), rendered)
    own = len(rendered) - len(user)
    if i is None or i < own:
        return None
    return f"spec.runtime.env[{i - own}]{m.group(2)}"


def _resources(m: re.Match[str], t: Target) -> str | None:
    part, key, rest = m.group(1), m.group(2) or m.group(3), m.group(4)
    if key is None:
        return f"spec.resources.{part}{rest}"
    if key == GPU_RESOURCE:
        return "spec.resources.gpu"
    return f"spec.resources.{part}.{key}"


def _node_selector(m: re.Match[str], t: Target) -> str:
    key = m.group(1) or m.group(2)
    if key == GPU_PRODUCT_LABEL:
        return "spec.resources.gpuProduct"
    return f"spec.scheduling.nodeSelector.{key}" if key else "spec.scheduling.nodeSelector"


def _volume(m: re.Match[str], t: Target) -> str | None:
    i = int(m.group(1))
    if i == 1:
        return "spec.runtime.cache.claimName"
    if i == 2 and t.spec.model.uri.startswith("pvc://"):
        return "spec.model.uri"
    return "spec.model.credentials.secretName" if i >= 2 and t.spec.model.credentials else None


def _ingress(m: re.Match[str], t: Target) -> str | None:
    policy = t.spec.network_policy
    callers = policy.allow_from is None or bool(policy.allow_from)
    rule, rest = int(m.group(1)), m.group(2)
    if callers and rule == 0:
        if policy.allow_from is None:
            return None  # the default peer, not the user's
        return f"spec.networkPolicy.allowFrom{rest}"
    return f"spec.networkPolicy.allowMetricsFrom{rest}"


def _metric(m: re.Match[str], t: Target) -> str | None:
    scaling = t.spec.autoscaling
    i, rest = int(m.group(1)), m.group(2)
    if scaling.target_cpu_utilization_percentage is not None:
        if i == 0:
            return "spec.autoscaling.targetCpuUtilizationPercentage"
        i -= 1
    ordered = sorted(scaling.metrics, key=lambda metric: metric.name)
    if i >= len(ordered):
        return None
    j = scaling.metrics.index(ordered[i])
    leaf = {"pods.metric.name": ".name", "pods.target.averageValue": ".targetAverageValue"}.get(rest.lstrip("."), "")
    return f"spec.autoscaling.metrics[{j}]{leaf}"


def _to(path: str) -> Callable[[re.Match[str], Target], str]:
    return lambda m, t: path.format(*m.groups())


NAME: Rule = (r"metadata\.name$", _to("metadata.name"))
RULES: dict[str, list[Rule]] = {
    "Deployment": [
        NAME,
        (r"spec\.replicas$", _to("spec.replicas")),
        (r"spec\.progressDeadlineSeconds$", _to("spec.rollout.progressDeadlineSeconds")),
        (r"spec\.strategy\.rollingUpdate\.(maxSurge|maxUnavailable)$", _to("spec.rollout.{}")),
        (CONTAINER + r"\.env\[([^\]]+)\](.*)$", _env),
        (CONTAINER + r"\.resources\.(requests|limits)(?:\[([^\]]+)\]|\.([^.\[]+))?(.*)$", _resources),
        (CONTAINER + r"\.image$", _to("spec.runtime.image")),
        (CONTAINER + r"\.imagePullPolicy$", _to("spec.runtime.imagePullPolicy")),
        (POD + r"\.tolerations(.*)$", _to("spec.scheduling.tolerations{}")),
        (POD + r"\.nodeSelector(?:\[([^\]]+)\]|\.(.+))?$", _node_selector),
        (POD + r"\.affinity(.*)$", _to("spec.scheduling.affinity{}")),
        (POD + r"\.priorityClassName$", _to("spec.scheduling.priorityClassName")),
        (POD + r"\.serviceAccountName$", _to("spec.serviceAccountName")),
        (POD + r"\.imagePullSecrets(\[\d+\])?.*$", lambda m, t: f"spec.runtime.imagePullSecrets{m.group(1) or ''}"),
        (POD + r"\.volumes\[(\d+)\].*$", _volume),
    ],
    "Service": [NAME],
    "NetworkPolicy": [NAME, (r"spec\.ingress\[(\d+)\]\.from(.*)$", _ingress)],
    "HorizontalPodAutoscaler": [
        NAME,
        (r"spec\.(minReplicas|maxReplicas)$", _to("spec.autoscaling.{}")),
        (r"spec\.behavior(.*)$", _to("spec.autoscaling.behavior{}")),
        (r"spec\.metrics\[(\d+)\](.*)$", _metric),
    ],
    "PodDisruptionBudget": [
        NAME,
        (r"spec\.(minAvailable|maxUnavailable)$", _to("spec.podDisruptionBudget.{}")),
    ],
}


def spec_field(kind: str, child_field: str, target: Target) -> str | None:
    """The spec field a child's field is rendered from, or None when the spec has no such field."""
    field = child_field.lstrip(".")
    for pattern, to_spec in RULES.get(kind, []):
        m = re.match(pattern, field)
        if m:
            return to_spec(m, target)
    return None


def refusal_problems(kind: str, refused: Refused, target: Target) -> list[Problem]:
    """What the API server said about a child, as problems of the spec fields it came from."""
    problems = []
    for cause in refused.causes or []:
        field = spec_field(kind, cause.field, target) if cause.field else None
        if field is not None:
            problems.append(Problem(field, f"{cause.message} (refused by the API server)"))
        else:
            where = f" at {cause.field}" if cause.field else ""
            problems.append(
                Problem("spec", f"the {kind} it renders was refused by the API server{where}: {cause.message}")
            )
    if not problems:
        problems.append(Problem("spec", f"the {kind} it renders was refused by the API server: {refused.message}"))
    return list(dict.fromkeys(problems))
