"""Does a live child still match what we would apply? Pure.

Two checks, because each misses what the other catches:
- the spec-hash annotation changes whenever the rendered manifest changes, including fields we
  stopped setting (which server-side apply then removes);
- a subset comparison of the rendered manifest against the live object finds hand edits of fields
  we set (the annotation does not change when someone runs `kubectl edit`). The live object has
  server defaults and other managers' fields on top, hence subset, not equality.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from . import naming


def with_spec_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[naming.SPEC_HASH_ANNOTATION] = naming.content_hash(manifest)
    return out


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """`desired` carries its spec-hash annotation (`with_spec_hash`), so the subset comparison
    covers both checks: a changed hash is a differing annotation."""
    return live is None or not is_subset(desired, live)


def _same_quantity(a: str, b: str) -> bool:
    # The API server canonicalises quantities ("1000m" is stored as "1", "2048Mi" as "2Gi").
    try:
        return Decimal(parse_quantity(a)) == Decimal(parse_quantity(b))
    except (ValueError, ArithmeticError):
        return False


def is_subset(desired: Any, live: Any) -> bool:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        # The API server leaves empty values out (`ingress: []`, `value: ""`): absent matches empty.
        return all(
            is_subset(v, live[k]) if k in live else v in ("", [], {}) for k, v in desired.items() if v is not None
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, v) for d, v in zip(desired, live, strict=True))
    if desired == live:
        return True
    return isinstance(desired, str) and isinstance(live, str) and _same_quantity(desired, live)


def list_repairs(desired: Any, live: Any, path: str = "") -> list[dict[str, Any]]:
    """JSON-patch operations that set each list of `live` that `desired` does not match to the
    desired list, the innermost such list each time.

    Server-side apply merges lists by key, so an entry a hand edit re-keyed or added (a port
    changed from 8080 to 9999, a second env var) stays beside ours, and forcing our fields cannot
    remove it; replacing the list does."""
    if isinstance(desired, dict) and isinstance(live, dict):
        ops: list[dict[str, Any]] = []
        for key, value in desired.items():
            if value is not None and key in live:
                ops += list_repairs(value, live[key], f"{path}/{_pointer(key)}")
        return ops
    if not (isinstance(desired, list) and isinstance(live, list)):
        return []
    replace = [{"op": "replace", "path": path, "value": desired}]
    if len(desired) != len(live):
        return replace
    ops = []
    for i, (want, have) in enumerate(zip(desired, live, strict=True)):
        if is_subset(want, have):
            continue
        inner = list_repairs(want, have, f"{path}/{i}")
        if not inner:
            return replace
        ops += inner
    return ops


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def owns_replicas(live: dict[str, Any], manager: str = naming.FIELD_MANAGER) -> bool:
    """Whether ``manager`` holds ``spec.replicas`` of a live object, per its managedFields."""
    return any(
        entry.get("manager") == manager
        and entry.get("operation") == "Apply"
        and "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        for entry in live.get("metadata", {}).get("managedFields") or []
    )


def replicas_handover(desired: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any] | None:
    """The apply that keeps a Deployment's replicas when we stop setting them (autoscaling on).

    Server-side apply removes a field its manager no longer sends, unless another manager also
    owns it, and a Deployment without replicas defaults to 1: switching autoscaling on would first
    scale to one pod, then the HPA back up. Applying the live count under a second field manager
    first keeps the field (and the pods) until the HPA takes it over. None when nothing is to hand over."""
    if live is None or "replicas" in desired.get("spec", {}) or not owns_replicas(live):
        return None
    replicas = (live.get("spec") or {}).get("replicas")
    if replicas is None:
        return None
    meta = desired["metadata"]
    return {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }
