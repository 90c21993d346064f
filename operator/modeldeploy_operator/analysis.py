"""Is a freshly rolled out revision doing worse on live traffic than the one it replaced? Pure.

The figures are the new pods' own counters and latency histogram, differenced between two scrapes
(one interval) and summed over the pods. Each interval is judged on its own: over a limit, within
the limits, too little traffic, or no data. Only judged intervals count: a revision is rolled back
after `consecutive` judged intervals in a row over a limit, and passes once the bake window is over
with at least `consecutive` judged intervals and the last one within the limits. Intervals without
data, or with too little traffic, neither fail nor pass a revision: missing data alone never rolls
back, and a bake that saw too little traffic ends Inconclusive.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figures:
    """One interval of one revision, summed over its pods. `buckets`: cumulative counts of the
    request duration histogram by upper bound in seconds, the last one +Inf."""

    requests: int
    errors: int
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float | None:
        p = quantile(0.95, self.buckets)
        return None if p is None else p * 1000.0


def merge(figures: Sequence[Figures]) -> Figures:
    """Several intervals (or pods) as one: counts and bucket counts add up."""
    bounds: dict[float, float] = {}
    for f in figures:
        for le, count in f.buckets:
            bounds[le] = bounds.get(le, 0.0) + count
    return Figures(
        requests=sum(f.requests for f in figures),
        errors=sum(f.errors for f in figures),
        buckets=tuple(sorted(bounds.items())),
    )


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated linearly inside its bucket as
    Prometheus' histogram_quantile does; the highest finite bound when it falls in +Inf."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


@dataclass(frozen=True)
class Limits:
    consecutive: int = 3
    max_error_ratio: float = 0.05
    max_p95_ms: float = 0.0  # 0: no absolute limit
    max_p95_ratio: float = 2.0  # 0: no comparison with the baseline
    min_requests: int = 20


@dataclass(frozen=True)
class Baseline:
    """The last known good revision's figures, recorded while it served."""

    error_ratio: float
    p95_ms: float | None
    requests: int = 0
    revision: int | None = None


class Judgement(str, enum.Enum):
    WITHIN = "within"
    OVER = "over"
    SPARSE = "sparse"  # too little traffic to judge
    MISSING = "missing"  # no pod could be scraped, or nothing to difference yet


@dataclass(frozen=True)
class Interval:
    judgement: Judgement
    breaches: tuple[str, ...] = ()  # e.g. "p95 41 ms > 25 ms"


def fmt(value: float) -> str:
    """Figures as people read them: 41, 4.2, 0.85 (ms); never 4.1e+01."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2g}" if value < 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def pct(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def judge_interval(figures: Figures | None, baseline: Baseline | None, limits: Limits) -> Interval:
    if figures is None:
        return Interval(Judgement.MISSING)
    if figures.requests < limits.min_requests:
        return Interval(Judgement.SPARSE)
    breaches = []
    error_limit = (baseline.error_ratio if baseline else 0.0) + limits.max_error_ratio
    if figures.error_ratio > error_limit:
        breaches.append(f"errors {pct(figures.error_ratio)} > {pct(error_limit)}")
    p95 = figures.p95_ms
    if p95 is not None:
        if limits.max_p95_ms > 0 and p95 > limits.max_p95_ms:
            breaches.append(f"p95 {fmt(p95)} ms > {fmt(limits.max_p95_ms)} ms")
        elif baseline and baseline.p95_ms and limits.max_p95_ratio > 0 and p95 > baseline.p95_ms * limits.max_p95_ratio:
            breaches.append(
                f"p95 {fmt(p95)} ms > {fmt(baseline.p95_ms * limits.max_p95_ratio)} ms "
                f"({limits.max_p95_ratio:g} x known good {fmt(baseline.p95_ms)} ms)"
            )
    return Interval(Judgement.OVER if breaches else Judgement.WITHIN, tuple(breaches))


class Verdict(str, enum.Enum):
    BAKING = "Baking"
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class AnalysisDecision:
    verdict: Verdict
    message: str
    judged: int = 0
    streak: int = 0  # judged intervals over a limit in a row, the latest last


def decide_analysis(
    intervals: Sequence[Figures | None],
    baseline: Baseline | None,
    limits: Limits,
    *,
    elapsed_s: float,
    bake_s: float,
    interval_s: float,
) -> AnalysisDecision:
    """The verdict on a revision from its intervals so far, oldest first (None: no data)."""
    results = [judge_interval(f, baseline, limits) for f in intervals]
    judged = [r for r in results if r.judgement in (Judgement.WITHIN, Judgement.OVER)]
    streak = 0
    for r in reversed(judged):
        if r.judgement is not Judgement.OVER:
            break
        streak += 1
    sparse = sum(r.judgement is Judgement.SPARSE for r in results)
    missing = sum(r.judgement is Judgement.MISSING for r in results)
    if streak >= limits.consecutive:
        breaches = ", ".join(judged[-1].breaches)
        return AnalysisDecision(
            Verdict.FAILED,
            f"{breaches} for {limits.consecutive} of {limits.consecutive} intervals",
            len(judged),
            streak,
        )
    tally = f"{len(judged)} of {len(results)} intervals judged ({sparse} with under {limits.min_requests} requests"
    tally += f", {missing} without data)"
    note = f"{', '.join(judged[-1].breaches)} for {streak} of {limits.consecutive} intervals" if streak else ""
    if elapsed_s < bake_s:
        return AnalysisDecision(Verdict.BAKING, note, len(judged), streak)
    if streak and elapsed_s < bake_s + limits.consecutive * interval_s:
        # The window is over in the middle of a run of bad intervals: let the run resolve.
        return AnalysisDecision(
            Verdict.BAKING, f"{note}; bake window over, waiting for the next intervals", len(judged), streak
        )
    if len(judged) >= limits.consecutive and not streak:
        return AnalysisDecision(Verdict.PASSED, f"within the limits: {tally}", len(judged), 0)
    if streak:
        return AnalysisDecision(Verdict.INCONCLUSIVE, f"{note} when traffic stopped; {tally}", len(judged), streak)
    return AnalysisDecision(
        Verdict.INCONCLUSIVE,
        f"too little traffic to judge: {tally}; {limits.consecutive} are needed",
        len(judged),
        0,
    )
