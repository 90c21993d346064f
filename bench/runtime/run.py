"""Runtime benchmark: our server over loopback against ONNX Runtime called in-process, in the same run.

    .venv/bin/python bench/runtime/run.py                 # everything (about 5 minutes)
    .venv/bin/python bench/runtime/run.py --models mlp --rounds 1 --seconds 2

For each model it starts ``modeldeploy-runtime serve`` (default settings: threads from the CPU
quota, max batch 8, greedy batching), records time from start to ready and peak RSS, then for each
concurrency runs, in turn and for several short rounds: the model in-process (``concurrency`` threads
calling ``session.run`` on a default ONNX Runtime session: the physical limit), the server with
binary tensors, the server with JSON tensors. Rounds are short so that each server figure is taken
next to its in-process reference under the same neighbour load; each figure is the median over
rounds (ratios are medians of per-round ratios). Results go to bench/out/runtime.json and a
markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import h2client  # noqa: E402
import models as model_builders  # noqa: E402
from modeldeploy_runtime.measure.loadgen import (  # noqa: E402
    Result,
    build_request,
    http_load,
    http_load_blocking,
    inprocess_load,
)

# model -> (input shape of one request, concurrencies, encodings at each concurrency)
PLAN = {
    "resnet50": ((1, 3, 224, 224), {1: ("binary", "json"), 8: ("binary",)}),
    "mobilenet_v2": ((1, 3, 224, 224), {c: ("binary", "json") for c in (1, 8, 32)}),
    "mlp": ((1, 64), {c: ("binary", "json") for c in (1, 8, 32)}),
}
SECONDS = {"resnet50": 2.5, "mobilenet_v2": 1.5, "mlp": 1.0}
PORT = 18765


def binary_body(x: np.ndarray, output: str = "output", name: str = "input") -> tuple[bytes, int]:
    """A v2 infer request body with the binary tensor extension, and its JSON header's length."""
    header = orjson.dumps(
        {
            "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": output, "parameters": {"binary_data": True}}],
        }
    )  # fmt: skip
    return header + x.tobytes(), len(header)


class ServerClients:
    """The clients that drive a server with one binary-tensor request in a benchmark's rounds:
    loadgen's asyncio client (``python``), h2load where it is installed (``h2load``, a C client), and
    at concurrency 1 a blocking socket (``blocking``: no event loop, the least work a Python client
    can do per request, so the figure is closest to the server's own). Their order is reversed every
    other round, so that none always runs right after the in-process reference."""

    def __init__(self, port: int, x: np.ndarray, output: str, concurrency: int) -> None:
        self.port, self.concurrency = port, concurrency
        self.body, self.header_len = binary_body(x, output)
        self.request = binary_request(port, self.body, self.header_len)
        self.names = (
            ["python"] + (["h2load"] if h2client.available() else []) + (["blocking"] if concurrency == 1 else [])
        )

    def round(self, i: int, duration: float) -> dict[str, Result]:
        out = {}
        for name in self.names if i % 2 == 0 else self.names[::-1]:
            if name == "h2load":
                out[name] = h2client.rest(
                    self.port, self.body, self.header_len, self.concurrency, duration, "binary (h2load)"
                )
            elif name == "blocking":
                out[name] = http_load_blocking(
                    "binary (blocking)", "127.0.0.1", self.port, self.request, duration, warmup=3
                )
            else:
                out[name] = http_load(
                    "binary", "127.0.0.1", self.port, self.request, self.concurrency, duration, warmup=3
                )
        return out


def binary_request(port: int, body: bytes, header_len: int) -> bytes:
    """The whole HTTP request for a binary_body."""
    return build_request("127.0.0.1", port, "/v2/models/m/infer", body,
                         {"Inference-Header-Content-Length": str(header_len)})  # fmt: skip


def requests_for(x: np.ndarray, port: int) -> dict[str, bytes]:
    binary = binary_request(port, *binary_body(x))
    # JSON numbers as the shortest text that round-trips a float32 (what orjson and numpy-aware
    # encoders write); Python's json writes 17 digits per float and doubles the body.
    body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel()}]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    return {"binary": binary, "json": build_request("127.0.0.1", port, "/v2/models/m/infer", body)}


def start_server(model_path: Path, port: int, extra: list[str] = ()) -> tuple[subprocess.Popen, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_")}
    cmd = [sys.executable, "-m", "modeldeploy_runtime.cli", "serve", "--model", str(model_path), "--name", "m",
           "--port", str(port), "--host", "127.0.0.1", "--termination-log", "/dev/null",
           "--cache-dir", str(ROOT / "bench" / "out" / "cache"), "--log-level", "warning", *extra]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return proc, time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.01)
    proc.kill()
    raise SystemExit("server not ready within 120 s")


