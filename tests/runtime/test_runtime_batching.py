"""The dynamic batcher: merging, splitting, greedy cuts, deadlines, errors and backpressure."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from modeldeploy_runtime.batching import HAS_EVENTFD, Batcher, LoopWaker, split
from modeldeploy_runtime.errors import Overloaded

DEADLINE_S = 10


class Recorder:
    """A backend stand-in: doubles its input and records the batch sizes it was called with. It can
    be held (to let requests pile up) and made to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = fail

    def __call__(self, inputs):
        self.entered.set()
        assert self.gate.wait(DEADLINE_S)
        x = inputs["x"]
        self.batches.append(x.shape[0])
        if self.fail:
            raise RuntimeError("kernel exploded")
        return {"y": x * 2, "rows": np.full((x.shape[0], 1), x.shape[0])}


async def hold_first(batcher: Batcher, backend: Recorder, inputs: dict[str, np.ndarray] | None = None):
    """Submit a first request and hold the backend inside it, so that the next ones queue up behind."""
    backend.gate.clear()
    first = asyncio.ensure_future(batcher.submit(rows(0) if inputs is None else inputs))
    await asyncio.to_thread(backend.entered.wait, DEADLINE_S)
    return first


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE_S))


def rows(value: float, n: int = 1, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((n, width), value, dtype=np.float32)}


def test_concurrent_requests_are_merged_and_split_back():
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=8)
    batcher.start()

    async def main():
        first = await hold_first(batcher, backend)
        rest = [asyncio.ensure_future(batcher.submit(rows(i, n=2 if i == 3 else 1), 2 if i == 3 else 1))
                for i in range(1, 6)]  # fmt: skip
        await asyncio.sleep(0.05)
        backend.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = run(main())
    batcher.stop(DEADLINE_S)
    assert backend.batches == [1, 6]
    np.testing.assert_array_equal(first["y"], np.zeros((1, 3)))
    for i, out in enumerate(rest, start=1):
        n = 2 if i == 3 else 1
        np.testing.assert_array_equal(out["y"], np.full((n, 3), 2.0 * i))
        assert out["rows"].tolist() == [[6]] * n


def test_batches_never_exceed_max_batch_size():
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=4)
    batcher.start()

    async def main():
        first = await hold_first(batcher, backend)
        rest = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(10)]
        await asyncio.sleep(0.05)
        backend.gate.set()
        await first
        await asyncio.gather(*rest)

    run(main())
    batcher.stop(DEADLINE_S)
    assert backend.batches == [1, 4, 4, 2]


def test_greedy_runs_a_lone_request_at_once():
    """With no queue delay, a request is not held back for company that arrives later."""
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=8, max_delay_s=0.0)
    batcher.start()

    async def main():
        first = asyncio.ensure_future(batcher.submit(rows(1)))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.submit(rows(2)))
        return await asyncio.gather(first, second)

    run(main())
    batcher.stop(DEADLINE_S)
    assert backend.batches == [1, 1]


def test_queue_delay_gathers_requests_arriving_within_it():
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=8, max_delay_s=0.5)
    batcher.start()

    async def main():
        first = asyncio.ensure_future(batcher.submit(rows(1)))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.submit(rows(2)))
        return await asyncio.gather(first, second)

    run(main())
    batcher.stop(DEADLINE_S)
    assert backend.batches == [2]


def test_full_batch_is_cut_before_the_delay():
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=2, max_delay_s=30.0)
    batcher.start()

    async def main():
        return await asyncio.gather(batcher.submit(rows(1)), batcher.submit(rows(2)))

    run(main())  # would time out if the batcher waited the 30 s delay
    batcher.stop(DEADLINE_S)
    assert backend.batches == [2]


def test_different_trailing_shapes_go_to_different_batches():
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=8)
    batcher.start()

    async def main():
        first = await hold_first(batcher, backend)
        a = asyncio.ensure_future(batcher.submit(rows(1, width=3)))
        b = asyncio.ensure_future(batcher.submit(rows(2, width=5)))
        await asyncio.sleep(0.05)
        backend.gate.set()
        return await first, await a, await b

    _, a, b = run(main())
    batcher.stop(DEADLINE_S)
    assert a["y"].shape == (1, 3) and b["y"].shape == (1, 5)
    assert backend.batches == [1, 1, 1]


def test_an_error_reaches_every_request_of_the_batch():
    backend = Recorder(fail=True)
    batcher = Batcher(backend, max_batch_size=8)
    batcher.start()

    async def main():
        first = await hold_first(batcher, backend)
        rest = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
        await asyncio.sleep(0.05)
        backend.gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = run(main())
    batcher.stop(DEADLINE_S)
    assert backend.batches == [1, 3]
    assert all(isinstance(r, RuntimeError) and "kernel exploded" in str(r) for r in results)


