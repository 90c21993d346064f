"""Issue 4's decision logic over observed rollouts: is the rollout failed, progressing or complete
(assess_rollout), and what to do about it (decide_rollback, is_pinned)."""

from __future__ import annotations

import pytest
from modeldeploy_operator import api
from modeldeploy_operator.observe import observe_rollout
from modeldeploy_operator.rollback import (
    Action,
    Assessment,
    Decision,
    Verdict,
    assess_rollout,
    decide_rollback,
    follow_revisions,
    is_pinned,
)
from operator_helpers import condition, deployment, pod, replicaset

OLD, NEW = "7f9c6d5b4", "5d8b9c7f6"
THRESHOLD = 3
DEADLINE = condition(
    "Progressing", "False", "ProgressDeadlineExceeded", 'ReplicaSet "m-5d8b9c7f6" has timed out progressing.'
)
REPLICA_FAILURE = condition("ReplicaFailure", "True", "FailedCreate", 'pods "m-" is forbidden: exceeded quota')
UNAVAILABLE = condition("Available", "False", "MinimumReplicasUnavailable")
IN_PROGRESS = condition("Progressing", "True", "ReplicaSetUpdated")


def assess(*pods, crash_loop_restarts: int = THRESHOLD, **dep) -> Assessment:
    rollout = observe_rollout(deployment(**dep), [replicaset(1, OLD), replicaset(2, NEW)], list(pods))
    return assess_rollout(rollout, crash_loop_restarts)


def rolling(**dep):
    """Counts of a rollout half way: one of two pods updated, not yet ready."""
    return {"updated": 1, "ready": 1, "available": 1, "replicas": 2, "conditions": [UNAVAILABLE, IN_PROGRESS], **dep}


# ---- assess_rollout -------------------------------------------------------------------------------

