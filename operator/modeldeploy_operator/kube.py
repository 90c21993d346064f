"""The only module that talks to the Kubernetes API.

One generic routine serves every child kind: server-side apply with one field manager (conflicts
forced: the operator owns the fields it renders), delete when switched off (404 is fine), and
nothing at all when the live object already matches (see `drift.needs_apply`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from . import api, metrics, naming
from .drift import needs_apply, replicas_handover, with_spec_hash
from .render import Child
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


@dataclass
class Kube:
    client: kubernetes.client.ApiClient

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
        resp = self.client.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        data = resp.read()
        if resp.status >= 400:
            exc = (NotFound if resp.status == 404 else ApiException)(status=resp.status, reason=resp.reason)
            exc.body = data.decode(errors="replace") if data else ""
            if resp.status in (409, 429, 500, 503, 504):
                raise TransientError(f"{method} {url_path}: {resp.status} {_message(exc.body)}") from exc
            raise exc
        if method != "GET":
            metrics.API_WRITES.labels(kind=_resource_of(url_path)).inc()
        return json.loads(data) if data else None

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = self.request("GET", path(api_version, kind, namespace), query={"labelSelector": selector})
        return list((result or {}).get("items") or [])

    # ---- discovery --------------------------------------------------------------------------------

    def discover_api_versions(self) -> ApiVersions:
        groups = self.request("GET", "/apis") or {}
        served = {v["groupVersion"] for g in groups.get("groups", []) for v in g.get("versions", [])}
        return choose_api_versions(served)

    # ---- children -----------------------------------------------------------------------------------

    def apply(self, manifest: dict[str, Any], field_manager: str = naming.FIELD_MANAGER) -> dict[str, Any]:
        meta = manifest["metadata"]
        return (
            self.request(
                "PATCH",
                path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]),
                query={"fieldManager": field_manager, "force": "true"},
                body=manifest,
                content_type="application/apply-patch+yaml",
            )
            or {}
        )

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        try:
            self.request("DELETE", path(api_version, kind, namespace, name), body={"propagationPolicy": "Background"})
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def live_children(self, children: list[Child], namespace: str, name: str) -> dict[str, dict[str, Any] | None]:
        return {c.kind: self.get(c.api_version, c.kind, namespace, name) for c in children}

    def sync_children(
        self, children: list[Child], live: dict[str, dict[str, Any] | None], owner_uid: str
    ) -> dict[str, dict[str, Any] | None]:
        """Applies what differs, deletes what is switched off; returns the children as they now are."""
        out = dict(live)
        for child in children:
            current = live.get(child.kind)
            if child.manifest is None:
                if current is not None and _owned_by(current, owner_uid):
                    meta = current["metadata"]
                    self.delete(child.api_version, child.kind, meta["namespace"], meta["name"])
                    out[child.kind] = None
                continue
            desired = with_spec_hash(child.manifest)
            if needs_apply(desired, current):
                handover = replicas_handover(desired, current)
                if handover is not None:
                    self.apply(handover, naming.HANDOVER_FIELD_MANAGER)
                out[child.kind] = self.apply(desired)
        return out

    # ---- the custom resource ----------------------------------------------------------------------

    def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(CR_API_VERSION, api.KIND, namespace, name)

    def list_model_deployments(self, namespaces: list[str]) -> list[tuple[str, str]]:
        base = f"/apis/{CR_API_VERSION}"
        paths = [f"{base}/namespaces/{ns}/{api.PLURAL}" for ns in namespaces] or [f"{base}/{api.PLURAL}"]
        keys = []
        for url_path in paths:
            for item in (self.request("GET", url_path) or {}).get("items") or []:
                keys.append((item["metadata"]["namespace"], item["metadata"]["name"]))
        return keys

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A resource deleted while it was being reconciled has no status left to write: fine."""
        with contextlib.suppress(NotFound):
            self._patch_status(namespace, name, patch)

    def _patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.request(
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
        except (ApiException, TransientError) as exc:  # an event lost is no reason to fail a reconcile
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


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
