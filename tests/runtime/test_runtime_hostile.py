"""What an untrusted client can make the server hold: memory follows the bytes it sends, never what
it declares; a request refused from its head is answered before its body is kept; chunk floods
are cut off. Measured on the server process's resident memory, over real sockets."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from runtime_helpers import post

TOKEN = "s3cret-token"
MB = 1 << 20
DECLARED = 30 * MB  # under the default 64 MB limit; glibc serves it from the heap, where it is touched


def rss(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def head(content_length: int, token: str | None = None, path: str = "/v2/models/m/infer") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {content_length}\r\n\r\n".encode()


def settle(server) -> None:
    """Wait until the server has read what was sent: a request on a new connection is answered
    after the loop has gone through the earlier ones' reads."""
    for _ in range(3):
        assert post(server, b"{}", {})[0] == 400
    time.sleep(0.2)


@pytest.fixture
def open_sockets():
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def test_declared_lengths_are_not_allocated_before_the_bytes_arrive(server_factory, models, open_sockets):
    server = server_factory(models["affine"])
    before = rss(server)
    for _ in range(8):  # held open together: the server may not free anything meanwhile
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        open_sockets.append(s)
        s.sendall(head(DECLARED) + b"{")
    settle(server)
    grown = rss(server) - before
    assert grown < 40 * MB, f"8 connections declaring {DECLARED} bytes and sending 1 grew RSS by {grown} bytes"


def test_closed_connections_leave_no_body_buffers(server_factory, models):
    server = server_factory(models["affine"])
    before = rss(server)
    for _ in range(20):  # one at a time, as the reproduction
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(head(DECLARED) + b"{" * 100_000)
    settle(server)
    grown = rss(server) - before
    assert grown < 40 * MB, f"20 closed connections left RSS {grown} bytes higher"


def test_body_buffer_grows_with_the_bytes_sent_and_the_request_is_served(server_factory, models):
    """A large body arriving in small pieces is still read whole and in order."""
    server = server_factory(models["affine"])
    pad = b" " * 700_000
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]' + pad + b"}"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head(len(body)))
        for i in range(0, len(body), 50_000):
            s.sendall(body[i : i + 50_000])
            time.sleep(0.002)
        reply = b""
        while b"}]}" not in reply:
            chunk = s.recv(65536)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and b'"data":[3.0,5.0,7.0,9.0]' in reply


@pytest.mark.parametrize("token", [None, "wrong"])
def test_unauthorized_request_is_refused_from_its_head(server_factory, models, open_sockets, token):
    server = server_factory(models["affine"], AUTH_TOKEN=TOKEN)
    before = rss(server)
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        open_sockets.append(s)
        s.sendall(head(DECLARED, token))  # no body byte is sent: the answer cannot wait for it
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 401"), reply
        assert b"www-authenticate: Bearer" in reply and b"MODELDEPLOY_AUTH_TOKEN" in reply
    grown = rss(server) - before
    assert grown < 40 * MB, grown


def test_unknown_path_with_a_body_is_refused_from_its_head(server_factory, models):
    server = server_factory(models["affine"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head(DECLARED, path="/v2/models/m/explode"))
        assert s.recv(4096).startswith(b"HTTP/1.1 404")


def test_body_sent_to_an_open_endpoint_is_refused_from_its_head(server_factory, models):
    """Health and metrics need no token: a body there is refused rather than kept."""
    server = server_factory(models["affine"], AUTH_TOKEN=TOKEN)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: {DECLARED}\r\n\r\n".encode())
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400") and b"takes no request body" in reply


def test_refused_short_body_is_answered_on_an_orderly_close(server_factory, models):
    """A client that sends its whole (short) request before reading reads the 401, not a reset."""
    server = server_factory(models["affine"], AUTH_TOKEN=TOKEN)
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}' + b" " * 30_000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head(len(body), "wrong") + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401") and b"connection: close" in reply


def test_lower_case_bearer_scheme_is_accepted(server_factory, models):
    server = server_factory(models["affine"], AUTH_TOKEN=TOKEN)
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
    for scheme in ("bearer", "BEARER", "Bearer"):
        assert post(server, body, {"Authorization": f"{scheme} {TOKEN}"})[0] == 200, scheme
    assert post(server, body, {"Authorization": f"Basic {TOKEN}"})[0] == 401


def test_chunk_flood_is_refused_with_400(server_factory, models):
    server = server_factory(models["affine"])
    before = rss(server)
    reply = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(40):  # 40 x 2,048 one-byte chunks: past the 65,536 allowed
                s.sendall(b"1\r\n \r\n" * 2048)
            s.sendall(b"0\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert b"65536 chunks" in reply
    assert rss(server) - before < 40 * MB
    assert post(server, b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[0,0,0,0]}]}', {})[0] == 200


def test_chunked_body_under_the_chunk_limit_is_served(server_factory, models):
    server = server_factory(models["affine"])
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (1, body[i : i + 1]) for i in range(len(body)))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        s.sendall(b"0\r\n\r\n")
        reply = b""
        while b"}]}" not in reply:
            chunk = s.recv(65536)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and b'"data":[3.0,5.0,7.0,9.0]' in reply
