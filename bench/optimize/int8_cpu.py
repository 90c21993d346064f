#!/usr/bin/env python3
"""CPU INT8 vs FP32, and the quantization choices behind `modeldeploy optimize quantize`.

For ResNet-50 (random weights, bench/models.py) and the digits MLP (examples/models), this
quantizes each model several ways and measures every variant in-process with ONNX Runtime in
the same run, interleaved over a few rounds so a neighbour's load hits all of them alike:

  fp32              the original
  u8s8-pc  (ours)   static QDQ, activations QUInt8, weights QInt8 per channel: the default
  u8s8-pt           the same with one weight scale per tensor
  s8s8-pc           static QDQ, activations QInt8 (ONNX Runtime's default activation type)
  s8s8-pt           ONNX Runtime's defaults: QInt8/QInt8, per tensor
  dynamic           quantize_dynamic (weights only; activation ranges computed per run)

It also reports what each variant costs: top-1 agreement with FP32 (ResNet-50, on generated
inputs) and held-out accuracy (digits, real data).

    .venv/bin/python bench/optimize/int8_cpu.py                 # figures for bench/README.md
    .venv/bin/python bench/optimize/int8_cpu.py --quick         # a short smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from modeldeploy_runtime.measure import data as data_mod  # noqa: E402
from modeldeploy_runtime.measure.bench import bench_runner  # noqa: E402
from modeldeploy_runtime.measure.compare import compare_models  # noqa: E402
from modeldeploy_runtime.measure.runner import OrtRunner  # noqa: E402
from modeldeploy_runtime.optimize.quantize import (  # noqa: E402
    QuantizeOptions,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from models import resnet50  # noqa: E402  (bench/models.py)

VARIANTS = {
    "u8s8-pc": QuantizeOptions(activation_type="uint8", per_channel=True),
    "u8s8-pt": QuantizeOptions(activation_type="uint8", per_channel=False),
    "s8s8-pc": QuantizeOptions(activation_type="int8", per_channel=True),
    "s8s8-pt": QuantizeOptions(activation_type="int8", per_channel=False),
}


def _stale(path: Path, source: Path) -> bool:
    return not path.exists() or path.stat().st_mtime < source.stat().st_mtime


def prepare(name: str, fp32: Path, calibration: dict, out: Path, only: list[str]) -> dict[str, Path]:
    runner = OrtRunner(fp32)
    specs = runner.inputs
    runner.close()
    paths = {"fp32": fp32}
    for variant, options in VARIANTS.items():
        if only and variant not in only:
            continue
        path = out / f"{name}.{variant}.onnx"
        if _stale(path, fp32):
            result = quantize_static_int8(fp32, path, calibration, specs, options)
            print(f"  {variant}: {result.summary()}", file=sys.stderr)
        paths[variant] = path
    if not only or "dynamic" in only:
        path = out / f"{name}.dynamic.onnx"
        if _stale(path, fp32):
            quantize_dynamic_int8(fp32, path)
        paths["dynamic"] = path
    return paths


def measure(paths: dict[str, Path], batch_sizes, *, threads: int, duration: float, rounds: int, feed_seed: int):
    """Median throughput and p50 over `rounds`, variants interleaved within each round."""
    runners = {v: OrtRunner(p, threads=threads) for v, p in paths.items()}
    samples: dict[tuple[str, int], list] = {}
    try:
        for _ in range(rounds):
            for batch in batch_sizes:
                for variant, runner in runners.items():
                    (r,) = bench_runner(runner, [batch], duration=duration, warmup=3, min_requests=5, seed=feed_seed)
                    samples.setdefault((variant, batch), []).append(r)
    finally:
        for r in runners.values():
            r.close()
    rows = []
    for (variant, batch), results in samples.items():
        rows.append(
            {
                "variant": variant,
                "batch_size": batch,
                "throughput": statistics.median(r.throughput for r in results),
                "p50_ms": statistics.median(r.p50_ms for r in results),
                "p99_ms": statistics.median(r.p99_ms for r in results),
                "rounds": [round(r.throughput, 2) for r in results],
            }
        )
    return rows


def agreement(paths: dict[str, Path], samples: dict, threads: int) -> dict[str, float]:
    reference = OrtRunner(paths["fp32"], threads=threads)
    out = {}
    try:
        for variant, path in paths.items():
            if variant == "fp32":
                continue
            candidate = OrtRunner(path, threads=threads)
            result = compare_models(reference, candidate, samples, batch_size=16)
            out[variant] = min(o.top1_agreement for o in result.outputs if o.top1_agreement is not None)
            candidate.close()
    finally:
        reference.close()
    return out


def digits_accuracy(paths: dict[str, Path]) -> dict[str, float]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    _, x_test, _, y_test = train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)
    acc = {}
    for variant, path in paths.items():
        runner = OrtRunner(path)
        acc[variant] = float((runner.run({"input": x_test})["label"] == y_test).mean())
        runner.close()
    return acc


def table(rows, reference="fp32") -> str:
    base = {r["batch_size"]: r["throughput"] for r in rows if r["variant"] == reference}
    lines = ["| variant | batch | inferences/s | vs fp32 | p50 ms |", "|---|---:|---:|---:|---:|"]
    order = ["fp32", *VARIANTS, "dynamic"]
    for r in sorted(rows, key=lambda r: (r["batch_size"], order.index(r["variant"]))):
        speedup = r["throughput"] / base[r["batch_size"]]
        lines.append(
            f"| {r['variant']} | {r['batch_size']} | {r['throughput']:.1f} | {speedup:.2f}x | {r['p50_ms']:.3f} |"
        )
    return "\n".join(lines)


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "optimize")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported (default 3)")
    parser.add_argument("--models", default="resnet50,digits", help="comma-separated: resnet50, digits")
    parser.add_argument("--variants", default="", help="comma-separated subset of variants (default all)")
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s, for a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 0.5, 1
    only = [v for v in args.variants.split(",") if v]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_before": load_average(),
        },
        "threads": args.threads,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "models": {},
    }
    for name in args.models.split(","):
        started = time.time()
        if name == "resnet50":
            fp32 = args.out / "resnet50.onnx"
            if not fp32.exists():
                resnet50(str(fp32), seed=0)
            specs = OrtRunner(fp32).inputs
            calibration = data_mod.generate(specs, 64, seed=1)
            check = data_mod.generate(specs, 64, seed=2)
            batch_sizes = [1, 8]
        elif name == "digits":
            fp32 = ROOT / "examples" / "models" / "digits-mlp.onnx"
            specs = OrtRunner(fp32).inputs
            calibration = data_mod.generate(specs, 512, seed=1, value_range=(0, 16))
            check = None
            batch_sizes = [1, 32, 256]
        else:
            parser.error(f"unknown model {name}")
        print(f"{name}: quantizing", file=sys.stderr)
        paths = prepare(name, fp32, calibration, args.out, only)
        print(f"{name}: measuring {', '.join(paths)} at batch {batch_sizes}", file=sys.stderr)
        rows = measure(
            paths, batch_sizes, threads=args.threads, duration=args.duration, rounds=args.rounds, feed_seed=3
        )
        entry = {"rows": rows, "sizes_mb": {v: round(p.stat().st_size / 1e6, 2) for v, p in paths.items()}}
        if check is not None:
            entry["top1_agreement_vs_fp32"] = agreement(paths, check, args.threads)
        if name == "digits":
            entry["heldout_accuracy"] = digits_accuracy(paths)
        entry["seconds"] = round(time.time() - started, 1)
        report["models"][name] = entry
        print(f"\n### {name} (threads {args.threads})\n\n{table(rows)}\n")
        for key in ("top1_agreement_vs_fp32", "heldout_accuracy"):
            if key in entry:
                print(f"{key}: " + ", ".join(f"{v} {a:.2%}" for v, a in entry[key].items()))
    report["machine"]["load_after"] = load_average()
    (args.out / f"int8_cpu.t{args.threads}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload average before/after: {report['machine']['load_before']} / {report['machine']['load_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
