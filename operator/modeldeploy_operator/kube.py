"""The only module that talks to the Kubernetes API.

One generic routine serves every child kind: server-side apply with one field manager (conflicts
forced: the operator owns the fields it renders), delete when switched off (404 is fine), and
nothing at all when the live object already matches (see `drift.needs_apply`).

It is over the usual size because it is the whole apply layer: every call the operator makes to the
API server, with its error mapping, is here and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from . import api, metrics, naming
from .drift import list_repairs, needs_apply, replicas_handover, with_spec_hash
from .render import Child
from .surge import Inventory
from .versions import ApiVersions, choose_api_versions

log = logging.getLogger(__name__)

PLURALS = {
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "Pod": "pods",
    "Service": "services",
    "Secret": "secrets",
    "Event": "events",
    "NetworkPolicy": "networkpolicies",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    api.KIND: api.PLURAL,
}
CR_API_VERSION = f"{api.GROUP}/{api.VERSION}"


class NotFound(ApiException):
    pass


class TransientError(Exception):
    """Worth retrying shortly: a conflict, a timeout, the API server being busy."""


# Status codes that say nothing about the object sent: the same request may succeed later.
TRANSIENT_STATUS = {409, 429, 503, 504}
# How server-side apply answers (with a 500) an object that does not fit the schema: a list entry
# twice, an unknown field, a number where a string belongs. The object is at fault, not the server.
TYPED_OBJECT_ERROR = re.compile(r"failed to create typed (patch|live) object")
TYPED_PATH_ERROR = re.compile(r"^\s*(\.[^\s:]+): (.+)$")


@dataclass(frozen=True)
class Cause:
    field: str  # of the object sent, e.g. spec.ingress[0].from[0].ipBlock.cidr; "" when none is named
    message: str


@dataclass(eq=False)
class Refused(Exception):
    """The API server refused the object itself: the same object would be refused again, so it is
    not retried until what is rendered changes."""

    status: int
    message: str
    causes: list[Cause] = field(default_factory=list)
    kind: str = ""  # of the child refused, once the apply layer knows it

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


def refusal(status: int, body: str) -> Refused | None:
    """The Refused an error answer stands for, or None when the answer says nothing about the
    object (a conflict, throttling, a busy or failing server)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    message = str(data.get("message") or body)
    if status in TRANSIENT_STATUS or status in (401, 403, 404):
        return None
    typed = TYPED_OBJECT_ERROR.search(message)
    if status >= 500 and not typed and data.get("reason") not in ("Invalid", "BadRequest"):
        return None
    causes = [
        Cause(str(c.get("field") or ""), str(c.get("message") or ""))
        for c in (data.get("details") or {}).get("causes") or []
    ]
    if typed and not causes:
        text = TYPED_OBJECT_ERROR.split(message, maxsplit=1)[-1]
        for line in re.sub(r"^[^:]*:\s*(errors:)?", "", text, count=1).splitlines():
            m = TYPED_PATH_ERROR.match(line)
            if m:
                causes.append(Cause(m.group(1).lstrip("."), m.group(2).strip()))
    return Refused(status, message, causes)


