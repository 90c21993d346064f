"""``backend: auto``: for an ONNX model on the CPU, load every engine that can serve the asked
precision, time each on the model's own warm-up inputs, and serve on the faster one, provided the
two agree within a tolerance on those inputs.

Neither engine wins everywhere: on one 2-core machine OpenVINO FP32 matched ONNX Runtime on
ResNet-50 and ran MobileNetV2 15 % slower (bench/README.md), and the ranking moves with the CPU and
the model. Measuring at start, on this pod's CPU limit, settles it per model. The choice, the
figures behind it and the agreement are logged and shown in model metadata.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .base import Backend, BackendError
from .sample import sample_inputs, time_inferences

log = logging.getLogger(__name__)

# Largest difference from the reference (ONNX Runtime), relative to the largest magnitude of the
# reference output, for the faster engine to be trusted; FP32 engines agree to about 1e-6, the INT8
# kernels of ONNX Runtime and OpenVINO to about 3e-2 (MobileNetV2 INT8).
TOLERANCE = {"fp32": 1e-3, "int8": 5e-2}
TIMED_RUNS = 12
# The engines are timed in turns, a few runs each, the order reversed every round, after all of
# them are loaded: timed one after the other, right after its load, ONNX Runtime ran ResNet-50 at
# 29 ms a call where it settles at 24-26 ms, and the engine loaded first paid for it. Single calls
# in turn would be worse: ONNX Runtime's threads spin after each run and took the CPU from the
# OpenVINO call after it (42-48 ms against 24-26 ms in blocks). Even a turn of four is not clear
# of it on a fast model: OpenVINO read 2.2-2.8 ms a call on MobileNetV2 INT8 right after ONNX
# Runtime's turn, 1.5-2.2 ms after a pause, so each turn starts after PAUSE_S of idleness, as a
# served engine alone would.
ROUNDS = 3
PAUSE_S = 0.05
TURN_S = 0.1  # a turn runs at least this long, so a fast model's figure is more than a few calls


@dataclass
class Trial:
    name: str
    backend: Backend
    p50_ms: float
    gap: float  # difference from the reference, see agreement()


def agreement(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float:
    """Largest |difference| / max |reference| over the outputs (0 for integer outputs that are equal)."""
    worst = 0.0
    for name, ref in reference.items():
        got = np.asarray(candidate[name])
        if ref.dtype.kind not in "fc":
            worst = max(worst, 0.0 if np.array_equal(ref, got) else float("inf"))
            continue
        scale = float(np.abs(ref).max()) or 1.0
        worst = max(worst, float(np.abs(ref.astype(np.float64) - got).max()) / scale)
    return worst


def time_in_turns(backends: list[Backend], inputs: dict[str, np.ndarray], runs: int = TIMED_RUNS) -> list[float]:
    """Median latency in ms of each backend over at least ``runs`` inferences, taken in ROUNDS
    turns (each after PAUSE_S and one untimed run, at least TURN_S long), the order reversed every
    round."""
    latencies: list[list[float]] = [[] for _ in backends]
    per_turn = max(1, runs // ROUNDS)
    order = list(range(len(backends)))
    for _ in range(ROUNDS):
        for i in order:
            time.sleep(PAUSE_S)  # the other engine's pool threads stop spinning
            latencies[i] += time_inferences(backends[i], inputs, per_turn, min_s=TURN_S)
        order.reverse()
    return [statistics.median(values) * 1000.0 for values in latencies]


def choose(loaders: dict[str, Callable[[], Backend]], precision: str, runs: int = TIMED_RUNS) -> Backend:
    """Load each engine (the first is the reference), time them in turns once all are loaded
    (``time_in_turns``), and serve on the fastest that agrees with the reference.

    An engine that fails to load or to run on the warm-up inputs is left out, with the reason
    logged; when none loads, the first one's error is raised."""
    trials: list[Trial] = []
    errors: dict[str, str] = {}
    reference_out = None
    inputs = None
    for name, load in loaders.items():
        try:
            backend = load()
        except BackendError as exc:
            errors[name] = str(exc)
            log.warning("backend auto: %s cannot serve this model: %s", name, exc)
            continue
        if inputs is None:
            inputs = sample_inputs(backend.inputs, backend.max_batch_size > 0)
        try:
            out = backend.infer(inputs)
        except Exception as exc:
            errors[name] = f"inference on warm-up inputs failed: {exc}"
            log.warning("backend auto: %s left out: %s", name, errors[name])
            backend.close()
            continue
        if reference_out is None:
            reference_out = out
            gap = 0.0
        else:
            gap = agreement(reference_out, out)
        trials.append(Trial(name, backend, 0.0, gap))
    if not trials:
        first = next(iter(loaders))
        raise BackendError(f"backend auto: no engine can serve this model; {first}: {errors.get(first, 'failed')}")
    try:
        for trial, p50 in zip(trials, time_in_turns([t.backend for t in trials], inputs, runs), strict=True):
            trial.p50_ms = p50
    except Exception:
        for t in trials:
            t.backend.close()
        raise
    tolerance = TOLERANCE.get(precision, 1e-3)
    agreeing = [t for t in trials if t.gap <= tolerance]
    chosen = min(agreeing, key=lambda t: t.p50_ms)
    for t in trials:
        if t is not chosen:
            t.backend.close()
    figures = ", ".join(f"{t.name} {t.p50_ms:.3f} ms" for t in trials)
    gaps = ", ".join(f"{t.name} {t.gap:.2g}" for t in trials[1:])
    refused = [t.name for t in trials if t not in agreeing]
    log.info(
        "backend auto: serving on %s (warm-up p50 %s; difference from %s %s, tolerance %g%s)",
        chosen.name,
        figures,
        trials[0].name,
        gaps or "n/a",
        tolerance,
        f"; {', '.join(refused)} disagreed" if refused else "",
    )
    extra = chosen.backend.info.extra
    extra["auto_choice"] = chosen.name
    extra["auto_p50_ms"] = ", ".join(f"{t.name}={t.p50_ms:.3f}" for t in trials)
    extra["auto_max_rel_diff"] = ", ".join(f"{t.name}={t.gap:.2g}" for t in trials[1:]) or "n/a"
    if errors:
        extra["auto_left_out"] = "; ".join(f"{k}: {v}" for k, v in errors.items())[:500]
    return chosen.backend
