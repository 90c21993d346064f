"""What every renderer takes and the metadata every child shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import api, naming
from ..versions import ApiVersions

DEFAULT_RUNTIME_IMAGE = "ghcr.io/modeldeploy/runtime:0.1.0"


@dataclass(frozen=True)
class Target:
    """One ModelDeployment as the renderers see it: identity plus the parsed spec."""

    name: str
    namespace: str
    uid: str
    spec: api.ModelDeploymentSpec

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.name


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings that shape what is rendered."""

    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    api_versions: ApiVersions = field(default_factory=ApiVersions)
    # Where the operator's own pods run and their labels (set by the chart): the NetworkPolicy lets
    # them scrape the metrics port for the post-rollout analysis. Unset: no such rule.
    operator_namespace: str = ""
    operator_pod_labels: tuple[tuple[str, str], ...] = ()

    @property
    def operator_peer(self) -> dict[str, Any] | None:
        if not self.operator_pod_labels:
            return None
        peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(self.operator_pod_labels)}}
        if self.operator_namespace:
            peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": self.operator_namespace}}
        return peer


def owner_reference(target: Target) -> dict[str, Any]:
    return {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "name": target.name,
        "uid": target.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(target: Target, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or target.name,
        "namespace": target.namespace,
        "labels": naming.common_labels(target.name),
        "ownerReferences": [owner_reference(target)],
    }
