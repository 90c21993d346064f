"""Dynamic batching on a dedicated inference thread.

Requests wait in a bounded queue, each with its own future. The inference thread takes the first
waiting request, adds whatever else is already queued (greedy: with ``max_delay_s`` 0 a lone
request never waits for company) or what arrives before the first one's deadline, up to
``max_batch_size`` rows; runs them as one batch; and splits the results back. An error while
running a batch reaches every request in it. With a queue timeout, a request that waited longer
than it when its batch is about to run is answered with QueueTimeout instead (Triton's
``default_queue_policy`` with ``timeout_action: REJECT``). Models with ``max_batch_size`` 0 have no batch
dimension and run one request at a time.

Running inference on its own thread keeps the event loop free to read and answer requests while a
batch runs (ONNX Runtime and TensorRT release the GIL), and keeps request parsing from delaying
the next batch. Results go back to the loop through an eventfd written with the GIL released, so
the loop thread can take the GIL at once. One case skips the thread: a request of the server's only
client, on a fast model, finding nothing queued (see ``submit``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import Overloaded, QueueTimeout

log = logging.getLogger(__name__)

InferFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
BatchObserver = Callable[[list[float], float, int], None]  # (queue waits, compute seconds, rows)

_STOP = object()


@dataclass(eq=False)
class _Item:
    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    key: tuple = ()
    enqueued: float = field(default_factory=time.perf_counter)


def merge_key(inputs: dict[str, np.ndarray]) -> tuple:
    """Requests can share a batch only when every input has the same name, dtype and non-batch
    dimensions."""
    return tuple((name, arr.dtype.str, arr.shape[1:]) for name, arr in sorted(inputs.items()))


def merge(items: list[_Item]) -> dict[str, np.ndarray]:
    first = items[0].inputs
    return {name: np.concatenate([it.inputs[name] for it in items], axis=0) for name in first}


def split(outputs: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
    """Cut batched outputs back into per-request results along the batch dimension."""
    total = sum(rows)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise RuntimeError(
                f"output {name!r} has shape {list(arr.shape)}, not {total} rows as the batch; "
                "the model cannot be batched (set MODELDEPLOY_MAX_BATCH_SIZE=1)"
            )
    bounds = np.cumsum(rows)[:-1]
    per_output = {name: np.split(arr, bounds, axis=0) for name, arr in outputs.items()}
    return [{name: parts[i] for name, parts in per_output.items()} for i in range(len(rows))]


def _deliver(items: list[_Item], results: list | None, error: BaseException | None, after=None) -> None:
    for i, item in enumerate(items):
        if item.future.done():  # the client went away
            continue
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(results[i])
    if after is not None:  # runs after the waiters' responses are written (call_soon is FIFO)
        items[0].loop.call_soon(*after)


HAS_EVENTFD = hasattr(os, "eventfd")  # Linux; elsewhere call_soon_threadsafe wakes the loop


class LoopWaker:
    """Runs callbacks from another thread on an event loop, like ``call_soon_threadsafe``, but
    wakes the loop with the GIL released (``os.eventfd_write``), so that the woken loop thread can
    take the GIL at once instead of waiting for the waking thread to drop it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: collections.deque = collections.deque()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        loop.add_reader(self._fd, self._run)

    def call(self, fn, *args) -> None:
        self._calls.append((fn, args))
        os.eventfd_write(self._fd, 1)

    def _run(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._fd)
        calls = self._calls
        while calls:
            fn, args = calls.popleft()
            fn(*args)

    def close(self) -> None:
        """Close the eventfd on the loop's own thread, after the calls still waiting there: the
        inference thread's last hand-backs, which the loop may not have read yet. Directly when
        the loop has closed, as nobody waits there any more."""
        try:
            self.loop.call_soon_threadsafe(self._close, True)
        except RuntimeError:
            self._close(False)

    def _close(self, flush: bool) -> None:
        if self._fd < 0:
            return
        if flush:
            self._run()
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1


