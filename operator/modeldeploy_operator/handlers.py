"""kopf wiring, and nothing else: every handler resolves to one `reconcile` of one resource, and the
indexes declared here are the watch caches that reconcile reads from (see watched.py).

The operator's state lives in kopf's memo (`operator_memo`, made once by the CLI from the one
reading of the config): the API client, the render settings, the caches, the coalescer and the resync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from . import api, naming, watch
from .coalescer import Coalescer
from .config import OperatorConfig
from .kube import Kube, TransientError
from .reconcile import reconcile
from .render import Settings
from .resync import Resync
from .versions import ApiVersions
from .watched import INDEX_OF_KIND, Watched, plain

CR = (api.GROUP, api.VERSION, api.PLURAL)
OWNED = {naming.MANAGED_BY_LABEL: naming.OPERATOR_NAME}
SELECTOR = f"{naming.MANAGED_BY_LABEL}={naming.OPERATOR_NAME}"
log = logging.getLogger(__name__)


def operator_memo(config: OperatorConfig, kube: Kube, settings: Settings) -> kopf.Memo:
    return kopf.Memo(config=config, kube=kube, render_settings=settings)


# ---- watch caches ---------------------------------------------------------------------------------


def _by_name(kind: str) -> Callable[..., dict[tuple[str, str], dict[str, Any]]]:
    def index(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, Any]:
        obj = plain(body)
        memo.watched.seen(kind, obj)
        return {(namespace, name): obj}

    return index


def _by_owner(namespace: str, labels: dict[str, str], body: kopf.Body, **_: Any) -> Any:
    """ReplicaSets and pods are only observed, never applied: their managedFields (most of a pod's
    metadata) are left out of the cache."""
    owner = labels.get(naming.NAME_LABEL)
    if not owner:
        return None
    obj = plain(body)
    obj["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {(namespace, owner): obj}


kopf.index(*CR, id=INDEX_OF_KIND[api.KIND])(_by_name(api.KIND))
kopf.index("apps", "v1", "deployments", id=INDEX_OF_KIND["Deployment"], labels=OWNED)(_by_name("Deployment"))
kopf.index("v1", "services", id=INDEX_OF_KIND["Service"], labels=OWNED)(_by_name("Service"))
kopf.index("networking.k8s.io", "v1", "networkpolicies", id=INDEX_OF_KIND["NetworkPolicy"], labels=OWNED)(
    _by_name("NetworkPolicy")
)
kopf.index("apps", "v1", "replicasets", id=INDEX_OF_KIND["ReplicaSet"], labels=OWNED)(_by_owner)
kopf.index("v1", "pods", id=INDEX_OF_KIND["Pod"], labels=OWNED)(_by_owner)


def _versioned(versions: ApiVersions) -> dict[tuple[str, str, str], str]:
    """The children whose API version the cluster decides: (group, version, plural) -> kind."""
    hpa, pdb = versions.hpa.split("/"), versions.pdb.split("/")
    return {
        (hpa[0], hpa[1], "horizontalpodautoscalers"): "HorizontalPodAutoscaler",
        (pdb[0], pdb[1], "poddisruptionbudgets"): "PodDisruptionBudget",
    }


def watch_versioned_children(versions: ApiVersions) -> None:
    """Declares the indexes of the HPA and the PDB in the version the operator applies them in
    (discovered before kopf starts): a copy in another version would never look in sync."""
    for (group, version, plural), kind in _versioned(versions).items():
        kopf.index(group=group, version=version, plural=plural, id=INDEX_OF_KIND[kind], labels=OWNED)(_by_name(kind))


# ---- operator lifecycle ---------------------------------------------------------------------------


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's would repeat it
    # No watching of CRDs and namespaces: it would need cluster-wide list/watch on both, and the
    # operator serves the namespaces it is given and the CRD that exists when it starts.
    settings.scanning.disabled = True
    settings.execution.max_workers = 16
    children = [
        ("apps", "v1", "deployments"),
        ("apps", "v1", "replicasets"),
        ("v1", "pods"),
        ("v1", "services"),
        ("networking.k8s.io", "v1", "networkpolicies"),
        *_versioned(memo.render_settings.api_versions),
    ]
    for resource in children:
        settings.watching.label_selectors[resource] = SELECTOR
    # The indexes are empty now; kopf fills them before it calls any resource handler, and the
    # resync waits for the first such call (watched.ready).
    memo.watched = Watched({index: kwargs[index] for index in INDEX_OF_KIND.values()})
    memo.coalescer = Coalescer(
        lambda namespace, name: reconcile(memo.kube, memo.render_settings, memo.watched, namespace, name, memo.traffic)
    )
    # The traffic watch asks for a reconcile when its verdict changes; the coalescer's work reads it.
    memo.traffic = watch.TrafficWatch(memo.coalescer.trigger)
    memo.resync = Resync(memo.watched.keys, memo.coalescer.trigger, memo.config.resync_seconds, memo.watched.ready)
    memo.resync.start()
    memo.traffic.start()
    log.info("runtime image %s; API versions %s", memo.config.runtime_image, memo.render_settings.api_versions)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.stop()
    memo.traffic.stop()


# ---- resource handlers ----------------------------------------------------------------------------


def retry_delay(retry: int) -> float:
    """Seconds before the next try after `retry` failed ones: 1, 2, 4 ... up to a minute."""
    return float(min(60, 2 ** min(retry, 6)))


@kopf.on.resume(*CR)
@kopf.on.create(*CR)
@kopf.on.update(*CR)
def changed(namespace: str, name: str, retry: int, memo: kopf.Memo, **_: Any) -> None:
    memo.watched.ready.set()  # kopf calls no resource handler before every index is filled
    try:
        memo.coalescer.trigger(namespace, name)
    except TransientError as exc:
        raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from exc


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("v1", "pods", labels=OWNED)
# A hand edit of the Service (its ports, its selector) or of the NetworkPolicy (who may call the
# model) is repaired within seconds, not at the next resync.
@kopf.on.event("v1", "services", labels=OWNED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=OWNED)
def child_changed(namespace: str, labels: dict[str, str], type: str | None, memo: kopf.Memo, **_: Any) -> None:  # noqa: A002
    memo.watched.ready.set()
    owner = labels.get(naming.NAME_LABEL)
    if owner and type is not None:  # type None: the initial listing; resume covers it
        try:
            memo.coalescer.trigger(namespace, owner)
        except TransientError as exc:
            log.info("%s/%s: %s; the next event or resync retries", namespace, owner, exc)
