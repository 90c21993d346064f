"""What a hostile client costs the server: resident memory and the worst /v2/health/live stall.

    .venv/bin/python bench/runtime/attack.py                       # this checkout, about 1 minute
    .venv/bin/python bench/runtime/attack.py --pythonpath /tmp/old/runtime   # another tree's runtime

Each attack gets a fresh ``modeldeploy-runtime serve`` of the MLP (``bench/models.py``) on
127.0.0.1 with the default 64 MiB body limit. While it runs, a prober sends ``GET
/v2/health/live`` on its own keep-alive connection every 10 ms and keeps the slowest answer, and a
sampler reads the server's VmRSS every 5 ms. Reported: RSS before, the peak, and after the attack
once its connections are closed (after a settling request), the worst probe, and how the attack's
own requests were answered. Everything is bounded: a fixed number of connections and bytes, and
a deadline on every socket. Only the loopback address is ever used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

import models as model_builders  # noqa: E402

HOST = "127.0.0.1"  # never anything else
PORT = 18790
TOKEN = "bench-token"
MB = 1 << 20
DEADLINE_S = 60.0


def start(model: Path, pythonpath: str | None, auth: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, "-m", "modeldeploy_runtime.cli", "serve", "--model", str(model), "--name", "m",
           "--port", str(PORT), "--host", HOST, "--termination-log", "/dev/null", "--log-level", "error",
           "--cache-dir", str(ROOT / "bench" / "out" / "cache"), *(["--auth-token", TOKEN] if auth else [])]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://{HOST}:{PORT}/v2/health/ready", timeout=2) as resp,
        ):
            if resp.status == 200:
                return proc
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("server not ready in time")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Watch:
    """Samples the server's RSS and probes liveness until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self.worst_probe_s = 0.0
        self.probes = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample), threading.Thread(target=self._probe)]

    def __enter__(self) -> Watch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(DEADLINE_S)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss(self.pid))

    def _probe(self) -> None:
        request = f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        with socket.create_connection((HOST, PORT), timeout=DEADLINE_S) as s:
            while not self._stop.wait(0.01):
                t0 = time.perf_counter()
                s.sendall(request)
                got = b""
                while not got.endswith(b'{"live":true}'):
                    chunk = s.recv(4096)
                    if not chunk:
                        return
                    got += chunk
                self.worst_probe_s = max(self.worst_probe_s, time.perf_counter() - t0)
                self.probes += 1


def head(content_length: int | None, auth: str = "", chunked: bool = False) -> bytes:
    length = f"Content-Length: {content_length}\r\n" if content_length is not None else ""
    te = "Transfer-Encoding: chunked\r\n" if chunked else ""
    return f"POST /v2/models/m/infer HTTP/1.1\r\nHost: {HOST}\r\n{auth}{length}{te}\r\n".encode()


def status_of(s: socket.socket) -> str:
    """The status line the server answered on ``s``, or what happened instead."""
    got = b""
    try:
        while b"\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                return "closed" if not got else got.decode(errors="replace")
            got += chunk
    except TimeoutError:
        return "no answer"
    except ConnectionResetError:
        return "reset"
    return got.split(b"\r\n", 1)[0].split(b" ", 2)[1].decode()


def declared_sequential() -> list[str]:
    """20 connections, one at a time: headers declaring 67,000,000 bytes, one byte, close."""
    for _ in range(20):
        with socket.create_connection((HOST, PORT), timeout=2) as s:
            s.sendall(head(67_000_000) + b"{")
            time.sleep(0.05)  # the server reads it before the close
    return ["closed by the client"] * 20


def declared_concurrent() -> list[str]:
    """8 connections held open together, each declaring 60 MB and sending one byte; auth on,
    no token sent."""
    conns = []
    for _ in range(8):
        s = socket.create_connection((HOST, PORT), timeout=2)
        s.sendall(head(60 * MB) + b"{")
        conns.append(s)
    time.sleep(0.5)
    answers = [status_of(s) for s in conns]
    for s in conns:
        s.close()
    return answers


