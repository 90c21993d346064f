"""The post-rollout analysis as a pure function: noisy, sparse and missing data."""

from __future__ import annotations

import pytest
from modeldeploy_operator.analysis import (
    Baseline,
    Figures,
    Judgement,
    Limits,
    Verdict,
    decide_analysis,
    judge_interval,
    merge,
    quantile,
)

BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, float("inf"))
LIMITS = Limits(consecutive=3, max_error_ratio=0.05, max_p95_ms=25.0, max_p95_ratio=2.0, min_requests=20)
BASE = Baseline(error_ratio=0.0, p95_ms=4.0, requests=1000, revision=1)


def at(latency_s: float, requests: int = 100, errors: int = 0) -> Figures:
    """An interval whose successful requests all took about `latency_s`."""
    ok = requests - errors
    return Figures(requests, errors, tuple((le, float(ok if latency_s <= le else 0)) for le in BOUNDS))


FAST, SLOW = at(0.004), at(0.04)  # p95 about 4 ms and about 40 ms


def decide(intervals, baseline=BASE, limits=LIMITS, elapsed_s=60.0, bake_s=300.0, interval_s=10.0):
    return decide_analysis(intervals, baseline, limits, elapsed_s=elapsed_s, bake_s=bake_s, interval_s=interval_s)


def test_quantile_interpolates_inside_the_bucket_as_histogram_quantile_does():
    buckets = ((0.01, 50.0), (0.02, 100.0), (float("inf"), 100.0))
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.95, buckets) == pytest.approx(0.019)
    assert quantile(0.95, ((0.01, 0.0), (float("inf"), 10.0))) == 0.01  # in +Inf: the highest bound
    assert quantile(0.95, ()) is None and quantile(0.95, ((0.01, 0.0), (float("inf"), 0.0))) is None


def test_merge_adds_pods_and_intervals():
    merged = merge([at(0.004, 50, 5), at(0.04, 50, 0)])
    assert (merged.requests, merged.errors) == (100, 5)
    assert 4 < merged.p95_ms < 50


@pytest.mark.parametrize(
    ("figures", "judgement", "breach"),
    [
        (None, Judgement.MISSING, None),
        (at(0.5, requests=19), Judgement.SPARSE, None),
        (FAST, Judgement.WITHIN, None),
        (SLOW, Judgement.OVER, "ms > 25 ms"),
        (at(0.004, errors=10), Judgement.OVER, "errors 10.0% > 5.0%"),
        (at(0.009), Judgement.OVER, "(2 x known good 4 ms)"),  # 9 ms: under 25 ms, over twice 4 ms
        (at(0.004, requests=20, errors=20), Judgement.OVER, "errors 100.0% > 5.0%"),  # no success, no p95
    ],
)
def test_one_interval_is_judged_on_its_own(figures, judgement, breach):
    result = judge_interval(figures, BASE, LIMITS)
    assert result.judgement is judgement
    if breach:
        assert any(breach in b for b in result.breaches), result.breaches


def test_the_known_good_error_ratio_is_the_floor_the_limit_is_added_to():
    noisy_baseline = Baseline(error_ratio=0.08, p95_ms=4.0)
    assert judge_interval(at(0.004, errors=10), noisy_baseline, LIMITS).judgement is Judgement.WITHIN
    assert judge_interval(at(0.004, errors=14), noisy_baseline, LIMITS).judgement is Judgement.OVER


def test_without_a_baseline_only_the_absolute_limits_apply():
    assert judge_interval(at(0.009), None, LIMITS).judgement is Judgement.WITHIN
    assert judge_interval(SLOW, None, LIMITS).judgement is Judgement.OVER


def test_consecutive_bad_intervals_fail_with_the_figures():
    decision = decide([FAST, SLOW, SLOW, SLOW])
    assert decision.verdict is Verdict.FAILED
    assert decision.message.startswith("p95 ") and decision.message.endswith("ms > 25 ms for 3 of 3 intervals")


@pytest.mark.parametrize(
    "intervals",
    [
        [SLOW, FAST, SLOW, FAST, SLOW, FAST, SLOW],  # noisy: never three in a row
        [SLOW, SLOW, FAST, SLOW, SLOW],
        [SLOW, SLOW],  # not yet
    ],
    ids=["alternating", "broken-runs", "two-of-three"],
)
def test_noise_below_the_run_length_keeps_baking(intervals):
    decision = decide(intervals)
    assert decision.verdict is Verdict.BAKING


@pytest.mark.parametrize(
    "intervals",
    [[None] * 30, [at(1.0, requests=5, errors=5)] * 30, [None, at(1.0, requests=3, errors=3)] * 15],
    ids=["all-missing", "all-sparse-and-failing", "missing-and-sparse"],
)
def test_missing_or_sparse_data_never_rolls_back_nor_passes(intervals):
    during = decide(intervals)
    after = decide(intervals, elapsed_s=301.0)
    assert during.verdict is Verdict.BAKING
    assert after.verdict is Verdict.INCONCLUSIVE
    assert "too little traffic to judge" in after.message and "0 of 30 intervals judged" in after.message


def test_sparse_and_missing_intervals_neither_break_nor_extend_a_run():
    assert decide([SLOW, None, at(0.5, requests=2), SLOW, None, SLOW]).verdict is Verdict.FAILED


def test_a_bake_passes_when_its_window_is_over_with_enough_judged_intervals():
    decision = decide([FAST, SLOW, FAST, FAST, None, at(0.5, requests=1)], elapsed_s=300.0)
    assert decision.verdict is Verdict.PASSED
    assert "4 of 6 intervals judged (1 with under 20 requests, 1 without data)" in decision.message


def test_too_few_judged_intervals_at_the_end_are_inconclusive_not_a_pass():
    decision = decide([FAST, FAST, None, None], elapsed_s=300.0)
    assert decision.verdict is Verdict.INCONCLUSIVE


def test_a_run_in_progress_at_the_end_of_the_window_is_allowed_to_resolve():
    assert decide([FAST, FAST, FAST, SLOW], elapsed_s=305.0).verdict is Verdict.BAKING
    assert decide([FAST, FAST, FAST, SLOW, SLOW, SLOW], elapsed_s=325.0).verdict is Verdict.FAILED
    assert decide([FAST, FAST, FAST, SLOW, FAST], elapsed_s=315.0).verdict is Verdict.PASSED
    # traffic stopped in the middle of the run: not judged either way
    assert decide([FAST, FAST, FAST, SLOW, None, None, None], elapsed_s=335.0).verdict is Verdict.INCONCLUSIVE


def test_a_slow_but_absolutely_fine_revision_fails_only_against_its_baseline():
    slower = at(0.009)  # 9 ms: within 25 ms, over 2 x 4 ms
    assert decide([slower] * 3).verdict is Verdict.FAILED
    assert decide([slower] * 3, baseline=None).verdict is Verdict.BAKING
    assert decide([slower] * 3, limits=Limits(max_p95_ratio=0)).verdict is Verdict.BAKING
