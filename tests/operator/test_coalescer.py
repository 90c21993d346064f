"""The Coalescer (one reconcile per resource at a time, bursts folded into one more run) and the
resync loop, with real threads. Every wait has a deadline; no sleep decides a result."""

from __future__ import annotations

import itertools
import logging
import threading

import pytest
from modeldeploy_operator.coalescer import Coalescer
from modeldeploy_operator.resync import Resync

DEADLINE = 10.0


class Recorder:
    """Work that records runs and how many ran at once per key; the first run of each key can be
    held until released, so that triggers arrive while it is busy."""

    def __init__(self, hold_first: bool = False):
        self.lock = threading.Lock()
        self.runs: list[tuple[str, str]] = []
        self.active: dict[str, int] = {}
        self.most_at_once: dict[str, int] = {}
        self.started = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first

    def __call__(self, namespace: str, name: str) -> None:
        with self.lock:
            self.runs.append((namespace, name))
            first = len(self.runs) == 1
            self.active[name] = self.active.get(name, 0) + 1
            self.most_at_once[name] = max(self.most_at_once.get(name, 0), self.active[name])
        try:
            if first and self.hold_first:
                self.started.set()
                assert self.release.wait(DEADLINE), "never released"
        finally:
            with self.lock:
                self.active[name] -= 1


def run_in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []

    def target():
        try:
            out.append(fn())
        except BaseException as exc:  # handed to the test through `out`
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def joined(thread: threading.Thread) -> None:
    thread.join(DEADLINE)
    assert not thread.is_alive(), "still running past the deadline"


def test_an_idle_key_runs_at_once():
    work = Recorder()
    assert Coalescer(work).trigger("ns", "m") is True
    assert work.runs == [("ns", "m")]


def test_triggers_during_a_run_return_at_once_and_fold_into_one_more_run():
    work = Recorder(hold_first=True)
    coalescer = Coalescer(work)
    first, result = run_in_thread(lambda: coalescer.trigger("ns", "m"))
    assert work.started.wait(DEADLINE)
    # Twenty triggers from other threads while the first run is busy: none blocks, none runs.
    threads = [run_in_thread(lambda: coalescer.trigger("ns", "m")) for _ in range(20)]
    for thread, _ in threads:
        joined(thread)
    assert [out for _, out in threads] == [[False]] * 20
    assert len(work.runs) == 1
    work.release.set()
    joined(first)
    assert result == [True]
    assert work.runs == [("ns", "m")] * 2  # the burst cost exactly one more run
    assert work.most_at_once["m"] == 1


def test_concurrent_triggers_never_overlap_and_none_is_lost():
    # Each trigger takes a ticket; each run notes the last ticket issued before it started.
    # Every trigger must be followed by a run that started after it: coalescing never drops one.
    tickets = itertools.count(1)
    lock = threading.Lock()
    issued: list[int] = []
    run_saw: list[int] = []
    work = Recorder()

    def counting_work(namespace: str, name: str) -> None:
        with lock:
            run_saw.append(max(issued, default=0))
        work(namespace, name)

    coalescer = Coalescer(counting_work)
    barrier = threading.Barrier(8, timeout=DEADLINE)

    def hammer():
        barrier.wait()
        for _ in range(50):
            with lock:
                issued.append(next(tickets))
            coalescer.trigger("ns", "m")

    threads = [run_in_thread(hammer)[0] for _ in range(8)]
    for thread in threads:
        joined(thread)
    assert work.most_at_once["m"] == 1
    assert max(run_saw) == max(issued) == 400
    assert 1 <= len(work.runs) <= 400


@pytest.mark.parametrize(
    ("first", "second"),
    [(("ns", "a"), ("ns", "b")), (("ns-1", "m"), ("ns-2", "m"))],
    ids=["different-names", "same-name-in-two-namespaces"],
)
def test_different_resources_run_in_parallel(first, second):
    both_inside = threading.Barrier(2, timeout=DEADLINE)  # breaks unless both runs are in at once
    coalescer = Coalescer(lambda namespace, name: both_inside.wait())
    a, out_a = run_in_thread(lambda: coalescer.trigger(*first))
    b, out_b = run_in_thread(lambda: coalescer.trigger(*second))
    joined(a)
    joined(b)
    assert (out_a, out_b) == ([True], [True])


def test_a_failing_run_raises_and_frees_the_key():
    calls = []

    def work(namespace: str, name: str) -> None:
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("API down")

    coalescer = Coalescer(work)
    with pytest.raises(RuntimeError, match="API down"):
        coalescer.trigger("ns", "m")
    assert coalescer.trigger("ns", "m") is True
    assert calls == ["m", "m"]


def test_a_run_failing_with_triggers_pending_drops_them_and_frees_the_key():
    started, release = threading.Event(), threading.Event()
    calls = []

    def work(namespace: str, name: str) -> None:
        calls.append(name)
        if len(calls) == 1:
            started.set()
            assert release.wait(DEADLINE)
            raise RuntimeError("conflict")

    coalescer = Coalescer(work)
    first, result = run_in_thread(lambda: coalescer.trigger("ns", "m"))
    assert started.wait(DEADLINE)
    assert coalescer.trigger("ns", "m") is False  # marked dirty
    release.set()
    joined(first)
    assert isinstance(result[0], RuntimeError)
    assert calls == ["m"]  # the failure is the caller's to retry (kopf), not looped on here
    assert coalescer.trigger("ns", "m") is True
    assert calls == ["m", "m"]


# ---- resync ---------------------------------------------------------------------------------------


def test_resync_once_triggers_every_resource_and_survives_failures(caplog):
    done: list[tuple[str, str]] = []
    lock = threading.Lock()

    def trigger(namespace: str, name: str) -> None:
        if name == "broken":
            raise RuntimeError("boom")
        with lock:
            done.append((namespace, name))

    keys = [("a", "m1"), ("a", "broken"), ("b", "m2"), ("b", "m3")]
    resync = Resync(lambda: keys, trigger, interval=3600, workers=2)
    try:
        with caplog.at_level(logging.WARNING, logger="modeldeploy_operator.resync"):
            resync.once()
    finally:
        resync.stop()
    assert sorted(done) == [("a", "m1"), ("b", "m2"), ("b", "m3")]
    assert "resync of a/broken failed: boom" in caplog.text


def test_resync_loop_runs_every_interval_until_stopped():
    passes = threading.Semaphore(0)
    resync = Resync(lambda: [("ns", "m")], lambda namespace, name: passes.release(), interval=0.01)
    resync.start()
    try:
        for _ in range(3):
            assert passes.acquire(timeout=DEADLINE), "the resync loop did not run"
    finally:
        resync.stop()
    resync._thread.join(DEADLINE)
    assert not resync._thread.is_alive()
