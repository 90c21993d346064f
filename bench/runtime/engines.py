"""Engines benchmark: OpenVINO bf16 through our server against ONNX Runtime FP32 and OpenVINO bf16
in process, OpenVINO FP32 against ONNX Runtime FP32, and the accuracy bf16 costs, in one run.

    .venv/bin/python bench/runtime/engines.py                       # about 6 minutes on 2 cores
    .venv/bin/python bench/runtime/engines.py --models mobilenet_v2 --rounds 1 --seconds 1

For each model (random weights from bench/models.py, batch 1, FP32 [1, 3, 224, 224]) it starts
``modeldeploy-runtime serve --backend openvino --precision bf16`` (threads from the CPU quota,
max batch 8, greedy batching), then runs in turn, for several short rounds, at each concurrency:
ONNX Runtime FP32 in process (a default session, ``concurrency`` threads calling ``run``), OpenVINO
bf16 in process (the ONNX file compiled with the latency hint, one infer request per thread), the
server with binary tensors (driven by each client of run.py's ServerClients: loadgen's asyncio
client, h2load where installed, and at concurrency 1 a blocking socket); and at concurrency 1,
OpenVINO FP32 in process. Each figure is the
median over rounds, each ratio the median of per-round ratios, so neighbours' load hits both
sides of a ratio alike. Accuracy: bf16 (the server's engine, in process) against ONNX Runtime FP32
and against OpenVINO FP32 on 256 random inputs: top-1 agreement and the largest relative error
(elementwise where |reference| >= 0.1 % of its maximum, as `modeldeploy validate` reports it; and
max |difference| / max |reference| per input). Last, a server started with ``--backend auto
--precision fp32``, and the choice its model metadata shows, beside the in-process FP32 ratio of
the two engines measured in the same run. Results go to bench/out/engines.json and markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models as model_builders  # noqa: E402
from modeldeploy_runtime.measure.compare import OutputDiff  # noqa: E402
from modeldeploy_runtime.measure.loadgen import Result, inprocess_load  # noqa: E402
from run import ServerClients, median_row, start_server  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2")
CONCURRENCY = (1, 8)
SECONDS = {"resnet50": 2.5, "mobilenet_v2": 1.5}
PORT = 18766
SHAPE = (1, 3, 224, 224)


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


class OpenVinoCall:
    """The ONNX file on OpenVINO's CPU plugin, as a user would call it: one compiled model, an infer
    request per calling thread."""

    def __init__(self, core, path: Path, precision: str):
        self.compiled = core.compile_model(
            str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        )
        self.read_back = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._local = threading.local()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()


def accuracy(ort_session, ov_bf16: OpenVinoCall, ov_fp32: OpenVinoCall, samples: int) -> dict:
    rng = np.random.default_rng(7)
    vs_ort, vs_ov = OutputDiff("output"), OutputDiff("output")
    ratio_ort = 0.0
    for _ in range(samples):
        x = rng.standard_normal(SHAPE, dtype=np.float32)
        ref = ort_session.run(None, {"input": x})[0]
        got = ov_bf16(x)
        vs_ort.add(ref, got)
        vs_ov.add(ov_fp32(x), got)
        ratio_ort = max(ratio_ort, float(np.abs(got - ref).max() / np.abs(ref).max()))
    return {
        "samples": samples,
        "top1_vs_ort_fp32": vs_ort.top1_agreement,
        "max_rel_error_vs_ort_fp32": round(vs_ort.max_rel_error, 5),
        "max_diff_over_max_ref_vs_ort_fp32": round(ratio_ort, 5),
        "top1_vs_openvino_fp32": vs_ov.top1_agreement,
        "max_rel_error_vs_openvino_fp32": round(vs_ov.max_rel_error, 5),
    }


def ratio(a: list[Result], b: list[Result]) -> float:
    return round(statistics.median(x.rps / y.rps for x, y in zip(a, b, strict=True)), 3)


def bench_model(name: str, path: Path, rounds: int, seconds: float | None, samples: int) -> dict:
    duration = seconds or SECONDS[name]
    x = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    core = ov.Core()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ov_bf16, ov_fp32 = OpenVinoCall(core, path, "bf16"), OpenVinoCall(core, path, "f32")
    proc, ready_s = start_server(path, PORT, ["--backend", "openvino", "--precision", "bf16"])
    load_before = os.getloadavg()
    try:
        scenarios = []
        for conc in CONCURRENCY:
            clients = ServerClients(PORT, x, "output", conc)
            servers = [f"server_{c}" for c in clients.names]
            runs: dict[str, list[Result]] = {"ort_fp32": [], "ov_bf16": [], "ov_fp32": [], **{c: [] for c in servers}}
            for i in range(rounds):
                runs["ort_fp32"].append(inprocess_load("ort", lambda: session.run(None, {"input": x}), conc, duration))
                runs["ov_bf16"].append(inprocess_load("ov-bf16", lambda: ov_bf16(x), conc, duration))
                for client, result in clients.round(i, duration).items():
                    runs[f"server_{client}"].append(result)
                if conc == 1:
                    runs["ov_fp32"].append(inprocess_load("ov-fp32", lambda: ov_fp32(x), conc, duration))
            row = {k: median_row(v) for k, v in runs.items() if v}
            sc = {
                "concurrency": conc,
                "clients": clients.names,
                "rps": {k: r["rps"] for k, r in row.items()},
                "p50_ms": {k: r["p50_ms"] for k, r in row.items()},
                "errors": sum(row[c]["errors"] for c in servers),
                "ov_bf16_x_ort_fp32": ratio(runs["ov_bf16"], runs["ort_fp32"]),
            }
            for c in servers:
                sc[f"{c}_x_ort_fp32"] = ratio(runs[c], runs["ort_fp32"])
                sc[f"{c}_x_ov_bf16"] = ratio(runs[c], runs["ov_bf16"])
            if runs["ov_fp32"]:
                sc["ov_fp32_x_ort_fp32"] = ratio(runs["ov_fp32"], runs["ort_fp32"])
            scenarios.append(sc)
            print(f"{name} c={conc}: {json.dumps(sc)}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    acc = accuracy(session, ov_bf16, ov_fp32, samples)
    auto = auto_choice(path)
    print(f"{name} backend auto: {json.dumps(auto)}", flush=True)
    print(f"{name} accuracy: {json.dumps(acc)}", flush=True)
    return {
        "model": name,
        "start_to_ready_s": round(ready_s, 2),
        "precision_read_back": {"bf16": ov_bf16.read_back, "f32": ov_fp32.read_back},
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "scenarios": scenarios,
        "accuracy": acc,
        "auto": auto,
    }


def auto_choice(path: Path) -> dict:
    """What ``--backend auto --precision fp32`` chose for this model, from its model metadata."""
    proc, _ = start_server(path, PORT, ["--backend", "auto", "--precision", "fp32"])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/models/m", timeout=10) as resp:
            params = json.loads(resp.read())["parameters"]
    finally:
        proc.terminate()
        proc.wait(30)
    return {key: params.get(key) for key in ("auto_choice", "auto_p50_ms", "auto_max_rel_diff", "providers")}


def markdown(results: list[dict]) -> str:
    lines = [
        "| model | conc | ORT FP32 in process | OpenVINO bf16 in process | server OpenVINO bf16 (binary), by client | "
        "server x ORT FP32 | server x OpenVINO bf16 | OpenVINO FP32 in process (x ORT FP32) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for sc in res["scenarios"]:
            r = sc["rps"]
            fp32 = f"{r['ov_fp32']:.1f} ({sc['ov_fp32_x_ort_fp32']:.2f}x)" if "ov_fp32" in r else "-"
            cells = [
                " / ".join(f"{c} {r[f'server_{c}']:.1f}" for c in sc["clients"]),
                *(" / ".join(f"{sc[f'server_{c}_x_{k}']:.2f}" for c in sc["clients"]) for k in ("ort_fp32", "ov_bf16")),
            ]
            lines.append(
                f"| {res['model']} | {sc['concurrency']} | {r['ort_fp32']:.1f} | {r['ov_bf16']:.1f} | "
                f"{' | '.join(cells)} | {fp32} |"
            )
    lines += ["", "| model | OpenVINO FP32 x ORT FP32 in process, conc 1 | `backend: auto` (FP32) chose | its warm-up p50 ms | "
              "its max rel diff |", "|---|---|---|---|---|"]  # fmt: skip
    for res in results:
        auto, fp32 = res["auto"], next(sc for sc in res["scenarios"] if sc["concurrency"] == 1)
        lines.append(
            f"| {res['model']} | {fp32['ov_fp32_x_ort_fp32']:.2f} | {auto['auto_choice']} | {auto['auto_p50_ms']} | "
            f"{auto['auto_max_rel_diff']} |"
        )
    lines += ["", "| model | top-1 bf16 vs ORT FP32 | max rel error | max diff / max ref | top-1 vs OpenVINO FP32 | "
              "load avg before -> after |", "|---|---|---|---|---|---|"]  # fmt: skip
    for res in results:
        a = res["accuracy"]
        lines.append(
            f"| {res['model']} | {a['top1_vs_ort_fp32']:.2%} of {a['samples']} | {a['max_rel_error_vs_ort_fp32']:.2%} | "
            f"{a['max_diff_over_max_ref_vs_ort_fp32']:.2%} | {a['top1_vs_openvino_fp32']:.2%} | "
            f"{res['load_before'][0]} -> {res['load_after'][0]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, help="per measurement (default: per model)")
    parser.add_argument("--samples", type=int, default=256, help="inputs of the accuracy check")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "engines.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped in `finally`
    model_dir = ROOT / "bench" / "out" / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} CPUs; load average at start: {os.getloadavg()}; "
        f"onnxruntime {ort.__version__}, openvino {ov.get_version().split('-')[0]}",
        flush=True,
    )
    results = []
    for name in args.models:
        path = model_dir / f"{name}.onnx"
        if not path.exists():
            model_builders.MODELS[name](str(path))
        results.append(bench_model(name, path, args.rounds, args.seconds, args.samples))
    meta = {"cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)), "onnxruntime": ort.__version__,
            "openvino": ov.get_version().split("-")[0]}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": meta, "results": results}, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
