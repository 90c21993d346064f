"""The periodic level-based resync: every resource reconciled again every N seconds, which restores
children deleted or edited by hand and re-reads rollouts.

It is a loop of our own rather than a `kopf.timer`, because kopf puts a finalizer on every resource
that has a timer: once the operator is uninstalled, such resources can no longer be deleted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class Resync:
    def __init__(
        self,
        list_keys: Callable[[], Iterable[tuple[str, str]]],
        trigger: Callable[[str, str], object],
        interval: float,
        ready: threading.Event | None = None,
        workers: int = 4,
    ):
        """`ready`: no pass runs before it is set (the caches the keys and reconciles come from are filled)."""
        self._list_keys, self._trigger, self._interval, self._ready = list_keys, trigger, interval, ready
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resync")
        self._thread = threading.Thread(target=self._loop, name="resync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def once(self) -> None:
        futures = [self._pool.submit(self._safe, ns, name) for ns, name in self._list_keys()]
        for future in futures:
            future.result()

    def _safe(self, namespace: str, name: str) -> None:
        try:
            self._trigger(namespace, name)
        except Exception as exc:  # one failing resource must not stop the others' resync
            log.warning("resync of %s/%s failed: %s", namespace, name, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            if self._ready is not None and not self._ready.is_set():
                continue
            try:
                self.once()
            except Exception as exc:
                log.warning("resync pass failed: %s", exc)
