"""Eager serving of a lone client's request: the coroutine runs at once, resumes when what it
awaits completes, and can be cancelled where it waits."""

from __future__ import annotations

import asyncio

from modeldeploy_runtime.eager import Eager


def test_a_coroutine_that_never_waits_finishes_before_eager_returns():
    seen = []

    async def serve():
        seen.append("served")

    async def main():
        started = Eager(serve())
        return started.done(), list(seen)

    assert asyncio.run(main()) == (True, ["served"])


def test_it_resumes_when_the_awaited_future_completes_and_after_a_bare_yield():
    seen = []

    async def serve(fut):
        seen.append(await fut)
        await asyncio.sleep(0)
        seen.append("after yield")

    async def main():
        fut = asyncio.get_running_loop().create_future()
        started = Eager(serve(fut))
        assert not started.done() and seen == []
        fut.set_result("result")
        for _ in range(5):
            await asyncio.sleep(0)
        return started.done()

    assert asyncio.run(main()) is True
    assert seen == ["result", "after yield"]


def test_cancel_raises_cancelled_error_where_it_waits():
    seen = []

    async def serve(fut):
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled")

    async def main():
        fut = asyncio.get_running_loop().create_future()
        started = Eager(serve(fut))
        started.cancel()
        await asyncio.sleep(0)
        return fut.cancelled(), started.done()

    assert asyncio.run(main()) == (True, True)
    assert seen == ["cancelled"]
