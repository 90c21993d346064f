"""The scrape loop: every tracked resource's pods are scraped on their metrics port at the
resource's interval, by a few worker threads, and what was learnt is kept in memory.

Nothing here talks to the Kubernetes API. The reconciler tells the watch what to scrape (`track`,
on every reconcile) and reads what it learnt; the watch asks for a reconcile (`trigger`) only when
something a status would show has changed: a new verdict or message of a bake, or new hardware
facts. A known good revision serving normally is scraped for its baseline and causes no reconcile
and no API write at all.
"""

from __future__ import annotations

import enum
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import modeldeploy_contract as contract

from . import metrics
from .analysis import AnalysisDecision, Baseline, Figures, Limits, Verdict, decide_analysis, merge
from .scrape import Sample, ScrapeError, difference, scrape

log = logging.getLogger(__name__)
Key = tuple[str, str]
BASELINE_INTERVALS = 10  # the known good revision's figures: its last ten intervals together


class Mode(str, enum.Enum):
    BASELINE = "baseline"  # the known good revision serves: record its figures
    BAKE = "bake"  # a new revision bakes: judge its intervals
    FACTS = "facts"  # only what the pods run on, once per pod


@dataclass(frozen=True)
class Track:
    mode: Mode
    pod_template_hash: str
    pods: tuple[tuple[str, str], ...]  # (name, IP) of the ready pods of that revision
    model: str
    interval_s: float
    limits: Limits = field(default_factory=Limits)
    baseline: Baseline | None = None
    started: float = 0.0  # the bake's start (epoch seconds)
    bake_s: float = 0.0
    revision: int | None = None


@dataclass(frozen=True)
class Facts:
    info: dict[str, str]
    warmup_p95_ms: float | None


@dataclass
class _Memo:
    track: Track
    samples: dict[str, Sample] = field(default_factory=dict)
    intervals: list[Figures | None] = field(default_factory=list)
    ring: deque = field(default_factory=lambda: deque(maxlen=BASELINE_INTERVALS))
    ring_hash: str = ""
    ring_revision: int | None = None
    facts: dict[str, Facts] = field(default_factory=dict)
    decision: AnalysisDecision | None = None
    due: float = 0.0
    running: bool = False


