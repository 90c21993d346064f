"""gRPC over our HTTP/2 connection (http2.py): methods by path, length-prefixed messages, deadlines,
compression, and the status in trailers, the way gRPC's PROTOCOL-HTTP2 spec lays them out.

It knows nothing of inference: the adapter (grpc_app.py) gives it a table of Methods, each with
its request message type and an async handler, and a check of the call's metadata run before any
of the request's data is kept. Handlers raise RpcError to answer with a status.

A unary call's coroutine runs eagerly (eager.py), once the read that completed its request has
been handled, up to the first future it awaits: no task per call. Streaming calls get a task
each. A handler learns whether its call is ``alone``: no other unary call is in progress or
completed by the same read, and no other connection is open, so nothing could share its batch
(what the REST server knows from a single open connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from . import http2
from .eager import Eager

log = logging.getLogger(__name__)

CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip
ENCODINGS = (b"identity", b"gzip", b"deflate")
ACCEPT_ENCODING = b"identity,gzip,deflate"
TIMEOUT_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9}
STREAM_BUFFERED = 8  # parsed messages of a streaming call waiting for its handler before reading stops
SEND_BUFFERED = 4 << 20  # bytes a streaming call may have waiting for the client's window

_STATUS_200 = [(b":status", b"200"), (b"content-type", b"application/grpc")]
RESPONSE_HEADERS = http2.literal_block([*_STATUS_200, (b"grpc-accept-encoding", ACCEPT_ENCODING)])
OK_TRAILERS = http2.literal_block([(b"grpc-status", b"0")])


class RpcError(Exception):
    """Answer the call with this status (a name of CODES) and message."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class Method:
    request: type  # the protobuf message class of its requests
    handler: Callable  # unary: async (request, call) -> message; else an async generator (requests, call)
    kind: str = "unary"  # "unary", "server_stream" (one request, many answers) or "bidi"
    open: bool = False  # served without the token


def percent_encode(text: str) -> bytes:
    """grpc-message: UTF-8, with bytes outside printable ASCII and '%' as %XX."""
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in text.encode())


def status_block(code: str, details: str, trailers_only: bool) -> bytes:
    fields = [(b"grpc-status", str(CODES[code]).encode())]
    if details:
        fields.append((b"grpc-message", percent_encode(details)[:4096]))
    return http2.literal_block([*_STATUS_200, *fields] if trailers_only else fields)