def path(api_version: str, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    out = f"{base}/namespaces/{namespace}/{PLURALS[kind]}"
    if name:
        out += f"/{name}"
    if sub:
        out += f"/{sub}"
    return out


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Pods that may hold a node's resources: bound, not finished (the API server filters).
HOLDING_PODS = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
# How old an inventory may be for a forecast in status: one read serves every reconcile meanwhile.
INVENTORY_MAX_AGE_S = 10.0


@dataclass
class Kube:
    client: kubernetes.client.ApiClient
    _inventory: tuple[float, Inventory] | None = field(default=None, repr=False)
    _inventory_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_environment(cls) -> Kube:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient())

    # ---- raw requests ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url_path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, _, _ = self.client.param_serialize(
            method,
            url_path,
            query_params=list((query or {}).items()),
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self.client.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
            data = resp.read()
        except urllib3.exceptions.HTTPError as exc:  # timeouts, refused or reset connections
            raise TransientError(f"{method} {url_path}: {exc}") from exc
        if resp.status >= 400:
            text = data.decode(errors="replace") if data else ""
            refused = refusal(resp.status, text)
            if refused is not None:
                raise refused
            exc = (NotFound if resp.status == 404 else ApiException)(status=resp.status, reason=resp.reason)
            exc.body = text
            if resp.status in TRANSIENT_STATUS or resp.status >= 500:
                raise TransientError(f"{method} {url_path}: {resp.status} {_message(exc.body)}") from exc
            raise exc
        if method == "GET":
            metrics.API_READS.labels(kind=_resource_of(url_path)).inc()
        elif (query or {}).get("dryRun") != "All":
            metrics.API_WRITES.labels(kind=_resource_of(url_path)).inc()
        return json.loads(data) if data else None

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def gpu_inventory(self, max_age_s: float = INVENTORY_MAX_AGE_S) -> Inventory:
        """Every Node and every pod bound to one that has not finished, cluster-wide (list only),
        for `surge.plan_surge`. What cannot be read (no RBAC for it, a busy server) is said in
        `Inventory.error`, and the plan then counts no GPU as free."""
        with self._inventory_lock:
            cached = self._inventory
            if cached is not None and time.monotonic() - cached[0] <= max_age_s:
                return cached[1]
            try:
                nodes = (self.request("GET", "/api/v1/nodes") or {}).get("items") or []
                pods = (self.request("GET", "/api/v1/pods", query={"fieldSelector": HOLDING_PODS}) or {}).get(
                    "items"
                ) or []
                inventory = Inventory(tuple(nodes), tuple(pods))
            except ApiException as exc:
                inventory = Inventory(error=f"{exc.status} {_message(exc.body or '')}".strip())
            except (TransientError, Refused) as exc:
                inventory = Inventory(error=str(exc))
            self._inventory = (time.monotonic(), inventory)
            return inventory

    # ---- discovery --------------------------------------------------------------------------------

    def discover_api_versions(self) -> ApiVersions:
        groups = self.request("GET", "/apis") or {}
        served = {v["groupVersion"] for g in groups.get("groups", []) for v in g.get("versions", [])}
        return choose_api_versions(served)

    # ---- children -----------------------------------------------------------------------------------

    def apply(
        self, manifest: dict[str, Any], field_manager: str = naming.FIELD_MANAGER, *, dry_run: bool = False
    ) -> dict[str, Any]:
        meta = manifest["metadata"]
        query = {"fieldManager": field_manager, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        return (
            self.request(
                "PATCH",
                path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]),
                query=query,
                body=manifest,
                content_type="application/apply-patch+yaml",
            )
            or {}
        )

    def json_patch(self, api_version: str, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        self.request(
            "PATCH",
            path(api_version, kind, namespace, name),
            query={"fieldManager": naming.FIELD_MANAGER},
            body=ops,
            content_type="application/json-patch+json",
        )

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        try:
            self.request("DELETE", path(api_version, kind, namespace, name), body={"propagationPolicy": "Background"})
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def dry_run_children(self, children: list[Child], live: dict[str, dict[str, Any] | None]) -> dict[str, Refused]:
        """Asks the API server to judge every child that would be applied, writing nothing.

        A child that exists is judged merged with what is live, so a field someone added by hand
        can make an acceptable object look refused (a second Service port named `http`). Such a
        refusal is judged again as a new object of another name: only what the spec renders counts."""
        refused: dict[str, Refused] = {}
        for child in children:
            if child.manifest is None:
                continue
            desired = with_spec_hash(child.manifest)
            current = live.get(child.kind)
            if not needs_apply(desired, current):
                continue
            try:
                self.apply(desired, dry_run=True)
            except Refused as exc:
                if current is None:
                    refused[child.kind] = exc
                    continue
                try:
                    self.apply(_renamed(desired), dry_run=True)
                except Refused as fresh:
                    refused[child.kind] = fresh
        return refused

    def sync_children(
        self, children: list[Child], live: dict[str, dict[str, Any] | None], owner_uid: str
    ) -> dict[str, dict[str, Any] | None]:
        """Applies what differs, deletes what is switched off; returns the children as they now are.

        Each child is synced even when one before it fails; the first failure is raised at the end."""
        out = dict(live)
        failure: Exception | None = None
        for child in children:
            try:
                out[child.kind] = self._sync_child(child, live.get(child.kind), owner_uid)
            except (Refused, TransientError) as exc:
                if isinstance(exc, Refused):
                    exc.kind = child.kind
                log.warning("%s %s: %s", child.kind, (child.manifest or {}).get("metadata", {}).get("name"), exc)
                failure = failure or exc
        if failure is not None:
            raise failure
        return out

    def _sync_child(self, child: Child, current: dict[str, Any] | None, owner_uid: str) -> dict[str, Any] | None:
        if child.manifest is None:
            if current is not None and _owned_by(current, owner_uid):
                meta = current["metadata"]
                self.delete(child.api_version, child.kind, meta["namespace"], meta["name"])
                return None
            return current
        desired = with_spec_hash(child.manifest)
        if not needs_apply(desired, current):
            return current
        handover = replicas_handover(desired, current)
        if handover is not None:
            self.apply(handover, naming.HANDOVER_FIELD_MANAGER)
        refused: Refused | None = None
        try:
            applied = self.apply(desired)
        except Refused as exc:
            if current is None:
                raise
            refused, applied = exc, current  # refused merged with a hand edit: repaired below
        if not needs_apply(desired, applied):
            return applied
        # Server-side apply keeps list entries another manager added or re-keyed (a Service port
        # edited by hand is a new entry, and the old one under our name clashes with it): replace
        # those lists outright, then apply again.
        ops = list_repairs(desired, applied)
        if not ops:
            if refused is not None:
                raise refused
            return applied
        meta = desired["metadata"]
        self.json_patch(child.api_version, child.kind, meta["namespace"], meta["name"], ops)
        return self.apply(desired)

    # ---- the custom resource ----------------------------------------------------------------------

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """The resource as written. One deleted while it was being reconciled has no status left
        to write: fine (None)."""
        with contextlib.suppress(NotFound):
            return self._patch_status(namespace, name, patch)
        return None

    def _patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        return self.request(
            "PATCH",
            path(CR_API_VERSION, api.KIND, namespace, name, "status"),
            body={"status": patch},
            content_type="application/merge-patch+json",
        )

    def emit_event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = owner["metadata"]
        stamp = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": CR_API_VERSION,
                "kind": api.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": naming.OPERATOR_NAME},
            "reportingComponent": naming.OPERATOR_NAME,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.request("POST", path("v1", "Event", meta["namespace"]), body=event)
        except (ApiException, TransientError, Refused) as exc:  # an event lost is no reason to fail a reconcile
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], exc)


def _resource_of(url_path: str) -> str:
    """`.../namespaces/NS/deployments/NAME/status` -> `deployments/status`."""
    parts = url_path.split("/")
    if "namespaces" not in parts:
        return "other"
    rest = parts[parts.index("namespaces") + 2 :]
    return "/".join(rest[:1] + rest[2:3])


def _message(body: str) -> str:
    try:
        return json.loads(body).get("message") or body
    except ValueError:
        return body


def _renamed(manifest: dict[str, Any]) -> dict[str, Any]:
    """The same object under a name of the same length that no object has (for a dry run)."""
    out = json.loads(json.dumps(manifest))
    out["metadata"]["name"] = ("z" + secrets.token_hex(32))[: len(out["metadata"]["name"])]
    return out


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
