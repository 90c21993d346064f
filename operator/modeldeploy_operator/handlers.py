"""kopf wiring, and nothing else: every handler resolves to one `reconcile` of one resource."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import api, naming, watch
from .config import OperatorConfig
from .engine import Coalescer
from .kube import Kube, TransientError
from .reconcile import reconcile
from .render import Settings
from .resync import Resync

CONFIG = OperatorConfig.from_env()
CR = (api.GROUP, api.VERSION, api.PLURAL)
OWNED = {naming.MANAGED_BY_LABEL: naming.OPERATOR_NAME}
log = logging.getLogger(__name__)


class State:
    namespaces: list[str] = []  # empty: all namespaces; set by the CLI before kopf starts
    kube: Kube
    settings: Settings
    coalescer: Coalescer
    resync: Resync


def run(namespace: str, name: str) -> None:
    reconcile(State.kube, State.settings, namespace, name)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's would repeat it
    # No watching of CRDs and namespaces: it would need cluster-wide list/watch on both, and the
    # operator serves the namespaces it is given and the CRD that exists when it starts.
    settings.scanning.disabled = True
    settings.execution.max_workers = 16
    selector = f"{naming.MANAGED_BY_LABEL}={naming.OPERATOR_NAME}"
    settings.watching.label_selectors["apps", "v1", "deployments"] = selector
    settings.watching.label_selectors["v1", "pods"] = selector
    settings.watching.label_selectors["v1", "services"] = selector
    settings.watching.label_selectors["networking.k8s.io", "v1", "networkpolicies"] = selector
    State.kube = Kube.from_environment()
    State.settings = Settings(
        runtime_image=CONFIG.runtime_image,
        api_versions=State.kube.discover_api_versions(),
        operator_namespace=CONFIG.operator_namespace,
        operator_pod_labels=CONFIG.operator_pod_labels,
    )
    State.coalescer = Coalescer(run)
    State.resync = Resync(
        lambda: State.kube.list_model_deployments(State.namespaces), State.coalescer.trigger, CONFIG.resync_seconds
    )
    State.resync.start()
    watch.ACTIVE = watch.TrafficWatch(State.coalescer.trigger)
    watch.ACTIVE.start()
    log.info("runtime image %s; API versions %s", CONFIG.runtime_image, State.settings.api_versions)


def retry_delay(retry: int) -> float:
    """Seconds before the next try after `retry` failed ones: 1, 2, 4 ... up to a minute."""
    return float(min(60, 2 ** min(retry, 6)))


def _trigger(namespace: str, name: str, retry: int) -> None:
    try:
        State.coalescer.trigger(namespace, name)
    except TransientError as exc:
        raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from exc


@kopf.on.resume(*CR)
@kopf.on.create(*CR)
@kopf.on.update(*CR)
def changed(namespace: str, name: str, retry: int, **_: Any) -> None:
    _trigger(namespace, name, retry)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    State.resync.stop()
    if watch.ACTIVE is not None:
        watch.ACTIVE.stop()


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("v1", "pods", labels=OWNED)
# A hand edit of the Service (its ports, its selector) or of the NetworkPolicy (who may call the
# model) is repaired within seconds, not at the next resync.
@kopf.on.event("v1", "services", labels=OWNED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=OWNED)
def child_changed(namespace: str, labels: dict[str, str], type: str | None, **_: Any) -> None:  # noqa: A002
    owner = labels.get(naming.NAME_LABEL)
    if owner and type is not None:  # type None: the initial listing; resume covers it
        try:
            State.coalescer.trigger(namespace, owner)
        except TransientError as exc:
            log.info("%s/%s: %s; the next event or resync retries", namespace, owner, exc)
