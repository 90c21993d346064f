"""Where the analysis meets a reconcile: what status.analysis and status.hardware say, whether the
revision may become the last known good yet, and what the traffic watch should scrape. Pure: the
watch's findings come in as values.

An update bakes once all its pods are available and a known good revision exists to compare with
and fall back to; the first revision of a resource (nothing to restore) and a restored known good
one do not bake. While it bakes, the revision is not the last known good; a pass makes it so, a
failure rolls back like any failed rollout (reason AnalysisFailed), and a bake that saw too little
traffic ends Inconclusive: it keeps serving, and the previous known good stays the one restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from . import api
from .analysis import AnalysisDecision, Baseline, Limits, Verdict, decide_analysis, fmt, pct
from .observe import RolloutState
from .rollback import Assessment
from .rollback import Verdict as RolloutVerdict
from .watch import Mode, Track

TERMINAL = (api.AnalysisPhase.PASSED, api.AnalysisPhase.FAILED, api.AnalysisPhase.INCONCLUSIVE)


@dataclass(frozen=True)
class Live:
    """What the traffic watch knows now (None: nothing yet, e.g. just after an operator restart)."""

    decision: AnalysisDecision | None = None
    baseline: Baseline | None = None  # of the known good revision
    facts: tuple[dict[str, str], float | None] | None = None  # of the current revision


@dataclass(frozen=True)
class Plan:
    analysis: api.AnalysisStatus | None
    hardware: api.Hardware | None
    failed: Assessment | None = None  # replaces the assessment: the analysis failed the rollout
    hold: bool = False  # not (yet) the last known good
    track: Track | None = None


def limits_of(cfg: api.Analysis) -> Limits:
    return Limits(
        consecutive=cfg.consecutive_intervals,
        max_error_ratio=cfg.max_error_ratio,
        max_p95_ms=cfg.max_p95_milliseconds,
        max_p95_ratio=cfg.max_p95_ratio,
        min_requests=cfg.min_requests,
    )


def epoch(rfc3339: str) -> float:
    return datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def hardware_of(state: RolloutState, previous: api.Hardware | None, live: Live) -> api.Hardware | None:
    h = state.pod_template_hash
    if not h:
        return None
    if live.facts is not None:
        info, warmup = live.facts
        return api.Hardware(
            pod_template_hash=h,
            backend=info.get("backend") or None,
            provider=info.get("provider") or None,
            precision=info.get("precision") or None,
            gpu_product=info.get("gpu_product") or None,
            warmup_p95_milliseconds=None if warmup is None else round(warmup, 2),
        )
    return previous if previous is not None and previous.pod_template_hash == h else None


def _baseline_status(b: Baseline | None) -> api.Baseline | None:
    if b is None:
        return None
    p95 = None if b.p95_ms is None else round(b.p95_ms, 2)
    return api.Baseline(
        revision=b.revision, requests=b.requests, error_ratio=round(b.error_ratio, 4), p95_milliseconds=p95
    )


def _baseline_of(s: api.Baseline | None) -> Baseline | None:
    if s is None:
        return None
    return Baseline(s.error_ratio, s.p95_milliseconds, s.requests, s.revision)


def _compared_with(b: api.Baseline | None) -> str:
    if b is None:
        return "the absolute limits only (no figures of the known good revision were recorded)"
    p95 = "no p95" if b.p95_milliseconds is None else f"p95 {fmt(b.p95_milliseconds)} ms"
    return f"known good revision {b.revision} ({p95}, errors {pct(b.error_ratio)} over {b.requests} requests)"


def plan_analysis(
    cfg: api.Analysis,
    *,
    model: str,
    state: RolloutState,
    assessment: Assessment,
    template_hash: str,
    known_good: api.KnownGood | None,
    pinned: bool,
    previous: api.ModelDeploymentStatus,
    live: Live,
    now: float,
) -> Plan:
    h = state.pod_template_hash or ""
    hardware = hardware_of(state, previous.hardware, live)
    prev = previous.analysis
    same = prev is not None and prev.pod_template_hash == h
    kept = prev if prev is not None and (prev.phase in TERMINAL or same) else None
    pods = tuple(sorted((p.name, p.ip) for p in state.new_pods if p.ready and p.ip))
    interval = float(cfg.interval_seconds)
    facts = Track(Mode.FACTS, h, pods, model, interval) if h else None
    if not cfg.enabled or not h:
        return Plan(kept if cfg.enabled else None, hardware, track=facts)
    complete = assessment.verdict == RolloutVerdict.COMPLETE
    if pinned or known_good is None or known_good.template_hash == template_hash:
        # The known good revision (or the first one, about to become it) serves: record its figures.
        track = Track(Mode.BASELINE, h, pods, model, interval, revision=state.revision) if complete else facts
        return Plan(kept if kept is None or kept.phase in TERMINAL else None, hardware, track=track)
    if same and prev.phase in TERMINAL:
        failed = None
        if prev.phase == api.AnalysisPhase.FAILED:
            failed = Assessment(RolloutVerdict.FAILED, "AnalysisFailed", prev.message)
        return Plan(prev, hardware, failed=failed, hold=prev.phase != api.AnalysisPhase.PASSED, track=facts)
    if not complete:
        return Plan(kept, hardware, hold=True, track=facts)

    baking = same and prev.phase == api.AnalysisPhase.BAKING
    start = prev.start_time if baking else rfc3339(now)
    started = epoch(start)
    baseline = prev.baseline if baking else _baseline_status(live.baseline)
    limits = limits_of(cfg)
    decision = live.decision or decide_analysis(
        [], _baseline_of(baseline), limits, elapsed_s=now - started, bake_s=cfg.bake_seconds, interval_s=interval
    )
    phase = api.AnalysisPhase(decision.verdict.value)
    rev = state.revision
    if decision.verdict is Verdict.BAKING:
        message = f"baking revision {rev} until {rfc3339(started + cfg.bake_seconds)}, compared with {_compared_with(baseline)}"
        if decision.message:
            message += f": {decision.message}"
    elif decision.verdict is Verdict.PASSED:
        message = f"revision {rev} passed its bake: {decision.message}"
    elif decision.verdict is Verdict.FAILED:
        message = f"revision {rev}: {decision.message}"
    else:
        message = f"revision {rev} not judged, so not recorded as known good: {decision.message}"
    analysis = api.AnalysisStatus(
        phase=phase, revision=rev, pod_template_hash=h, start_time=start, message=message, baseline=baseline
    )
    track = Track(
        Mode.BAKE,
        h,
        pods,
        model,
        interval,
        limits=limits,
        baseline=_baseline_of(baseline),
        started=started,
        bake_s=float(cfg.bake_seconds),
        revision=rev,
    )
    failed = Assessment(RolloutVerdict.FAILED, "AnalysisFailed", message) if phase == api.AnalysisPhase.FAILED else None
    return Plan(analysis, hardware, failed=failed, hold=phase != api.AnalysisPhase.PASSED, track=track)
