from __future__ import annotations

from typing import Any

from .common import Settings, Target, object_meta


def render_autoscaler(target: Target, settings: Settings) -> dict[str, Any] | None:
    scaling = target.spec.autoscaling
    if not scaling.enabled:
        return None
    metrics: list[dict[str, Any]] = []
    if scaling.target_cpu_utilization_percentage is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization_percentage},
                },
            }
        )
    # Sorted so that reordering the spec does not show up as a change.
    for metric in sorted(scaling.metrics, key=lambda m: m.name):
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric.name},
                    "target": {"type": "AverageValue", "averageValue": metric.target_average_value},
                },
            }
        )
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target.name},
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
    }
    if metrics:  # none given: the HPA's own default, 80% CPU utilisation
        spec["metrics"] = metrics
    if scaling.behavior:
        spec["behavior"] = scaling.behavior
    return {
        "apiVersion": settings.api_versions.hpa,
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(target),
        "spec": spec,
    }