def server_providers(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/m", timeout=5) as resp:
        parameters = json.loads(resp.read())["parameters"]
    return [p.strip() for p in parameters["providers"].split(",")]


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def median_row(results: list[Result]) -> dict:
    rows = [r.row() for r in results]
    out = dict(rows[0])
    for key in ("rps", "p50_ms", "p99_ms", "client_cpu_pct", "client_cpu_us_per_req"):
        out[key] = round(statistics.median(r[key] for r in rows), 3)
    out["requests"] = sum(r["requests"] for r in rows)
    out["errors"] = sum(r["errors"] for r in rows)
    out["rounds_rps"] = [r["rps"] for r in rows]
    return out


def bench_model(
    name: str,
    path: Path,
    rounds: int,
    seconds: float | None,
    server_args: list[str] = (),
    concurrency: list[int] | None = None,
) -> dict:
    shape, plan = PLAN[name]
    duration = seconds or SECONDS[name]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    proc, ready_s = start_server(path, PORT, server_args)
    load_before = os.getloadavg()
    try:
        # The reference runs on the providers the server really uses (the CPU here; CUDA where a GPU
        # and onnxruntime-gpu are), each with its default options.
        providers = server_providers(PORT)
        session = ort.InferenceSession(str(path), providers=providers)
        reqs = requests_for(x, PORT)
        scenarios = []
        for conc, encodings in plan.items():
            if concurrency and conc not in concurrency:
                continue
            runs: dict[str, list[Result]] = {"in-process": [], **{e: [] for e in encodings}}
            for _ in range(rounds):
                runs["in-process"].append(
                    inprocess_load("in-process", lambda: session.run(None, {"input": x}), conc, duration)
                )
                for enc in encodings:
                    runs[enc].append(http_load(enc, "127.0.0.1", PORT, reqs[enc], conc, duration, warmup=3))
            base = median_row(runs["in-process"])
            for enc in encodings:
                row = median_row(runs[enc])
                ratios = [s.rps / b.rps for s, b in zip(runs[enc], runs["in-process"], strict=True)]
                row["x_in_process"] = round(statistics.median(ratios), 3)
                row["added_p50_ms"] = round(row["p50_ms"] - base["p50_ms"], 3)
                scenarios.append({"concurrency": conc, "encoding": enc, "server": row, "in_process": base})
                print(f"{name} c={conc} {enc}: {row['rps']} req/s ({row['x_in_process']}x in-process "
                      f"{base['rps']}), p50 {row['p50_ms']} ms (+{row['added_p50_ms']}), p99 {row['p99_ms']} ms, "
                      f"client CPU {row['client_cpu_us_per_req']} us/req", flush=True)  # fmt: skip
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "model": name,
        "providers": providers,
        "start_to_ready_s": round(ready_s, 2),
        "peak_rss_mb": round(rss, 1),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "scenarios": scenarios,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| model | conc | encoding | in-process req/s | server req/s | x in-process | p50 ms (in-process) | "
        "added p50 ms | p99 ms | client CPU us/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for sc in res["scenarios"]:
            s, b = sc["server"], sc["in_process"]
            lines.append(
                f"| {res['model']} | {sc['concurrency']} | {sc['encoding']} | {b['rps']:.1f} | {s['rps']:.1f} | "
                f"{s['x_in_process']:.2f} | {s['p50_ms']:.2f} ({b['p50_ms']:.2f}) | {s['added_p50_ms']:+.2f} | "
                f"{s['p99_ms']:.2f} | {s['client_cpu_us_per_req']:.0f} |"
            )
    lines += ["", "| model | providers | start to ready s | peak RSS MiB | load avg before -> after |",
              "|---|---|---|---|---|"]  # fmt: skip
    for res in results:
        lines.append(f"| {res['model']} | {', '.join(res['providers'])} | {res['start_to_ready_s']} | "
                     f"{res['peak_rss_mb']} | {res['load_before'][0]} -> {res['load_after'][0]} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(PLAN), default=list(PLAN))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, help="per measurement (default: per model)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="only these concurrencies")
    parser.add_argument("--server-args", default="", help="extra flags for the server, e.g. '--threads 1'")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "runtime.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped in `finally`
    model_dir = ROOT / "bench" / "out" / "models"
    results = []
    print(f"load average at start: {os.getloadavg()}, CPUs: {len(os.sched_getaffinity(0))}", flush=True)
    for name in args.models:
        path = model_dir / f"{name}.onnx"
        if not path.exists():
            model_builders.MODELS[name](str(path))
        results.append(bench_model(name, path, args.rounds, args.seconds, args.server_args.split(), args.concurrency))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
