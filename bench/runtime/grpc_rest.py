"""gRPC against binary REST on the same server, in the same run: the v2 gRPC API (raw tensors)
and REST with the binary tensor extension, each at concurrency 1, 8 and 32, in interleaved short
rounds (so both see the same neighbour load), with the MLP also called in-process as the floor.

    .venv/bin/python bench/runtime/grpc_rest.py                       # about 3 minutes
    .venv/bin/python bench/runtime/grpc_rest.py --models mlp --rounds 1

Two clients per protocol. The server-to-server comparison uses one C client for both: h2load
(nghttp2's load generator, `apt-get install nghttp2-client`; hack/setup.sh installs it), over
HTTP/1.1 keep-alive connections for REST (one per concurrent request) and over one HTTP/2
connection with that many streams for gRPC (what a gRPC channel does), each re-sending prebuilt
request bytes; and for gRPC also over one connection per concurrent call (many separate clients,
each with one call in flight), the shape REST always has. Beside them, the Python clients users run: for REST
modeldeploy_runtime.measure.loadgen's (one uvloop thread), for gRPC `modeldeploy bench
--protocol grpc`'s (grpcio, every call in flight on one channel). Each figure is the median over
rounds; client CPU is per request. h2load counts HTTP statuses only, so the server's failure
counter for gRPC is read before and after: any failure fails the run. Results go to
bench/out/grpc_rest.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import h2client  # noqa: E402
import models as model_builders  # noqa: E402
from modeldeploy_runtime.measure.bench_grpc import encode_request, grpc_load  # noqa: E402
from modeldeploy_runtime.measure.loadgen import Result, http_load, inprocess_load  # noqa: E402
from run import ROOT, binary_body, median_row, requests_for, start_server  # noqa: E402

SHAPES = {"resnet50": (1, 3, 224, 224), "mlp": (1, 64)}
# seconds per measurement by concurrency: at 32 a ResNet-50 request waits for 31 others (seconds here)
SECONDS = {"resnet50": {1: 2.0, 8: 5.0, 32: 8.0}, "mlp": {1: 1.0, 8: 1.0, 32: 1.0}}
CONCURRENCY = (1, 8, 32)
PORT, GRPC_PORT = 18775, 18776


MANY = "gRPC (h2load, a connection per call)"


def grpc_result(body: bytes, concurrency: int, seconds: float, warmup: int) -> Result:
    latencies, errors, wall, cpu = grpc_load(f"127.0.0.1:{GRPC_PORT}", body, concurrency, seconds, warmup=warmup)
    return Result("grpc", concurrency, latencies, wall, cpu * wall, errors)


def grpc_failures() -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(v)
        for v in re.findall(
            r'^modeldeploy_inference_requests_total\{[^}]*outcome="failure"[^}]*protocol="grpc"[^}]*\} (\S+)',
            text,
            re.M,
        )
    )


def bench_model(name: str, path: Path, rounds: int, seconds: float | None) -> list[dict]:
    x = np.random.default_rng(0).random(SHAPES[name], dtype=np.float32)
    rest = requests_for(x, PORT)["binary"]
    grpc_body = encode_request("m", None, {"input": x}, ["output"])
    raw_rest, header_len = binary_body(x)
    use_h2load = h2client.available()
    session = None
    if name == "mlp":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # loadgen's warm-up requests count against the measured window: none for ResNet-50, whose
    # server is warm from its own warm-up and the round before
    warmup = 0 if name == "resnet50" else 3
    proc, _ = start_server(path, PORT, ["--grpc-port", str(GRPC_PORT)])
    rows = []
    try:
        for conc in CONCURRENCY:
            duration = seconds or SECONDS[name][conc]
            runs: dict[str, list[Result]] = {"binary REST": [], "grpc": []}
            pair = ["REST (h2load)", "gRPC (h2load)"] + ([MANY] if conc > 1 else [])
            if use_h2load:
                runs.update({label: [] for label in pair})
            if session is not None:
                runs["in-process"] = []
            for _ in range(rounds):
                if session is not None:
                    runs["in-process"].append(
                        inprocess_load("in-process", lambda: session.run(None, {"input": x}), conc, duration)
                    )
                runs["binary REST"].append(http_load("binary", "127.0.0.1", PORT, rest, conc, duration, warmup=warmup))
                runs["grpc"].append(grpc_result(grpc_body, conc, duration, warmup))
                if use_h2load:
                    failures = grpc_failures()
                    for label in pair if len(runs["REST (h2load)"]) % 2 == 0 else pair[::-1]:  # alternating
                        if label.startswith("REST"):
                            runs[label].append(h2client.rest(PORT, raw_rest, header_len, conc, duration))
                        else:
                            conns = conc if label == MANY else 1
                            runs[label].append(h2client.grpc(GRPC_PORT, grpc_body, conc, duration, conns, label))
                    if grpc_failures() != failures:
                        raise SystemExit("gRPC calls from h2load failed on the server: see its metrics")
            row = {"model": name, "concurrency": conc}
            for label, results in runs.items():
                row[label] = median_row(results)
            if session is not None:
                base = row["in-process"]["p50_ms"]
                for label in runs:
                    if label != "in-process":
                        row[label]["added_p50_ms"] = round(row[label]["p50_ms"] - base, 3)
            ratios = [g.rps / r.rps for g, r in zip(runs["grpc"], runs["binary REST"], strict=True) if r.rps]
            row["grpc_x_rest"] = round(statistics.median(ratios), 3) if ratios else None
            if use_h2load:
                pairs = zip(runs["gRPC (h2load)"], runs["REST (h2load)"], strict=True)
                ratios = [g.rps / r.rps for g, r in pairs if r.rps]
                row["h2load_grpc_x_rest"] = round(statistics.median(ratios), 3) if ratios else None
                if MANY in runs:
                    pairs = zip(runs[MANY], runs["REST (h2load)"], strict=True)
                    ratios = [g.rps / r.rps for g, r in pairs if r.rps]
                    row["h2load_many_x_rest"] = round(statistics.median(ratios), 3) if ratios else None
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return rows


def table(rows: list[dict], rest_key: str, grpc_key: str, ratio_key: str, client_cpu: bool) -> list[str]:
    """One markdown table of REST against gRPC, a row per model and concurrency."""
    head = ("| model | conc | REST req/s | gRPC req/s | gRPC / REST | REST p50 ms | gRPC p50 ms | REST p99 ms | "
            "gRPC p99 ms | in-process p50 ms | added p50 ms REST / gRPC |")  # fmt: skip
    lines = [
        head + (" client CPU us/req REST / gRPC |" if client_cpu else ""),
        "|---" * (12 if client_cpu else 11) + "|",
    ]
    for r in rows:
        rest, grpc = r[rest_key], r[grpc_key]
        inproc = r.get("in-process")
        added = f"{rest['added_p50_ms']:+.2f} / {grpc['added_p50_ms']:+.2f}" if inproc else "-"
        line = (
            f"| {r['model']} | {r['concurrency']} | {rest['rps']:.1f} | {grpc['rps']:.1f} | "
            f"{r[ratio_key] or float('nan'):.2f} | {rest['p50_ms']:.2f} | {grpc['p50_ms']:.2f} | "
            f"{rest['p99_ms']:.2f} | {grpc['p99_ms']:.2f} | {inproc['p50_ms'] if inproc else '-'} | {added} |"
        )
        if client_cpu:
            line += f" {rest['client_cpu_us_per_req']:.0f} / {grpc['client_cpu_us_per_req']:.0f} |"
        lines.append(line)
    return lines


def markdown(rows: list[dict]) -> str:
    lines = []
    if any("REST (h2load)" in r for r in rows):
        lines += ["Server against server, one C client (h2load) for both:", ""]
        lines += table(rows, "REST (h2load)", "gRPC (h2load)", "h2load_grpc_x_rest", client_cpu=False)
        lines += ["", "The same, gRPC over one connection per concurrent call (as REST):", ""]
        lines += table([r for r in rows if MANY in r], "REST (h2load)", MANY, "h2load_many_x_rest", client_cpu=False)
        lines += ["", "With the Python clients (loadgen for REST, grpcio for gRPC):", ""]
    lines += table(rows, "binary REST", "grpc", "grpc_x_rest", client_cpu=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, help="per measurement (default: per model)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "grpc_rest.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped in `finally`
    print(f"load average at start: {os.getloadavg()}, CPUs: {len(os.sched_getaffinity(0))}", flush=True)
    rows = []
    for name in args.models:
        path = ROOT / "bench" / "out" / "models" / f"{name}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            model_builders.MODELS[name](str(path))
        rows += bench_model(name, path, args.rounds, args.seconds)
    print(f"load average at end: {os.getloadavg()}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