def test_unbatched_models_run_one_request_at_a_time():
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=0)
    batcher.start()

    async def main():
        first = await hold_first(batcher, backend)
        rest = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
        await asyncio.sleep(0.05)
        backend.gate.set()
        await asyncio.gather(first, *rest)

    run(main())
    batcher.stop(DEADLINE_S)
    assert backend.batches == [1, 1, 1, 1]


def test_full_queue_refuses_with_overloaded():
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=1, max_queue=2)
    batcher.start()

    async def main():
        first = await hold_first(batcher, backend)
        queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="MODELDEPLOY_MAX_QUEUE_SIZE"):
            await batcher.submit(rows(9))
        backend.gate.set()
        await asyncio.gather(first, *queued)

    run(main())
    batcher.stop(DEADLINE_S)
    assert backend.batches == [1, 1, 1]


def test_stop_finishes_what_is_queued():
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=1)
    batcher.start()

    async def main():
        backend.gate.clear()
        futures = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
        await asyncio.to_thread(backend.entered.wait, DEADLINE_S)
        stopper = asyncio.ensure_future(asyncio.to_thread(batcher.stop, DEADLINE_S))
        backend.gate.set()
        await stopper
        return await asyncio.gather(*futures)

    assert len(run(main())) == 3
    assert backend.batches == [1, 1, 1]


@pytest.mark.skipif(not HAS_EVENTFD, reason="the eventfd hand-back is Linux only")
def test_hand_backs_not_yet_read_by_the_loop_still_run_when_the_waker_closes():
    # The inference thread's last result can be handed back just before stop() ends the thread
    # and closes the waker, while the loop is busy and has not read the eventfd yet.
    delivered = []

    async def main():
        waker = LoopWaker(asyncio.get_running_loop())
        waker.call(delivered.append, "the last result")  # written to the eventfd, not read yet
        waker.close()
        await asyncio.sleep(0.05)

    run(main())
    assert delivered == ["the last result"]


def test_observer_sees_queue_waits_compute_and_rows():
    seen = []
    batcher = Batcher(Recorder(), max_batch_size=4, observe=lambda waits, compute, n: seen.append((waits, compute, n)))
    batcher.start()
    run(batcher.submit(rows(1, n=3), 3))
    batcher.stop(DEADLINE_S)
    ((waits, compute, n),) = seen
    assert n == 3 and len(waits) == 1 and waits[0] >= 0 and compute >= 0


def test_split_rejects_outputs_without_the_batch_rows():
    with pytest.raises(RuntimeError, match="MODELDEPLOY_MAX_BATCH_SIZE=1"):
        split({"y": np.zeros((5, 2))}, [1, 2])


class ThreadRecorder(Recorder):
    """Also records which thread ran each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def __call__(self, inputs):
        self.threads.append(threading.current_thread().name)
        return super().__call__(inputs)


def test_inline_request_runs_on_the_caller_when_nothing_is_outstanding():
    backend = ThreadRecorder()
    batcher = Batcher(backend, max_batch_size=8)
    batcher.start()
    out = run(batcher.submit(rows(3), inline=True))
    batcher.stop(DEADLINE_S)
    np.testing.assert_array_equal(out["y"], np.full((1, 3), 6.0))
    assert backend.threads == [threading.current_thread().name]


def test_inline_request_queues_behind_work_in_progress():
    """Never two backend calls at once: a request that may run inline still waits its turn when
    another is being computed, and then runs on the inference thread."""
    backend = ThreadRecorder()
    batcher = Batcher(backend, max_batch_size=8)
    batcher.start()

    async def main():
        first = await hold_first(batcher, backend, rows(1))
        second = asyncio.ensure_future(batcher.submit(rows(2), inline=True))
        await asyncio.sleep(0.05)
        assert not second.done()
        backend.gate.set()
        return await first, await second

    first, second = run(main())
    batcher.stop(DEADLINE_S)
    np.testing.assert_array_equal(second["y"], np.full((1, 3), 4.0))
    assert backend.threads == ["inference", "inference"]


def test_queue_delay_turns_inline_off():
    """A configured delay asks for company, so even a lone request goes through the queue."""
    backend = ThreadRecorder()
    batcher = Batcher(backend, max_batch_size=8, max_delay_s=0.001)
    batcher.start()
    run(batcher.submit(rows(1), inline=True))
    batcher.stop(DEADLINE_S)
    assert backend.threads == ["inference"]


def test_results_reach_requests_of_several_event_loops():
    """One batcher serving loops on two threads: each request is answered on its own loop."""
    backend = Recorder()
    batcher = Batcher(backend, max_batch_size=8)
    batcher.start()
    results: dict[int, np.ndarray] = {}

    def client(i: int) -> None:
        results[i] = run(batcher.submit(rows(i)))["y"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    batcher.stop(DEADLINE_S)
    assert {i: r.tolist() for i, r in results.items()} == {i: [[2.0 * i] * 3] for i in range(4)}
