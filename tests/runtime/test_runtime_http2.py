"""The gRPC port's HTTP/2, frame by frame, from a raw socket: what a careless or hostile client
can send (HTTP/1.1, floods of headers, streams and data, refused calls with large bodies, small
windows) and what it gets back, with the server still serving a real client afterwards."""

from __future__ import annotations

import contextlib
import gzip
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request

import hpack
import numpy as np
import pytest
from ports import free_port
from runtime_helpers import start_server

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402

TOKEN = "s3cret"
LIMIT = 64 * 1024
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    port = free_port()
    srv = start_server(
        tmp_path_factory.mktemp("h2"), models["two_inputs"], "two", GRPC_PORT=port, AUTH_TOKEN=TOKEN,
        MAX_BATCH_SIZE=8, MAX_BODY_BYTES=LIMIT,
    )  # fmt: skip
    srv.grpc_port = port
    yield srv
    srv.stop()


def metric(server, series: str) -> float:
    with urllib.request.urlopen(server.base + "/metrics", timeout=5) as resp:
        found = re.search(re.escape(series) + r" (\S+)", resp.read().decode())
    return float(found.group(1)) if found else 0.0


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def message(req) -> bytes:
    body = req.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def infer_request(rows: int = 1) -> service_pb2.ModelInferRequest:
    req = service_pb2.ModelInferRequest(model_name="two")
    a = np.ones((rows, 3), np.float32)
    n = np.zeros((rows, 1), np.int64)
    for name, arr, dt in (("a", a, "FP32"), ("b", a, "FP32"), ("n", n, "INT64")):
        req.inputs.add(name=name, datatype=dt, shape=arr.shape)
        req.raw_input_contents.append(arr.tobytes())
    return req


class Client:
    """A bare HTTP/2 client: frames in, frames out, nothing hidden."""

    def __init__(self, port: int, settings: bytes | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        if settings is None:  # windows large enough for every answer here
            settings = struct.pack(">HI", 0x4, 16 << 20)
            self.sock.sendall(
                PREFACE + frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 16 << 20))
            )
        else:
            self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))

    def headers(self, stream: int, path: str = INFER, token: str | None = TOKEN, end: bool = False, **extra) -> None:
        fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                  ("content-type", "application/grpc"), ("te", "trailers")]  # fmt: skip
        if token is not None:
            fields.append(("authorization", f"Bearer {token}"))
        fields += [(k.replace("_", "-"), v) for k, v in extra.items()]
        self.sock.sendall(frame(HEADERS, 0x4 | (0x1 if end else 0), stream, self.encoder.encode(fields)))

    def data(self, stream: int, payload: bytes, end: bool = True) -> None:
        for i in range(0, max(len(payload), 1), 16384):
            last = i + 16384 >= len(payload)
            self.sock.sendall(frame(DATA, 0x1 if end and last else 0, stream, payload[i : i + 16384]))

    def read_frame(self):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        kind, flags, stream = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9 : 9 + n], self.buf[9 + n :]
        if kind == SETTINGS and not flags & 1:
            with contextlib.suppress(OSError):  # the server has closed: what it sent is still read
                self.sock.sendall(frame(SETTINGS, 1, 0))
        return kind, flags, stream, payload

    def answer(self, stream: int):
        """(header fields, data, trailer fields, RST_STREAM code or None) of one stream."""
        blocks, data, rst = [], b"", None
        while True:
            got = self.read_frame()
            assert got is not None, "the connection closed before the stream ended"
            kind, flags, sid, payload = got
            if sid != stream:
                continue
            if kind == HEADERS:
                blocks.append({bytes(k): bytes(v) for k, v in self.decoder.decode(payload, raw=True)})
            elif kind == DATA:
                data += payload
            elif kind == RST_STREAM:
                rst = int.from_bytes(payload, "big")
            if kind == RST_STREAM or flags & 0x1:
                if kind != RST_STREAM:  # a RST_STREAM(NO_ERROR) may follow an early answer
                    self.sock.settimeout(0.3)
                    try:
                        more = self.read_frame()
                        if more and more[0] == RST_STREAM and more[2] == stream:
                            rst = int.from_bytes(more[3], "big")
                    except TimeoutError:
                        pass
                    self.sock.settimeout(10)
                return blocks[0] if blocks else {}, data, blocks[-1] if blocks else {}, rst

    def close(self) -> None:
        self.sock.close()


