"""HTTP/2 frames cut anywhere by the socket's reads: the connection sees the same requests and
answers the same bytes whether a client's bytes come in one read, byte by byte, or in chunks that
end inside a frame header, a header block or a DATA payload (TCP gives no frame boundaries)."""

from __future__ import annotations

import asyncio
import random

import hpack
import pytest
from modeldeploy_runtime import http2


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class Recorder(http2.Handler):
    """Keeps every request whole and answers each at its end with its length."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, dict, bytes]] = []

    def headers_received(self, conn, stream) -> None:
        stream.limit = 1 << 24

    def stream_ended(self, conn, stream) -> None:
        self.requests.append((stream.id, dict(stream.headers), bytes(stream.data)))
        conn.send(stream, http2.literal_block([(b":status", b"200")]), str(len(stream.data)).encode(), None)


def client_bytes() -> bytes:
    enc = hpack.Encoder()
    out = bytearray(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0))
    body = bytes(range(256)) * 300  # 76,800 bytes: several DATA frames
    for n, sid in enumerate((1, 3, 5)):
        block = enc.encode([(":method", "POST"), (":path", f"/call/{n}"), (":scheme", "http"), ("x-n", str(n))])
        if sid == 3:  # a header block continued in a CONTINUATION frame
            out += http2.frame(http2.HEADERS, 0, sid, block[:5]) + http2.frame(
                http2.CONTINUATION, http2.END_HEADERS, sid, block[5:]
            )
        else:
            out += http2.frame(http2.HEADERS, http2.END_HEADERS, sid, block)
        for i in range(0, len(body), 16384):
            chunk, last = body[i : i + 16384], i + 16384 >= len(body)
            if sid == 5:  # padded DATA
                chunk = bytes([7]) + chunk + b"\0" * 7
            flags = (http2.END_STREAM if last else 0) | (http2.PADDED if sid == 5 else 0)
            out += http2.frame(http2.DATA, flags, sid, chunk)
        out += http2.frame(http2.PING, 0, 0, b"12345678")
    return bytes(out)


def feed(chunks: list[bytes]) -> tuple[list, bytes]:
    async def run():
        handler, transport = Recorder(), Transport()
        conn = http2.Connection(handler)
        conn.connection_made(transport)
        for chunk in chunks:
            conn.data_received(chunk)
        return handler.requests, bytes(transport.out)

    return asyncio.run(run())


def cut(data: bytes, sizes) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(data):
        size = next(sizes)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def repeat(*sizes):
    while True:
        yield from sizes


@pytest.mark.parametrize(
    "sizes",
    [repeat(1), repeat(5), repeat(9), repeat(10), repeat(4096), repeat(16393), repeat(65536), "random"],
    ids=["1", "5", "9", "10", "4096", "16393", "65536", "random"],
)
def test_requests_and_answers_are_the_same_however_the_reads_cut_the_bytes(sizes):
    data = client_bytes()
    whole_requests, whole_out = feed([data])
    assert [r[0] for r in whole_requests] == [1, 3, 5]
    assert all(len(body) == 76_800 for _, _, body in whole_requests)
    assert whole_requests[1][1][b":path"] == b"/call/1"
    if sizes == "random":
        rng = random.Random(7)
        sizes = (rng.choice([1, 2, 8, 9, 17, 1000, 16384, 16393, 40000]) for _ in iter(int, 1))
    requests, out = feed(cut(data, sizes))
    assert requests == whole_requests
    assert out == whole_out


def test_an_oversized_frame_header_cut_by_a_read_still_ends_the_connection():
    data = http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0)
    header = (http2.MAX_FRAME + 1).to_bytes(3, "big") + bytes([http2.DATA, 0]) + (1).to_bytes(4, "big")
    requests, out = feed([data + header[:4], header[4:]])
    assert not requests
    goaway = [payload for kind, payload in frames(out) if kind == http2.GOAWAY]
    assert goaway and int.from_bytes(goaway[0][4:8], "big") == http2.FRAME_SIZE_ERROR
    assert b"over" in goaway[0][8:]


def frames(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        out.append((data[pos + 3], data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return out
