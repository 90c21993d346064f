"""Latency and throughput of a model file, run in-process: the ceiling a server can approach.

Each batch size runs a warm-up, then back-to-back inferences on the same inputs for a fixed time
(and at least a minimum count, so slow models still get percentiles worth the name). Results are
rows of a table and plain dicts for JSON, shared with the HTTP benchmark (bench_http).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from . import data as data_mod
from .runner import Runner


@dataclass
class BenchResult:
    target: str  # the model file or server URL
    runs_on: str  # provider / engine / protocol
    batch_size: int
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # inferences (samples) per second
    client_cpu: float | None = None  # HTTP only: the load client's CPU time / wall time

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(
    latencies_s: Sequence[float],
    *,
    target: str,
    runs_on: str,
    batch_size: int,
    concurrency: int,
    seconds: float,
    errors: int = 0,
    client_cpu: float | None = None,
) -> BenchResult:
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if ms.size:
        p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
        mean = float(ms.mean())
    else:
        p50 = p95 = p99 = mean = float("nan")
    return BenchResult(
        target=target,
        runs_on=runs_on,
        batch_size=batch_size,
        concurrency=concurrency,
        requests=int(ms.size),
        errors=errors,
        seconds=seconds,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=mean,
        throughput=ms.size * batch_size / seconds if seconds > 0 else 0.0,
        client_cpu=client_cpu,
    )


def timed_loop(
    call: Callable[[], object], *, duration: float, min_requests: int, max_requests: int = 0
) -> tuple[list[float], float]:
    """Run `call` back to back until `duration` has passed and `min_requests` are done."""
    latencies = []
    start = time.perf_counter()
    deadline = start + duration
    while True:
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if (t1 >= deadline and len(latencies) >= min_requests) or (max_requests and len(latencies) >= max_requests):
            return latencies, t1 - start


def bench_runner(
    runner: Runner,
    batch_sizes: Sequence[int],
    *,
    samples: data_mod.Samples | None = None,
    duration: float = 5.0,
    warmup: int = 10,
    min_requests: int = 20,
    max_requests: int = 0,
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[BenchResult]:
    specs = runner.inputs
    batched = any(s.batched for s in specs)
    if not batched and any(b != 1 for b in batch_sizes):
        raise ValueError(f"{runner.path.name} has no batch dimension: use --batch-sizes 1")
    limit = getattr(runner, "max_batch_size", 0)
    if limit and max(batch_sizes) > limit:
        raise ValueError(
            f"{runner.path.name} takes at most {limit} inputs per batch (its build's --max-batch-size): "
            f"use --batch-sizes up to {limit}"
        )
    results = []
    for batch_size in batch_sizes:
        if samples is not None:
            feed = data_mod.tile_to(samples, specs, batch_size)
        else:
            feed = data_mod.generate(specs, batch_size, seed=seed, value_range=value_range, input_shapes=input_shapes)
        for _ in range(warmup):
            runner.run(feed)
        latencies, seconds = timed_loop(
            lambda feed=feed: runner.run(feed),
            duration=duration,
            min_requests=min_requests,
            max_requests=max_requests,
        )
        results.append(
            summarize(
                latencies,
                target=str(runner.path),
                runs_on=runner.description,
                batch_size=batch_size,
                concurrency=1,
                seconds=seconds,
            )
        )
    return results


def format_table(results: Sequence[BenchResult], *, show_concurrency: bool = False) -> str:
    header = ["model", "runs on", "batch"]
    if show_concurrency:
        header.append("conc")
    header += ["requests", "p50 ms", "p95 ms", "p99 ms", "inferences/s"]
    if any(r.errors for r in results):
        header.append("errors")
    if any(r.client_cpu is not None for r in results):
        header.append("client cpu")
    rows = [header]
    for r in results:
        row = [os.path.basename(r.target.rstrip("/")) or r.target, r.runs_on, str(r.batch_size)]
        if show_concurrency:
            row.append(str(r.concurrency))
        row += [
            str(r.requests),
            f"{r.p50_ms:.3f}",
            f"{r.p95_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.throughput:.1f}",
        ]
        if "errors" in header:
            row.append(str(r.errors))
        if "client cpu" in header:
            row.append("" if r.client_cpu is None else f"{r.client_cpu:.0%}")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate(rows):
        cells = [c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_int_list(value: str, flag: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        items = []
    if not items or any(v < 1 for v in items):
        raise ValueError(f"{flag} {value!r}: expected positive integers separated by commas, e.g. {flag} 1,8,32")
    return items
