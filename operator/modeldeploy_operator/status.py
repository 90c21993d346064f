"""The status a ModelDeployment shows, computed from what was observed and decided. Pure.

Conditions keep their lastTransitionTime unless their status changes, so a resync that observes
nothing new computes the very same status and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import modeldeploy_contract as contract
import modeldeploy_contract.sources as sources_contract

from . import api, naming
from .observe import RolloutState
from .rollback import Assessment, Verdict
from .validation import Problem

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "RolledBack")


@dataclass(frozen=True)
class Observed:
    """Everything compute_status needs, gathered by the reconciler."""

    name: str
    namespace: str
    generation: int
    model_name: str
    state: RolloutState
    assessment: Assessment
    problems: tuple[Problem, ...] = ()
    known_good: api.KnownGood | None = None
    record: api.RollbackRecord | None = None
    rollback_count: int = 0
    pinned: bool = False
    update_cost: str | None = None  # what an update costs (surge.SurgePlan.message)
    analysis: api.AnalysisStatus | None = None
    hardware: api.Hardware | None = None


def _condition(type_: str, ok: bool, reason: str, message: str) -> api.Condition:
    return api.Condition(type=type_, status="True" if ok else "False", reason=reason, message=message)


def _ready(o: Observed) -> api.Condition:
    s = o.state
    if not s.exists:
        return _condition("Ready", False, "DeploymentMissing", "no pods yet")
    available = s.conditions.get("Available")
    if s.desired == 0:
        return _condition("Ready", False, "ScaledToZero", "replicas is 0")
    if s.ready > 0 and available is not None and available.status == "True":
        return _condition("Ready", True, "Available", f"{s.ready} of {s.desired} pods ready")
    return _condition(
        "Ready",
        False,
        "NoReadyPods" if s.ready == 0 else "MinimumReplicasUnavailable",
        f"{s.ready} of {s.desired} pods ready",
    )


def _problems_message(problems: tuple[Problem, ...]) -> str:
    return "; ".join(str(p) for p in problems)


def _problems_reason(problems: tuple[Problem, ...]) -> str:
    if reasons := [p.reason for p in problems if p.reason]:
        return reasons[0]
    if any(p.field.startswith("spec.auth") for p in problems):
        return "AuthSecretInvalid"
    return "InvalidSpec"


def compute_conditions(o: Observed) -> list[api.Condition]:
    a = o.assessment
    if o.problems:
        reason, message = _problems_reason(o.problems), _problems_message(o.problems)
        if o.state.exists:
            refused = (
                f"generation {o.generation} was refused and nothing of it is applied; the Deployment "
                f"keeps revision {o.state.revision} as it was until the spec is fixed"
            )
            message = f"update to generation {o.generation} refused: {message}"
        else:
            refused = f"generation {o.generation} was refused: nothing is built until the spec is fixed"
        progressing = _condition("Progressing", False, reason, refused)
        degraded = _condition("Degraded", True, reason, message)
    elif a.verdict == Verdict.FAILED:
        progressing = _condition("Progressing", False, "RolloutFailed", f"{a.reason}: {a.message}")
        degraded = _condition("Degraded", True, a.reason, _failure_message(o))
    elif o.pinned and o.record is not None:
        progressing = _condition(
            "Progressing",
            a.verdict == Verdict.PROGRESSING,
            "RollingBack" if a.verdict == Verdict.PROGRESSING else "RolledBack",
            a.message,
        )
        degraded = _condition("Degraded", True, o.record.reason, _failure_message(o))
    else:
        progressing = _condition("Progressing", a.verdict == Verdict.PROGRESSING, a.reason, a.message)
        degraded = _condition("Degraded", False, "AsExpected", "")
    if o.pinned and o.record is not None:
        rolled_back = _condition(
            "RolledBack",
            True,
            o.record.reason,
            f"generation {o.record.failed_generation} failed ({o.record.reason}); restored "
            f"revision {o.record.restored_revision}. Change the spec, or set the annotation "
            f"{naming.RETRY_ANNOTATION} to a new value, to try again",
        )
    else:
        rolled_back = _condition("RolledBack", False, "NotRolledBack", "")
    return [_ready(o), progressing, degraded, rolled_back]


def _failure_message(o: Observed) -> str:
    record, a = o.record, o.assessment
    if o.pinned and record is not None:
        where = f" (pod {record.pod})" if record.pod else ""
        return f"rollout of generation {record.failed_generation} failed{where}: {record.message}"
    where = f" (pod {a.pod})" if a.pod else ""
    suffix = "" if o.known_good is not None else "; no known good revision to restore"
    return f"{a.message}{where}{suffix}"


def compute_phase(o: Observed, ready: bool) -> api.Phase:
    a = o.assessment
    if o.problems:
        return api.Phase.DEGRADED
    if o.pinned:
        return api.Phase.ROLLED_BACK
    if a.verdict == Verdict.FAILED:
        return api.Phase.DEGRADED if o.known_good is not None else api.Phase.FAILED
    if a.verdict == Verdict.ABSENT:
        return api.Phase.PENDING
    if a.verdict == Verdict.PROGRESSING:
        return api.Phase.PROGRESSING
    return api.Phase.READY if ready or o.state.desired == 0 else api.Phase.PROGRESSING


def carry_transition_times(
    new: list[api.Condition], old: list[api.Condition], generation: int, now: str
) -> list[api.Condition]:
    previous = {c.type: c for c in old}
    out = []
    for c in new:
        before = previous.get(c.type)
        same = before is not None and before.status == c.status
        since = (before.last_transition_time or now) if same else now
        out.append(c.model_copy(update={"last_transition_time": since, "observed_generation": generation}))
    return out


def compute_status(o: Observed, previous: api.ModelDeploymentStatus, now: str) -> api.ModelDeploymentStatus:
    conditions = carry_transition_times(compute_conditions(o), previous.conditions, o.generation, now)
    ready = conditions[0].status == "True"
    s = o.state
    return api.ModelDeploymentStatus(
        observed_generation=o.generation,
        phase=compute_phase(o, ready),
        conditions=conditions,
        replicas=s.replicas,
        ready_replicas=s.ready,
        updated_replicas=s.updated,
        available_replicas=s.available,
        ready=f"{s.ready}/{s.desired}",
        selector=naming.selector_string(o.name),
        revision=s.revision,
        endpoint=f"http://{o.name}.{o.namespace}.svc:{contract.HTTP_PORT}",
        model_name=o.model_name,
        last_known_good=o.known_good,
        rollback=o.record,
        rollback_count=o.rollback_count,
        update_cost=o.update_cost,
        analysis=o.analysis,
        hardware=o.hardware,
    )


def status_to_dict(status: api.ModelDeploymentStatus) -> dict[str, Any]:
    # Empty strings are left out: they mean "none", and some API servers (1.20) refuse them in a
    # merge patch of a custom resource's status.
    return _drop_empty(status.model_dump(by_alias=True, exclude_none=True, mode="json"))


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


REFUSALS = ("InvalidSpec", "AuthSecretInvalid", *sources_contract.REASONS)


def transitions(old: list[api.Condition], new: list[api.Condition]) -> list[api.Condition]:
    """Conditions whose status or reason changed: each deserves an Event. So does every new
    refusal of a spec: a second invalid update is news even though the resource was Degraded."""
    before = {c.type: c for c in old}

    def changed(c: api.Condition) -> bool:
        b = before.get(c.type)
        if b is None or (b.status, b.reason) != (c.status, c.reason):
            return True
        return c.type == "Degraded" and c.reason in REFUSALS and b.message != c.message

    return [c for c in new if changed(c)]


# A first condition in its good state is no news; every later change of a condition is an Event.
QUIET_FIRST = {("Degraded", "False"), ("RolledBack", "False"), ("Ready", "False"), ("Progressing", "True")}


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


ANALYSIS_EVENTS = {
    api.AnalysisPhase.BAKING: ("Normal", "AnalysisStarted"),
    api.AnalysisPhase.PASSED: ("Normal", "AnalysisPassed"),
    api.AnalysisPhase.INCONCLUSIVE: ("Warning", "AnalysisInconclusive"),
}


def _analysis_event(old: api.AnalysisStatus | None, new: api.AnalysisStatus | None) -> list[Event]:
    """When a bake starts, passes or ends inconclusive; a failure is told by the Degraded
    condition's Event (reason AnalysisFailed), with the same figures."""
    if new is None or new.phase not in ANALYSIS_EVENTS:
        return []
    if old is not None and (old.pod_template_hash, old.phase) == (new.pod_template_hash, new.phase):
        return []
    type_, reason = ANALYSIS_EVENTS[new.phase]
    return [Event(type_, reason, new.message)]


def events_for(old: api.ModelDeploymentStatus, new: api.ModelDeploymentStatus) -> list[Event]:
    """The Events a status change deserves: the post-rollout analysis starting, passing or ending
    inconclusive, and one per condition that changed (transitions), none for a condition's first
    appearance in its good state."""
    seen = {c.type for c in old.conditions}
    events = _analysis_event(old.analysis, new.analysis)
    for c in transitions(old.conditions, new.conditions):
        if c.type not in seen and (c.type, c.status) in QUIET_FIRST:
            continue
        bad = c.status == ("True" if c.type in ("Degraded", "RolledBack") else "False") and c.type != "Progressing"
        reason = "RolledBack" if (c.type, c.status) == ("RolledBack", "True") else (c.reason or c.type)
        events.append(Event("Warning" if bad else "Normal", reason, c.message or f"{c.type} is {c.status}"))
    return events


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch from status `old` to `new`: changed keys, and null for removed ones.
    Empty when nothing changed."""
    patch = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch
