"""Warm-up inputs, the p95 latency gate and the termination message."""

from __future__ import annotations

import numpy as np
import pytest
from modeldeploy_runtime.backends.base import TensorSpec
from modeldeploy_runtime.errors import LatencyBudgetExceeded
from modeldeploy_runtime.termination import write_termination_message
from modeldeploy_runtime.warmup import (
    check_latency_gate,
    gate_verdict,
    percentile,
    warmup_inputs,
)


def test_warmup_inputs_fill_dynamic_dimensions_with_one():
    inputs = warmup_inputs(
        [TensorSpec("img", "FP32", (-1, 3, 8, 8)), TensorSpec("ids", "INT64", (-1, -1)),
         TensorSpec("text", "BYTES", (-1,)), TensorSpec("flag", "BOOL", (2,))],
        batched=True,
    )  # fmt: skip
    assert inputs["img"].shape == (1, 3, 8, 8) and inputs["img"].dtype == np.float32
    assert inputs["ids"].shape == (1, 1) and inputs["ids"].dtype == np.int64
    assert inputs["text"].dtype == object and inputs["flag"].dtype == np.bool_


@pytest.mark.parametrize(
    ("samples", "q", "expected"), [([5, 1, 3, 2, 4], 50, 3), (list(range(1, 21)), 95, 19), (list(range(1, 11)), 95, 10)]
)
def test_nearest_rank_percentile(samples, q, expected):
    assert percentile(samples, q) == expected


def test_gate_verdict_message_format():
    assert gate_verdict(142.04, 100) == "p95 142.0 ms > 100 ms"
    assert gate_verdict(99.0, 100) is None
    assert gate_verdict(500.0, 0) is None


def test_gate_verdict_shows_the_p95_as_over_the_budget_at_any_scale():
    # One decimal would print "p95 0.0 ms > 0.001 ms" and "p95 1.0 ms > 1 ms".
    assert gate_verdict(0.0312, 0.001) == "p95 0.03 ms > 0.001 ms"
    assert gate_verdict(1.04, 1) == "p95 1.04 ms > 1 ms"
    assert gate_verdict(0.00042, 0.0001) == "p95 0.0004 ms > 0.0001 ms"


def test_enforced_gate_raises_with_the_contract_prefix():
    with pytest.raises(LatencyBudgetExceeded) as err:
        check_latency_gate([0.2] * 20, budget_ms=100, mode="enforce")
    assert err.value.termination_message == "latency budget exceeded: p95 200.0 ms > 100 ms"


def test_warn_mode_serves_anyway():
    assert check_latency_gate([0.2] * 20, budget_ms=100, mode="warn") == pytest.approx(200.0)


def test_within_budget_passes():
    assert check_latency_gate([0.001] * 19 + [0.5], budget_ms=100, mode="enforce") == pytest.approx(1.0)


def test_termination_message_is_one_line(tmp_path):
    path = tmp_path / "sub" / "termination-log"
    assert write_termination_message(str(path), "model load failed: a\nb")
    assert path.read_text() == "model load failed: a b\n"


def test_unwritable_termination_log_is_not_fatal(tmp_path):
    (tmp_path / "file").write_text("")
    assert not write_termination_message(str(tmp_path / "file" / "log"), "x")
