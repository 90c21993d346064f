"""Serialises reconciles per resource and coalesces bursts of triggers.

kopf runs change handlers, timers and child-event handlers concurrently, in threads. Two reconciles
of the same resource must never overlap, and twenty pod events in a second need not cause twenty
reconciles: a trigger that arrives while one runs marks the resource dirty, and the running one
goes round once more when it finishes. Nobody blocks waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Key = tuple[str, str]  # (namespace, name)


class Coalescer:
    def __init__(self, work: Callable[[str, str], object]):
        self._work = work
        self._lock = threading.Lock()
        self._busy: set[Key] = set()
        self._dirty: set[Key] = set()

    def trigger(self, namespace: str, name: str) -> bool:
        """Runs the work now, or leaves it to the run in progress. True if this call ran it."""
        key = (namespace, name)
        with self._lock:
            if key in self._busy:
                self._dirty.add(key)
                return False
            self._busy.add(key)
        try:
            while True:
                self._work(namespace, name)
                with self._lock:
                    if key not in self._dirty:
                        self._busy.discard(key)
                        return True
                    self._dirty.discard(key)
        except BaseException:
            with self._lock:
                self._busy.discard(key)
                self._dirty.discard(key)
            raise
