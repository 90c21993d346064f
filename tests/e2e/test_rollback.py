"""Automatic rollback end to end: the tests play the kubelet by writing pod status, the operator
must notice the failed rollout, restore the last known good revision and say so."""

from __future__ import annotations

import json

import pytest

from .support import GROUP, PLURAL, VERSION, set_pod_crash_loop, set_pod_ready, set_pod_waiting, wait_for
from .test_operator import apply, condition, cpu_model, status_of, writes_in

GOOD = "registry.local/modeldeploy/runtime:test"
BAD = "registry.local/modeldeploy/runtime:broken"


def pods_with_image(core, namespace: str, name: str, image: str) -> list:
    pods = core.list_namespaced_pod(namespace, label_selector=f"modeldeploy.dev/name={name}").items
    return [p for p in pods if p.spec.containers[0].image == image and not p.metadata.deletion_timestamp]


def deployment_image(apps, namespace: str, name: str) -> str:
    return apps.read_namespaced_deployment(name, namespace).spec.template.spec.containers[0].image


def ready_revision(kctl, core, custom, namespace: str, name: str, image: str = GOOD, **spec) -> dict:
    """Applies a spec, plays a healthy kubelet for it, waits for Ready."""
    apply(kctl, namespace, cpu_model(name, runtime={"image": image}, **spec))
    pods = wait_for(lambda: pods_with_image(core, namespace, name, image), 20, f"a pod running {image}")
    for pod in pods:
        set_pod_ready(core, pod)
    return wait_for(
        lambda: (
            (s := status_of(custom, namespace, name)).get("phase") == "Ready"
            and s.get("lastKnownGood", {}).get("generation") == s.get("observedGeneration")
            and s
        ),
        20,
        "Ready with a known good revision",
    )


def bad_pod(core, namespace: str, name: str, image: str = BAD):
    return wait_for(lambda: (p := pods_with_image(core, namespace, name, image)) and p[0], 20, f"a pod of {image}")


def rolled_back(custom, namespace: str, name: str) -> dict:
    return wait_for(
        lambda: (s := status_of(custom, namespace, name)).get("phase") == "RolledBack" and s, 15, "phase RolledBack"
    )


def wait_restored(apps, namespace: str, name: str, timeout_s: float = 10) -> None:
    """The Deployment runs the known good image again. The operator writes its decision to status
    before it applies the template (so that a crash in between is finished by the next operator),
    so the phase can read RolledBack a moment before the Deployment changes."""
    wait_for(lambda: deployment_image(apps, namespace, name) == GOOD, timeout_s, "the known good template applied")


def test_good_rollout_becomes_last_known_good(operator, namespace, kctl, core, custom):
    status = ready_revision(kctl, core, custom, namespace, "lkg")
    known = status["lastKnownGood"]
    assert (known["revision"], known["generation"]) == (1, 1)
    assert known["podTemplateHash"]
    assert "rollback" not in status and status["rollbackCount"] == 0


def test_crash_loop_is_rolled_back_and_not_retried(operator, cluster, namespace, kctl, core, custom, apps):
    ready_revision(kctl, core, custom, namespace, "crash")
    apply(kctl, namespace, cpu_model("crash", runtime={"image": BAD}))
    pod = bad_pod(core, namespace, "crash")
    set_pod_crash_loop(core, pod, restarts=2, message="Traceback ...\nRuntimeError: CUDA error")
    # Below the threshold (3 restarts by default): still a rollout in progress.
    wait_for(lambda: status_of(custom, namespace, "crash").get("observedGeneration") == 2, 10, "generation 2")
    assert status_of(custom, namespace, "crash")["phase"] == "Progressing"
    assert deployment_image(apps, namespace, "crash") == BAD
    set_pod_crash_loop(core, pod, restarts=3, message="Traceback ...\nRuntimeError: CUDA error")

    status = rolled_back(custom, namespace, "crash")
    wait_restored(apps, namespace, "crash")
    record = status["rollback"]
    assert record["reason"] == "CrashLoopBackOff"
    assert (record["failedGeneration"], record["failedRevision"]) == (2, 2)
    assert record["pod"] == pod.metadata.name
    assert "RuntimeError: CUDA error" in record["message"]
    assert record["rolledBack"] is True and status["rollbackCount"] == 1
    assert condition(status, "RolledBack")["status"] == "True"
    assert condition(status, "Degraded")["reason"] == "CrashLoopBackOff"
    spec = kctl("get", "mdep", "crash", "-n", namespace, "-o", "json").stdout
    assert json.loads(spec)["spec"]["runtime"]["image"] == BAD, "the user's spec is left as written"
    assert "RolledBack" in kctl("get", "mdep", "crash", "-n", namespace).stdout
    described = kctl("describe", "mdep", "crash", "-n", namespace).stdout
    assert "Warning  RolledBack" in described and "CrashLoopBackOff" in described

    # The restored revision serves; the failed generation is not tried again on later resyncs.
    for restored in wait_for(lambda: pods_with_image(core, namespace, "crash", GOOD), 20, "restored pods"):
        set_pod_ready(core, restored)
    status = wait_for(
        lambda: (s := status_of(custom, namespace, "crash")) and condition(s, "Ready")["status"] == "True" and s,
        20,
        "Ready again on the restored revision",
    )
    assert status["phase"] == "RolledBack"
    since, reconciles = len(cluster.audited()), operator.metric("modeldeploy_operator_reconciles_total", result="ok")
    wait_for(
        lambda: operator.metric("modeldeploy_operator_reconciles_total", result="ok") >= reconciles + 3,
        15,
        "a few more resyncs",
    )
    assert [w for w in writes_in(cluster, namespace, since) if "deployments" in w] == []
    assert deployment_image(apps, namespace, "crash") == GOOD
    assert status_of(custom, namespace, "crash")["rollbackCount"] == 1


