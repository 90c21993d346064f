"""LiteRT benchmark: .tflite classifiers through our server against LiteRT called in process, at
concurrency 1, interleaved rounds, in one run.

    .venv/bin/python bench/runtime/litert.py                  # about 2 minutes
    .venv/bin/python bench/runtime/litert.py --models mlp --rounds 2 --seconds 1

Two models, written by tests/fixtures/make_classifier_tflite.py into bench/out/models (random
weights): ``mobilenet_v2``, a MobileNetV2 image classifier (NHWC ``[1, 224, 224, 3]``, 1000
classes, 14 MB: the shape most .tflite classifiers have), and ``mlp``, 1024 features,
FULLY_CONNECTED + RELU layers 2048, 2048, then 1000 classes and SOFTMAX (33 MB; a fraction of a
millisecond, so the HTTP round trip is most of what it measures). The server runs each on the litert
backend (threads from the CPU quota, max batch 8, greedy batching); the reference is an
``ai_edge_litert`` interpreter with as many threads, called from one thread. The server is driven by
h2load (a C client, bench/runtime/h2client.py) where it is installed, by loadgen's Python
client, and by a blocking socket (run.py's ServerClients), in alternating order, all with binary
tensors. Each round also times the transport floor (floor.py: a bare socket loop in another process
that reads the same request and answers at once), which bounds what any server can reach of the
in-process figure. Each figure is the median over rounds, the
ratio the median of per-round ratios. Results go to bench/out/litert.json and a markdown table on
stdout.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

import make_classifier_tflite as tflite_builder  # noqa: E402
from engines import cpu_name  # noqa: E402
from floor import TransportFloor, bound  # noqa: E402
from modeldeploy_runtime.measure.loadgen import Result, inprocess_load  # noqa: E402
from run import ServerClients, median_row, start_server  # noqa: E402

WIDTHS = (1024, 2048, 2048, 1000)
MODELS = {
    "mobilenet_v2": ("tflite MobileNetV2 224x224", (1, 224, 224, 3), tflite_builder.mobilenet_v2),
    "mlp": (f"tflite MLP {'-'.join(map(str, WIDTHS))}", (1, WIDTHS[0]), lambda: tflite_builder.build(WIDTHS)),
}
FILES = {"mobilenet_v2": "classifier_mobilenet_v2.tflite", "mlp": "classifier_mlp.tflite"}
PORT = 18767


def ratio(a: list[Result], b: list[Result]) -> float:
    return round(statistics.median(x.rps / y.rps for x, y in zip(a, b, strict=True)), 3)


def bench_model(name: str, threads: int, rounds: int, seconds: float) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    label, shape, build = MODELS[name]
    path = ROOT / "bench" / "out" / "models" / FILES[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(build())
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
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
    clients = ServerClients(PORT, x, "probs", 1)
    runs: dict[str, list[Result]] = {"in-process": [], "floor": [], **{c: [] for c in clients.names}}
    try:
        with TransportFloor(clients.request) as floor:
            for i in range(rounds):
                runs["in-process"].append(inprocess_load("in-process", call, 1, seconds))
                runs["floor"].append(floor.measure(seconds))
                for client, result in clients.round(i, seconds).items():
                    runs[client].append(result)
    finally:
        proc.terminate()
        proc.wait(30)
    result = {
        "model": label,
        "threads": threads,
        "start_to_ready_s": round(ready_s, 2),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        **{key: median_row(value) for key, value in runs.items()},
        "clients": clients.names,
        "floor_bound_x_in_process": bound(runs["in-process"], runs["floor"]),
        **{f"{c}_x_in_process": ratio(runs[c], runs["in-process"]) for c in clients.names},
    }
    print(json.dumps(result), flush=True)
    return result


def markdown(results: list[dict]) -> str:
    lines = [
        "| model | threads | LiteRT in process req/s | server req/s by client (x in process) | "
        "p50 ms in process / by client | transport floor p50 ms (bound) | errors | load avg before -> after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base, clients = r["in-process"], r["clients"]
        rps = " / ".join(f"{c} {r[c]['rps']:.1f} (**{r[f'{c}_x_in_process']:.2f}**)" for c in clients)
        p50 = " / ".join(f"{r[c]['p50_ms']:.2f}" for c in clients)
        lines.append(
            f"| {r['model']} | {r['threads']} | {base['rps']:.1f} | {rps} | {base['p50_ms']:.2f} / {p50} | "
            f"{r['floor']['p50_ms']:.2f} ({r['floor_bound_x_in_process']:.2f}) | "
            f"{sum(r[c]['errors'] for c in clients)} | {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from modeldeploy_runtime.cpu import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=0, help="LiteRT threads on both sides (0: from the CPU quota)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "litert.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped in `finally`
    threads = args.threads or default_threads()
    print(f"CPU: {cpu_name()}, {threads} threads; load average at start: {os.getloadavg()}", flush=True)
    results = [bench_model(name, threads, args.rounds, args.seconds) for name in args.models]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "results": results}, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
