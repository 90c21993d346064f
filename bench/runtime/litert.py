"""LiteRT benchmark: a .tflite classifier through our server against LiteRT called in process, at
concurrency 1, interleaved rounds, in one run.

    .venv/bin/python bench/runtime/litert.py                  # about 1 minute
    .venv/bin/python bench/runtime/litert.py --rounds 2 --seconds 1

The model is a classifier of 1024 features, FULLY_CONNECTED + RELU layers 2048, 2048, then 1000
classes and SOFTMAX (random weights, 33 MB), written by tests/fixtures/make_classifier_tflite.py
into bench/out/models. The server runs it on the litert backend (threads from the CPU quota, max
batch 8, greedy batching); the reference is an ``ai_edge_litert`` interpreter with as many threads,
called from one thread. Each figure is the median over rounds, the ratio the median of per-round
ratios. Results go to bench/out/litert.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

import make_classifier_tflite as tflite_builder  # noqa: E402
from engines import cpu_name  # noqa: E402
from modeldeploy_runtime.measure.loadgen import Result, build_request, http_load, inprocess_load  # noqa: E402
from run import median_row, start_server  # noqa: E402

WIDTHS = (1024, 2048, 2048, 1000)
PORT = 18767


def binary_request(x: np.ndarray) -> bytes:
    header = orjson.dumps(
        {
            "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "probs", "parameters": {"binary_data": True}}],
        }
    )  # fmt: skip
    return build_request("127.0.0.1", PORT, "/v2/models/m/infer", header + x.tobytes(),
                         {"Inference-Header-Content-Length": str(len(header))})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from ai_edge_litert.interpreter import Interpreter
    from modeldeploy_runtime.cpu import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=0, help="LiteRT threads on both sides (0: from the CPU quota)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "litert.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped in `finally`
    path = ROOT / "bench" / "out" / "models" / "classifier_mlp.tflite"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(tflite_builder.build(WIDTHS))
    threads = args.threads or default_threads()
    print(f"CPU: {cpu_name()}, {threads} threads; load average at start: {os.getloadavg()}", flush=True)
    x = np.random.default_rng(0).standard_normal((1, WIDTHS[0])).astype(np.float32)
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    index_in = interpreter.get_input_details()[0]["index"]
    index_out = interpreter.get_output_details()[0]["index"]

    def call():
        interpreter.set_tensor(index_in, x)
        interpreter.invoke()
        return interpreter.get_tensor(index_out)

    proc, ready_s = start_server(path, PORT, ["--threads", str(threads)])
    load_before = os.getloadavg()
    runs: dict[str, list[Result]] = {"in-process": [], "server": []}
    try:
        request = binary_request(x)
        for _ in range(args.rounds):
            runs["in-process"].append(inprocess_load("in-process", call, 1, args.seconds))
            runs["server"].append(http_load("binary", "127.0.0.1", PORT, request, 1, args.seconds, warmup=3))
    finally:
        proc.terminate()
        proc.wait(30)
    base, row = median_row(runs["in-process"]), median_row(runs["server"])
    ratio = statistics.median(s.rps / b.rps for s, b in zip(runs["server"], runs["in-process"], strict=True))
    result = {
        "cpu": cpu_name(),
        "threads": threads,
        "model": f"tflite MLP {'-'.join(map(str, WIDTHS))}",
        "start_to_ready_s": round(ready_s, 2),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "in_process": base,
        "server": row,
        "x_in_process": round(ratio, 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| model | conc | LiteRT in process req/s | server req/s (binary) | x in-process | p50 ms (in-process) | "
          "errors | load avg before -> after |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    print(f"| {result['model']} | 1 | {base['rps']:.1f} | {row['rps']:.1f} | {ratio:.2f} | "
          f"{row['p50_ms']:.2f} ({base['p50_ms']:.2f}) | {row['errors']} | {load_before[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
