"""Dynamic batching on a dedicated inference thread.

Requests wait in a bounded queue, each with its own future. The inference thread takes the first
waiting request, adds whatever else is already queued (greedy: with ``max_delay_s`` 0 a lone
request never waits for company) or what arrives before the first one's deadline, up to
``max_batch_size`` rows; runs them as one batch; and splits the results back. An error while
running a batch reaches every request in it. Models with ``max_batch_size`` 0 have no batch
dimension and run one request at a time.

Running inference on its own thread keeps the event loop free to read and answer requests while a
batch runs (ONNX Runtime and TensorRT release the GIL), and keeps request parsing from delaying
the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import Overloaded

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


def _deliver(items: list[_Item], results: list | None, error: BaseException | None) -> None:
    for i, item in enumerate(items):
        if item.future.done():  # the client went away
            continue
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(results[i])


class Batcher:
    def __init__(
        self,
        infer: InferFn,
        max_batch_size: int,
        max_delay_s: float = 0.0,
        max_queue: int = 256,
        observe: BatchObserver | None = None,
    ) -> None:
        self._infer = infer
        self.max_rows = max(1, max_batch_size)
        self.merging = max_batch_size > 1
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._observe = observe
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the inference thread."""
        if self._started:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def submit(self, inputs: dict[str, np.ndarray], rows: int = 1) -> dict[str, np.ndarray]:
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(
                f"the queue holds {self.max_queue} requests (MODELDEPLOY_MAX_QUEUE_SIZE); retry later or add replicas"
            )
        loop = asyncio.get_running_loop()
        item = _Item(inputs, rows, loop.create_future(), loop, merge_key(inputs) if self.merging else ())
        self._queue.put(item)
        return await item.future

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
            batch = [it for it in batch if not it.future.cancelled()]
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        results, error = None, None
        try:
            if len(batch) == 1:
                results = [self._infer(batch[0].inputs)]
            else:
                results = split(self._infer(merge(batch)), [it.rows for it in batch])
        except Exception as exc:  # every waiter of the batch gets the same error
            log.debug("batch of %d failed: %s", len(batch), exc)
            error = exc
        end = time.perf_counter()
        by_loop: dict[asyncio.AbstractEventLoop, list[int]] = {}
        for i, it in enumerate(batch):
            by_loop.setdefault(it.loop, []).append(i)
        for loop, idx in by_loop.items():
            items = [batch[i] for i in idx]
            res = None if results is None else [results[i] for i in idx]
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_deliver, items, res, error)
        if self._observe is not None:
            self._observe([start - it.enqueued for it in batch], end - start, sum(it.rows for it in batch))
