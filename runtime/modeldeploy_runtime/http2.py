"""HTTP/2 (RFC 9113) for the gRPC port, in the server's own event loop, as httpserver.py does HTTP/1.1.

grpcio's Python server was measured at 310-640 us of server CPU per unary call on the benchmark
machine, three to six times our whole REST request (bench/README.md, "gRPC against binary REST").
This connection does only what gRPC needs of HTTP/2, with the costs per request kept to a few
slices and dict look-ups: frames are parsed from each read's own bytes (only a frame the read cut
is copied), a request's header block is decoded
by ``hpack`` (python-hyper's HPACK) once and then found by its bytes (gRPC clients send the same
block with every call), and a response's frames go out in one write. Answers completed while a
read is being handled go out together at its end; one completed later (on the inference thread's
return) is written at once, so calls of one connection do not wait for each other's batch and
fall into lock-step.

What it serves: prior-knowledge HTTP/2 (gRPC clients and Kubernetes' gRPC probes start so), one
request per stream, flow control both ways, PING, SETTINGS, RST_STREAM, GOAWAY, padding, and
CONTINUATION. It never pushes. A client that sends HTTP/1.1 here gets a 400 naming the REST port.

What a client can make it hold is bounded by what the client has sent:
- a header block is at most MAX_HEADER_BLOCK bytes, compressed, and MAX_HEADER_LIST decoded;
- at most MAX_STREAMS streams are open at once (more are refused with REFUSED_STREAM);
- a stream's data is kept only once its headers were accepted (a refused stream's data is counted
  for flow control and dropped), and never past the stream's ``limit``;
- the client can send only what the windows we grant allow, and we grant a stream more only as its
  data is taken (``consume``) or, for a request read whole, up to its limit;
- when the client stops reading, this connection stops reading too, so what it queues to be
  answered (PING and SETTINGS acknowledgements included) stays bounded by the socket's buffers.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

import hpack

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x6, 0x7, 0x8, 0x9, 0xB
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

MAX_STREAMS = 100
MAX_FRAME = 1 << 20  # what we accept: fewer, larger DATA frames cost less per byte
STREAM_WINDOW = 1 << 20  # granted to each stream at its start
CONNECTION_WINDOW = 16 << 20
MAX_HEADER_BLOCK = 16 * 1024  # compressed, across HEADERS and CONTINUATION
MAX_HEADER_LIST = 16 * 1024  # decoded: names and values plus 32 bytes each (RFC 9113 6.5.2)
MAX_WINDOW = (1 << 31) - 1
HEADER_CACHE_MAX = 256
HTTP1_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)

_FRAME = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream id
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def _settings(pairs: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in pairs.items()))


SERVER_PREFACE = _settings(
    {
        S_MAX_CONCURRENT_STREAMS: MAX_STREAMS,
        S_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        S_MAX_FRAME_SIZE: MAX_FRAME,
        S_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        S_ENABLE_PUSH: 0,
    }
) + frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_WINDOW - 65535))
SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def literal_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """An HPACK block of literals without indexing (no Huffman, no table): any decoder reads it
    whatever its table holds, so blocks built once can be sent on every connection."""
    out = bytearray()
    for name, value in headers:
        out += b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value
    return bytes(out)


def _hpack_int(value: int, prefix: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([value])
    out, value = bytearray([limit]), value - limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class H2ConnectionError(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with ``code``, then the connection closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Stream:
    """One request. ``headers``: decoded, lower-case names to values (bytes; a repeated name keeps
    its last value). ``data``: what arrived and was not yet taken. ``limit``: the most this stream
    may have received in all (set by the application at its headers)."""

    __slots__ = ("id", "headers", "data", "received", "limit", "ended", "done", "refused", "window",
                 "unacked", "pending", "eager", "app")  # fmt: skip

    def __init__(self, stream_id: int, window: int) -> None:
        self.id = stream_id
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()
        self.received = 0
        self.limit = 0  # 0: the data is dropped (a refused stream)
        self.ended = False  # the client sent END_STREAM
        self.done = False  # we sent END_STREAM (or reset it)
        self.refused = False
        self.window = window  # what we may still send on it
        self.unacked = 0  # taken by the application, not yet granted back
        self.pending: list[tuple[memoryview, bool]] = []  # (data or trailers, is trailers) to send
        self.eager = True  # credit given back as data arrives (a request read whole, up to ``limit``)
        self.app = None  # the application's own state


class Handler:
    """What the application implements; every method is called on the event loop."""

    def headers_received(self, conn: Connection, stream: Stream) -> None: ...
    def data_received(self, conn: Connection, stream: Stream) -> None: ...
    def stream_ended(self, conn: Connection, stream: Stream) -> None: ...
    def received(self, conn: Connection) -> None:
        """Every frame of one read has been handled (the requests it completed can start together)."""

    def stream_reset(self, conn: Connection, stream: Stream) -> None: ...


class Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, on_close: Callable[[Connection], None] | None = None) -> None:
        self.handler = handler
        self._on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self._buf = bytearray()
        self._preface = False
        self._last_id = 0  # highest client stream id seen
        self._decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self._decoder.max_allowed_table_size = 4096
        self._cache: dict[bytes, dict[bytes, bytes]] = {}
        self._table = (0, 0, 4096)
        self._block: bytearray | None = None  # a header block awaiting CONTINUATION
        self._block_stream = 0
        self._block_end = False
        self._peer_window = 65535  # the stream window the client's SETTINGS grant
        self._peer_frame = 16384
        self._send_window = 65535  # connection-level, what we may send
        self._recv_unacked = 0  # connection-level credit to give back
        self._blocked: dict[int, Stream] = {}  # streams with data waiting for window
        self._waiters: dict[int, list[asyncio.Future]] = {}  # sent() futures by stream
        self._out = bytearray()  # frames for this pass of the loop, written at its end
        self._flush_scheduled = False
        self._reading = False
        self.going_away = False
        self.closed = False
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def started(self) -> bool:
        """The client's preface has arrived: this is an HTTP/2 connection."""
        return self._preface

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        for stream in list(self.streams.values()):
            self._forget(stream)
            self.handler.stream_reset(self, stream)
        self.idle.set()
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._reading = True  # what is sent meanwhile goes out in the one write at the end
        try:
            self._read(data)
            if not self.closed:
                self.handler.received(self)
        finally:
            self._reading = False
        self._flush()

    def _read(self, data: bytes) -> None:
        """Frames are parsed from the read's own bytes; only a frame cut by the read's end is
        copied, into ``_buf``, and completed from the next read. (Appending every read to one
        buffer and cutting its front made CPython reallocate it on each read: 0.4-0.8 ms of page
        faults per 602 KB request on a VM, more than the rest of the call.)"""
        view = memoryview(data)
        try:
            if not self._preface:
                buf = self._buf
                buf += view
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf)):
                        self._refuse_http1()
                    return
                if not buf.startswith(PREFACE):
                    self._refuse_http1()
                    return
                self._preface = True
                self._out += SERVER_PREFACE  # ours once the client's shows it speaks HTTP/2
                view = memoryview(buf[len(PREFACE) :])  # a copy: buf is emptied
                buf.clear()
            if self._buf:
                view = self._complete(view)
                if view is None or self.closed:
                    return
            taken = self._frames(view)
            if taken < len(view) and not self.closed:
                self._buf += view[taken:]
        except H2ConnectionError as exc:
            self.abort(exc.code, str(exc))

    def _complete(self, view: memoryview) -> memoryview | None:
        """Complete the frame that an earlier read cut from the front of ``view``, and handle it;
        what follows it in ``view``, or None when this read did not complete it either."""
        buf = self._buf
        if len(buf) < 9:
            take = min(9 - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if len(buf) < 9:
                return None
        length = self._length(buf, 0)
        take = min(9 + length - len(buf), len(view))
        buf += view[:take]
        view = view[take:]
        if len(buf) < 9 + length:
            return None
        whole = memoryview(buf)
        try:
            self._frames(whole)
        finally:
            whole.release()
        buf.clear()
        return view

    @staticmethod
    def _length(data, pos: int) -> int:
        hi, lo = _FRAME.unpack_from(data, pos)[:2]
        length = (hi << 8) | lo
        if length > MAX_FRAME:
            raise H2ConnectionError(FRAME_SIZE_ERROR, f"a frame of {length} bytes, over {MAX_FRAME}")
        return length

    def _frames(self, view: memoryview) -> int:
        """Handle the whole frames at the front of ``view``; the bytes they took."""
        pos, end = 0, len(view)
        while end - pos >= 9:
            length = self._length(view, pos)
            if end - pos - 9 < length:
                break
            kind, flags, stream_id = _FRAME.unpack_from(view, pos)[2:]
            start = pos + 9
            pos = start + length
            self._frame(kind, flags, stream_id & 0x7FFFFFFF, view[start:pos])
            if self.closed:
                break
        return pos

    # frames -------------------------------------------------------------------------------------
    def _frame(self, kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise H2ConnectionError(PROTOCOL_ERROR, "a header block was not followed by its CONTINUATION")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if self._block is None or stream_id != self._block_stream:
                raise H2ConnectionError(PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
            self._block += payload
            if len(self._block) > MAX_HEADER_BLOCK:
                raise H2ConnectionError(ENHANCE_YOUR_CALM, f"a header block over {MAX_HEADER_BLOCK} bytes")
            if flags & END_HEADERS:
                block, self._block = bytes(self._block), None
                self._header_block(stream_id, block, self._block_end)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            if stream_id or len(payload) != 8:
                raise H2ConnectionError(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "a malformed PING")
            if not flags & ACK:
                self._out += frame(PING, ACK, 0, bytes(payload))
        elif kind == RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise H2ConnectionError(PROTOCOL_ERROR, "a malformed RST_STREAM")
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._forget(stream)
                self.handler.stream_reset(self, stream)
        elif kind == GOAWAY:
            self.going_away = True
        elif kind == PRIORITY:
            if not stream_id or len(payload) != 5:
                raise H2ConnectionError(PROTOCOL_ERROR, "a malformed PRIORITY")
        elif kind == PUSH_PROMISE:
            raise H2ConnectionError(PROTOCOL_ERROR, "a client may not push")
        # other frame types are ignored (RFC 9113 4.1)

    def _strip_padding(self, flags: int, payload: memoryview) -> memoryview:
        if flags & PADDED:
            if not payload:
                raise H2ConnectionError(PROTOCOL_ERROR, "a padded frame without its pad length")
            pad = payload[0]
            if pad >= len(payload):
                raise H2ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
            payload = payload[1 : len(payload) - pad]
        return payload

    def _headers(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if not stream_id or not stream_id & 1:
            raise H2ConnectionError(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}: clients open odd streams")
        payload = self._strip_padding(flags, payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if len(payload) > MAX_HEADER_BLOCK:
            raise H2ConnectionError(ENHANCE_YOUR_CALM, f"a header block over {MAX_HEADER_BLOCK} bytes")
        if flags & END_HEADERS:
            self._header_block(stream_id, bytes(payload), bool(flags & END_STREAM))
        else:
            self._block, self._block_stream, self._block_end = bytearray(payload), stream_id, bool(flags & END_STREAM)

    def _decode(self, block: bytes) -> dict[bytes, bytes]:
        """The block's headers. Decoded blocks are kept by their bytes while the HPACK table is
        unchanged, so a client's repeated block costs one dict look-up."""
        headers = self._cache.get(block)
        if headers is not None:
            return headers
        try:
            decoded = self._decoder.decode(block, raw=True)
        except Exception as exc:  # hpack's errors: the table is now out of step, so the connection ends
            raise H2ConnectionError(COMPRESSION_ERROR, f"the header block cannot be decoded: {exc}") from exc
        headers = {bytes(name).lower(): bytes(value) for name, value in decoded}
        table = self._decoder.header_table
        entries = table.dynamic_entries
        state = (len(entries), id(entries[0]) if entries else 0, table.maxsize)
        if state != self._table:
            self._table = state
            self._cache.clear()  # entries moved: a kept block may now mean something else
        elif len(self._cache) < HEADER_CACHE_MAX:
            self._cache[block] = headers
        return headers

    def _header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        headers = self._decode(block)  # always: the HPACK table must follow every block
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client
            if not end_stream:
                raise H2ConnectionError(PROTOCOL_ERROR, "a second header block that does not end the stream")
            self._end(stream)
            return
        if stream_id <= self._last_id:
            return  # a stream we reset or finished: nothing more to do with it
        self._last_id = stream_id
        stream = Stream(stream_id, self._peer_window)
        stream.headers = headers
        if self.going_away or len(self.streams) >= MAX_STREAMS:
            self._out += frame(RST_STREAM, 0, stream_id, _U32.pack(REFUSED_STREAM))
            return
        stream.ended = end_stream  # before the handler: an answer given at once must not reset it
        self.streams[stream_id] = stream
        self.idle.clear()
        self.handler.headers_received(self, stream)
        if end_stream and stream.id in self.streams:
            self.handler.stream_ended(self, stream)
            self._maybe_forget(stream)

    def _end(self, stream: Stream) -> None:
        stream.ended = True
        self.handler.stream_ended(self, stream)
        self._maybe_forget(stream)

    def _data(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if not stream_id:
            raise H2ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)  # the whole frame counts for flow control, padding too
        self._recv_unacked += size
        if self._recv_unacked >= CONNECTION_WINDOW // 2:
            self._out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_unacked))
            self._recv_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended:
            return  # a stream already answered and forgotten, or over: its data is dropped
        payload = self._strip_padding(flags, payload)
        stream.received += len(payload)
        if stream.limit and not stream.refused:
            if stream.received > stream.limit:
                stream.refused = True
                stream.data = bytearray()
                self.handler.data_received(self, stream)  # sees ``refused`` and answers
            else:
                stream.data += payload
                stream.unacked += len(payload)
                if size > len(payload):  # padding is never kept: its credit goes back at once
                    self._out += frame(WINDOW_UPDATE, 0, stream.id, _U32.pack(size - len(payload)))
                if stream.eager and stream.unacked >= STREAM_WINDOW // 2:
                    self.grant(stream)
                self.handler.data_received(self, stream)
        if flags & END_STREAM and stream.id in self.streams:
            self._end(stream)

    def _settings(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if stream_id:
            raise H2ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "a SETTINGS frame whose length is not a multiple of 6")
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2ConnectionError(FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                delta, self._peer_window = value - self._peer_window, value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == S_MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise H2ConnectionError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} is out of range")
                self._peer_frame = value
        self._out += SETTINGS_ACK
        self._unblock()

    def _window_update(self, stream_id: int, payload: memoryview) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "a WINDOW_UPDATE of the wrong length")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise H2ConnectionError(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise H2ConnectionError(FLOW_CONTROL_ERROR, "the connection window went over 2^31-1")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return
            stream.window += increment
        self._unblock()

    # what the application calls -----------------------------------------------------------------
    def consume(self, stream: Stream, n: int) -> None:
        """``n`` bytes of ``stream.data`` were taken: drop them and let the client send as much more
        (and no more: what is still kept stays counted against the stream's window)."""
        del stream.data[:n]
        self.grant(stream, n)

    def grant(self, stream: Stream, n: int | None = None) -> None:
        """Give back the stream's credit for ``n`` bytes the application has taken (all it has
        received when ``n`` is None)."""
        credit = stream.unacked if n is None else min(n, stream.unacked)
        if credit and not stream.ended and not stream.done:
            self._out += frame(WINDOW_UPDATE, 0, stream.id, _U32.pack(credit))
            stream.unacked -= credit
            self._schedule_flush()

    def send(self, stream: Stream, headers: bytes | None, data: bytes | None, trailers: bytes | None) -> None:
        """Queue a header block, data and a trailer block (which ends the stream), any of them
        absent; data beyond the flow-control windows waits for the client's WINDOW_UPDATEs."""
        if stream.done or self.closed:
            return
        if headers is not None:
            end = not data and trailers is None
            self._out += frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), stream.id, headers)
            if end:
                self._finish(stream)
        if data:
            stream.pending.append((memoryview(data), False))
        if trailers is not None:
            stream.pending.append((memoryview(trailers), True))
        if stream.pending:
            self._drain(stream)
        if self._reading:  # answered while its read is handled: in that read's one write
            return
        self._flush()  # an answer that completes later goes out at once (see the module's docstring)

    def pending_bytes(self, stream: Stream) -> int:
        """Bytes of the stream's answer waiting for the client's window."""
        return sum(len(view) for view, _ in stream.pending)

    def sent(self, stream: Stream) -> asyncio.Future:
        """Resolves once the stream has nothing waiting (or is gone)."""
        future = asyncio.get_running_loop().create_future()
        if not stream.pending or stream.done:
            future.set_result(None)
        else:
            self._waiters.setdefault(stream.id, []).append(future)
        return future

    def _wake(self, stream: Stream) -> None:
        for future in self._waiters.pop(stream.id, ()):
            if not future.done():
                future.set_result(None)

    def reset(self, stream: Stream, code: int = CANCEL) -> None:
        if stream.id in self.streams:
            self._out += frame(RST_STREAM, 0, stream.id, _U32.pack(code))
            self._forget(stream)
            self._schedule_flush()

    def go_away(self) -> None:
        """Tell the client to open no more streams here; those open are served to their end. Before
        the client's preface, the connection is closed instead (a GOAWAY may not come first)."""
        if not self._preface:
            self.close()
            return
        if not self.going_away and not self.closed:
            self.going_away = True
            self._out += frame(GOAWAY, 0, 0, _U32.pack(self._last_id) + _U32.pack(NO_ERROR))
            self._schedule_flush()

    def abort(self, code: int, message: str) -> None:
        if self.closed:
            return
        log.info("closing an HTTP/2 connection: %s", message)
        self._out += frame(GOAWAY, 0, 0, _U32.pack(self._last_id) + _U32.pack(code) + message.encode()[:256])
        self._flush()
        self.transport.close()
        self.closed = True

    def close(self) -> None:
        if not self.closed:
            self._flush()
            self.transport.close()
            self.closed = True

    # sending ------------------------------------------------------------------------------------
    def _drain(self, stream: Stream) -> None:
        """Frames of what the stream has pending, within the windows; what does not fit waits."""
        out, pending = self._out, stream.pending
        while pending:
            view, trailers = pending[0]
            if trailers:
                out += frame(HEADERS, END_HEADERS | END_STREAM, stream.id, view)
                pending.clear()
                self._finish(stream)
                break
            while view:
                room = min(stream.window, self._send_window, self._peer_frame)
                if room <= 0:
                    pending[0] = (view, False)
                    self._blocked[stream.id] = stream
                    return
                chunk = view[:room]
                out += frame(DATA, 0, stream.id, chunk)
                stream.window -= len(chunk)
                self._send_window -= len(chunk)
                view = view[room:]
            pending.pop(0)
        self._blocked.pop(stream.id, None)
        if stream.id in self._waiters:
            self._wake(stream)

    def _unblock(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                return
            self._drain(stream)

    def _finish(self, stream: Stream) -> None:
        stream.done = True
        self._maybe_forget(stream)

    def _maybe_forget(self, stream: Stream) -> None:
        if stream.done and stream.ended:
            self._forget(stream)
        elif stream.done and stream.id in self.streams:
            # answered before the client finished sending: it need not send the rest
            self._out += frame(RST_STREAM, 0, stream.id, _U32.pack(NO_ERROR))
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        stream.done = True
        self.streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        if stream.id in self._waiters:
            self._wake(stream)
        if not self.streams:
            self.idle.set()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._out and not self._reading:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed:
            self.transport.write(bytes(self._out))
            self._out.clear()

    def _refuse_http1(self) -> None:
        body = b"this port speaks gRPC (HTTP/2); the REST API is on the server's HTTP port\n"
        self.transport.write(HTTP1_REFUSAL % (len(body), body))
        self.transport.close()
        self.closed = True
        self._buf.clear()
