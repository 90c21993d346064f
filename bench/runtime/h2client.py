"""h2load (nghttp2's C load generator) as a bench client: REST with binary tensors over HTTP/1.1
keep-alive connections, and gRPC over HTTP/2, each re-sending prebuilt request bytes.

A C client with no per-request Python work: on a 2-core machine a Python client's own CPU is taken
from the server it measures, which in-process calls never pay. `hack/setup.sh` installs it
(`apt-get install nghttp2-client`); `available()` says whether it is here.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from modeldeploy_runtime.measure.loadgen import Result


def available() -> bool:
    return shutil.which("h2load") is not None


def h2load(label: str, args: list[str], concurrency: int, seconds: float) -> Result:
    """One h2load run of ``seconds``; latencies from its per-request log."""
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        out = subprocess.run(
            ["h2load", "-D", f"{round(seconds * 1000)}ms", "--log-file", log.name, *args],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = [line.split("\t") for line in log.read().splitlines()]
    latencies = [int(f[2]) / 1e6 for f in lines if f[1] == "200"]
    errors = len(lines) - len(latencies) + int(re.search(r"(\d+) failed", out).group(1))
    measured = float(re.search(r"finished in ([\d.]+)(m?s)", out).group(1))
    if re.search(r"finished in [\d.]+ms", out):
        measured /= 1000
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Result(label, concurrency, latencies, measured or wall, cpu * (measured or wall) / wall, errors)


def rest(port: int, body: bytes, header_len: int, concurrency: int, seconds: float, label: str = "REST (h2load)",
         model: str = "m") -> Result:  # fmt: skip
    """POST /v2/models/MODEL/infer with the binary tensor extension; a connection per concurrent request."""
    path = Path(tempfile.gettempdir()) / f"h2client_rest_{port}.bin"
    path.write_bytes(body)
    args = ["--h1", "-c", str(concurrency), "-m", "1", "-d", str(path), "-H", "content-type: application/octet-stream",
            "-H", f"Inference-Header-Content-Length: {header_len}", f"http://127.0.0.1:{port}/v2/models/{model}/infer"]  # fmt: skip
    return h2load(label, args, concurrency, seconds)


def grpc(
    port: int, message: bytes, concurrency: int, seconds: float, conns: int = 1, label: str = "gRPC (h2load)"
) -> Result:
    """ModelInfer with ``concurrency`` calls in flight over ``conns`` connections."""
    path = Path(tempfile.gettempdir()) / f"h2client_grpc_{port}.bin"
    path.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    args = ["-c", str(conns), "-m", str(concurrency // conns), "-d", str(path), "-H", "content-type: application/grpc",
            "-H", "te: trailers", f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"]  # fmt: skip
    return h2load(label, args, concurrency, seconds)
