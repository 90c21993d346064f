"""Names, labels and annotations the operator puts on what it owns."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import api

FIELD_MANAGER = "modeldeploy-operator"
# Holds a Deployment's replicas for the moment autoscaling is switched on (see drift.replicas_handover).
HANDOVER_FIELD_MANAGER = "modeldeploy-operator-handover"
OPERATOR_NAME = "modeldeploy-operator"

NAME_LABEL = f"{api.GROUP}/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
SPEC_HASH_ANNOTATION = f"{api.GROUP}/spec-hash"
RETRY_ANNOTATION = f"{api.GROUP}/retry"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH_LABEL = "pod-template-hash"

LABEL_VALUE_MAX = 63

CONTAINER_NAME = "runtime"


def selector_labels(name: str) -> dict[str, str]:
    return {NAME_LABEL: name}


def common_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modeldeploy-runtime",
        "app.kubernetes.io/instance": name,
        MANAGED_BY_LABEL: OPERATOR_NAME,
        NAME_LABEL: name,
    }


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def content_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object: same content, same hash, whatever the key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