class TrafficWatch:
    """One per operator process, in kopf's memo (`memo.traffic`, made at startup); without one,
    nothing is scraped."""

    def __init__(
        self,
        trigger: Callable[[str, str], object],
        port: int = contract.METRICS_PORT,
        workers: int = 8,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ):
        self._trigger, self._port, self._timeout, self._clock = trigger, port, timeout_s, clock
        self._memos: dict[Key, _Memo] = {}
        self._heap: list[tuple[float, Key]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrape")
        self._thread = threading.Thread(target=self._loop, name="traffic-watch", daemon=True)

    # what the reconciler calls ------------------------------------------------------------
    def track(self, key: Key, track: Track | None) -> None:
        with self._cond:
            if track is None or not track.pods:
                memo = self._memos.get(key)
                if memo is not None:
                    memo.track = Track(Mode.FACTS, "", (), "", 0.0)
                    memo.samples.clear()
                    memo.due = 0.0
                return
            memo = self._memos.get(key)
            if memo is None:
                memo = self._memos[key] = _Memo(track)
                self._schedule(key, memo, self._clock())
                return
            old = memo.track
            restart = (old.mode, old.pod_template_hash, old.started) != (
                track.mode,
                track.pod_template_hash,
                track.started,
            )
            if restart:
                memo.samples.clear()
                memo.intervals.clear()
                memo.decision = None
            memo.track = track
            if restart or not memo.due or {p for p, _ in track.pods} - set(memo.samples) - set(memo.facts):
                self._schedule(key, memo, self._clock())

    def forget(self, key: Key) -> None:
        with self._cond:
            self._memos.pop(key, None)

    def decision(self, key: Key, pod_template_hash: str, started: float) -> AnalysisDecision | None:
        with self._cond:
            memo = self._memos.get(key)
            if memo is None or memo.track.mode is not Mode.BAKE:
                return None
            t = memo.track
            if (t.pod_template_hash, t.started) != (pod_template_hash, started):
                return None
            return memo.decision

    def baseline(self, key: Key, pod_template_hash: str, min_requests: int) -> Baseline | None:
        with self._cond:
            memo = self._memos.get(key)
            if memo is None or memo.ring_hash != pod_template_hash or not memo.ring:
                return None
            merged = merge(list(memo.ring))
            revision = memo.ring_revision
        if merged.requests < min_requests:
            return None
        return Baseline(merged.error_ratio, merged.p95_ms, merged.requests, revision)

    def facts(self, key: Key, pod_template_hash: str) -> tuple[dict[str, str], float | None] | None:
        """What the pods of this revision run on: the first pod's labels and the highest warm-up p95."""
        with self._cond:
            memo = self._memos.get(key)
            if memo is None or memo.track.pod_template_hash != pod_template_hash or not memo.facts:
                return None
            facts = [memo.facts[name] for name in sorted(memo.facts)]
        p95s = [f.warmup_p95_ms for f in facts if f.warmup_p95_ms is not None]
        return facts[0].info, (max(p95s) if p95s else None)

    # the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _schedule(self, key: Key, memo: _Memo, when: float) -> None:
        memo.due = when
        heapq.heappush(self._heap, (when, key))
        self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                now = self._clock()
                if not self._heap or self._heap[0][0] > now:
                    self._cond.wait(timeout=min(5.0, self._heap[0][0] - now) if self._heap else 5.0)
                    continue
                when, key = heapq.heappop(self._heap)
                memo = self._memos.get(key)
                if memo is None or memo.due != when or memo.running or not memo.track.pods:
                    continue
                memo.running = True
            self._pool.submit(self._run, key)

    def _run(self, key: Key) -> None:
        try:
            changed = self._scrape(key)
        except Exception as exc:  # one resource's trouble must not stop the loop
            log.warning("%s/%s: scrape failed: %s", *key, exc)
            changed = False
        if changed:
            try:
                self._trigger(*key)
            except Exception as exc:
                log.info("%s/%s: reconcile after a scrape failed: %s; the resync retries", *key, exc)

    def _scrape(self, key: Key) -> bool:
        with self._cond:
            memo = self._memos.get(key)
            if memo is None:
                return False
            track = memo.track
            wanted = track.pods
            if track.mode is Mode.FACTS:
                wanted = tuple(p for p in track.pods if p[0] not in memo.facts)
        samples: dict[str, Sample] = {}
        for name, ip in wanted:
            try:
                samples[name] = scrape(ip, self._port, track.model, self._timeout)
            except ScrapeError as exc:
                metrics.SCRAPES.labels(result="error").inc()
                log.debug("%s/%s: pod %s: %s", *key, name, exc)
            else:
                metrics.SCRAPES.labels(result="ok").inc()
        now = self._clock()
        with self._cond:
            memo.running = False
            if self._memos.get(key) is not memo or memo.track != track:
                if self._memos.get(key) is memo:
                    self._schedule(key, memo, now)
                return False
            before = (memo.decision, self._facts_key(memo))
            names = {p for p, _ in track.pods}
            for name, s in samples.items():
                if s.info is not None:
                    memo.facts[name] = Facts(s.info, s.warmup_p95_ms)
            memo.facts = {n: f for n, f in memo.facts.items() if n in names}
            if track.mode is not Mode.FACTS:
                parts = [difference(memo.samples[n], s) for n, s in samples.items() if n in memo.samples]
                had_previous = bool(memo.samples)
                memo.samples = {n: s for n, s in {**memo.samples, **samples}.items() if n in names}
                figures = merge(parts) if parts else None
                if (
                    track.mode is Mode.BAKE
                    and memo.decision is not None
                    and memo.decision.verdict is not Verdict.BAKING
                ):
                    pass  # decided: the verdict stands until the reconciler tracks something else
                elif track.mode is Mode.BAKE:
                    if had_previous:
                        memo.intervals.append(figures)
                    memo.decision = decide_analysis(
                        memo.intervals,
                        track.baseline,
                        track.limits,
                        elapsed_s=now - track.started,
                        bake_s=track.bake_s,
                        interval_s=track.interval_s,
                    )
                elif figures is not None:
                    if memo.ring_hash != track.pod_template_hash:
                        memo.ring.clear()
                        memo.ring_hash = track.pod_template_hash
                    memo.ring_revision = track.revision
                    memo.ring.append(figures)
                self._schedule(key, memo, max(now, memo.due + track.interval_s))
            elif set(names) - set(memo.facts):
                self._schedule(key, memo, now + track.interval_s)
            else:
                memo.due = 0.0  # nothing more to learn until the pods change
            after = (memo.decision, self._facts_key(memo))
        decided = before[0], after[0]
        news = (
            None if decided[0] is None else (decided[0].verdict, decided[0].message),
            None if decided[1] is None else (decided[1].verdict, decided[1].message),
        )
        return news[0] != news[1] or before[1] != after[1]

    @staticmethod
    def _facts_key(memo: _Memo) -> tuple:
        return tuple(sorted((n, tuple(sorted(f.info.items())), f.warmup_p95_ms) for n, f in memo.facts.items()))