CASES = {
    "deadline-exceeded": ((), rolling(conditions=[UNAVAILABLE, DEADLINE]), Verdict.FAILED, "ProgressDeadlineExceeded"),
    "replica-failure": ((), rolling(conditions=[REPLICA_FAILURE, IN_PROGRESS]), Verdict.FAILED, "ReplicaFailure"),
    "crash-loop-below-threshold": (
        (pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=2, last_terminated="Error"),),
        rolling(),
        Verdict.PROGRESSING,
        "RolloutInProgress",
    ),
    "crash-loop-at-threshold": (
        (pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=3, last_terminated="Error"),),
        rolling(),
        Verdict.FAILED,
        "CrashLoopBackOff",
    ),
    "crash-loop-above-threshold": (
        (pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=12, last_terminated="Error"),),
        rolling(),
        Verdict.FAILED,
        "CrashLoopBackOff",
    ),
    "err-image-pull": ((pod("m-new-1", NEW, waiting="ErrImagePull"),), rolling(), Verdict.FAILED, "ImagePullFailed"),
    "image-pull-backoff": (
        (pod("m-new-1", NEW, waiting="ImagePullBackOff"),),
        rolling(),
        Verdict.FAILED,
        "ImagePullFailed",
    ),
    "oom-killed": (
        (pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=1, last_terminated="OOMKilled"),),
        rolling(),
        Verdict.FAILED,
        "OOMKilled",
    ),
    "config-error": (
        (pod("m-new-1", NEW, waiting="CreateContainerConfigError", waiting_message='secret "t" not found'),),
        rolling(),
        Verdict.FAILED,
        "CreateContainerConfigError",
    ),
    "latency-gate": (
        (pod("m-new-1", NEW, terminated="Error", terminated_message="latency budget exceeded: p95 142.0 ms > 100 ms"),),
        rolling(),
        Verdict.FAILED,
        "LatencyBudgetExceeded",
    ),
    "model-load-failed": (
        (
            pod(
                "m-new-1",
                NEW,
                terminated="Error",
                terminated_message="model load failed: no such file /mnt/models/m.onnx",
            ),
        ),
        rolling(),
        Verdict.FAILED,
        "ModelLoadFailed",
    ),
    "gpu-unavailable": (
        (pod("m-new-1", NEW, terminated="Error", terminated_message="gpu unavailable: CUDAExecutionProvider missing"),),
        rolling(),
        Verdict.FAILED,
        "GPUUnavailable",
    ),
    "partially-ready": (
        (pod("m-new-1", NEW, ready=True), pod("m-new-2", NEW)),
        {"updated": 2, "ready": 1, "available": 1, "conditions": [UNAVAILABLE, IN_PROGRESS]},
        Verdict.PROGRESSING,
        "RolloutInProgress",
    ),
    "old-pods-still-there": (
        (pod("m-new-1", NEW, ready=True), pod("m-new-2", NEW, ready=True)),
        {"replicas": 3},
        Verdict.PROGRESSING,
        "RolloutInProgress",
    ),
    "ready": (
        (pod("m-new-1", NEW, ready=True), pod("m-new-2", NEW, ready=True)),
        {},
        Verdict.COMPLETE,
        "RolloutComplete",
    ),
    "ready-after-an-oom-long-ago": (
        (pod("m-new-1", NEW, ready=True, restarts=1, last_terminated="OOMKilled"), pod("m-new-2", NEW, ready=True)),
        {},
        Verdict.COMPLETE,
        "RolloutComplete",
    ),
    "scaled-to-zero": ((), {"desired": 0}, Verdict.COMPLETE, "RolloutComplete"),
    "paused": ((), rolling(paused=True, conditions=[UNAVAILABLE, DEADLINE]), Verdict.PAUSED, "RolloutPaused"),
    "paused-with-crash-loop": (
        (pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=9),),
        rolling(paused=True),
        Verdict.PAUSED,
        "RolloutPaused",
    ),
    "not-synced": ((), {"generation": 3, "observed_generation": 2}, Verdict.PROGRESSING, "NewTemplate"),
    "not-synced-over-an-old-deadline": (
        (),
        rolling(generation=3, observed_generation=2, conditions=[UNAVAILABLE, DEADLINE]),
        Verdict.PROGRESSING,
        "NewTemplate",
    ),
    "old-replicaset-crash-looping": (
        (pod("m-old-1", OLD, waiting="CrashLoopBackOff", restarts=9), pod("m-new-1", NEW)),
        rolling(),
        Verdict.PROGRESSING,
        "RolloutInProgress",
    ),
    "deleted-pod-crash-looping": (
        (pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=9, deleting=True),),
        rolling(),
        Verdict.PROGRESSING,
        "RolloutInProgress",
    ),
    "progressing-false-for-another-reason": (
        (),
        rolling(conditions=[UNAVAILABLE, condition("Progressing", "False", "SomethingElse")]),
        Verdict.PROGRESSING,
        "RolloutInProgress",
    ),
    "replica-failure-cleared": (
        (),
        rolling(conditions=[condition("ReplicaFailure", "False", "FailedCreate"), IN_PROGRESS]),
        Verdict.PROGRESSING,
        "RolloutInProgress",
    ),
}


@pytest.mark.parametrize("pods, dep, verdict, reason", CASES.values(), ids=CASES.keys())
def test_assess_rollout(pods, dep, verdict, reason):
    a = assess(*pods, **dep)
    assert (a.verdict, a.reason) == (verdict, reason)


def test_no_deployment_is_absent():
    assert assess_rollout(observe_rollout(None, [], []), THRESHOLD).verdict == Verdict.ABSENT


def test_a_failure_names_the_pod_and_carries_the_runtimes_message():
    message = "latency budget exceeded: p95 142.0 ms > 100 ms"
    a = assess(pod("m-new-2", NEW, terminated="Error", terminated_message=message), **rolling())
    assert (a.pod, a.message) == ("m-new-2", message)


def test_a_deadline_failure_carries_the_controllers_message():
    assert assess(**rolling(conditions=[UNAVAILABLE, DEADLINE])).message == DEADLINE["message"]


def test_complete_names_the_revision_and_progress_counts_pods():
    assert assess(revision=7).message == "revision 7 is available"
    assert assess(**rolling()).message == "1 of 2 pods updated, 1 available"


def test_the_crash_loop_threshold_comes_from_the_caller():
    crash = pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=4, last_terminated="Error")
    assert assess(crash, crash_loop_restarts=5, **rolling()).verdict == Verdict.PROGRESSING
    assert assess(crash, crash_loop_restarts=4, **rolling()).verdict == Verdict.FAILED