def serves(server) -> bool:
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        a = grpcclient.InferInput("a", [1, 3], "FP32")
        a.set_data_from_numpy(np.ones((1, 3), np.float32))
        b = grpcclient.InferInput("b", [1, 3], "FP32")
        b.set_data_from_numpy(np.ones((1, 3), np.float32))
        n = grpcclient.InferInput("n", [1, 1], "INT64")
        n.set_data_from_numpy(np.zeros((1, 1), np.int64))
        out = c.infer("two", [a, b, n], headers={"authorization": f"Bearer {TOKEN}"})
        return out.as_numpy("sum").tolist() == [[2.0, 2.0, 2.0]]
    finally:
        c.close()


def test_a_raw_call_gets_headers_one_message_and_ok_trailers(server):
    c = Client(server.grpc_port)
    c.headers(1)
    c.data(1, message(infer_request(rows=2)))
    head, data, trailers, rst = c.answer(1)
    c.close()
    assert head[b":status"] == b"200" and head[b"content-type"] == b"application/grpc"
    assert trailers[b"grpc-status"] == b"0" and rst is None
    reply = service_pb2.ModelInferResponse.FromString(data[5:])
    assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [2.0] * 6


def test_http1_on_the_grpc_port_gets_a_400_that_names_the_rest_port(server):
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as s:
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400 ") and b"REST API is on the server's HTTP port" in reply


def test_a_call_without_the_token_is_refused_from_its_headers_before_its_body(server):
    """The refusal arrives while the 10 MB body has not been sent: nothing of it is kept; what the
    client sends anyway is dropped, and the connection goes on serving."""
    c = Client(server.grpc_port)
    c.headers(1, token="wrong")
    head, _, trailers, rst = c.answer(1)
    assert trailers[b"grpc-status"] == b"16" and b"authorization" in trailers[b"grpc-message"]
    assert rst == 0  # NO_ERROR: the client need not send the body
    c.data(1, b"\0" * (10 << 20))  # sent all the same: counted for flow control, dropped
    c.headers(3)
    c.data(3, message(infer_request()))
    _, data, trailers, _ = c.answer(3)
    c.close()
    assert trailers[b"grpc-status"] == b"0" and data


def test_a_message_over_the_limit_is_resource_exhausted_and_the_connection_serves_on(server):
    c = Client(server.grpc_port)
    c.headers(1)
    c.data(1, b"\0" + (LIMIT * 4).to_bytes(4, "big") + b"\0" * (LIMIT * 2))
    _, _, trailers, _ = c.answer(1)
    assert trailers[b"grpc-status"] == b"8" and b"MODELDEPLOY_MAX_BODY_BYTES" in trailers[b"grpc-message"]
    c.headers(3)
    c.data(3, message(infer_request()))
    assert c.answer(3)[2][b"grpc-status"] == b"0"
    c.close()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"\0\0\0\0\x03\xff\xff\xff", b"not a valid inference.ModelInferRequest"),
        (b"\0\0\0\0\x09abc", b"ends inside a message"),
        (b"", b"takes one request message, not 0"),
    ],
    ids=["garbage", "truncated", "no-message"],
)
def test_a_malformed_message_is_invalid_argument(server, body, words):
    c = Client(server.grpc_port)
    c.headers(1)
    c.data(1, body)
    _, _, trailers, _ = c.answer(1)
    c.close()
    assert trailers[b"grpc-status"] == b"3" and words in trailers[b"grpc-message"], trailers


def test_unknown_method_and_wrong_content_type(server):
    c = Client(server.grpc_port)
    c.headers(1, path="/inference.GRPCInferenceService/Nope", end=True)
    assert c.answer(1)[2][b"grpc-status"] == b"12"
    c.sock.sendall(frame(HEADERS, 0x5, 3, c.encoder.encode([(":method", "POST"), (":scheme", "http"),
                   (":path", INFER), (":authority", "x"), ("content-type", "text/plain")])))  # fmt: skip
    assert c.answer(3)[0][b":status"] == b"415"
    c.close()


def test_a_gzip_compressed_request_is_read(server):
    body = infer_request().SerializeToString()
    packed = gzip.compress(body)
    c = Client(server.grpc_port)
    c.headers(1, grpc_encoding="gzip")
    c.data(1, b"\x01" + len(packed).to_bytes(4, "big") + packed)
    _, data, trailers, _ = c.answer(1)
    c.close()
    assert trailers[b"grpc-status"] == b"0" and data


