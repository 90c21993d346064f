"""From raw Deployment / ReplicaSet / Pod dicts to a RolloutState: which pods belong to the rollout,
what each pod shows, and which pod states prove that the rollout cannot succeed."""

from __future__ import annotations

import pytest
from modeldeploy_operator import naming
from modeldeploy_operator.observe import (
    ABSENT,
    PodFailure,
    PodState,
    observe_rollout,
    pod_failure,
    pod_state,
    replicaset_template,
)
from modeldeploy_operator.render import render_pod_template
from operator_helpers import SETTINGS, container_status, deployment, make_target, merged, pod, replicaset

OLD, NEW = "7f9c6d5b4", "5d8b9c7f6"


def state(*pods, **dep):
    return observe_rollout(deployment(**dep), [replicaset(1, OLD), replicaset(2, NEW)], list(pods))


# ---- the rollout -----------------------------------------------------------------------------------


def test_no_deployment_is_absent():
    assert observe_rollout(None, [], []) == ABSENT
    assert not ABSENT.exists and not ABSENT.synced


def test_counts_revision_and_generation_are_read_from_the_deployment():
    s = state(desired=3, replicas=4, updated=2, ready=1, available=1, generation=5, observed_generation=4)
    assert (s.desired, s.replicas, s.updated, s.ready, s.available) == (3, 4, 2, 1, 1)
    assert (s.generation, s.observed_generation, s.revision) == (5, 4, 2)


@pytest.mark.parametrize("generation, observed, synced", [(3, 3, True), (3, 2, False), (3, 4, True)])
def test_synced_once_the_controller_has_seen_the_generation(generation, observed, synced):
    assert state(generation=generation, observed_generation=observed).synced is synced


def test_the_new_replicaset_is_the_one_of_the_current_revision():
    assert state(revision=2).pod_template_hash == NEW
    assert state(revision=1).pod_template_hash == OLD


def test_only_pods_of_the_new_replicaset_count():
    s = state(pod("m-old-1", OLD, waiting="CrashLoopBackOff", restarts=9), pod("m-new-1", NEW))
    assert [p.name for p in s.new_pods] == ["m-new-1"]


def test_pods_being_deleted_do_not_count():
    s = state(pod("m-new-1", NEW, deleting=True), pod("m-new-2", NEW))
    assert [p.name for p in s.new_pods] == ["m-new-2"]


def test_new_pods_are_sorted_by_name():
    s = state(pod("m-new-c", NEW), pod("m-new-a", NEW), pod("m-new-b", NEW))
    assert [p.name for p in s.new_pods] == ["m-new-a", "m-new-b", "m-new-c"]


@pytest.mark.parametrize("revision", [None, 3], ids=["no-revision-yet", "replicaset-not-seen-yet"])
def test_without_a_known_new_replicaset_no_pod_counts(revision):
    s = state(pod("m-new-1", NEW), pod("m-old-1", OLD), revision=revision)
    assert s.pod_template_hash is None
    assert s.new_pods == ()


def test_an_unreadable_revision_is_none():
    dep = deployment()
    dep["metadata"]["annotations"][naming.REVISION_ANNOTATION] = "three"
    assert observe_rollout(dep, [], []).revision is None


def test_paused_and_conditions():
    s = state(paused=True)
    assert s.paused
    assert s.conditions["Available"].status == "True"
    assert s.conditions["Progressing"].reason == "NewReplicaSetAvailable"


# ---- one pod -------------------------------------------------------------------------------------


def test_pod_state_of_a_ready_pod():
    p = pod_state(pod("m-1", NEW, ready=True))
    assert p == PodState(name="m-1", template_hash=NEW, ready=True, restarts=0)


def test_restarts_add_up_over_init_and_app_containers():
    p = pod_state(pod("m-1", NEW, restarts=2, init=[container_status(restarts=3)]))
    assert p.restarts == 5


def test_waiting_reason_and_message():
    p = pod_state(pod("m-1", NEW, waiting="ErrImagePull", waiting_message="manifest unknown"))
    assert (p.waiting_reason, p.waiting_message) == ("ErrImagePull", "manifest unknown")


def test_termination_of_the_last_instance_is_seen_while_waiting_to_restart():
    p = pod_state(
        pod("m-1", NEW, waiting="CrashLoopBackOff", last_terminated="Error", last_message="model load failed: x\n")
    )
    assert (p.terminated_reason, p.terminated_message) == ("Error", "model load failed: x")