def chunk_flood() -> list[str]:
    """A 3.8 MB body sent as 2-byte chunks (1.9 million chunks)."""
    with socket.create_connection((HOST, PORT), timeout=10) as s:
        s.sendall(head(None, chunked=True))
        piece = b"2\r\n  \r\n" * 16384
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(116):  # 116 x 16,384 chunks of 2 bytes = 3.8 MB
                s.sendall(piece)
            s.sendall(b"0\r\n\r\n")
        return [status_of(s)]


def big_json(element: bytes, count: int) -> bytes:
    return (b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,%d],"data":[' % count
            + b",".join([element] * count) + b"]}]}")  # fmt: skip


def json_request(body: bytes):
    """An attack sending ``body``, built beforehand: building it holds this process's GIL, which
    would stall the prober instead of the server."""
    request = head(len(body)) + body

    def attack() -> list[str]:
        with socket.create_connection((HOST, PORT), timeout=DEADLINE_S) as s:
            s.sendall(request)
            return [status_of(s)]

    return attack


def json_strings():
    """57 MB of JSON whose FP32 data is strings."""
    return json_request(big_json(b'"0.5"', 57 * MB // 6))


def json_numbers():
    """57 MB of JSON numbers, in a shape the model does not take."""
    return json_request(big_json(b"0.123456", 57 * MB // 9))


def json_escaped(megabytes: int):
    """JSON strings with escapes, which only a whole-document parse reads: up to 16 MiB it is
    parsed (and refused for FP32), past it refused unparsed."""

    def build():
        return json_request(big_json(b'"a\\"b"', megabytes * MB // 7))

    return build


# name -> (what builds the attack, auth on)
ATTACKS = {
    "declared-sequential": (lambda: declared_sequential, False),
    "declared-concurrent-auth": (lambda: declared_concurrent, True),
    "chunk-flood": (lambda: chunk_flood, False),
    "json-strings-57mb": (json_strings, False),
    "json-numbers-57mb": (json_numbers, False),
    "json-escaped-15mb": (json_escaped(15), False),
    "json-escaped-57mb": (json_escaped(57), False),
}


def run(name: str, model: Path, pythonpath: str | None) -> dict:
    build, auth = ATTACKS[name]
    attack = build()
    proc = start(model, pythonpath, auth)
    try:
        before = rss(proc.pid)
        t0 = time.perf_counter()
        with Watch(proc.pid) as watch:
            answers = attack()
            seconds = time.perf_counter() - t0
            time.sleep(0.3)  # the prober and sampler see the server settle
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://{HOST}:{PORT}/v2/health/live", timeout=10).read()
        time.sleep(0.2)
        after = rss(proc.pid)
        counts: dict[str, int] = {}
        for a in answers:
            counts[a] = counts.get(a, 0) + 1
        return {
            "attack": name,
            "answers": ", ".join(f"{n}x {a}" for a, n in sorted(counts.items())),
            "seconds": round(seconds, 2),
            "rss_before_mb": round(before / MB, 1),
            "rss_peak_mb": round(watch.peak / MB, 1),
            "rss_after_mb": round(after / MB, 1),
            "worst_live_ms": round(watch.worst_probe_s * 1000, 1),
            "probes": watch.probes,
        }
    finally:
        proc.kill()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=list(ATTACKS))
    parser.add_argument("--pythonpath", help="serve the runtime found here (e.g. another tree's runtime/)")
    args = parser.parse_args(argv)
    out = ROOT / "bench" / "out"
    model = out / "models" / "mlp.onnx"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        model_builders.mlp(str(model))
    results = [run(name, model, args.pythonpath) for name in args.attacks]
    (out / "attack.json").write_text(json.dumps(results, indent=2))
    print("| attack | answers | s | RSS before MB | peak MB | after MB | worst live ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['attack']} | {r['answers']} | {r['seconds']} | {r['rss_before_mb']} | {r['rss_peak_mb']} | "
              f"{r['rss_after_mb']} | {r['worst_live_ms']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
