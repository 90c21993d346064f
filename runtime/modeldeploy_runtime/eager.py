"""Running a request's coroutine eagerly, without a task: shared by the HTTP/1.1 and HTTP/2 servers."""

from __future__ import annotations

import asyncio


class Eager:
    """Runs a coroutine at once up to its first suspension, then on as each future it awaits
    completes: what Python 3.12's eager tasks do, for 3.10 and 3.11. A task would first wait for
    the next loop iteration (40 us per request, measured after an inference left the caches cold),
    and a request served inline finishes without suspending at all. The coroutine may await only
    asyncio futures and coroutines that do (``asyncio.current_task()`` is None inside)."""

    __slots__ = ("_coro", "_waiting", "_done")

    def __init__(self, coro) -> None:
        self._coro = coro
        self._waiting: asyncio.Future | None = None
        self._done = False
        self._step()

    def _step(self, _completed: asyncio.Future | None = None) -> None:
        self._waiting = None
        try:
            awaited = self._coro.send(None)
        except StopIteration:
            self._done = True
            return
        except BaseException:
            self._done = True
            raise
        if awaited is None:  # a bare yield (asyncio.sleep(0)): go on at the next iteration
            asyncio.get_running_loop().call_soon(self._step)
            return
        awaited._asyncio_future_blocking = False
        self._waiting = awaited
        awaited.add_done_callback(self._step)

    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Cancel the awaited future: the coroutine sees CancelledError where it awaits."""
        if self._waiting is not None:
            self._waiting.cancel()