class Batcher:
    def __init__(
        self,
        infer: InferFn,
        max_batch_size: int,
        max_delay_s: float = 0.0,
        max_queue: int = 256,
        observe: BatchObserver | None = None,
        queue_timeout_s: float = 0.0,
    ) -> None:
        self._infer = infer
        self.queue_timeout_s = queue_timeout_s  # 0: requests wait as long as it takes
        self.max_rows = max(1, max_batch_size)
        self.merging = max_batch_size > 1
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._observe = observe
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._started = False
        self._wakers: dict = {}
        self._run_lock = threading.Lock()  # one backend call at a time: the thread's or an inline one
        self._count_lock = threading.Lock()
        self._outstanding = 0  # submitted to the thread and not yet finished by it

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the inference thread."""
        if self._started:
            self._queue.put(_STOP)
            self._thread.join(timeout)
        if not self._thread.is_alive():  # it can no longer write to a waker's eventfd
            for waker in self._wakers.values():
                waker.close()
            self._wakers.clear()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def submit(self, inputs: dict[str, np.ndarray], rows: int = 1, inline: bool = False) -> dict[str, np.ndarray]:
        """The outputs of ``inputs``. With ``inline``, a request that finds nothing queued or running
        runs at once on the calling thread: the caller knows no other request can arrive to share
        its batch (the server passes it when a single connection is open), so the two thread
        hand-offs would buy nothing. A configured queue delay (waiting for company) turns this off."""
        if inline and self._outstanding == 0 and (self.max_delay_s == 0 or not self.merging):
            return self._run_inline(inputs, rows)
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(
                f"the queue holds {self.max_queue} requests (MODELDEPLOY_MAX_QUEUE_SIZE); retry later or add replicas"
            )
        loop = asyncio.get_running_loop()
        if loop not in self._wakers and HAS_EVENTFD:
            self._wakers[loop] = LoopWaker(loop)
        item = _Item(inputs, rows, loop.create_future(), loop, merge_key(inputs) if self.merging else ())
        with self._count_lock:
            self._outstanding += 1
        self._queue.put(item)
        return await item.future

    def _run_inline(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        with self._run_lock:
            start = time.perf_counter()
            outputs = self._infer(inputs)
            end = time.perf_counter()
        if self._observe is not None:  # recorded once the response is written
            asyncio.get_running_loop().call_soon(self._observe, [0.0], end - start, rows)
        return outputs

    def _collect(self, first: _Item) -> tuple[list[_Item], object | None]:
        """The batch that starts with ``first``, and the item taken but left for the next batch."""
        batch, rows = [first], first.rows
        if not self.merging:
            return batch, None
        deadline = first.enqueued + self.max_delay_s
        while rows < self.max_rows:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if nxt is _STOP or nxt.key != first.key or rows + nxt.rows > self.max_rows:
                return batch, nxt
            batch.append(nxt)
            rows += nxt.rows
        return batch, None

    def _run(self) -> None:
        carry: object | None = None
        while True:
            head = carry if carry is not None else self._queue.get()
            carry = None
            if head is _STOP:
                return
            batch, carry = self._collect(head)
            taken = len(batch)
            batch = [it for it in batch if not it.future.cancelled()]
            if batch and self.queue_timeout_s > 0:
                batch = self._refuse_expired(batch)
            if batch:
                self._run_batch(batch, taken)
            else:
                with self._count_lock:
                    self._outstanding -= taken

    def _refuse_expired(self, batch: list[_Item]) -> list[_Item]:
        """The requests of ``batch`` that have not waited past the queue timeout; the others are
        answered with QueueTimeout."""
        cutoff = time.perf_counter() - self.queue_timeout_s
        expired = [it for it in batch if it.enqueued < cutoff]
        if not expired:
            return batch
        error = QueueTimeout(
            f"the request waited in the queue more than {self.queue_timeout_s * 1e6:.0f} us "
            "(MODELDEPLOY_QUEUE_TIMEOUT_US); retry later or add replicas"
        )
        by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        for it in expired:
            by_loop.setdefault(it.loop, []).append(it)
        for loop, items in by_loop.items():
            self._hand_back(loop, items, None, error, None)
        return [it for it in batch if it.enqueued >= cutoff]

    def _run_batch(self, batch: list[_Item], taken: int) -> None:
        """Run a batch; ``taken`` counts it with the cancelled requests dropped from it."""
        start = time.perf_counter()
        results, error = None, None
        try:
            with self._run_lock:
                if len(batch) == 1:
                    results = [self._infer(batch[0].inputs)]
                else:
                    results = split(self._infer(merge(batch)), [it.rows for it in batch])
        except Exception as exc:  # every waiter of the batch gets the same error
            log.debug("batch of %d failed: %s", len(batch), exc)
            error = exc
        end = time.perf_counter()
        with self._count_lock:
            self._outstanding -= taken
        # The hand-back to the event loop comes first; whatever else holds the GIL here delays
        # the response, so the metrics are recorded on the loop once the responses are written.
        observed = None
        if self._observe is not None:
            observed = (self._observe, [start - it.enqueued for it in batch], end - start, sum(it.rows for it in batch))
        by_loop: dict[asyncio.AbstractEventLoop, list[int]] = {}  # the server has one loop; tests more
        for i, it in enumerate(batch):
            by_loop.setdefault(it.loop, []).append(i)
        for loop, idx in by_loop.items():
            res = None if results is None else [results[i] for i in idx]
            self._hand_back(loop, [batch[i] for i in idx], res, error, observed)
            observed = None  # recorded once

    def _hand_back(self, loop, items, results, error, observed) -> None:
        # With nothing queued the thread goes idle next, so it can give up the GIL with the wake-up.
        # With work queued it keeps the GIL and goes on to the next batch: giving it up there would
        # leave it waiting for the loop thread to block (MLP at concurrency 8: 12% fewer requests/s).
        waker = self._wakers.get(loop) if self._queue.empty() else None
        if waker is not None:
            waker.call(_deliver, items, results, error, observed)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_deliver, items, results, error, observed)