def test_a_gzip_bomb_is_refused_at_the_limit(server):
    packed = gzip.compress(b"\0" * (LIMIT * 64))  # 4 MiB of zeros in about 4 KiB
    c = Client(server.grpc_port)
    c.headers(1, grpc_encoding="gzip")
    c.data(1, b"\x01" + len(packed).to_bytes(4, "big") + packed)
    assert c.answer(1)[2][b"grpc-status"] == b"8"
    c.close()


def test_ping_is_answered_with_its_payload(server):
    c = Client(server.grpc_port)
    c.sock.sendall(frame(PING, 0, 0, b"12345678"))
    while True:
        kind, flags, _, payload = c.read_frame()
        if kind == PING:
            break
    c.close()
    assert flags & 1 and payload == b"12345678"


def test_a_header_block_flood_ends_the_connection(server):
    """CONTINUATION frames without end (the 2024 flood): the block stops at 16 KiB, with GOAWAY."""
    c = Client(server.grpc_port)
    c.sock.sendall(frame(HEADERS, 0, 1, c.encoder.encode([(":method", "POST")])))
    goaway = None
    try:
        for _ in range(64):
            c.sock.sendall(frame(CONTINUATION, 0, 1, b"\x40\x01x\x01y" * 200))
    except (BrokenPipeError, ConnectionResetError):
        pass
    while (got := c.read_frame()) is not None:
        if got[0] == GOAWAY:
            goaway = got
            break
    c.close()
    assert goaway is not None and int.from_bytes(goaway[3][4:8], "big") == 0xB  # ENHANCE_YOUR_CALM
    assert serves(server)


def test_streams_over_the_limit_are_refused_and_the_rest_served(server):
    c = Client(server.grpc_port)
    body = message(infer_request())
    for i in range(101):  # MAX_STREAMS is 100: headers now, bodies later, so all are open at once
        c.headers(1 + 2 * i)
    refused = None
    c.sock.settimeout(2)
    while refused is None:
        kind, _, sid, payload = c.read_frame()
        if kind == RST_STREAM:
            refused = (sid, int.from_bytes(payload, "big"))
    c.sock.settimeout(10)
    assert refused == (201, 0x7)  # REFUSED_STREAM: the client may retry it
    c.data(1, body)
    assert c.answer(1)[2][b"grpc-status"] == b"0"
    c.close()


def test_an_answer_waits_for_a_small_window_and_completes_on_window_update(server):
    """The client allows 100 bytes per stream: the server sends 100, then the rest once granted."""
    c = Client(server.grpc_port, settings=struct.pack(">HI", 0x4, 100))
    c.headers(1)
    c.data(1, message(infer_request(rows=8)))  # the answer is over 100 bytes
    got = b""
    c.sock.settimeout(1)
    try:
        while True:
            kind, _, sid, payload = c.read_frame()
            if kind == DATA and sid == 1:
                got += payload
    except TimeoutError:
        pass
    assert len(got) == 100
    c.sock.settimeout(10)
    c.sock.sendall(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 20)))
    _, rest, trailers, _ = c.answer(1)
    c.close()
    assert trailers[b"grpc-status"] == b"0"
    reply = service_pb2.ModelInferResponse.FromString((got + rest)[5:])
    assert len(reply.raw_output_contents[0]) == 8 * 3 * 4


def test_a_call_reset_by_the_client_leaves_the_server_serving(server):
    c = Client(server.grpc_port)
    for i in range(20):
        sid = 1 + 2 * i
        c.headers(sid)
        c.data(sid, message(infer_request()))
        c.sock.sendall(frame(RST_STREAM, 0, sid, struct.pack(">I", 0x8)))
    c.headers(41)
    c.data(41, message(infer_request()))
    assert c.answer(41)[2][b"grpc-status"] == b"0"
    c.close()
    assert serves(server)


def test_a_call_past_its_grpc_timeout_is_deadline_exceeded_and_serving_goes_on(models, tmp_path):
    port = free_port()
    srv = start_server(tmp_path, models["slow"], "slow", GRPC_PORT=port)
    try:
        x = np.ones((1, 400, 512), np.float32)  # 400 rows through 200 layers: about 0.25 s here
        req = service_pb2.ModelInferRequest(model_name="slow")
        req.inputs.add(name="x", datatype="FP32", shape=x.shape)
        req.raw_input_contents.append(x.tobytes())
        c = Client(port)
        c.headers(1, token=None, grpc_timeout="20m")
        c.data(1, message(req))
        started = time.monotonic()
        _, data, trailers, _ = c.answer(1)
        waited = time.monotonic() - started
        assert trailers[b"grpc-status"] == b"4" and not data, trailers
        assert b"grpc-timeout" in trailers[b"grpc-message"]
        c.headers(3, token=None)  # no deadline: served to the end
        c.data(3, message(req))
        _, data, trailers, _ = c.answer(3)
        c.close()
        assert trailers[b"grpc-status"] == b"0" and data
        assert waited < 10
    finally:
        srv.stop()


