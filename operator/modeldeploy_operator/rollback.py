"""Is the rollout healthy, in progress or failed, and what to do about it. Pure functions over the
observed rollout and the status recorded so far."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import api
from .observe import RolloutState, pod_failure, replicaset_revision


class Verdict(str, enum.Enum):
    ABSENT = "Absent"
    PAUSED = "Paused"
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    FAILED = "Failed"


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reason: str = ""
    message: str = ""
    pod: str | None = None


def assess_rollout(state: RolloutState, crash_loop_restarts: int) -> Assessment:
    if not state.exists:
        return Assessment(Verdict.ABSENT, "DeploymentMissing", "the Deployment does not exist yet")
    if state.paused:
        return Assessment(Verdict.PAUSED, "RolloutPaused", "spec.rollout.paused is true")
    if not state.synced:
        return Assessment(
            Verdict.PROGRESSING, "NewTemplate", "the Deployment controller has not seen the new template yet"
        )
    replica_failure = state.conditions.get("ReplicaFailure")
    if replica_failure and replica_failure.status == "True":
        return Assessment(Verdict.FAILED, "ReplicaFailure", replica_failure.message)
    progressing = state.conditions.get("Progressing")
    if progressing and progressing.status == "False" and progressing.reason == "ProgressDeadlineExceeded":
        return Assessment(Verdict.FAILED, "ProgressDeadlineExceeded", progressing.message)
    for pod in state.new_pods:
        failure = pod_failure(pod, crash_loop_restarts)
        if failure is not None:
            return Assessment(Verdict.FAILED, failure.reason, failure.message, failure.pod)
    if (
        state.updated >= state.desired
        and state.replicas == state.updated
        and state.available >= state.desired
        and state.ready >= state.desired
    ):
        return Assessment(Verdict.COMPLETE, "RolloutComplete", f"revision {state.revision} is available")
    return Assessment(
        Verdict.PROGRESSING,
        "RolloutInProgress",
        f"{state.updated} of {state.desired} pods updated, {state.available} available",
    )


class Action(str, enum.Enum):
    NONE = "None"
    MARK_KNOWN_GOOD = "MarkKnownGood"
    ROLL_BACK = "RollBack"
    RECORD_FAILURE = "RecordFailure"  # failed, nothing is restored


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str = ""
    # Said in status next to the failure itself, when what was decided is not what the failure
    # alone would have asked for (a rollback with nothing left to restore).
    note: str = ""


def is_pinned(record: api.RollbackRecord | None, generation: int, retry_token: str | None) -> bool:
    """True while this generation is held at the last known good template after its rollback.

    Only a new generation (a spec change) or a new value of the retry annotation starts a new
    attempt, so a failed generation is not rolled out again and again."""
    return (
        record is not None
        and record.rolled_back
        and record.failed_generation == generation
        and record.retry_token == retry_token
    )


def decide_rollback(
    assessment: Assessment,
    *,
    generation: int,
    template_hash: str,
    auto_rollback: bool,
    known_good: api.KnownGood | None,
    record: api.RollbackRecord | None,
    pinned: bool,
    retry_token: str | None,
    restorable: bool = True,
    analysis_pending: bool = False,
) -> Decision:
    """What to do about the rollout as assessed. `restorable`: the known good revision's
    ReplicaSet (and so its pod template) still exists to be restored. `analysis_pending`: the
    post-rollout analysis has not passed this revision (yet), so it is not known good."""
    if assessment.verdict == Verdict.COMPLETE:
        if pinned or (known_good is not None and known_good.template_hash == template_hash):
            return Decision(Action.NONE, "already known good")
        if analysis_pending:
            return Decision(Action.NONE, "the post-rollout analysis has not passed")
        return Decision(Action.MARK_KNOWN_GOOD, assessment.message)
    if assessment.verdict != Verdict.FAILED:
        return Decision(Action.NONE, assessment.message)
    already_recorded = (
        record is not None and record.failed_generation == generation and record.retry_token == retry_token
    )
    if pinned:
        return Decision(Action.NONE, "the restored last known good revision is failing too; not rolling back again")
    if known_good is not None and known_good.template_hash == template_hash:
        return Decision(Action.NONE, "the last known good revision itself is failing; nothing older to restore")
    if already_recorded:  # decided before (nothing could be restored, or it was not to be)
        return Decision(Action.NONE, "failure already recorded")
    if auto_rollback and known_good is not None:
        if not restorable:
            gone = "the last known good ReplicaSet no longer exists"
            return Decision(Action.RECORD_FAILURE, gone, note=f"{gone}, nothing to restore")
        return Decision(Action.ROLL_BACK, f"restoring revision {known_good.revision}")
    if known_good is None:
        return Decision(Action.RECORD_FAILURE, "no known good revision to restore yet")
    return Decision(Action.RECORD_FAILURE, "spec.rollout.autoRollback is false")


def follow_revisions(
    known_good: api.KnownGood | None,
    record: api.RollbackRecord | None,
    state: RolloutState,
    replicasets: list[dict],
) -> tuple[api.KnownGood | None, api.RollbackRecord | None]:
    """The revision numbers of status as the Deployment has them now.

    Restoring a ReplicaSet's template makes it the Deployment's newest revision: revision 1 rolled
    back to after revision 2 is revision 3. Status follows, so it never says "restored revision 1"
    of a Deployment at revision 3."""
    if known_good is not None and known_good.pod_template_hash:
        now = replicaset_revision(replicasets, known_good.pod_template_hash)
        if now is not None and now != known_good.revision:
            known_good = known_good.model_copy(update={"revision": now})
    if (
        record is not None
        and record.rolled_back
        and known_good is not None
        and state.revision is not None
        and state.pod_template_hash == known_good.pod_template_hash
        and record.restored_revision != state.revision
    ):
        record = record.model_copy(update={"restored_revision": state.revision})
    return known_good, record
