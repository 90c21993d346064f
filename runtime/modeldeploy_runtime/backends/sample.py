"""Generated inputs and timed inferences: what warm-up, the latency gate and the backends' own
tuning probes (spinning threads, batch buckets, engine choice) run. Below the backends, so that
they need not import the server's warm-up."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..types import V2_TO_NUMPY
from .base import Backend, TensorSpec


def sample_inputs(specs: Sequence[TensorSpec], batched: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """One request's worth of random inputs: dynamic dimensions (the batch one included) are 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            arr = np.empty(shape, dtype=np.object_)
            arr.fill(b"warmup")
        elif spec.datatype == "BOOL":
            arr = rng.random(shape) < 0.5
        else:
            dtype = V2_TO_NUMPY[spec.datatype]
            arr = (rng.random(shape) * (1 if dtype.kind == "f" else 2)).astype(dtype)
        out[spec.name] = arr
    return out


def time_inferences(backend: Backend, inputs: dict, runs: int, min_s: float = 0.0) -> list[float]:
    """Latencies in seconds of ``runs`` inferences of ``inputs`` (more, until they add up to
    ``min_s``), after one untimed run."""
    backend.infer(inputs)
    latencies = []
    while len(latencies) < runs or sum(latencies) < min_s:
        start = time.perf_counter()
        backend.infer(inputs)
        latencies.append(time.perf_counter() - start)
    return latencies


def time_sample(backend: Backend, runs: int) -> list[float]:
    """Latencies in seconds of ``runs`` single inferences of generated inputs, after one untimed
    run that pays the one-time costs: warm-up, and the probes backends tune themselves by."""
    return time_inferences(backend, sample_inputs(backend.inputs, backend.max_batch_size > 0), runs)
