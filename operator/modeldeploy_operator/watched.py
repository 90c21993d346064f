"""What a reconcile reads: the ModelDeployments and their children as kopf's watch streams last
delivered them (`@kopf.index`, declared in handlers.py), so a reconcile that finds everything in
sync sends no request at all.

Two things a watch cache cannot know by itself, and how they are covered:

- Start-up. kopf fills every index from its initial listing before it calls any resource handler;
  the resync loop, which runs outside kopf's handlers, waits for the first such call (`ready`).
- Our own writes. A reconcile right after an apply, a delete or a status write may run before the
  watch event of that write arrives. What the API server answered to the write is kept
  (`wrote`) and read instead of the index until the index holds that version or a later one
  (resourceVersions compared as the numbers etcd assigns; equal only, where one is not a number),
  for at most `WRITTEN_TTL_S`; the indexing functions drop it as soon as the watch delivers it
  (`seen`), so a child deleted by hand right after we created it reads as gone. Without it, the stale copy would be applied again and status
  computed from it would be written and announced twice.

Reads come from worker threads while kopf's event loop updates the indexes: a lookup is one dict
access, and the few iterations copy the collection, retrying if it changed meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import api

WRITTEN_TTL_S = 30.0

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

# Index names (the kwargs kopf passes them as), per kind; keyed by (namespace, name) of the object
# for the CR and the children named like it, by (namespace, owner's name label) for ReplicaSets and pods.
INDEX_OF_KIND = {
    api.KIND: "md_resources",
    "Deployment": "md_deployments",
    "Service": "md_services",
    "NetworkPolicy": "md_network_policies",
    "HorizontalPodAutoscaler": "md_autoscalers",
    "PodDisruptionBudget": "md_disruption_budgets",
    "ReplicaSet": "md_replicasets",
    "Pod": "md_pods",
}


def plain(body: Mapping[str, Any]) -> Obj:
    """A kopf body as the plain dict the rest of the operator works on (top level copied)."""
    return {k: v for k, v in body.items()}


def _values(store: Iterable[Obj] | None) -> list[Obj]:
    for _ in range(5):
        try:
            return list(store or ())
        except RuntimeError:  # changed size during iteration: kopf's loop updated it meanwhile
            continue
    return list(store or ())


def _version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def at_least(cached: Obj, written: Obj) -> bool:
    """Whether `cached` is the version `written` or a later one of the same object."""
    if _uid(cached) != _uid(written):
        return True  # another object under the same name: the cache knows better
    a, b = _version(cached), _version(written)
    if a.isdigit() and b.isdigit():
        return int(a) >= int(b)
    return a == b


@dataclass
class Watched:
    indexes: Mapping[str, Mapping[Any, Iterable[Obj]]]
    ready: threading.Event = field(default_factory=threading.Event)
    _written: dict[tuple[str, str, str], tuple[float, Obj, bool]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _indexed(self, kind: str, key: Key) -> list[Obj]:
        return _values(self.indexes[INDEX_OF_KIND[kind]].get(key))

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The object of this kind and name, as last watched or as last written by us."""
        found = self._indexed(kind, (namespace, name))
        cached = found[0] if found else None
        slot = (kind, namespace, name)
        with self._lock:
            entry = self._written.get(slot)
            if entry is None:
                return cached
            stamp, written, deleted = entry
            if time.monotonic() - stamp > WRITTEN_TTL_S:
                del self._written[slot]
                return cached
            if deleted:
                if cached is None or _uid(cached) != _uid(written):
                    del self._written[slot]
                    return cached
                return None  # the watch has not yet seen our delete
            if cached is not None and at_least(cached, written):
                del self._written[slot]
                return cached
            return written

    def model_deployment(self, namespace: str, name: str) -> Obj | None:
        """The resource, with a top level of its own (a reconcile replaces its `status`). Only a
        resource the watch holds: we write the status of none it has not delivered, so one gone
        from the cache is deleted, whatever we wrote to it last."""
        if not self._indexed(api.KIND, (namespace, name)):
            return None
        body = self.get(api.KIND, namespace, name)
        return plain(body) if body is not None else None

    def owned(self, kind: str, namespace: str, owner: str) -> list[Obj]:
        """The ReplicaSets or pods labelled as the named resource's."""
        return self._indexed(kind, (namespace, owner))

    def keys(self) -> list[Key]:
        """Every ModelDeployment watched, for the resync."""
        index = self.indexes[INDEX_OF_KIND[api.KIND]]
        for _ in range(5):
            try:
                return list(index)
            except RuntimeError:
                continue
        return list(index)

    def seen(self, kind: str, obj: Obj) -> None:
        """The watch delivered `obj` (called by the indexing functions, on kopf's event loop): our
        own write of it is no longer needed once the watch has that version or a later one."""
        meta = obj.get("metadata") or {}
        slot = (kind, meta.get("namespace") or "", meta.get("name") or "")
        with self._lock:
            entry = self._written.get(slot)
            if entry is not None and not entry[2] and at_least(obj, entry[1]):
                del self._written[slot]

    def wrote(self, kind: str, obj: Obj | None, *, deleted: bool = False) -> None:
        """What the API server answered to our write (or, deleted, the object deleted)."""
        if not obj or not (obj.get("metadata") or {}).get("name"):
            return
        meta = obj["metadata"]
        with self._lock:
            self._written[(kind, meta.get("namespace") or "", meta["name"])] = (time.monotonic(), obj, deleted)
