"""Pure renderers: a ModelDeployment in, the manifests of its children out.

Same input, identical output; no I/O. `render_children` lists every child kind the operator
manages, with `None` for a child that is switched off (the apply layer then deletes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..surge import SurgePlan
from .autoscaler import render_autoscaler
from .common import DEFAULT_RUNTIME_IMAGE, Settings, Target, object_meta, owner_reference
from .deployment import render_deployment, render_pod_template
from .disruption import render_disruption_budget
from .networkpolicy import render_network_policy
from .service import render_service

__all__ = [
    "DEFAULT_RUNTIME_IMAGE",
    "Child",
    "Settings",
    "Target",
    "object_meta",
    "owner_reference",
    "render_autoscaler",
    "render_children",
    "render_deployment",
    "render_disruption_budget",
    "render_network_policy",
    "render_pod_template",
    "render_service",
]


@dataclass(frozen=True)
class Child:
    kind: str
    api_version: str
    manifest: dict[str, Any] | None  # None: switched off, delete it if it exists


def render_children(
    target: Target, settings: Settings, pod_template: dict[str, Any] | None = None, plan: SurgePlan | None = None
) -> list[Child]:
    versions = settings.api_versions
    return [
        Child("Deployment", "apps/v1", render_deployment(target, settings, pod_template, plan)),
        Child("Service", "v1", render_service(target)),
        Child("NetworkPolicy", "networking.k8s.io/v1", render_network_policy(target, settings)),
        Child("HorizontalPodAutoscaler", versions.hpa, render_autoscaler(target, settings)),
        Child("PodDisruptionBudget", versions.pdb, render_disruption_budget(target, settings)),
    ]