def parse_timeout(value: bytes) -> float | None:
    """Seconds of a grpc-timeout (1 to 8 digits and a unit); None when malformed."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit() or value[-1] not in TIMEOUT_UNITS:
        return None
    return int(value[:-1]) * TIMEOUT_UNITS[value[-1]]


def frame_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class Call:
    """One call, as its handler sees it: ``headers`` (the metadata, lower-case bytes) and ``alone``."""

    __slots__ = ("method", "headers", "alone", "encoding", "timeout", "runner", "queue", "waiter", "finished",
                 "timer", "expired")  # fmt: skip

    def __init__(self, method: Method, headers: dict[bytes, bytes], encoding: bytes, timeout: float | None) -> None:
        self.method = method
        self.headers = headers
        self.alone = False
        self.encoding = encoding
        self.timeout = timeout
        self.runner: Eager | asyncio.Task | None = None
        self.queue: deque = deque()  # a streaming call's parsed requests
        self.waiter: asyncio.Future | None = None  # its handler waiting for the next
        self.finished = False  # the client ended its side
        self.timer: asyncio.TimerHandle | None = None  # its grpc-timeout
        self.expired = False


class GrpcHandler(http2.Handler):
    """The HTTP/2 handler of the gRPC port. ``authorize(method, headers)`` returns an RpcError to
    refuse the call from its metadata alone; ``oversize()`` the RpcError for a message over
    ``max_message`` bytes (each counted by the adapter)."""

    def __init__(
        self,
        methods: dict[bytes, Method],
        authorize: Callable[[Method, dict[bytes, bytes]], RpcError | None],
        oversize: Callable[[], RpcError],
        max_message: int,
    ) -> None:
        self.methods = methods
        self.authorize = authorize
        self.oversize = oversize
        self.max_message = max_message
        self.draining = False  # each connection is sent GOAWAY after its next answer
        self.inflight = 0  # unary calls started and not answered, on every connection
        self.connections = 0  # open, on the listener: other clients could send calls to batch with
        self._ready: list[tuple[http2.Connection, http2.Stream, Call, object]] = []  # completed by this read

    # http2.Handler ------------------------------------------------------------------------------
    def headers_received(self, conn: http2.Connection, stream: http2.Stream) -> None:
        headers = stream.headers
        if not headers.get(b"content-type", b"").startswith(b"application/grpc"):
            conn.send(stream, http2.literal_block([(b":status", b"415")]), None, None)
            return
        method = self.methods.get(headers.get(b":path", b""))
        if method is None or headers.get(b":method") != b"POST":
            path = headers.get(b":path", b"").decode(errors="replace")
            self._refuse(conn, stream, RpcError("UNIMPLEMENTED", f"unknown method {path}"))
            return
        refusal = self.authorize(method, headers)
        if refusal is not None:
            self._refuse(conn, stream, refusal)
            return
        encoding = headers.get(b"grpc-encoding", b"identity")
        if encoding not in ENCODINGS:
            self._refuse(
                conn,
                stream,
                RpcError("UNIMPLEMENTED", f"grpc-encoding {encoding.decode(errors='replace')} is not served"),
            )
            return
        raw = headers.get(b"grpc-timeout")
        timeout = parse_timeout(raw) if raw is not None else None
        call = stream.app = Call(method, headers, encoding, timeout)
        if method.kind == "bidi":
            stream.limit = 1 << 62  # bounded by the window: granted only as messages are taken
            stream.eager = False
            call.runner = asyncio.ensure_future(self._stream(conn, stream, call, self._requests(conn, stream, call)))
            self._time(call)
        else:
            stream.limit = self.max_message + 5

    def data_received(self, conn: http2.Connection, stream: http2.Stream) -> None:
        call = stream.app
        if stream.refused:  # over its limit
            self._refuse(conn, stream, self.oversize())
            if call is not None and call.runner is not None:
                call.runner.cancel()
        elif call is not None and call.method.kind == "bidi":
            self._take_messages(conn, stream, call)

    def stream_ended(self, conn: http2.Connection, stream: http2.Stream) -> None:
        call = stream.app
        if call is None or stream.done:
            return
        if call.method.kind == "bidi":
            call.finished = True
            self._take_messages(conn, stream, call)
            return
        try:
            messages, taken = self._messages(stream.data, call)
            if taken != len(stream.data):
                raise RpcError("INVALID_ARGUMENT", "the request ends inside a message (its length prefix says more)")
            if len(messages) != 1:
                raise RpcError(
                    "INVALID_ARGUMENT", f"a {call.method.kind} call takes one request message, not {len(messages)}"
                )
            request = self._parse(call.method, messages[0])
        except RpcError as exc:
            self._refuse(conn, stream, exc)
            return
        stream.data = bytearray()
        if call.method.kind == "unary":
            self._ready.append((conn, stream, call, request))  # started by received()
        else:
            call.runner = asyncio.ensure_future(self._stream(conn, stream, call, request))
            self._time(call)

    def received(self, conn: http2.Connection) -> None:
        ready, self._ready = self._ready, []
        alone = len(ready) == 1 and self.inflight == 0 and self.connections <= 1
        for conn, stream, call, request in ready:
            if stream.done:  # reset by a later frame of the same read
                continue
            call.alone = alone
            call.runner = Eager(self._unary(conn, stream, call, request))
            self._time(call)

    def _time(self, call: Call) -> None:
        if call.timeout is not None and not call.runner.done():
            call.timer = asyncio.get_running_loop().call_later(call.timeout, self._expire, call)

    @staticmethod
    def _expire(call: Call) -> None:
        call.expired = True
        call.runner.cancel()

    def stream_reset(self, conn: http2.Connection, stream: http2.Stream) -> None:
        call = stream.app
        if call is not None and call.runner is not None and not call.runner.done():
            call.runner.cancel()

    # messages -----------------------------------------------------------------------------------
    def _messages(self, data: bytearray, call: Call, most: int = 1 << 30) -> tuple[list[memoryview | bytes], int]:
        """The complete length-prefixed messages at the front of ``data`` (at most ``most``), and
        how many bytes they took. Uncompressed messages are views of ``data``, not copies: they
        must be parsed (and dropped) before ``data`` is cut."""
        out, pos, view = [], 0, memoryview(data)
        while len(out) < most and len(data) - pos >= 5:
            flag, size = data[pos], int.from_bytes(view[pos + 1 : pos + 5], "big")
            if size > self.max_message:
                raise self.oversize()
            if len(data) - pos - 5 < size:
                break
            body = view[pos + 5 : pos + 5 + size]
            pos += 5 + size
            if flag & 1:
                body = self._decompress(call.encoding, body)
            out.append(body)
        return out, pos

    def _decompress(self, encoding: bytes, body: bytes) -> bytes:
        if encoding == b"identity":
            raise RpcError("INTERNAL", "a compressed message without grpc-encoding")
        inflater = zlib.decompressobj(wbits=31 if encoding == b"gzip" else 15)
        try:
            out = inflater.decompress(body, self.max_message + 1)
        except zlib.error as exc:
            raise RpcError("INTERNAL", f"the message does not decompress as {encoding.decode()}: {exc}") from exc
        if len(out) > self.max_message or inflater.unconsumed_tail:
            raise self.oversize()
        return out

    def _parse(self, method: Method, body: bytes):
        try:
            return method.request.FromString(body)
        except DecodeError as exc:
            raise RpcError(
                "INVALID_ARGUMENT", f"the request is not a valid {method.request.DESCRIPTOR.full_name}: {exc}"
            ) from exc

    def _parse_or_error(self, method: Method, body: bytes):
        try:
            return self._parse(method, body)
        except RpcError as exc:
            return exc

    def _take_messages(self, conn: http2.Connection, stream: http2.Stream, call: Call) -> None:
        """Parse what a streaming call's handler can take now; the window reopens as it does."""
        room = STREAM_BUFFERED - len(call.queue)
        if room > 0 and not stream.done:
            try:
                messages, taken = self._messages(stream.data, call, most=room)
            except RpcError as exc:
                self._refuse(conn, stream, exc)
                if call.runner is not None:
                    call.runner.cancel()
                return
            # copies: a parse error kept in the queue would hold a view of stream.data in its traceback
            call.queue.extend([self._parse_or_error(call.method, bytes(body)) for body in messages])
            messages = None  # the views of stream.data go before it is cut
            if taken:
                conn.consume(stream, taken)
        if call.waiter is not None and not call.waiter.done() and (call.queue or call.finished):
            call.waiter.set_result(None)

    async def _requests(self, conn: http2.Connection, stream: http2.Stream, call: Call):
        """A streaming call's requests, as its handler asks for them."""
        loop = asyncio.get_running_loop()
        while True:
            if not call.queue:
                if call.finished and not stream.data:
                    return
                call.waiter = loop.create_future()
                await call.waiter
                call.waiter = None
                continue
            item = call.queue.popleft()
            if isinstance(item, RpcError):
                raise item
            self._take_messages(conn, stream, call)
            yield item

    # answering ----------------------------------------------------------------------------------
    def _refuse(self, conn: http2.Connection, stream: http2.Stream, exc: RpcError) -> None:
        conn.send(stream, status_block(exc.code, exc.details, trailers_only=True), None, None)
        self._answered(conn)

    def _answered(self, conn: http2.Connection) -> None:
        if self.draining:
            conn.go_away()

    async def _unary(self, conn: http2.Connection, stream: http2.Stream, call: Call, request) -> None:
        self.inflight += 1
        try:
            response = await call.method.handler(request, call)
        except RpcError as exc:
            self._refuse(conn, stream, exc)
            return
        except asyncio.CancelledError:
            if call.expired:
                self._refuse(conn, stream, RpcError("DEADLINE_EXCEEDED", "the call's grpc-timeout passed"))
            return
        except Exception as exc:  # a bug: still answered, with the reason
            log.exception("a gRPC call failed")
            self._refuse(conn, stream, RpcError("INTERNAL", f"internal error: {exc}"))
            return
        finally:
            self.inflight -= 1
            if call.timer is not None:
                call.timer.cancel()
        conn.send(stream, RESPONSE_HEADERS, frame_message(response.SerializeToString()), OK_TRAILERS)
        self._answered(conn)

    async def _stream(self, conn: http2.Connection, stream: http2.Stream, call: Call, requests) -> None:
        """A streaming handler's answers as they come, then OK; an RpcError ends the call with it."""
        started = False
        try:
            async for message in call.method.handler(requests, call):
                conn.send(
                    stream, None if started else RESPONSE_HEADERS, frame_message(message.SerializeToString()), None
                )
                started = True
                while conn.pending_bytes(stream) > SEND_BUFFERED and not stream.done:
                    await conn.sent(stream)
                if stream.done:
                    return
        except RpcError as exc:
            self._end_stream(conn, stream, exc, started)
            return
        except asyncio.CancelledError:
            if call.expired:
                self._end_stream(conn, stream, RpcError("DEADLINE_EXCEEDED", "the call's grpc-timeout passed"), started)
            return
        except Exception as exc:
            log.exception("a streaming gRPC call failed")
            self._end_stream(conn, stream, RpcError("INTERNAL", f"internal error: {exc}"), started)
            return
        finally:
            if call.timer is not None:
                call.timer.cancel()
        conn.send(stream, None if started else RESPONSE_HEADERS, None, OK_TRAILERS)
        self._answered(conn)

    def _end_stream(self, conn: http2.Connection, stream: http2.Stream, exc: RpcError, started: bool) -> None:
        """End a streaming call with ``exc``: in the trailers after its answers, or trailers-only."""
        if started:
            conn.send(stream, None, None, status_block(exc.code, exc.details, trailers_only=False))
        else:
            conn.send(stream, status_block(exc.code, exc.details, trailers_only=True), None, None)
        self._answered(conn)


