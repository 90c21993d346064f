"""Warm-up and the latency gate.

A model is not ready until it has run: the first inferences pay for lazy allocations, kernel
selection and (with the TensorRT execution provider) engine builds. After warm-up the server
measures p95 latency of single requests and, when a budget is set, refuses to become ready if the
model is too slow on this hardware, so a rollout of a slower model stops at its first pod instead
of degrading the service.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from .backends.base import Backend, TensorSpec
from .backends.sample import sample_inputs, time_sample
from .errors import LatencyBudgetExceeded

log = logging.getLogger(__name__)


def warmup_inputs(specs: Sequence[TensorSpec], batched: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """One request's worth of random inputs: dynamic dimensions (the batch one included) are 1."""
    return sample_inputs(specs, batched, seed)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, always one of the samples: the p95 of 10 samples is their maximum,
    of 20 the second largest. Conservative for a gate, where a few samples must not hide a slow
    tail."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def run_warmup(backend: Backend, requests: int) -> list[float]:
    """Latencies in seconds of ``requests`` single inferences, after one untimed first run that
    pays the one-time costs."""
    return time_sample(backend, requests)


def gate_verdict(p95_ms: float, budget_ms: float) -> str | None:
    """The termination message when p95 is over budget, None when it passes (or no budget)."""
    if budget_ms <= 0 or p95_ms <= budget_ms:
        return None
    return f"p95 {_over(p95_ms, budget_ms)} ms > {budget_ms:g} ms"


def _over(value: float, bound: float) -> str:
    """``value`` (> ``bound``) with one decimal, or as many more as it takes to read as over the
    bound: 0.03 rather than 0.0 against a budget of 0.001, 1.04 rather than 1.0 against 1."""
    for decimals in range(1, 10):
        text = f"{value:.{decimals}f}"
        if float(text) > bound:
            return text
    return f"{value:g}"


def check_latency_gate(latencies: Sequence[float], budget_ms: float, mode: str) -> float | None:
    """Raise LatencyBudgetExceeded when enforcing and over budget; log a warning in ``warn`` mode.
    Returns the measured p95 in ms (None without samples)."""
    if not latencies:
        return None
    p95_ms = percentile(latencies, 95) * 1000.0
    verdict = gate_verdict(p95_ms, budget_ms)
    if verdict is None:
        log.info("warm-up p95 %.2f ms%s", p95_ms, f" within budget {budget_ms:g} ms" if budget_ms > 0 else "")
        return p95_ms
    if mode == "warn":
        log.warning("latency budget exceeded: %s (MODELDEPLOY_LATENCY_GATE=warn: serving anyway)", verdict)
        return p95_ms
    raise LatencyBudgetExceeded(verdict)
