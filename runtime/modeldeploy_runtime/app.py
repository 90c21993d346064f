"""The HTTP adapter: routes v2 REST requests to the data plane.

It only adapts: reads headers, checks the bearer token, undoes the Content-Encoding, decodes the
body into an InferRequest (codec.py), calls the data plane, encodes its InferResponse, and turns
ServingErrors into responses. It sees requests as plain objects from httpserver.py and knows
nothing of sockets.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .auth import BearerAuth
from .codec import BinaryLayout, decode_request_layout, decompress, dumps, encode_infer_response
from .dataplane import DataPlane
from .errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServingError,
    Unauthorized,
    http_status,
)
from .httpserver import Request, Response
from .types import InferRequest, RequestedOutput

log = logging.getLogger(__name__)

BINARY = b"application/octet-stream"
BINARY_HEADER = b"inference-header-content-length"
MODELS_PREFIX = "/v2/models/"
_READY = b'{"ready":true}'
_NOT_READY = b'{"ready":false}'
_METRICS_TYPE = CONTENT_TYPE_LATEST.encode()
GET_PATHS = frozenset({"/v2", "/v2/", "/v2/health/live", "/v2/health/ready", "/metrics"})
GET = ("GET", "HEAD")  # HEAD is answered as GET, without the body
# The longest Inference-Header-Content-Length read: a JSON header is at most the body limit, and
# int() of thousands of digits raises instead of answering.
MAX_HEADER_LENGTH_DIGITS = 18
# Binary requests whose JSON header was seen before skip parsing it again: a client sends the
# same header with every request of a shape. 600 KB images spent 45 us here (caches are cold
# after an inference), a tenth of the server's whole added latency.
SEEN_HEADER_MAX = 16 * 1024
SEEN_MAX = 256
# Requests whose JSON is at least this long (and compressed ones) are decoded on a thread of their
# own, so that one of them cannot keep the event loop, and the health probes it answers, waiting:
# a 57 MB JSON request held it for 3 to 9 s. Below this, decoding takes a few ms and the two
# thread hand-offs (0.1 ms) would be felt.
OFFLOAD_MIN_BYTES = 1 << 20
OFFLOAD_MIN_COMPRESSED = 1 << 10


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a binary request's JSON header said: everything but the tensors' bytes."""

    layout: BinaryLayout
    id: str | None
    outputs: list[RequestedOutput] | None
    binary_output: bool
    parameters: dict[str, Any]

    def request(self, body) -> InferRequest:
        return InferRequest(self.layout.inputs(body), self.id, self.outputs, self.binary_output, self.parameters)


def parse_model_path(path: str) -> tuple[str, str | None, str]:
    """``/v2/models/NAME[/versions/V][/ACTION]`` -> (name, version or None, action or "")."""
    parts = path[len(MODELS_PREFIX) :].rstrip("/").split("/")
    name, version, rest = parts[0], None, parts[1:]
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
    if not name or len(rest) > 1 or (rest and rest[0] not in ("ready", "infer", "config")):
        raise NotFound(f"no such endpoint {path}; see /v2/models/NAME[/versions/V][/ready|/infer|/config]")
    return name, version, rest[0] if rest else ""


def error_response(exc: ServingError) -> Response:
    headers = []
    if exc.reason in ("overloaded", "not_ready", "queue_timeout"):
        headers.append((b"retry-after", b"1"))
    elif exc.reason == "unauthorized":
        headers.append((b"www-authenticate", b'Bearer realm="modeldeploy"'))
    elif isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", exc.allow.encode()))
    return Response(http_status(exc), dumps({"error": str(exc)}), headers=headers)


def _allow(method: str, path: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"{path} takes {' or '.join(allowed)}", ", ".join(allowed))