# ---- decide_rollback ------------------------------------------------------------------------------

GEN = 4
GOOD = api.KnownGood(revision=3, generation=2, template_hash="good", pod_template_hash=OLD, time="t0")
FAILED = Assessment(Verdict.FAILED, "CrashLoopBackOff", "restarted 3 times", "m-new-1")
COMPLETE = Assessment(Verdict.COMPLETE, "RolloutComplete", "revision 4 is available")


def record(generation: int = GEN, rolled_back: bool = True, retry_token: str | None = None) -> api.RollbackRecord:
    return api.RollbackRecord(
        failed_generation=generation,
        failed_revision=4,
        restored_revision=3 if rolled_back else None,
        reason="CrashLoopBackOff",
        time="t1",
        rolled_back=rolled_back,
        retry_token=retry_token,
    )


def decide(assessment: Assessment = FAILED, **kw):
    args = {
        "generation": GEN,
        "template_hash": "new",
        "auto_rollback": True,
        "known_good": GOOD,
        "record": None,
        "retry_token": None,
        **kw,
    }
    args.setdefault("pinned", is_pinned(args["record"], args["generation"], args["retry_token"]))
    return decide_rollback(assessment, **args)


def test_a_failed_rollout_with_a_known_good_revision_is_rolled_back():
    decision = decide()
    assert decision.action == Action.ROLL_BACK
    assert "revision 3" in decision.why


def test_the_first_rollout_failing_records_the_failure_and_restores_nothing():
    decision = decide(known_good=None)
    assert decision.action == Action.RECORD_FAILURE
    assert "no known good revision" in decision.why


def test_with_auto_rollback_off_the_failure_is_recorded_and_left_in_place():
    decision = decide(auto_rollback=False)
    assert decision.action == Action.RECORD_FAILURE
    assert "autoRollback is false" in decision.why


@pytest.mark.parametrize("kw", [{"known_good": None}, {"auto_rollback": False}], ids=["first-rollout", "auto-off"])
def test_a_recorded_failure_is_not_recorded_again(kw):
    assert decide(record=record(rolled_back=False), **kw).action == Action.NONE


def test_already_pinned_to_the_known_good_revision_does_nothing():
    decision = decide(record=record())
    assert decision.action == Action.NONE
    assert "not rolling back again" in decision.why


def test_the_known_good_revision_itself_failing_does_nothing():
    decision = decide(template_hash=GOOD.template_hash)
    assert decision.action == Action.NONE
    assert "nothing older to restore" in decision.why


def test_a_complete_rollout_is_marked_known_good_once():
    assert decide(COMPLETE, known_good=None).action == Action.MARK_KNOWN_GOOD
    assert decide(COMPLETE).action == Action.MARK_KNOWN_GOOD  # a newer template than the known good
    marked = GOOD.model_copy(update={"template_hash": "new", "generation": GEN})
    assert decide(COMPLETE, known_good=marked).action == Action.NONE


def test_the_restored_revision_completing_is_not_marked_known_good_again():
    assert decide(COMPLETE, record=record(), template_hash=GOOD.template_hash).action == Action.NONE


@pytest.mark.parametrize("verdict", [Verdict.PROGRESSING, Verdict.PAUSED, Verdict.ABSENT])
def test_nothing_is_decided_while_the_rollout_is_undecided(verdict):
    assert decide(Assessment(verdict, "x", "y")).action == Action.NONE


def test_a_new_generation_after_a_rollback_is_a_new_attempt():
    old = record(generation=GEN)
    assert not is_pinned(old, GEN + 1, None)
    assert decide(generation=GEN + 1, record=old).action == Action.ROLL_BACK


def test_a_new_retry_annotation_after_a_rollback_is_a_new_attempt():
    old = record(retry_token="1")
    assert is_pinned(old, GEN, "1")
    assert not is_pinned(old, GEN, "2")
    assert not is_pinned(old, GEN, None)
    assert decide(record=old, retry_token="2").action == Action.ROLL_BACK


def test_a_failure_recorded_without_restore_is_not_decided_again():
    assert decide(record=record(rolled_back=False)).action == Action.NONE


