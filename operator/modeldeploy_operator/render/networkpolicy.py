"""Ingress to the model pods: only the declared callers on the inference ports (REST, and gRPC
when it is on), only the declared
scrapers on the metrics port, nothing else (NetworkPolicies are additive allow-lists)."""

from __future__ import annotations

from typing import Any

from .. import naming
from .common import Settings, Target, object_meta

SAME_NAMESPACE = [{"podSelector": {}}]


def render_network_policy(target: Target, settings: Settings | None = None) -> dict[str, Any] | None:
    policy = target.spec.network_policy
    if not policy.enabled:
        return None
    callers = SAME_NAMESPACE if policy.allow_from is None else policy.allow_from
    ingress = []
    if callers:
        ports = [{"protocol": "TCP", "port": "http"}]
        if target.spec.runtime.grpc.enabled:
            ports.append({"protocol": "TCP", "port": "grpc"})
        ingress.append({"from": callers, "ports": ports})
    scrapers = list(policy.allow_metrics_from)
    # The operator reads the pods' metrics itself (the post-rollout analysis and status.hardware).
    operator = settings.operator_peer if settings is not None else None
    if operator is not None and operator not in scrapers:
        scrapers.append(operator)
    if scrapers:
        ingress.append({"from": scrapers, "ports": [{"protocol": "TCP", "port": "metrics"}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(target),
        "spec": {
            "podSelector": {"matchLabels": naming.selector_labels(target.name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
