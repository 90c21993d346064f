"""The HTTP adapter: routes v2 REST requests to the data plane.

It only adapts: reads headers, checks the bearer token, calls the data plane, and turns results
and ServingErrors into responses. It sees requests as plain objects from httpserver.py and knows
nothing of sockets.
"""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .auth import BearerAuth
from .codec import dumps
from .dataplane import DataPlane
from .errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServingError,
    Unauthorized,
    http_status,
)
from .httpserver import Request, Response

log = logging.getLogger(__name__)

BINARY = b"application/octet-stream"
BINARY_HEADER = b"inference-header-content-length"
MODELS_PREFIX = "/v2/models/"
_READY = b'{"ready":true}'
_NOT_READY = b'{"ready":false}'
_METRICS_TYPE = CONTENT_TYPE_LATEST.encode()
GET_PATHS = frozenset({"/v2", "/v2/", "/v2/health/live", "/v2/health/ready", "/metrics"})


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
    if exc.reason in ("overloaded", "not_ready"):
        headers.append((b"retry-after", b"1"))
    elif exc.reason == "unauthorized":
        headers.append((b"www-authenticate", b'Bearer realm="modeldeploy"'))
    return Response(http_status(exc), dumps({"error": str(exc)}), headers=headers)


class App:
    def __init__(self, dataplane: DataPlane, auth_token: str = "", max_body_bytes: int = 64 << 20) -> None:
        self.dp = dataplane
        self.auth = BearerAuth(auth_token)
        self.max_body = max_body_bytes

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except ServingError as exc:
            return error_response(exc)

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
        if self.auth.enabled and not self.auth.allows(request.header(b"authorization")):
            self.dp.metrics.failure(Unauthorized.reason)
            raise Unauthorized(
                "this endpoint needs the header 'Authorization: Bearer <token>' with the server's token "
                "(MODELDEPLOY_AUTH_TOKEN)"
            )

    async def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path.startswith(MODELS_PREFIX):
            name, version, action = parse_model_path(path)
            if action == "infer":
                if method != "POST":
                    raise MethodNotAllowed(f"{path} takes POST")
                self._authorize(request)
                return await self._infer(request, name, version)
            if method != "GET":
                raise MethodNotAllowed(f"{path} takes GET")
            if action == "ready":  # a health endpoint: open like the others
                ready = self.dp.model_ready(name, version)
                return Response(200 if ready else 503, _READY if ready else _NOT_READY)
            self._authorize(request)
            if action == "config":
                return Response(200, dumps(self.dp.model_config(name, version)))
            return Response(200, dumps(self.dp.model_metadata(name, version)))
        if path not in GET_PATHS:
            raise NotFound(f"no such endpoint {path}; the v2 API is under /v2 (health: /v2/health/ready)")
        if method != "GET":
            raise MethodNotAllowed(f"{path} takes GET")
        if path == "/v2/health/live":
            return Response(200, b'{"live":true}')
        if path == "/v2/health/ready":
            ready = self.dp.ready
            return Response(200 if ready else 503, _READY if ready else _NOT_READY)
        if path == "/metrics":
            return Response(200, generate_latest(self.dp.metrics.registry), _METRICS_TYPE)
        self._authorize(request)  # what is left is server metadata
        return Response(200, dumps(self.dp.server_metadata()))

    async def _infer(self, request: Request, name: str, version: str | None) -> Response:
        raw_len = request.header(BINARY_HEADER)
        header_length = None
        if raw_len is not None:
            if not raw_len.strip().isdigit():
                self.dp.metrics.failure(BadRequest.reason)
                shown = raw_len.decode(errors="replace")
                raise BadRequest(
                    f"Inference-Header-Content-Length is {shown!r}; it must be the byte length of the JSON header"
                )
            header_length = int(raw_len)
        encoding = request.header(b"content-encoding")
        body, out_header_length = await self.dp.infer(
            name,
            version,
            request.body,
            header_length,
            encoding.decode("latin-1") if encoding else "",
            self.max_body,
            request.received,
            request.alone,
        )
        if out_header_length is None:
            return Response(200, body)
        return Response(200, body, BINARY, [(b"inference-header-content-length", b"%d" % out_header_length)])
