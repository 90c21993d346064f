"""INT8 models on the CPU: ONNX Runtime against OpenVINO on the same quantized (QDQ) file, in
process, batch 1, interleaved rounds, in one run.

    .venv/bin/modeldeploy optimize quantize bench/out/models/resnet50.onnx --calibration-samples 32 \\
        -o bench/out/models/resnet50.int8.onnx          # and the same for mobilenet_v2
    .venv/bin/python bench/runtime/int8_engines.py

Both engines run the file the way the server's backends run it: ONNX Runtime with as many
intra-op threads as the CPU quota gives (spinning on: these models take milliseconds), OpenVINO
with the f32 inference precision hint (which the quantized operators override; it is what
`precision: int8` sets) and the latency hint. Each figure is the median over rounds. Also the
top-1 agreement of the two engines' outputs on 64 random inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from engines import cpu_name  # noqa: E402
from modeldeploy_runtime.backends.onnx import session_options  # noqa: E402
from modeldeploy_runtime.cpu import default_threads  # noqa: E402

SHAPE = (1, 3, 224, 224)


def rate(call, x: np.ndarray, seconds: float) -> float:
    for _ in range(3):
        call(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call(x)
        n += 1
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    threads = default_threads()
    print(f"CPU: {cpu_name()}, {threads} threads; load average at start: {os.getloadavg()}", flush=True)
    core = ov.Core()
    rows = []
    for name in args.models:
        path = ROOT / "bench" / "out" / "models" / f"{name}.int8.onnx"
        session = ort.InferenceSession(
            str(path), session_options(threads, spinning=True), providers=["CPUExecutionProvider"]
        )
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": threads})  # fmt: skip
        request = compiled.create_infer_request()

        def run_ort(x, session=session):
            return session.run(None, {"input": x})[0]

        def run_ov(x, request=request):
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()

        rng = np.random.default_rng(0)
        xs = [rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(64)]
        agree = sum(int(run_ort(x).argmax() == run_ov(x).argmax()) for x in xs)
        runs = {"onnxruntime": [], "openvino": []}
        for _ in range(args.rounds):
            runs["onnxruntime"].append(rate(run_ort, xs[0], args.seconds))
            runs["openvino"].append(rate(run_ov, xs[0], args.seconds))
        ratio = statistics.median(o / r for o, r in zip(runs["openvino"], runs["onnxruntime"], strict=True))
        row = {"model": f"{name}.int8", **{k: round(statistics.median(v), 1) for k, v in runs.items()},
               "openvino_x_onnxruntime": round(ratio, 3), "top1_agree_of_64": agree,
               "load_after": round(os.getloadavg()[0], 2)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = ROOT / "bench" / "out" / "int8_engines.json"
    out.write_text(json.dumps(rows, indent=2))
    print("| model | ONNX Runtime images/s | OpenVINO images/s | OpenVINO x ORT | top-1 agreement | load after |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['onnxruntime']} | {r['openvino']} | {r['openvino_x_onnxruntime']:.2f} | "
              f"{r['top1_agree_of_64']} of 64 | {r['load_after']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
