"""A small HTTP/1.1 server on asyncio (uvloop) and httptools' parser.

Measured on the benchmark machine, uvicorn added about 50 us to every request and 0.45 ms to a
600 KB binary tensor upload (its ASGI body flow pauses reading every 64 KB), against a fixed-cost
target of 0.5 ms for the whole request. This server does only what the v2 REST API needs:
keep-alive, Content-Length and chunked request bodies, ``Expect: 100-continue``, pipelined requests
answered in order, a body size limit enforced from the headers, idle connections closed, and a
graceful shutdown that lets in-flight requests finish.

What a client can make it hold is bounded by what the client has sent, never by what it declares:
a request head is at most MAX_HEAD_BYTES, a body buffer grows with the bytes that arrive (at most
BODY_GROWTH times them, and never past the declared length or the body limit), a chunked body has
at most MAX_CHUNKS chunks, and a request the server will refuse from its head alone (a wrong
token, an unknown path) is answered before any of its body is kept.

It is one module, over the usual size, because those bounds live in one connection object whose
head, body, chunked and pipelining states share one buffer; apart, they could not be checked together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import httptools
import numpy as np

from .eager import Eager

log = logging.getLogger(__name__)

REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
           413: b"Content Too Large", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 503: b"Service Unavailable"}  # fmt: skip
MAX_PIPELINED = 16  # parsed requests waiting behind the current one before reading pauses
# The first read of a request: its head and the start of its body go through httptools, which
# copies body bytes twice; the rest of a large body is read straight into place. 16 KB rather than
# 256 KB saved 20 us on a 600 KB upload.
READ_BUFFER = 16 * 1024
MAX_HEAD_BYTES = 64 * 1024
DIRECT_READ_MIN = 64 * 1024  # bodies from this size on are read straight into their own buffer
# A body buffer starts at DIRECT_READ_MIN and, each time it is full, is replaced by one BODY_GROWTH
# times as large (capped at the declared length): memory follows the bytes received, and a 600 KB
# image costs two copies (64 KB and 256 KB) instead of one allocation of its declared size.
BODY_GROWTH = 4
MAX_CHUNKS = 65536  # chunks of one chunked body, as Triton allows; each costs a parser callback
# A request refused from its head whose declared body is at most this long is read to its end
# (and dropped) before the connection closes, so that the client reads the answer instead of a
# connection reset; a longer or chunked one is cut off at once.
DRAIN_MAX = 64 * 1024


@dataclass
class Request:
    method: str
    path: str
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes | bytearray | memoryview = b""
    received: float = 0.0  # perf_counter when the headers were complete
    alone: bool = False  # no other client connection was open when it arrived
    vetted: bool = False  # the server's screen passed it from its head (route, method and token)

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    close: bool = False

    def encode(self, keep_alive: bool, head_only: bool = False) -> bytes:
        """The response on the wire; ``head_only`` for a HEAD request, whose answer has the headers
        a GET would get and no body."""
        head = [b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                % (self.status, REASONS.get(self.status, b"Unknown"), self.content_type, len(self.body))]  # fmt: skip
        head.extend(b"%s: %s\r\n" % kv for kv in self.headers)
        if not keep_alive or self.close:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if not head_only:
            head.append(self.body)
        return b"".join(head)


Handler = Callable[[Request], Awaitable[Response]]
# Answers a request whose declared body is over the limit, before the body is read.
TooLarge = Callable[[Request, int], Response]
# Looks at a request with a body when its head is complete: a response to send at once, without
# reading the body (the request is refused), or None to read the body and serve it.
Screen = Callable[[Request], "Response | None"]


def aligned_buffer(length: int, payload_at: int, alignment: int = 64) -> memoryview:
    """A writable buffer of ``length`` bytes whose byte ``payload_at`` sits on an ``alignment``
    boundary, so that tensors viewed in place there are aligned: ONNX Runtime takes an unaligned
    input through a slow copy (0.16 ms for a 600 KB image, measured). Not zero-filled: every byte
    is written by the socket before it is read."""
    raw = np.empty(length + alignment, dtype=np.uint8)
    pad = (-(raw.ctypes.data + payload_at)) % alignment
    return memoryview(raw)[pad : pad + length]


def _small_int(raw: bytes | None, digits: int = 18) -> int | None:
    """A header's non-negative integer value; None when it is absent, not digits, or too long to
    mean anything here (int() of 5,000 digits raises)."""
    if raw is None or not raw.isdigit() or len(raw) > digits:
        return None
    return int(raw)


class HttpConnection(asyncio.BufferedProtocol):
    """One client connection. Headers (and small bodies) go through httptools from a scratch
    buffer; a large body with a Content-Length is read by the event loop straight into a buffer
    of its own, which grows as the body arrives, without intermediate chunks or joins."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._scratch = memoryview(bytearray(READ_BUFFER))
        self._body: memoryview | None = None  # the large body being read, when there is one
        self._length = 0  # its declared length
        self._offset = 0  # where its binary payload starts, to align
        self._filled = 0
        self._raw_mode = False  # reading the rest of _body directly, bypassing the parser
        self._in_head = True  # between requests or inside a request line and headers
        self._began = False
        self._head_bytes = 0  # bytes of a request head seen in whole chunks, to bound it
        self._keep_alive = True
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[Request, bool]] = deque()
        self.busy = False
        self.closing = False
        self.paused = False
        self.last_active = time.monotonic()
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._small: bytes | bytearray = b""  # a body that goes through the parser
        self._size = 0
        self._chunks = 0
        self._discard = False
        self._close_when_read = False  # a refused request's short body is being read and dropped
        self._vetted = False
        self._received = 0.0
        self._method = "GET"
        self._task: Eager | asyncio.Task | None = None

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self.closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client is gone: its queued inference is skipped
        # The parser holds this object for its callbacks: without these, the pair (and a body
        # buffer of up to the body limit) would wait for the cycle collector.
        self.parser = None
        self._body = None
        self._small = b""
        self.pending.clear()
        self.transport = None

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._raw_mode:
            return self._body[self._filled :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._raw_mode:
            self._filled += nbytes
            if self._filled == len(self._body):
                if self._filled < self._length:
                    self._grow(self._filled)
                    return
                # the parser saw only the start of this body: a fresh one reads the next request
                self._raw_mode = False
                self.parser = httptools.HttpRequestParser(self)
                self._complete(self._body)
            return
        whole_chunk_in_head = self._in_head and self._began  # a head already under way
        data = self._scratch[:nbytes]
        while data:
            try:
                self.parser.feed_data(data)
                break
            except httptools.HttpParserUpgrade as exc:
                # A request with Connection: Upgrade, answered (RFC 9110 7.8 lets a server ignore
                # the upgrade) when its head was complete; what follows it is the next request.
                if self.closing:
                    return
                self.parser = httptools.HttpRequestParser(self)
                data = data[exc.args[0] :] if exc.args and isinstance(exc.args[0], int) else b""
            except httptools.HttpParserError as exc:
                self._fail(400, f"malformed HTTP request: {exc}".encode())
                return
        if self._body is not None and not self._discard and self._filled < self._length:
            self._raw_mode = True
        if whole_chunk_in_head and self._in_head:
            self._head_bytes += nbytes
            if self._head_bytes > MAX_HEAD_BYTES:  # the parser would buffer them without end
                self._fail(431, b"the request line and headers exceed %d bytes" % MAX_HEAD_BYTES)

    def _grow(self, need: int) -> None:
        """Replace the body buffer by one BODY_GROWTH times larger (at least ``need`` bytes, at
        most the declared length), keeping what has arrived."""
        size = min(self._length, max(need, BODY_GROWTH * len(self._body)))
        bigger = aligned_buffer(size, self._offset)
        bigger[: self._filled] = self._body[: self._filled]
        self._body = bigger

    # httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._began = True
        self._head_bytes = 0
        self._url = b""
        self._headers = {}
        self._small = b""
        self._size = 0
        self._chunks = 0
        self._discard = False
        self._vetted = False
        self._body = None
        self._filled = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._received = time.perf_counter()
        self._method = self.parser.get_method().decode("latin-1")
        if self.closing:  # pipelined behind a request that closes the connection
            self._discard = True
            return
        headers = self._headers
        raw_length = headers.get(b"content-length")
        length = _small_int(raw_length)
        has_body = (length is not None and length > 0) or b"transfer-encoding" in headers
        if has_body and self.parser.should_upgrade():
            self._refuse(Response(400, b'{"error":"a request asking for a protocol upgrade cannot have a body"}'))
            return
        if has_body and self.server.screen is not None:
            refusal = self.server.screen(self._request(b""))
            if refusal is not None:
                self._refuse(refusal)
                return
            self._vetted = True
        limit = self.server.max_body
        if raw_length is not None and (length is None or length > limit):  # httptools checked the digits
            self._discard = True
            too_large = self.server.too_large(self._request(b""), length or limit + 1)
            self._reply_now(too_large, close=True, head_only=self._method == "HEAD")
            return
        if headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._keep_alive = self.parser.should_keep_alive()
        if length is not None and length >= DIRECT_READ_MIN:
            offset = _small_int(headers.get(self.server.payload_offset_header or b""))
            self._length = length
            self._offset = offset if offset is not None and offset < length else 0
            self._body = aligned_buffer(DIRECT_READ_MIN, self._offset)

    def on_chunk_header(self) -> None:
        self._chunks += 1
        if self._chunks > MAX_CHUNKS and not self._discard:
            self._fail(
                400, b"the chunked body has more than %d chunks; send larger chunks or a Content-Length" % MAX_CHUNKS
            )

    def on_body(self, body: bytes) -> None:
        if self._discard:
            self._size += len(body)
            if self._close_when_read and self._size > DRAIN_MAX and self.transport is not None:
                self.transport.close()
            return
        if self._body is not None:
            end = self._filled + len(body)
            if end > len(self._body):
                self._grow(end)
            self._body[self._filled : end] = body
            self._filled = end
            return
        self._size += len(body)
        if self._size > self.server.max_body:  # chunked bodies have no length up front
            self._discard = True
            self._reply_now(self.server.too_large(self._request(b""), self._size), close=True)
            return
        # one buffer, not one object per chunk (a body of 2-byte chunks cost 26x its size)
        if not self._small:
            self._small = body
        elif isinstance(self._small, bytes):
            self._small = bytearray(self._small)
            self._small += body
        else:
            self._small += body

    def on_message_complete(self) -> None:
        if self._body is not None:
            self._complete(self._body)
            return
        body = self._small
        self._small = b""
        self._complete(body)

    def _complete(self, body: bytes | bytearray | memoryview) -> None:
        self._body = None
        self._in_head = True
        self._began = False
        if self._discard or self.closing:
            if self._close_when_read and self.transport is not None:
                self.transport.close()
            return
        self.pending.append((self._request(body), self._keep_alive))
        if not self.busy:
            self._next()
        elif len(self.pending) >= MAX_PIPELINED and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    # serving ---------------------------------------------------------------------------------
    def _request(self, body: bytes | bytearray | memoryview) -> Request:
        raw = self._url.split(b"?", 1)[0].decode("latin-1")
        path = unquote(raw) if "%" in raw else raw
        return Request(
            self._method, path, self._headers, body, self._received, len(self.server.connections) == 1, self._vetted
        )

    def _next(self) -> None:
        if not self.pending or self.closing:
            return
        if self.paused and len(self.pending) < MAX_PIPELINED // 2:
            self.paused = False
            self.transport.resume_reading()
        request, keep_alive = self.pending.popleft()
        self.busy = True
        serving = self._serve(request, keep_alive)
        # A lone client's request is served at once. With several clients, a task lets the loop
        # read every connection first, so that their requests reach the batcher together (eager
        # serving cut the MLP's batches, and 12% of its requests/s at concurrency 8).
        self._task = Eager(serving) if request.alone else asyncio.ensure_future(serving)

    async def _serve(self, request: Request, keep_alive: bool) -> None:
        try:
            response = await self.server.handler(request)
        except asyncio.CancelledError:
            return
        except Exception:  # the handler maps expected errors itself; this is a bug
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = Response(500, b'{"error":"internal server error"}')
        self.busy = False
        self._task = None
        self.last_active = time.monotonic()
        keep_alive = keep_alive and not (self.server.stopping or self.server.draining)
        self._write(response, keep_alive, request.method == "HEAD")
        if keep_alive and not response.close:
            self._next()

    def _write(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response.encode(keep_alive, head_only))
        if not keep_alive or response.close:
            self.closing = True
            self.transport.close()

    def _reply_now(self, response: Response, close: bool, head_only: bool = False) -> None:
        """Answer before the request is complete (a body over the limit), then close."""
        self.pending.clear()
        if self._task is not None:
            self._task.cancel()
        response.close = close
        self._write(response, keep_alive=False, head_only=head_only)

    def _refuse(self, response: Response) -> None:
        """Answer a request from its head, drop its body, and close: at once when the body is
        long or chunked, once it has been read when it is short (see DRAIN_MAX)."""
        self._discard = True
        length = _small_int(self._headers.get(b"content-length"))
        head_only = self._method == "HEAD"
        if length is None or length > DRAIN_MAX:
            self._reply_now(response, close=True, head_only=head_only)
            return
        self.pending.clear()
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None and not self.transport.is_closing():
            response.close = True
            self.transport.write(response.encode(False, head_only))
        self.closing = True
        self._close_when_read = True

    def _fail(self, status: int, message: bytes) -> None:
        self._discard = True
        body = b'{"error":"%s"}' % message.replace(b'"', b"'")
        self._reply_now(Response(status, body), close=True)

    def shutdown(self) -> None:
        """Close now when idle; otherwise after the current response."""
        if not self.busy and not self.pending and self.transport is not None:
            self.closing = True
            self.transport.close()


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        too_large: TooLarge,
        max_body: int,
        idle_timeout_s: float = 65.0,
        payload_offset_header: bytes | None = None,
        screen: Screen | None = None,
    ):
        """``payload_offset_header`` names a request header giving the offset of binary data in
        the body (the v2 binary extension's Inference-Header-Content-Length): large bodies are
        placed so that this data is aligned. ``screen`` sees every request that has a body once
        its head is complete (see Screen)."""
        self.payload_offset_header = payload_offset_header
        self.screen = screen
        self.handler = handler
        self.too_large = too_large
        self.max_body = max_body
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[HttpConnection] = set()
        self.stopping = False
        self.draining = False  # each connection closes after its next response
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, sock) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpConnection(self), sock=sock, backlog=2048)
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.idle_timeout_s))
            cutoff = time.monotonic() - self.idle_timeout_s
            for conn in list(self.connections):
                if not conn.busy and not conn.pending and conn.last_active < cutoff:
                    conn.shutdown()

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop accepting, close idle connections, wait for in-flight requests to be answered."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.connections and (deadline is None or time.monotonic() < deadline):
            for conn in list(self.connections):
                conn.shutdown()
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
