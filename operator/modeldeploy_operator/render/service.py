from __future__ import annotations

from typing import Any

import modeldeploy_contract as contract

from .. import naming
from .common import Target, object_meta


def render_service(target: Target) -> dict[str, Any]:
    ports = [
        {"name": "http", "port": contract.HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": contract.METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
    ]
    if target.spec.runtime.grpc.enabled:
        ports.append(
            {"name": "grpc", "port": contract.GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(target),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(target.name),
            "ports": ports,
        },
    }
