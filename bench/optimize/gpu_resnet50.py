#!/usr/bin/env python3
"""GPU: ResNet-50 with ONNX Runtime's CUDA provider vs native TensorRT FP16 vs TensorRT INT8.

Needs an NVIDIA GPU with the gpu extra (onnxruntime-gpu, tensorrt>=10, pycuda). Builds the model
(random weights, bench/models.py), the two engines (INT8 calibrated on generated inputs: fine for
speed, which is what this measures), checks each engine against ONNX Runtime on the CPU with
`validate`'s comparison, then measures batch 1 and 32 in-process, interleaved over rounds.

    .venv/bin/python bench/optimize/gpu_resnet50.py            # figures for bench/README.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from modeldeploy_runtime.measure import data as data_mod  # noqa: E402
from modeldeploy_runtime.measure.bench import bench_runner  # noqa: E402
from modeldeploy_runtime.measure.compare import compare_models  # noqa: E402
from modeldeploy_runtime.measure.runner import open_model  # noqa: E402
from modeldeploy_runtime.optimize.trt_build import BuildOptions, build_engine  # noqa: E402
from models import resnet50  # noqa: E402  (bench/models.py)


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "optimize-gpu")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,32")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "resnet50.onnx"
    if not model.exists():
        resnet50(str(model), seed=0)
    cpu = open_model(model, provider="cpu")
    specs = cpu.inputs
    max_batch = max(batch_sizes)
    engines = {}
    for precision in ("fp16", "int8"):
        calibration = data_mod.generate(specs, 256, seed=1) if precision == "int8" else None
        result = build_engine(
            model,
            BuildOptions(precision=precision, max_batch_size=max_batch, opt_batch_size=max_batch),
            output_dir=args.out,
            calibration=calibration,
        )
        print(result.summary(), file=sys.stderr)
        engines[f"tensorrt-{precision}"] = result.engine
    runners = {"ort-cuda": open_model(model, provider="cuda")}
    runners.update({name: open_model(path) for name, path in engines.items()})

    check = data_mod.generate(specs, 64, seed=2)
    agreement = {}
    for name, runner in runners.items():
        comparison = compare_models(cpu, runner, check, batch_size=16)
        agreement[name] = comparison.outputs[0].top1_agreement
    cpu.close()

    samples: dict[tuple[str, int], list] = {}
    for _ in range(args.rounds):
        for batch in batch_sizes:
            for name, runner in runners.items():
                (r,) = bench_runner(runner, [batch], duration=args.duration, warmup=20, seed=3)
                samples.setdefault((name, batch), []).append(r)
    rows = [
        {
            "runtime": name,
            "batch_size": batch,
            "throughput": statistics.median(r.throughput for r in rs),
            "p50_ms": statistics.median(r.p50_ms for r in rs),
            "p99_ms": statistics.median(r.p99_ms for r in rs),
        }
        for (name, batch), rs in samples.items()
    ]
    for runner in runners.values():
        runner.close()
    report = {"gpu": gpu_name(), "rows": rows, "top1_agreement_vs_cpu_fp32": agreement}
    (args.out / "gpu_resnet50.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"GPU: {report['gpu']}\n")
    print("| runtime | batch | images/s | p50 ms | p99 ms | top-1 vs CPU FP32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["batch_size"], r["runtime"])):
        print(
            f"| {r['runtime']} | {r['batch_size']} | {r['throughput']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {agreement[r['runtime']]:.1%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