class GrpcListener:
    """The gRPC port: accepts connections, and stops them gracefully."""

    def __init__(self, handler: GrpcHandler) -> None:
        self.handler = handler
        self.connections: set[http2.Connection] = set()
        self.server: asyncio.AbstractServer | None = None

    def _connection(self) -> http2.Connection:
        conn = http2.Connection(self.handler, on_close=self._closed)
        self.connections.add(conn)  # while draining, served, and sent GOAWAY after its first answer
        self.handler.connections = len(self.connections)
        return conn

    def _closed(self, conn: http2.Connection) -> None:
        self.connections.discard(conn)
        self.handler.connections = len(self.connections)

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.get_running_loop().create_server(self._connection, host, port, reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    def drain(self) -> None:
        """Ask every client to reconnect elsewhere after its calls in progress."""
        self.handler.draining = True
        for conn in list(self.connections):
            if conn.started and not conn.streams:  # the others are sent it after their next answer
                conn.go_away()

    async def stop(self, grace_s: float) -> None:
        """Refuse new connections and streams; let calls in progress finish for up to ``grace_s``."""
        if self.server is None:
            return
        self.server.close()
        for conn in list(self.connections):
            conn.go_away()
        waits = [asyncio.ensure_future(c.idle.wait()) for c in self.connections]
        if waits:
            done, pending = await asyncio.wait(waits, timeout=grace_s)
            for w in pending:
                w.cancel()
        for conn in list(self.connections):
            for stream in list(conn.streams.values()):
                conn.reset(stream)
                self.handler.stream_reset(conn, stream)
            conn.close()
        with contextlib.suppress(Exception):
            await self.server.wait_closed()
        self.server = None
