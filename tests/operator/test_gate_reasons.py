"""The golden set and provider gates as the operator sees them: the runtime's termination message
classified, the rollout failed and rolled back like the latency gate, the figures in status and
in the Events, and spec.model.goldenSet rendered into the runtime's environment."""

from __future__ import annotations

import pytest
from modeldeploy_operator import api
from modeldeploy_operator.observe import observe_rollout, pod_failure, pod_state
from modeldeploy_operator.render import render_deployment, render_pod_template
from modeldeploy_operator.rollback import Action, Verdict, assess_rollout, decide_rollback
from modeldeploy_operator.status import Observed, compute_status, transitions
from modeldeploy_operator.validation import validate_spec
from operator_helpers import (
    NAME,
    NAMESPACE,
    SETTINGS,
    condition,
    deployment,
    env_of,
    make_spec,
    make_target,
    pod,
    replicaset,
)

OLD, NEW = "7f9c6d5b4", "5d8b9c7f6"
GOLDEN = 'golden set mismatch: output "logits" top-1 agreement 0.62 < 0.99 on 64 inputs'
PROVIDER = (
    "provider mismatch: MODELDEPLOY_REQUIRE_GPU is true: asked for TensorrtExecutionProvider or "
    "CUDAExecutionProvider but ONNX Runtime runs the model on CPUExecutionProvider"
)
MESSAGES = {"GoldenSetMismatch": GOLDEN, "ProviderMismatch": PROVIDER}
GOOD = api.KnownGood(revision=1, generation=1, template_hash="good", pod_template_hash=OLD, time="t0")
ROLLING = {"updated": 1, "ready": 1, "available": 1, "replicas": 2, "conditions": [condition("Available", "True")]}


@pytest.mark.parametrize(("reason", "message"), MESSAGES.items())
@pytest.mark.parametrize("slot", ["state", "lastState"])
def test_the_termination_message_is_decisive_at_once(reason, message, slot):
    """Decisive on the first exit, in the container's current state or its last one (a restarting
    pod), long before the crash-loop threshold."""
    if slot == "state":
        p = pod("m-new-1", NEW, terminated="Error", terminated_message=message)
    else:
        p = pod("m-new-1", NEW, waiting="CrashLoopBackOff", restarts=1, last_terminated="Error", last_message=message)
    failure = pod_failure(pod_state(p), crash_loop_restarts=10)
    assert (failure.reason, failure.message, failure.pod) == (reason, message, "m-new-1")


def test_a_ready_pod_has_not_failed_whatever_its_last_message():
    p = pod("m-new-1", NEW, ready=True, restarts=1, last_terminated="Error", last_message=GOLDEN)
    assert pod_failure(pod_state(p), crash_loop_restarts=3) is None


def observed(message: str, known_good=GOOD, record=None, pinned=False) -> Observed:
    p = pod("m-new-1", NEW, terminated="Error", terminated_message=message)
    state = observe_rollout(deployment(**ROLLING), [replicaset(1, OLD), replicaset(2, NEW)], [p])
    return Observed(
        name=NAME,
        namespace=NAMESPACE,
        generation=state.generation,
        model_name="m",
        state=state,
        assessment=assess_rollout(state, 3),
        known_good=known_good,
        record=record,
        rollback_count=1 if record is not None else 0,
        pinned=pinned,
    )


def decide(o: Observed):
    return decide_rollback(
        o.assessment,
        generation=o.generation,
        template_hash="new",
        auto_rollback=True,
        known_good=o.known_good,
        record=o.record,
        pinned=o.pinned,
        retry_token=None,
    )


@pytest.mark.parametrize(("reason", "message"), MESSAGES.items())
def test_the_rollout_fails_and_is_rolled_back_to_the_known_good_revision(reason, message):
    o = observed(message)
    assert (o.assessment.verdict, o.assessment.reason, o.assessment.message) == (Verdict.FAILED, reason, message)
    assert decide(o).action == Action.ROLL_BACK
    assert decide(observed(message, known_good=None)).action == Action.RECORD_FAILURE


