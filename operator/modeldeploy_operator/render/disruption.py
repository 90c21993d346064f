from __future__ import annotations

from typing import Any

from .. import naming
from .common import Settings, Target, object_meta


def render_disruption_budget(target: Target, settings: Settings) -> dict[str, Any] | None:
    budget = target.spec.pod_disruption_budget
    if not budget.enabled:
        return None
    spec: dict[str, Any] = {"selector": {"matchLabels": naming.selector_labels(target.name)}}
    if budget.min_available is not None:
        spec["minAvailable"] = budget.min_available
    else:
        spec["maxUnavailable"] = 1 if budget.max_unavailable is None else budget.max_unavailable
    return {
        "apiVersion": settings.api_versions.pdb,
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(target),
        "spec": spec,
    }