@pytest.mark.skipif(
    shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed; hack/setup.sh installs it"
)
def test_nghttp2s_client_gets_every_call_answered(server, tmp_path):
    """A second HTTP/2 implementation (nghttp2's h2load: 4 connections of 16 concurrent streams):
    every call is a 200 with grpc-status 0, as the server's success counter shows."""
    body = tmp_path / "call.bin"
    body.write_bytes(message(infer_request(rows=2)))
    series = 'modeldeploy_inference_requests_total{model="two",outcome="success",protocol="grpc",reason=""}'
    before = metric(server, series)
    out = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "16", "-d", str(body), "-H", "content-type: application/grpc",
         "-H", "te: trailers", "-H", f"authorization: Bearer {TOKEN}", f"http://127.0.0.1:{server.grpc_port}{INFER}"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "2000 succeeded, 0 failed, 0 errored" in out and "status codes: 2000 2xx" in out, out
    assert metric(server, series) == before + 2000


def test_calls_arriving_together_on_one_connection_share_a_batch(server):
    """Eight calls in one write: none is 'alone', so they queue for the batcher together rather
    than each running by itself on the event loop."""
    multi = 'modeldeploy_batch_size_count{model="two"}'
    single = 'modeldeploy_batch_size_bucket{le="1.0",model="two"}'
    batches, singles = metric(server, multi), metric(server, single)
    c = Client(server.grpc_port)
    out = b""
    for i in range(8):
        block = c.encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", INFER), (":authority", "x"),
                                  ("content-type", "application/grpc"), ("authorization", f"Bearer {TOKEN}")])  # fmt: skip
        out += frame(HEADERS, 0x4, 1 + 2 * i, block) + frame(DATA, 0x1, 1 + 2 * i, message(infer_request()))
    c.sock.sendall(out)
    for i in range(8):
        assert c.answer(1 + 2 * i)[2][b"grpc-status"] == b"0"
    c.close()
    ran = metric(server, multi) - batches
    assert ran < 8 and ran - (metric(server, single) - singles) >= 1, "no batch of more than one request"


def test_calls_from_several_connections_share_a_batch(models, tmp_path):
    """One call on each of six connections, as six separate clients send them: a call is never run
    by itself on the event loop while other clients are connected, so those that arrive while a
    batch runs wait for the next one together."""
    port = free_port()
    srv = start_server(tmp_path, models["slow"], "slow", GRPC_PORT=port)
    try:
        x = np.ones((1, 1, 512), np.float32)  # the warm-up shape, a millisecond or two: fast enough to run inline
        req = service_pb2.ModelInferRequest(model_name="slow")
        req.inputs.add(name="x", datatype="FP32", shape=x.shape)
        req.raw_input_contents.append(x.tobytes())
        clients = [Client(port) for _ in range(6)]
        batches = metric(srv, 'modeldeploy_batch_size_count{model="slow"}')
        for c in clients:
            c.headers(1, token=None)
            c.data(1, message(req))
        for c in clients:
            assert c.answer(1)[2][b"grpc-status"] == b"0"
            c.close()
        ran = metric(srv, 'modeldeploy_batch_size_count{model="slow"}') - batches
        assert ran < 6, "each call ran as a batch of its own"
    finally:
        srv.stop()


def test_a_streaming_call_past_its_grpc_timeout_ends_with_deadline_exceeded(server):
    """grpc.health.v1 Watch streams until the client leaves; with a deadline, the server ends it."""
    from grpc_health.v1 import health_pb2

    c = Client(server.grpc_port)
    c.headers(1, path="/grpc.health.v1.Health/Watch", token=None, grpc_timeout="300m")
    c.data(1, message(health_pb2.HealthCheckRequest(service="")))
    _, data, trailers, _ = c.answer(1)
    c.close()
    assert health_pb2.HealthCheckResponse.FromString(data[5:]).status == health_pb2.HealthCheckResponse.SERVING
    assert trailers[b"grpc-status"] == b"4" and b"grpc-timeout" in trailers[b"grpc-message"], trailers