def test_a_termination_without_reason_reads_as_error():
    raw = pod("m-1", NEW)
    raw["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 1}}
    assert pod_state(raw).terminated_reason == "Error"


def test_a_pod_without_status_is_pending():
    p = pod_state({"metadata": {"name": "m-1", "labels": {}}})
    assert (p.ready, p.restarts, p.waiting_reason, p.terminated_reason) == (False, 0, None, None)


# ---- pod failures ---------------------------------------------------------------------------------

THRESHOLD = 3
FAILURES = {
    "latency-budget": (
        {"terminated": "Error", "terminated_message": "latency budget exceeded: p95 142.0 ms > 100 ms"},
        "LatencyBudgetExceeded",
        "latency budget exceeded: p95 142.0 ms > 100 ms",
    ),
    "model-load-failed": (
        {
            "waiting": "CrashLoopBackOff",
            "restarts": 1,
            "last_terminated": "Error",
            "last_message": "model load failed: sha256 mismatch",
        },
        "ModelLoadFailed",
        "model load failed: sha256 mismatch",
    ),
    "gpu-unavailable": (
        {"terminated": "Error", "terminated_message": "gpu unavailable: no CUDA device"},
        "GPUUnavailable",
        "gpu unavailable: no CUDA device",
    ),
    "invalid-runtime-config": (
        {"terminated": "Error", "terminated_message": "invalid configuration: MODELDEPLOY_PORT='x'"},
        "InvalidRuntimeConfig",
        "invalid configuration: MODELDEPLOY_PORT='x'",
    ),
    "err-image-pull": (
        {"waiting": "ErrImagePull", "waiting_message": "manifest unknown"},
        "ImagePullFailed",
        "manifest unknown",
    ),
    "image-pull-backoff": (
        {"waiting": "ImagePullBackOff", "waiting_message": 'Back-off pulling image "runtime:typo"'},
        "ImagePullFailed",
        'Back-off pulling image "runtime:typo"',
    ),
    "invalid-image-name": ({"waiting": "InvalidImageName"}, "ImagePullFailed", "InvalidImageName"),
    "config-error": (
        {"waiting": "CreateContainerConfigError", "waiting_message": 'secret "tok" not found'},
        "CreateContainerConfigError",
        'secret "tok" not found',
    ),
    "oom-killed": (
        {"waiting": "CrashLoopBackOff", "restarts": 1, "last_terminated": "OOMKilled"},
        "OOMKilled",
        "the container ran out of memory: raise spec.resources.limits.memory",
    ),
    "crash-loop-at-threshold": (
        {
            "waiting": "CrashLoopBackOff",
            "restarts": 3,
            "last_terminated": "Error",
            "last_message": "boot\nTraceback: boom",
        },
        "CrashLoopBackOff",
        "restarted 3 times; last exit: Traceback: boom",
    ),
    "crash-loop-above-threshold-no-message": (
        {"waiting": "CrashLoopBackOff", "restarts": 7, "waiting_message": "back-off 5m0s restarting failed container"},
        "CrashLoopBackOff",
        "restarted 7 times; last exit: back-off 5m0s restarting failed container",
    ),
}


@pytest.mark.parametrize("container, reason, message", FAILURES.values(), ids=FAILURES.keys())
def test_pod_failure_reason_and_message(container, reason, message):
    p = pod_state(pod("m-new-1", NEW, **container))
    assert pod_failure(p, THRESHOLD) == PodFailure(reason, message, "m-new-1")


NOT_FAILED = {
    "pending": {},
    "running-not-ready": {"restarts": 0},
    "crash-loop-below-threshold": {"waiting": "CrashLoopBackOff", "restarts": 2, "last_terminated": "Error"},
    "container-creating": {"waiting": "ContainerCreating"},
    "plain-exit-once": {"terminated": "Error", "terminated_message": "Traceback: boom"},
    "completed": {"last_terminated": "Completed"},
}


@pytest.mark.parametrize("container", NOT_FAILED.values(), ids=NOT_FAILED.keys())
def test_pods_that_may_still_come_up_have_not_failed(container):
    assert pod_failure(pod_state(pod("m-new-1", NEW, **container)), THRESHOLD) is None


@pytest.mark.parametrize("container", [c for c, _, _ in FAILURES.values()], ids=FAILURES.keys())
def test_a_ready_pod_never_counts_as_failed(container):
    assert pod_failure(pod_state(pod("m-new-1", NEW, ready=True, **container)), THRESHOLD) is None


def test_the_crash_loop_threshold_is_the_specs():
    p = pod_state(pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=4, last_terminated="Error"))
    assert pod_failure(p, crash_loop_restarts=5) is None
    assert pod_failure(p, crash_loop_restarts=4).reason == "CrashLoopBackOff"


def test_a_runtime_reason_is_decisive_before_the_crash_loop_threshold():
    p = pod_state(
        pod(
            "m-new-1",
            NEW,
            waiting="CrashLoopBackOff",
            restarts=1,
            last_terminated="Error",
            last_message="latency budget exceeded: p95 30 ms > 25 ms",
        )
    )
    assert pod_failure(p, crash_loop_restarts=10).reason == "LatencyBudgetExceeded"


# ---- the known good template ---------------------------------------------------------------------


def test_replicaset_template_strips_what_the_deployment_controller_added():
    template = replicaset_template([replicaset(1, OLD), replicaset(2, NEW)], OLD)
    assert naming.TEMPLATE_HASH_LABEL not in template["metadata"]["labels"]
    assert "creationTimestamp" not in template["metadata"]
    assert template["metadata"]["labels"] == naming.selector_labels("m")
    assert template["spec"]["containers"][0]["image"] == "runtime:1"


def test_replicaset_template_leaves_the_replicaset_alone():
    rs = replicaset(1, OLD)
    replicaset_template([rs], OLD)
    assert rs["spec"]["template"]["metadata"]["labels"][naming.TEMPLATE_HASH_LABEL] == OLD


def test_replicaset_template_of_a_vanished_replicaset_is_none():
    assert replicaset_template([replicaset(2, NEW)], OLD) is None


def test_a_rendered_template_survives_the_round_trip_through_a_replicaset():
    # What the Deployment controller copies into the ReplicaSet (plus its hash label) comes back
    # as the template we rendered, so a rollback restores exactly the known good pods.
    rendered = render_pod_template(make_target(runtime={"image": "runtime:good"}), SETTINGS)
    stored = merged(rendered, {"metadata": {"labels": {naming.TEMPLATE_HASH_LABEL: OLD}, "creationTimestamp": None}})
    assert replicaset_template([replicaset(1, OLD, stored)], OLD) == rendered