class App:
    def __init__(self, dataplane: DataPlane, auth_token: str = "", max_body_bytes: int = 64 << 20) -> None:
        self.dp = dataplane
        self.auth = BearerAuth(auth_token)
        self.max_body = max_body_bytes
        self._seen: dict[bytes, _Seen] = {}  # by JSON header of binary requests
        # one thread: large requests are decoded one at a time, which also bounds their memory
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")

    def close(self) -> None:
        self._decoder.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, request: Request) -> Response:
        try:
            endpoint, name, version = self._resolve(request)
            if endpoint == "infer":
                return await self._infer(request, name, version)
            return self._answer(endpoint, name, version)
        except ServingError as exc:
            return error_response(exc)

    def screen(self, request: Request) -> Response | None:
        """Called when the head of a request with a body is complete: the refusal of a request
        that would not get to use its body (unknown path, wrong method, missing or wrong token,
        a body sent to an endpoint that reads none), sent before any of the body is kept; None
        otherwise."""
        try:
            endpoint, _, _ = self._resolve(request)
        except ServingError as exc:
            return error_response(exc)
        if endpoint != "infer":  # health and metrics are open: a body there would be kept for nothing
            return error_response(BadRequest(f"{request.method} {request.path} takes no request body"))
        return None

    def too_large(self, request: Request, size: int) -> Response:
        """The answer to a body over the limit, given before the body is read."""
        self.dp.metrics.failure(PayloadTooLarge.reason)
        return error_response(
            PayloadTooLarge(
                f"the request body has {size} bytes or more, over the {self.max_body}-byte limit "
                "(MODELDEPLOY_MAX_BODY_BYTES); send fewer rows per request"
            )
        )

    def _authorize(self, request: Request) -> None:
        if self.auth.enabled and not request.vetted and not self.auth.allows(request.header(b"authorization")):
            self.dp.metrics.failure(Unauthorized.reason)
            raise Unauthorized(
                "this endpoint needs the header 'Authorization: Bearer <token>' with the server's token "
                "(MODELDEPLOY_AUTH_TOKEN)"
            )

    def _resolve(self, request: Request) -> tuple[str, str | None, str | None]:
        """(endpoint, model name, model version) of a request whose path, method and token are
        right; raises NotFound, MethodNotAllowed or Unauthorized."""
        path, method = request.path, request.method
        if path.startswith(MODELS_PREFIX):
            name, version, action = parse_model_path(path)
            if action == "infer":
                _allow(method, path, ("POST",))
                self._authorize(request)
                return "infer", name, version
            _allow(method, path, GET)
            if action != "ready":  # a health endpoint: open like the others
                self._authorize(request)
            return action or "metadata", name, version
        if path not in GET_PATHS:
            raise NotFound(f"no such endpoint {path}; the v2 API is under /v2 (health: /v2/health/ready)")
        _allow(method, path, GET)
        if path in ("/v2", "/v2/"):  # server metadata
            self._authorize(request)
            return "server", None, None
        return path, None, None

    def _answer(self, endpoint: str, name: str | None, version: str | None) -> Response:
        if endpoint == "/v2/health/live":
            return Response(200, b'{"live":true}')
        if endpoint == "/v2/health/ready":
            ready = self.dp.ready
            return Response(200 if ready else 503, _READY if ready else _NOT_READY)
        if endpoint == "/metrics":
            return Response(200, generate_latest(self.dp.metrics.registry), _METRICS_TYPE)
        if endpoint == "server":
            return Response(200, dumps(self.dp.server_metadata()))
        if endpoint == "ready":
            ready = self.dp.model_ready(name, version)
            return Response(200 if ready else 503, _READY if ready else _NOT_READY)
        if endpoint == "config":
            return Response(200, dumps(self.dp.model_config(name, version)))
        return Response(200, dumps(self.dp.model_metadata(name, version)))

    def _decode(self, body, header_length: int | None, content_encoding: str) -> InferRequest:
        if content_encoding:
            body = decompress(body, content_encoding, self.max_body)
        key = None
        if header_length is not None and 0 < header_length <= min(len(body), SEEN_HEADER_MAX):
            key = bytes(body[:header_length])
            seen = self._seen.get(key)
            if seen is not None and seen.layout.size == len(body):
                return seen.request(body)
        request, layout = decode_request_layout(body, header_length)
        if key is not None and layout is not None:
            if len(self._seen) >= SEEN_MAX:
                self._seen.clear()
            self._seen[key] = _Seen(layout, request.id, request.outputs, request.binary_output, request.parameters)
        return request

    def _header_length(self, request: Request) -> int | None:
        raw_len = request.header(BINARY_HEADER)
        if raw_len is None:
            return None
        raw_len = raw_len.strip()
        if not raw_len.isdigit() or len(raw_len) > MAX_HEADER_LENGTH_DIGITS:
            shown = raw_len[:40].decode(errors="replace") + ("..." if len(raw_len) > 40 else "")
            raise BadRequest(
                f"Inference-Header-Content-Length is {shown!r} ({len(raw_len)} characters); it must be "
                f"the byte length of the JSON header, at most the {len(request.body)}-byte body"
            )
        return int(raw_len)

    async def _infer(self, request: Request, name: str, version: str | None) -> Response:
        body = request.body
        try:
            header_length = self._header_length(request)
            self.dp.admit(name, version)
            raw = request.header(b"content-encoding")
            encoding = raw.decode("latin-1") if raw else ""
            json_bytes = len(body) if header_length is None else header_length
            if (encoding and len(body) >= OFFLOAD_MIN_COMPRESSED) or json_bytes >= OFFLOAD_MIN_BYTES:
                loop = asyncio.get_running_loop()
                decoded = await loop.run_in_executor(self._decoder, self._decode, body, header_length, encoding)
            else:
                decoded = self._decode(body, header_length, encoding)
        except ServingError as exc:
            self.dp.metrics.failure(exc.reason)
            raise
        except Exception as exc:  # a bug in decoding: still answered, and counted
            log.exception("decoding a request failed")
            self.dp.metrics.failure(InternalError.reason)
            raise InternalError(f"decoding the request failed: {exc}") from exc
        response = await self.dp.infer(name, version, decoded, started=request.received, alone=request.alone)
        out, out_header_length = encode_infer_response(response)
        if out_header_length is None:
            return Response(200, out)
        return Response(200, out, BINARY, [(b"inference-header-content-length", b"%d" % out_header_length)])