def deployment_revision(apps, namespace: str, name: str) -> int:
    annotations = apps.read_namespaced_deployment(name, namespace).metadata.annotations or {}
    return int(annotations.get("deployment.kubernetes.io/revision", 0))


def test_revisions_in_status_are_the_deployments_after_rollbacks(operator, namespace, kctl, core, custom, apps):
    """Restoring revision 1 after revision 2 makes it the Deployment's revision 3, and a second
    rollback makes it 5: status names the revisions as the Deployment does."""
    ready_revision(kctl, core, custom, namespace, "revs")
    for attempt, image in enumerate((BAD, f"{BAD}-again"), start=1):
        apply(kctl, namespace, cpu_model("revs", runtime={"image": image}))
        set_pod_crash_loop(core, bad_pod(core, namespace, "revs", image), restarts=3, message="boom")
        wait_for(
            lambda a=attempt: status_of(custom, namespace, "revs").get("rollbackCount") == a, 15, f"rollback {attempt}"
        )
        wait_restored(apps, namespace, "revs")

        def consistent():
            s = status_of(custom, namespace, "revs")
            now = deployment_revision(apps, namespace, "revs")
            seen = (s.get("revision"), s["rollback"].get("restoredRevision"), s["lastKnownGood"]["revision"])
            return seen == (now, now, now) and (s, now)

        status, now = wait_for(consistent, 15, "status revisions equal to the Deployment's")
        assert now == 2 * attempt + 1
        assert f"restored revision {now}" in condition(status, "RolledBack")["message"]
        assert status["rollback"]["failedRevision"] == 2 * attempt


def test_progress_deadline_is_rolled_back(operator, namespace, kctl, core, custom, apps):
    ready_revision(kctl, core, custom, namespace, "slow", rollout={"progressDeadlineSeconds": 3})
    apply(kctl, namespace, cpu_model("slow", runtime={"image": BAD}, rollout={"progressDeadlineSeconds": 3}))
    bad_pod(core, namespace, "slow")  # never becomes ready
    status = wait_for(
        lambda: (s := status_of(custom, namespace, "slow")).get("phase") == "RolledBack" and s,
        30,
        "rolled back at the progress deadline",
    )
    assert status["rollback"]["reason"] == "ProgressDeadlineExceeded"
    wait_restored(apps, namespace, "slow")


def test_latency_gate_failure_is_rolled_back_with_the_runtime_message(operator, namespace, kctl, core, custom, apps):
    ready_revision(kctl, core, custom, namespace, "gate")
    apply(kctl, namespace, cpu_model("gate", runtime={"image": BAD, "latencyBudget": {"p95Milliseconds": 100}}))
    message = "latency budget exceeded: p95 142.0 ms > 100 ms"
    set_pod_crash_loop(core, bad_pod(core, namespace, "gate"), restarts=1, message=message)
    status = rolled_back(custom, namespace, "gate")
    assert status["rollback"]["reason"] == "LatencyBudgetExceeded"
    assert status["rollback"]["message"] == message
    assert message in condition(status, "Degraded")["message"]
    wait_restored(apps, namespace, "gate")


@pytest.mark.parametrize("waiting", ["ErrImagePull", "ImagePullBackOff"])
def test_image_pull_failure_is_rolled_back(operator, namespace, kctl, core, custom, apps, waiting):
    ready_revision(kctl, core, custom, namespace, "pull")
    apply(kctl, namespace, cpu_model("pull", runtime={"image": BAD}))
    set_pod_waiting(core, bad_pod(core, namespace, "pull"), waiting, f'Back-off pulling image "{BAD}"')
    status = rolled_back(custom, namespace, "pull")
    assert status["rollback"]["reason"] == "ImagePullFailed"
    assert BAD in status["rollback"]["message"]
    wait_restored(apps, namespace, "pull")


