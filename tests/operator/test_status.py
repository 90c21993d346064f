"""The status users read: the phase and conditions per situation, transition times that move only
when a condition's status does, and a status that is the same dict when nothing new was observed
(which is why an in-sync resync writes nothing)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from modeldeploy_operator import api
from modeldeploy_operator.observe import ABSENT, observe_rollout
from modeldeploy_operator.reconcile import parse_status
from modeldeploy_operator.rollback import Assessment, Verdict, assess_rollout
from modeldeploy_operator.status import (
    Event,
    Observed,
    compute_conditions,
    compute_status,
    events_for,
    status_patch,
    status_to_dict,
    transitions,
)
from modeldeploy_operator.validation import Problem
from operator_helpers import NAME, NAMESPACE, condition, deployment, pod, replicaset

NEW = "5d8b9c7f6"
T0, T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T10:00:30Z", "2024-05-01T10:01:00Z"
GOOD = api.KnownGood(revision=1, generation=1, template_hash="good", pod_template_hash="7f9c6d5b4", time=T0)
ROLLED_BACK = api.RollbackRecord(
    failed_generation=2,
    failed_revision=2,
    restored_revision=1,
    reason="LatencyBudgetExceeded",
    message="latency budget exceeded: p95 142.0 ms > 100 ms",
    pod="m-5d8b9c7f6-abcde",
    time=T1,
    rolled_back=True,
)
UNAVAILABLE = condition("Available", "False", "MinimumReplicasUnavailable")


def observed(*pods, known_good=GOOD, record=None, pinned=False, problems=(), **dep) -> Observed:
    state = observe_rollout(deployment(**dep), [replicaset(2, NEW)], list(pods))
    return Observed(
        name=NAME,
        namespace=NAMESPACE,
        generation=state.generation,
        model_name="resnet",
        state=state,
        assessment=assess_rollout(state, 3),
        problems=tuple(problems),
        known_good=known_good,
        record=record,
        rollback_count=1 if record is not None and record.rolled_back else 0,
        pinned=pinned,
    )


def absent() -> Observed:
    return Observed(NAME, NAMESPACE, 1, "resnet", ABSENT, assess_rollout(ABSENT, 3))


def status(o: Observed, previous: api.ModelDeploymentStatus | None = None, now: str = T0) -> api.ModelDeploymentStatus:
    return compute_status(o, previous or api.ModelDeploymentStatus(), now)


def conditions(o: Observed) -> dict[str, api.Condition]:
    return {c.type: c for c in status(o).conditions}


def cond_status(o: Observed) -> dict[str, str]:
    return {t: c.status for t, c in conditions(o).items()}


# Half way through with maxUnavailable 1: one of two pods ready, still Available.
ROLLING = {"updated": 1, "ready": 1, "available": 1, "replicas": 2, "conditions": [condition("Available", "True")]}
# The first pods of a first rollout, none ready yet.
STARTING = {**ROLLING, "ready": 0, "available": 0, "conditions": [UNAVAILABLE]}
CRASHING = pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=5, last_terminated="Error", last_message="boom")

# id -> (observed, phase, Ready, Progressing, Degraded, RolledBack)
SITUATIONS = {
    "pending": (absent, api.Phase.PENDING, "False", "False", "False", "False"),
    "progressing": (lambda: observed(**ROLLING), api.Phase.PROGRESSING, "True", "True", "False", "False"),
    "progressing-unavailable": (
        lambda: observed(**STARTING),
        api.Phase.PROGRESSING,
        "False",
        "True",
        "False",
        "False",
    ),
    "ready": (lambda: observed(), api.Phase.READY, "True", "False", "False", "False"),
    "scaled-to-zero": (lambda: observed(desired=0), api.Phase.READY, "False", "False", "False", "False"),
    "failed-with-known-good": (
        lambda: observed(CRASHING, **ROLLING),
        api.Phase.DEGRADED,
        "True",
        "False",
        "True",
        "False",
    ),
    "failed-first-rollout": (
        lambda: observed(CRASHING, known_good=None, **ROLLING),
        api.Phase.FAILED,
        "True",
        "False",
        "True",
        "False",
    ),
    "rolled-back": (
        lambda: observed(record=ROLLED_BACK, pinned=True),
        api.Phase.ROLLED_BACK,
        "True",
        "False",
        "True",
        "True",
    ),
    "rolling-back": (
        lambda: observed(record=ROLLED_BACK, pinned=True, **ROLLING),
        api.Phase.ROLLED_BACK,
        "True",
        "True",
        "True",
        "True",
    ),
    "invalid-spec": (
        lambda: observed(problems=[Problem("spec.resources.gpu", "set it to 1")]),
        api.Phase.DEGRADED,
        "True",
        "False",
        "True",
        "False",
    ),
}


@pytest.mark.parametrize(
    "make, phase, ready, progressing, degraded, rolled_back", SITUATIONS.values(), ids=SITUATIONS.keys()
)
def test_phase_and_conditions_per_situation(make, phase, ready, progressing, degraded, rolled_back):
    o = make()
    assert status(o).phase == phase
    assert cond_status(o) == {
        "Ready": ready,
        "Progressing": progressing,
        "Degraded": degraded,
        "RolledBack": rolled_back,
    }


def test_conditions_come_in_a_fixed_order_for_the_current_generation():
    s = status(observed(generation=7))
    assert [c.type for c in s.conditions] == ["Ready", "Progressing", "Degraded", "RolledBack"]
    assert {c.observed_generation for c in s.conditions} == {7}
    assert s.observed_generation == 7


def test_ready_reasons():
    assert conditions(observed())["Ready"].reason == "Available"
    assert conditions(observed(ready=0, available=0, conditions=[UNAVAILABLE]))["Ready"].reason == "NoReadyPods"
    assert conditions(observed(**{**ROLLING, "conditions": [UNAVAILABLE]}))["Ready"].reason == (
        "MinimumReplicasUnavailable"
    )
    assert conditions(observed(desired=0))["Ready"].reason == "ScaledToZero"
    assert conditions(absent())["Ready"].reason == "DeploymentMissing"


def test_a_failure_names_the_reason_and_the_pod_in_degraded():
    degraded = conditions(observed(CRASHING, **ROLLING))["Degraded"]
    assert degraded.reason == "CrashLoopBackOff"
    assert "(pod m-new-1)" in degraded.message
    assert "restarted 5 times" in degraded.message


def test_a_first_rollout_failure_says_nothing_was_restored():
    degraded = conditions(observed(CRASHING, known_good=None, **ROLLING))["Degraded"]
    assert degraded.message.endswith("no known good revision to restore")


def test_a_rollback_tells_what_failed_what_was_restored_and_how_to_retry():
    c = conditions(observed(record=ROLLED_BACK, pinned=True))
    assert c["RolledBack"].reason == "LatencyBudgetExceeded"
    assert "generation 2 failed" in c["RolledBack"].message
    assert "restored revision 1" in c["RolledBack"].message
    assert "modeldeploy.dev/retry" in c["RolledBack"].message
    assert c["Degraded"].reason == "LatencyBudgetExceeded"
    assert "latency budget exceeded: p95 142.0 ms > 100 ms" in c["Degraded"].message
    assert "(pod m-5d8b9c7f6-abcde)" in c["Degraded"].message
    assert c["Progressing"].reason == "RolledBack"


@pytest.mark.parametrize(
    "problems, reason",
    [
        ([Problem("spec.resources.gpu", "set it")], "InvalidSpec"),
        ([Problem("spec.auth.secretName", "create it")], "AuthSecretInvalid"),
    ],
)
def test_invalid_spec_is_degraded_with_every_problem_in_the_message(problems, reason):
    two = [*problems, Problem("spec.replicas", "fix it")]
    o = replace(absent(), problems=tuple(two))
    c = conditions(o)
    assert c["Degraded"].reason == reason
    assert c["Degraded"].message == f"{two[0]}; {two[1]}"
    assert c["Progressing"].message == "generation 1 was refused: nothing is built until the spec is fixed"


def test_a_refused_update_says_so_and_that_the_old_revision_keeps_serving():
    o = observed(generation=3, observed_generation=3, revision=2, problems=[Problem("spec.replicas", "fix it")])
    s = status(o)
    c = {x.type: x for x in s.conditions}
    assert (s.observed_generation, s.phase) == (3, api.Phase.DEGRADED)
    assert c["Degraded"].message == "update to generation 3 refused: spec.replicas: fix it"
    assert "keeps revision 2 as it was" in c["Progressing"].message
    assert c["Ready"].status == "True", "the pods of the last good revision still serve"


def test_every_new_refusal_is_news_even_while_degraded():
    first = status(replace(absent(), problems=(Problem("spec.replicas", "a"),))).conditions
    second = status(replace(absent(), problems=(Problem("spec.replicas", "b"),))).conditions
    assert [c.type for c in transitions(first, second)] == ["Degraded"]
    assert transitions(second, second) == []


def test_status_fields():
    s = status_to_dict(status(observed(CRASHING, record=ROLLED_BACK, revision=4, **ROLLING)))
    assert s["ready"] == "1/2"
    assert s["selector"] == "modeldeploy.dev/name=m"
    assert s["endpoint"] == f"http://m.{NAMESPACE}.svc:8080"
    assert s["modelName"] == "resnet"
    assert (s["replicas"], s["readyReplicas"], s["updatedReplicas"], s["availableReplicas"]) == (2, 1, 1, 1)
    assert s["revision"] == 4
    assert s["lastKnownGood"]["podTemplateHash"] == GOOD.pod_template_hash
    assert s["rollback"]["restoredRevision"] == 1
    assert s["rollbackCount"] == 1


# ---- transition times and idempotence --------------------------------------------------------------


def test_transition_time_is_kept_while_the_status_stays():
    first = status(observed(**ROLLING), now=T0)
    # Still progressing, another pod along (reason and message change, status does not).
    second = status(observed(**{**ROLLING, "updated": 2}), first, now=T1)
    assert {c.type: c.last_transition_time for c in second.conditions} == {c.type: T0 for c in first.conditions}


def test_transition_time_moves_when_the_status_changes():
    first = status(observed(**STARTING), now=T0)
    done = status(observed(), first, now=T1)
    times = {c.type: c.last_transition_time for c in done.conditions}
    assert times == {"Ready": T1, "Progressing": T1, "Degraded": T0, "RolledBack": T0}


@pytest.mark.parametrize("make", [s[0] for s in SITUATIONS.values()], ids=SITUATIONS.keys())
def test_the_same_observation_gives_the_same_status_dict(make):
    first = status(make(), now=T0)
    again = status(make(), first, now=T2)
    assert status_to_dict(again) == status_to_dict(first)


@pytest.mark.parametrize("make", [s[0] for s in SITUATIONS.values()], ids=SITUATIONS.keys())
def test_a_status_read_back_from_the_api_compares_equal(make):
    # The reconciler compares the status it computes with the one it read; one written and read
    # back must not look different, or every resync would write it again.
    written = status_to_dict(status(make(), now=T0))
    read_back = parse_status(written)
    assert status_to_dict(read_back) == written
    assert status_to_dict(status(make(), read_back, now=T2)) == written


def test_transitions_are_the_conditions_whose_status_or_reason_changed():
    first = status(observed(**STARTING), now=T0).conditions
    assert transitions([], first) == first
    assert transitions(first, first) == []
    done = status(observed(), api.ModelDeploymentStatus(conditions=first), now=T1).conditions
    assert {c.type for c in transitions(first, done)} == {"Ready", "Progressing"}
    failed = status(observed(CRASHING, **STARTING), api.ModelDeploymentStatus(conditions=first), now=T1).conditions
    assert {c.type for c in transitions(first, failed)} == {"Degraded", "Progressing"}
    # Same status, new reason: still news (Progressing stays True, from NewTemplate to RolloutInProgress).
    new_template = status(observed(generation=3, observed_generation=2, **STARTING), now=T0).conditions
    assert [c.type for c in transitions(new_template, first)] == ["Progressing"]


def test_status_to_dict_drops_empty_strings_and_nones():
    s = status_to_dict(status(observed()))
    rolled_back = next(c for c in s["conditions"] if c["type"] == "RolledBack")
    degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
    assert "message" not in rolled_back and "message" not in degraded
    assert "rollback" not in s

    def strings(v):
        if isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
        else:
            yield v

    assert "" not in list(strings(s)) and None not in list(strings(s))


def test_status_to_dict_uses_the_api_field_names():
    s = status_to_dict(status(observed()))
    assert {"observedGeneration", "readyReplicas", "modelName", "rollbackCount"} <= set(s)
    assert "lastTransitionTime" in s["conditions"][0]


def test_compute_conditions_does_not_depend_on_time():
    o = replace(observed(), assessment=Assessment(Verdict.COMPLETE, "RolloutComplete", "revision 2 is available"))
    assert compute_conditions(o) == compute_conditions(o)
    assert all(c.last_transition_time is None for c in compute_conditions(o))


def test_a_first_status_in_its_good_states_is_no_news_but_a_failure_is():
    starting = status(observed(**STARTING), now=T0)
    assert events_for(api.ModelDeploymentStatus(), starting) == []
    failed = status(observed(CRASHING, **STARTING), starting, now=T1)
    events = events_for(starting, failed)
    assert ("Warning", "CrashLoopBackOff") in {(e.type, e.reason) for e in events}
    assert all(isinstance(e, Event) and e.message for e in events)


def test_a_rollback_is_one_warning_named_rolledback_and_a_completed_rollout_is_normal():
    before = status(observed(**STARTING), now=T0)
    rolled = status(observed(record=ROLLED_BACK, pinned=True), before, now=T1)
    kinds = {(e.type, e.reason) for e in events_for(before, rolled)}
    assert ("Warning", "RolledBack") in kinds
    done = status(observed(), before, now=T1)
    assert {e.type for e in events_for(before, done)} == {"Normal"}
    assert events_for(done, status(observed(), done, now=T2)) == []


def test_status_patch_sets_what_changed_and_nulls_what_went():
    old = {"phase": "Progressing", "rollback": {"reason": "x"}, "replicas": 1}
    new = {"phase": "Ready", "replicas": 1}
    assert status_patch(old, new) == {"phase": "Ready", "rollback": None}
    assert status_patch(new, dict(new)) == {}