@pytest.mark.parametrize(("reason", "message"), MESSAGES.items())
def test_the_figures_are_in_status_and_in_the_events_after_the_rollback(reason, message):
    before = compute_status(observed(message), api.ModelDeploymentStatus(), "t1")
    record = api.RollbackRecord(
        failed_generation=before.observed_generation or 0,
        failed_revision=2,
        restored_revision=1,
        reason=reason,
        message=message,
        pod="m-new-1",
        time="t1",
        rolled_back=True,
    )
    after = compute_status(observed(message, record=record, pinned=True), before, "t2")
    assert after.phase == api.Phase.ROLLED_BACK
    assert after.rollback.reason == reason and after.rollback.message == message
    conditions = {c.type: c for c in after.conditions}
    assert conditions["RolledBack"].reason == reason
    assert message in conditions["Degraded"].message
    # The reconciler emits an Event per condition transition, with the condition's message.
    events = {c.type: c for c in transitions(before.conditions, after.conditions)}
    assert events["RolledBack"].status == "True" and events["RolledBack"].reason == reason
    first = {c.type: c for c in transitions([], before.conditions)}
    assert message in first["Degraded"].message and first["Degraded"].reason == reason


# ---- spec.model.goldenSet -------------------------------------------------------------------------


def runtime_env(**spec) -> dict[str, str]:
    return {k: e.get("value") for k, e in env_of(render_deployment(make_target(**spec), SETTINGS)).items()}


def test_no_golden_set_renders_no_golden_settings():
    assert not [k for k in runtime_env() if "GOLDEN" in k]


def test_the_golden_set_and_its_tolerances_become_the_runtimes_settings():
    sha = "a" * 64
    env = runtime_env(
        model={"goldenSet": {"uri": "https://h/g.npz", "sha256": sha, "maxAbsError": 0.05, "minTop1Agreement": 0.95}}
    )
    assert env["MODELDEPLOY_GOLDEN_SET_PATH"] == "https://h/g.npz"
    assert env["MODELDEPLOY_GOLDEN_SET_SHA256"] == sha
    assert env["MODELDEPLOY_GOLDEN_SET_MAX_ABS_ERROR"] == "0.05"
    assert env["MODELDEPLOY_GOLDEN_SET_MIN_TOP1_AGREEMENT"] == "0.95"
    assert "MODELDEPLOY_GOLDEN_SET_MAX_REL_ERROR" not in env  # unset: not checked


def test_a_file_uri_is_a_path_in_the_image():
    env = runtime_env(model={"goldenSet": {"uri": "file:///opt/g/golden.npz"}})
    assert env["MODELDEPLOY_GOLDEN_SET_PATH"] == "/opt/g/golden.npz"
    assert env["MODELDEPLOY_GOLDEN_SET_MIN_TOP1_AGREEMENT"] == "0.99"


def test_a_golden_set_on_the_models_claim_uses_its_volume():
    spec = {"model": {"uri": "pvc://models/r50/model.onnx", "goldenSet": {"uri": "pvc://models/r50/golden.npz"}}}
    assert runtime_env(**spec)["MODELDEPLOY_GOLDEN_SET_PATH"] == "/mnt/models/r50/golden.npz"
    pod_spec = render_pod_template(make_target(**spec), SETTINGS)["spec"]
    assert [v["name"] for v in pod_spec["volumes"]] == ["tmp", "cache", "models"]


def test_a_golden_set_on_another_claim_is_mounted_read_only_beside_the_model():
    spec = {"model": {"uri": "/models/m.onnx", "goldenSet": {"uri": "pvc://checks/m/golden.npz"}}}
    assert runtime_env(**spec)["MODELDEPLOY_GOLDEN_SET_PATH"] == "/mnt/golden-set/m/golden.npz"
    pod_spec = render_pod_template(make_target(**spec), SETTINGS)["spec"]
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "golden-set")
    assert volume["persistentVolumeClaim"] == {"claimName": "checks", "readOnly": True}
    mounts = pod_spec["containers"][0]["volumeMounts"]
    assert {"name": "golden-set", "mountPath": "/mnt/golden-set", "readOnly": True} in mounts


def test_a_golden_set_url_needs_its_sha256():
    problems = validate_spec(make_spec(model={"goldenSet": {"uri": "https://h/g.npz"}}))
    assert [p.field for p in problems] == ["spec.model.goldenSet.sha256"]


@pytest.mark.parametrize(
    "golden",
    [{"uri": "s3:/x"}, {"uri": "/g.npz", "minTop1Agreement": 1.5}, {"uri": "/g.npz", "maxAbsError": -1}],
)
def test_the_schema_refuses_bad_golden_sets(golden):
    with pytest.raises(ValueError):
        make_spec(model={"goldenSet": golden})