# ---- is_pinned --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rec, generation, token, pinned",
    [
        (None, GEN, None, False),
        (record(), GEN, None, True),
        (record(rolled_back=False), GEN, None, False),
        (record(), GEN + 1, None, False),
        (record(retry_token="a"), GEN, "a", True),
        (record(retry_token="a"), GEN, "b", False),
        (record(), GEN, "a", False),
    ],
    ids=["no-record", "rolled-back", "recorded-only", "new-generation", "same-retry", "new-retry", "retry-added"],
)
def test_is_pinned(rec, generation, token, pinned):
    assert is_pinned(rec, generation, token) is pinned


# ---- a whole story ----------------------------------------------------------------------------------


def test_good_then_bad_then_rolled_back_then_fixed():
    # generation 1 rolls out: marked known good.
    assert decide(COMPLETE, generation=1, template_hash="good", known_good=None).action == Action.MARK_KNOWN_GOOD
    good = api.KnownGood(revision=1, generation=1, template_hash="good", pod_template_hash=OLD, time="t0")
    # generation 2 crash-loops: rolled back to revision 1.
    assert decide(generation=2, template_hash="bad", known_good=good).action == Action.ROLL_BACK
    pinned = api.RollbackRecord(failed_generation=2, reason="CrashLoopBackOff", time="t1", rolled_back=True)
    # the restored template rolls out: nothing more to do, and it stays pinned across resyncs.
    for _ in range(3):
        assert (
            decide(COMPLETE, generation=2, template_hash="good", known_good=good, record=pinned).action == Action.NONE
        )
    # generation 3 fixes the spec: a new attempt, which completes and becomes the known good one.
    assert decide(COMPLETE, generation=3, template_hash="fixed", known_good=good, record=pinned).action == (
        Action.MARK_KNOWN_GOOD
    )


# ---- revision numbers after a rollback --------------------------------------------------------------

KNOWN_GOOD = api.KnownGood(revision=1, generation=1, template_hash="t1", pod_template_hash="good", time="t")
RESTORED = api.RollbackRecord(
    failed_generation=2, failed_revision=2, restored_revision=1, reason="CrashLoopBackOff", time="t", rolled_back=True
)


def test_a_restored_revision_is_named_by_the_number_the_deployment_gave_it():
    """Revision 1 restored after revision 2 is the Deployment's revision 3."""
    replicasets = [replicaset(3, "good"), replicaset(2, "bad")]
    state = observe_rollout(deployment(revision=3), replicasets, [])
    known_good, record = follow_revisions(KNOWN_GOOD, RESTORED, state, replicasets)
    assert known_good is not None and known_good.revision == 3
    assert record is not None and (record.failed_revision, record.restored_revision) == (2, 3)
    assert state.revision == 3


def test_revisions_stay_until_the_deployment_has_restored_the_template():
    replicasets = [replicaset(1, "good"), replicaset(2, "bad")]
    state = observe_rollout(deployment(revision=2), replicasets, [])
    assert follow_revisions(KNOWN_GOOD, RESTORED, state, replicasets) == (KNOWN_GOOD, RESTORED)


def test_no_known_good_changes_nothing():
    state = observe_rollout(deployment(revision=2), [replicaset(2, "bad")], [])
    assert follow_revisions(None, None, state, []) == (None, None)


def test_a_rollback_with_the_known_good_replicaset_gone_records_the_failure_and_says_why():
    decision = decide(restorable=False)
    assert decision.action == Action.RECORD_FAILURE
    assert decision.why == "the last known good ReplicaSet no longer exists"
    assert decision.note == "the last known good ReplicaSet no longer exists, nothing to restore"


@pytest.mark.parametrize("kw", [{"auto_rollback": False}, {"known_good": None}])
def test_a_gone_replicaset_changes_nothing_when_no_rollback_was_due(kw):
    assert decide(restorable=False, **kw) == decide(restorable=True, **kw)
    assert decide(restorable=False, **kw).note == ""


def test_a_complete_rollout_still_in_its_bake_is_not_known_good_yet():
    decision = decide(COMPLETE, analysis_pending=True)
    assert decision == Decision(Action.NONE, "the post-rollout analysis has not passed")
    assert decide(COMPLETE).action == Action.MARK_KNOWN_GOOD
