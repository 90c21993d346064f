"""The closed-loop HTTP load generator of `modeldeploy bench` and of `bench/`, built to cost as
little CPU as possible.

On a 2-core machine the client shares the CPU with the server it measures, so a heavy client
(tritonclient, requests, aiohttp) would understate the server. This one sends a prebuilt request
over keep-alive connections from one uvloop thread, parses only the status line and
Content-Length, and reports its own CPU time next to the figures.
"""

from __future__ import annotations

import asyncio
import resource
import ssl as ssl_module
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    name: str
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    errors: int = 0
    first_sent: float = float("inf")  # the measured window: first measured send to last response
    last_done: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0

    def pct_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    @property
    def client_cpu_us_per_req(self) -> float:
        return self.client_cpu_s / max(1, len(self.latencies_s)) * 1e6

    def row(self) -> dict:
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "requests": len(self.latencies_s),
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct_ms(50), 3),
            "p99_ms": round(self.pct_ms(99), 3),
            "client_cpu_pct": round(100 * self.client_cpu_s / self.wall_s, 1) if self.wall_s else 0.0,
            "client_cpu_us_per_req": round(self.client_cpu_us_per_req, 1),
        }


def build_request(host: str, port: int, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending the same request back to back."""

    def __init__(self, request: bytes, stop_at: float, result: Result, done: asyncio.Future, warmup: int):
        self.request, self.stop_at, self.result, self.done = request, stop_at, result, done
        self.warmup = warmup
        self.buf = bytearray()
        self.need = -1
        self.sent_at = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.sent_at = time.perf_counter()
        if self.warmup == 0 and self.sent_at < self.result.first_sent:
            self.result.first_sent = self.sent_at
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status_ok = head[9:12] == b"200"
            i = head.find(b"content-length:")
            length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            self.need = end + 4 + length
        if len(self.buf) < self.need:
            return
        now = time.perf_counter()
        del self.buf[: self.need]
        self.need = -1
        if self.warmup > 0:
            self.warmup -= 1
        elif self.status_ok:
            self.result.latencies_s.append(now - self.sent_at)
            self.result.last_done = now
        else:
            self.result.errors += 1
        if now >= self.stop_at:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self._send()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _http_load(host, port, request, concurrency, duration_s, warmup, result, ssl) -> None:
    loop = asyncio.get_running_loop()
    stop_at = time.perf_counter() + duration_s + 0.5  # warm-up requests fit in the first half second
    dones = []
    for _ in range(concurrency):
        done = loop.create_future()
        await loop.create_connection(lambda d=done: _Conn(request, stop_at, result, d, warmup), host, port, ssl=ssl)
        dones.append(done)
    await asyncio.gather(*dones)


def http_load(name: str, host: str, port: int, request: bytes, concurrency: int, duration_s: float,
              warmup: int = 20, ssl: ssl_module.SSLContext | None = None) -> Result:  # fmt: skip
    """`concurrency` connections, each sending `request` back to back for `duration_s` after
    `warmup` unmeasured requests; over TLS when `ssl` is a context."""
    import uvloop

    result = Result(name, concurrency)
    cpu0 = resource.getrusage(resource.RUSAGE_THREAD)
    t0 = time.perf_counter()
    uvloop.run(_http_load(host, port, request, concurrency, duration_s, warmup, result, ssl))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_THREAD)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    result.wall_s = max(1e-9, result.last_done - result.first_sent) if result.latencies_s else wall
    result.client_cpu_s = cpu * result.wall_s / wall  # the share of the measured window
    return result


def _read_response(sock, buf: bytearray) -> tuple[bool, bytearray]:
    """Read one response from a blocking socket; (status is 200, bytes left over)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head = bytes(buf[:end]).lower()
    i = head.find(b"content-length:")
    length = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
    need = end + 4 + length
    while len(buf) < need:
        chunk = sock.recv(max(262144, need - len(buf)))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return head[9:12] == b"200", buf[need:]


def http_load_blocking(name: str, host: str, port: int, request: bytes, duration_s: float, warmup: int = 20) -> Result:
    """Concurrency 1 over a blocking socket: no event loop on the client side, so the figure holds
    as little client overhead as a Python client can have."""
    import socket

    result = Result(name, 1)
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    try:
        for _ in range(warmup):
            sock.sendall(request)
            _, buf = _read_response(sock, buf)
        cpu0 = resource.getrusage(resource.RUSAGE_THREAD)
        start = time.perf_counter()
        stop_at = start + duration_s
        now = start
        while now < stop_at:
            t = time.perf_counter()
            sock.sendall(request)
            ok, buf = _read_response(sock, buf)
            now = time.perf_counter()
            if ok:
                result.latencies_s.append(now - t)
            else:
                result.errors += 1
        cpu1 = resource.getrusage(resource.RUSAGE_THREAD)
    finally:
        sock.close()
    result.wall_s = now - start
    result.client_cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return result


def inprocess_load(name: str, call: Callable[[], object], concurrency: int, duration_s: float,
                   warmup: int = 5) -> Result:  # fmt: skip
    """The physical limit: the same model called directly from ``concurrency`` threads."""
    for _ in range(warmup):
        call()
    result = Result(name, concurrency)
    stop_at = time.perf_counter() + duration_s
    lock = threading.Lock()

    def worker():
        local = []
        while True:
            t = time.perf_counter()
            call()
            now = time.perf_counter()
            local.append(now - t)
            if now >= stop_at:
                break
        with lock:
            result.latencies_s.extend(local)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    result.wall_s = time.perf_counter() - t0
    return result
