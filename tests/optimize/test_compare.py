"""How `validate` measures and judges differences between two models' outputs."""

from __future__ import annotations

import numpy as np
import pytest
from modeldeploy_runtime.measure.compare import CompareError, Comparison, OutputDiff, Thresholds, judge


def diff(name, ref, cand) -> OutputDiff:
    d = OutputDiff(name)
    d.add(np.asarray(ref), np.asarray(cand))
    return d


def test_identical_outputs_have_no_error_and_full_agreement():
    x = np.random.default_rng(0).standard_normal((50, 10)).astype(np.float32)
    d = diff("scores", x, x.copy())
    assert (d.max_abs_error, d.max_rel_error, d.top1_agreement, d.compared) == (0.0, 0.0, 1.0, 50)


def test_top1_counts_rows_whose_argmax_moved():
    ref = np.eye(4, dtype=np.float32)
    cand = ref.copy()
    cand[3] = [0, 0, 1, 0.5]  # row 3 now votes for class 2
    assert diff("scores", ref, cand).top1_agreement == 0.75


def test_integer_labels_agree_by_equality():
    assert diff("label", [1, 2, 3, 4], [1, 2, 0, 4]).top1_agreement == 0.75


def test_relative_error_ignores_references_near_zero():
    ref = np.array([[1.0, 1e-9]])
    cand = np.array([[1.01, 1e-6]])  # 1000x on a negligible entry, 1% on the real one
    d = diff("p", ref, cand)
    assert d.max_rel_error == pytest.approx(0.01)
    assert d.max_abs_error == pytest.approx(0.01)


def test_nan_in_the_candidate_is_an_infinite_error():
    d = diff("p", [[1.0, 2.0]], [[1.0, np.nan]])
    assert d.max_abs_error == np.inf


def test_features_without_classes_have_no_top1():
    assert diff("embedding", np.ones((3, 1)), np.ones((3, 1))).top1_agreement is None


def test_shapes_that_differ_are_an_error():
    with pytest.raises(CompareError, match=r"output 'p': the original gives shape \[2, 3\]"):
        diff("p", np.ones((2, 3)), np.ones((3, 2)))


def comparison(*outputs) -> Comparison:
    return Comparison("a.onnx", "b.onnx", 100, list(outputs))


def test_judge_fails_below_the_top1_threshold_and_says_how_many_differ():
    d = diff("label", np.arange(100), np.r_[np.arange(98), [0, 0]])
    assert judge(comparison(d), Thresholds()) == ["output 'label': top-1 agreement 98.00% < 99.00% (2 of 100 differ)"]
    assert judge(comparison(d), Thresholds(min_top1=0.98)) == []


def test_judge_applies_error_thresholds():
    d = diff("p", np.ones((4, 2)), np.ones((4, 2)) * 1.5)
    failures = judge(comparison(d), Thresholds(max_abs_error=0.1, max_rel_error=0.6))
    assert failures == ["output 'p': max abs error 0.5 > 0.1"]


def test_judge_can_be_limited_to_named_outputs():
    good = diff("label", [1, 2], [1, 2])
    bad = diff("scores", np.eye(2), np.eye(2)[::-1])
    assert judge(comparison(good, bad), Thresholds(outputs=("label",))) == []
    with pytest.raises(CompareError, match="--output nope: no such output"):
        judge(comparison(good, bad), Thresholds(outputs=("nope",)))


def test_judge_without_a_classification_output_asks_for_an_error_threshold():
    d = diff("embedding", np.ones((3, 1)), np.ones((3, 1)))
    with pytest.raises(CompareError, match="give --max-abs-error or --max-rel-error"):
        judge(comparison(d), Thresholds())
    assert judge(comparison(d), Thresholds(max_abs_error=0.01)) == []
