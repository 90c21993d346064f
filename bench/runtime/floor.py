"""The transport floor: what moving one request and its answer between two processes costs on this
machine, with no server work at all. A process of its own runs a bare blocking socket loop that
reads exactly the request's bytes and sends a fixed 200 OK with a 100-byte body; loadgen's blocking
client drives it as it drives the real server. No server, however lean, answers faster than this,
so ``bound(in_process, floor)`` is the most a server can reach of the in-process figure."""

from __future__ import annotations

import multiprocessing
import socket
import statistics

from modeldeploy_runtime.measure.loadgen import Result, http_load_blocking

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b" " * 100


def _serve(listener: socket.socket, size: int) -> None:
    view = memoryview(bytearray(size))
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while True:
                got = 0
                while got < size:
                    n = conn.recv_into(view[got:])
                    if not n:
                        break
                    got += n
                if got < size:
                    break
                conn.sendall(ANSWER)


class TransportFloor:
    def __init__(self, request: bytes) -> None:
        """``request``: the complete HTTP request the real server is sent, headers and body."""
        self.request = request
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.proc = multiprocessing.get_context("fork").Process(
            target=_serve, args=(self.listener, len(request)), daemon=True
        )

    def __enter__(self) -> TransportFloor:
        self.proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.join(10)
        self.listener.close()

    def measure(self, duration_s: float) -> Result:
        return http_load_blocking("transport floor", "127.0.0.1", self.port, self.request, duration_s, warmup=3)


def bound(in_process: list[Result], floor: list[Result]) -> float:
    """Median over rounds of in-process time / (in-process time + floor time): the ratio to in
    process a server with no cost of its own would reach at concurrency 1."""
    return round(
        statistics.median(
            (1 / a.rps) / (1 / a.rps + statistics.mean(f.latencies_s)) for a, f in zip(in_process, floor, strict=True)
        ),
        3,
    )
