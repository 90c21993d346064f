"""How the analysis changes a reconcile's decision and status (pure), and who the NetworkPolicy lets
scrape the metrics port."""

from __future__ import annotations

import pytest
from modeldeploy_operator import api
from modeldeploy_operator.analysis import AnalysisDecision, Baseline, Verdict
from modeldeploy_operator.bake import Live, epoch, plan_analysis
from modeldeploy_operator.observe import PodState, RolloutState
from modeldeploy_operator.render import Settings, render_network_policy
from modeldeploy_operator.rollback import Assessment
from modeldeploy_operator.rollback import Verdict as RolloutVerdict
from modeldeploy_operator.watch import Mode
from operator_helpers import make_target

T0 = epoch("2026-01-01T00:00:00Z")
NEW = RolloutState(
    exists=True, revision=2, pod_template_hash="new", new_pods=(PodState("m-new-1", "new", True, 0, ip="10.0.0.7"),)
)
COMPLETE = Assessment(RolloutVerdict.COMPLETE, "RolloutComplete", "revision 2 is available")
GOOD = api.KnownGood(revision=1, generation=1, template_hash="t-old", pod_template_hash="old", time="t")
CFG = api.Analysis(bakeSeconds=60, intervalSeconds=5, consecutiveIntervals=3, maxP95Milliseconds=25)


NO_DATA = Live()


def plan(previous=None, live=NO_DATA, known_good=GOOD, assessment=COMPLETE, cfg=CFG, now=T0, pinned=False):
    return plan_analysis(
        cfg,
        model="m",
        state=NEW,
        assessment=assessment,
        template_hash="t-new",
        known_good=known_good,
        pinned=pinned,
        previous=previous or api.ModelDeploymentStatus(),
        live=live,
        now=now,
    )


def test_an_available_update_bakes_compared_with_the_known_good_figures_and_is_held():
    p = plan(live=Live(baseline=Baseline(0.01, 4.0, 900, 1)))
    assert p.hold and p.failed is None
    assert p.analysis.phase == api.AnalysisPhase.BAKING and p.analysis.start_time == "2026-01-01T00:00:00Z"
    assert "known good revision 1 (p95 4 ms, errors 1.0% over 900 requests)" in p.analysis.message
    assert p.track.mode is Mode.BAKE and p.track.pods == (("m-new-1", "10.0.0.7"),)


def test_a_failed_bake_fails_the_rollout_with_its_figures():
    baking = plan().analysis
    failed = AnalysisDecision(Verdict.FAILED, "p95 41 ms > 25 ms for 3 of 3 intervals")
    p = plan(previous=api.ModelDeploymentStatus(analysis=baking), live=Live(decision=failed), now=T0 + 20)
    assert p.failed.verdict is RolloutVerdict.FAILED and p.failed.reason == "AnalysisFailed"
    assert p.analysis.phase == api.AnalysisPhase.FAILED
    assert p.analysis.message == "revision 2: p95 41 ms > 25 ms for 3 of 3 intervals"
    assert p.analysis.start_time == baking.start_time  # the bake's start is kept across reconciles


def test_a_bake_with_no_data_ends_inconclusive_and_is_not_known_good():
    baking = plan().analysis
    p = plan(previous=api.ModelDeploymentStatus(analysis=baking), now=T0 + 61)
    assert p.analysis.phase == api.AnalysisPhase.INCONCLUSIVE and p.hold and p.failed is None
    assert "too little traffic to judge" in p.analysis.message


def test_a_passed_bake_releases_the_hold():
    baking = plan().analysis
    passed = AnalysisDecision(Verdict.PASSED, "within the limits: 12 of 12 intervals judged")
    p = plan(previous=api.ModelDeploymentStatus(analysis=baking), live=Live(decision=passed), now=T0 + 61)
    assert not p.hold and p.analysis.phase == api.AnalysisPhase.PASSED


@pytest.mark.parametrize(
    ("known_good", "pinned", "cfg"),
    [(None, False, CFG), (GOOD, True, CFG), (GOOD, False, api.Analysis(enabled=False))],
    ids=["first-revision", "restored-known-good", "switched-off"],
)
def test_no_bake_holds_nothing(known_good, pinned, cfg):
    p = plan(known_good=known_good, pinned=pinned, cfg=cfg)
    assert not p.hold and p.failed is None and p.analysis is None


def test_hardware_facts_come_from_the_scrape_and_stay_with_their_revision():
    facts = (
        {"backend": "onnxruntime", "provider": "CPUExecutionProvider", "precision": "fp32", "gpu_product": ""},
        3.456,
    )
    hw = plan(live=Live(facts=facts)).hardware
    assert (hw.provider, hw.precision, hw.gpu_product, hw.warmup_p95_milliseconds) == (
        "CPUExecutionProvider",
        "fp32",
        None,
        3.46,
    )
    kept = plan(previous=api.ModelDeploymentStatus(hardware=hw)).hardware
    assert kept == hw
    other = hw.model_copy(update={"pod_template_hash": "old"})
    assert plan(previous=api.ModelDeploymentStatus(hardware=other)).hardware is None


def test_bake_window_must_hold_the_intervals_it_needs():
    with pytest.raises(ValueError, match="exceeds bakeSeconds"):
        api.Analysis(bakeSeconds=60, intervalSeconds=30, consecutiveIntervals=3)


OPERATOR = Settings(
    operator_namespace="mdep-system", operator_pod_labels=(("app.kubernetes.io/name", "modeldeploy-operator"),)
)


def test_the_operator_may_scrape_the_metrics_port_and_nothing_else():
    ingress = render_network_policy(make_target(), OPERATOR)["spec"]["ingress"]
    assert ingress[1] == {
        "from": [
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "modeldeploy-operator"}},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mdep-system"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": "metrics"}],
    }
    assert ingress[0]["ports"] == [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": "grpc"}]
    assert len(render_network_policy(make_target(), Settings())["spec"]["ingress"]) == 1