def test_new_spec_after_a_rollback_is_tried_and_retry_annotation_retries(operator, namespace, kctl, core, custom, apps):
    ready_revision(kctl, core, custom, namespace, "again")
    apply(kctl, namespace, cpu_model("again", runtime={"image": BAD}))
    set_pod_crash_loop(core, bad_pod(core, namespace, "again"), restarts=5, message="model load failed: boom")
    rolled_back(custom, namespace, "again")
    wait_restored(apps, namespace, "again")
    assert status_of(custom, namespace, "again")["rollback"]["reason"] == "ModelLoadFailed"

    # An explicit retry re-applies the same (failed) spec once more.
    kctl("annotate", "mdep", "again", "-n", namespace, "modeldeploy.dev/retry=1")
    wait_for(lambda: deployment_image(apps, namespace, "again") == BAD, 15, "the failed spec retried")
    wait_for(
        lambda: condition(status_of(custom, namespace, "again"), "RolledBack")["status"] == "False",
        15,
        "RolledBack cleared while retrying",
    )

    # A new spec (a new generation) is rolled out, and becomes the new last known good.
    fixed = "registry.local/modeldeploy/runtime:fixed"
    # Its pods here have no IP to scrape: without the post-rollout analysis it is known good at once.
    status = ready_revision(
        kctl, core, custom, namespace, "again", image=fixed, rollout={"analysis": {"enabled": False}}
    )
    assert deployment_image(apps, namespace, "again") == fixed
    assert status["lastKnownGood"]["generation"] == 3
    assert condition(status, "RolledBack")["status"] == "False"
    assert condition(status, "Degraded")["status"] == "False"


def test_auto_rollback_off_leaves_the_failed_rollout_in_place(operator, namespace, kctl, core, custom, apps):
    ready_revision(kctl, core, custom, namespace, "manual", rollout={"autoRollback": False})
    apply(kctl, namespace, cpu_model("manual", runtime={"image": BAD}, rollout={"autoRollback": False}))
    set_pod_crash_loop(core, bad_pod(core, namespace, "manual"), restarts=4, message="boom")
    status = wait_for(
        lambda: (s := status_of(custom, namespace, "manual")).get("phase") == "Degraded" and s, 15, "Degraded"
    )
    assert condition(status, "Degraded")["reason"] == "CrashLoopBackOff"
    assert status["rollback"]["rolledBack"] is False
    assert condition(status, "RolledBack")["status"] == "False"
    assert deployment_image(apps, namespace, "manual") == BAD


def test_first_rollout_failure_restores_nothing_and_says_so(operator, namespace, kctl, core, custom, apps):
    apply(kctl, namespace, cpu_model("first", runtime={"image": BAD}))
    set_pod_crash_loop(core, bad_pod(core, namespace, "first"), restarts=3, message="boom")
    status = wait_for(
        lambda: (s := status_of(custom, namespace, "first")).get("phase") == "Failed" and s, 15, "phase Failed"
    )
    assert "no known good revision" in condition(status, "Degraded")["message"]
    assert status["rollback"]["rolledBack"] is False
    assert deployment_image(apps, namespace, "first") == BAD


def test_failure_while_the_operator_is_down_is_rolled_back_when_it_returns(
    operator, namespace, kctl, core, custom, apps
):
    ready_revision(kctl, core, custom, namespace, "down")
    apply(kctl, namespace, cpu_model("down", runtime={"image": BAD}))
    pod = bad_pod(core, namespace, "down")
    operator.kill()
    try:
        set_pod_crash_loop(core, pod, restarts=3, message="boom")
    finally:
        operator.start()
    rolled_back(custom, namespace, "down")
    wait_restored(apps, namespace, "down")


def test_rollback_recorded_but_not_applied_is_completed_after_a_restart(operator, namespace, kctl, core, custom, apps):
    """The operator records its decision in status before it applies the template: if it dies in
    between, the next operator finds the record and finishes the rollback."""
    ready_revision(kctl, core, custom, namespace, "crashed")
    apply(kctl, namespace, cpu_model("crashed", runtime={"image": BAD}))
    bad_pod(core, namespace, "crashed")
    operator.kill()
    try:
        record = {
            "failedGeneration": 2,
            "failedRevision": 2,
            "restoredRevision": 1,
            "reason": "CrashLoopBackOff",
            "message": "boom",
            "time": "2026-01-01T00:00:00Z",
            "rolledBack": True,
        }
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "crashed", {"status": {"rollback": record, "rollbackCount": 1}}
        )
        assert deployment_image(apps, namespace, "crashed") == BAD
    finally:
        operator.start()
    wait_restored(apps, namespace, "crashed", timeout_s=15)  # the operator's start-up included
    assert rolled_back(custom, namespace, "crashed")["rollbackCount"] == 1
