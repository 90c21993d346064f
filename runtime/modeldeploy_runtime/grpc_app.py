"""The gRPC adapter: the v2 gRPC API (``inference.GRPCInferenceService``) and ``grpc.health.v1``
on a port of their own, over the same data plane as REST.

It only adapts, as app.py does for REST: checks the bearer token in the ``authorization``
metadata (before any of the request's data is kept), decodes each ModelInferRequest into an
InferRequest (grpc_codec.py), calls the data plane (the same batcher, metrics under
``protocol="grpc"``, limits and checks), encodes the InferResponse, and turns ServingErrors into
gRPC status codes (errors.GRPC_STATUS). The message size limit is the REST body limit. Health
(ServerLive, ServerReady, ModelReady, grpc.health.v1) is open, like REST's. The calls arrive
through grpc_server.py over our own HTTP/2 (http2.py); the messages are the published proto's.
"""

from __future__ import annotations

import asyncio
import logging
import time

from grpc_health.v1 import health_pb2

from .auth import BearerAuth
from .dataplane import DataPlane
from .errors import InternalError, InvalidConfiguration, PayloadTooLarge, ServingError, Unauthorized, grpc_status
from .grpc_codec import decode_infer_request, encode_infer_response, tensor_metadata
from .grpc_server import GrpcHandler, GrpcListener, Method, RpcError
from .v2grpc import grpc_service_pb2 as pb

log = logging.getLogger(__name__)

PROTOCOL = "grpc"
SERVICE = "inference.GRPCInferenceService"
HEALTH = "grpc.health.v1.Health"
# grpc.health.v1 services: "" (what a Kubernetes grpc probe asks by default) and the v2 service are
# SERVING once the model is ready, and stop when it drains; "live" is SERVING while the process runs.
READY_SERVICES = frozenset({"", SERVICE})
LIVE_SERVICE = "live"
HEALTH_WATCH_POLL_S = 0.5
# ModelStreamInfer: requests of one stream served at once (each still waits its turn in the
# batcher); the next is read when one finishes, so a client that does not read cannot pile up
# answers in the server.
STREAM_WINDOW = 64
_UNAUTHORIZED = (
    "this call needs the metadata 'authorization: Bearer <token>' with the server's token (MODELDEPLOY_AUTH_TOKEN)"
)


def rpc_error(exc: ServingError) -> RpcError:
    return RpcError(grpc_status(exc), str(exc))


class InferenceService:
    def __init__(self, dataplane: DataPlane, auth_token: str = "", max_message_bytes: int = 64 << 20) -> None:
        self.dp = dataplane
        self.auth = BearerAuth(auth_token)
        self.max_message_bytes = max_message_bytes

    def methods(self) -> dict[bytes, Method]:
        v2 = {
            "ServerLive": Method(pb.ServerLiveRequest, self.server_live, open=True),
            "ServerReady": Method(pb.ServerReadyRequest, self.server_ready, open=True),
            "ModelReady": Method(pb.ModelReadyRequest, self.model_ready, open=True),
            "ServerMetadata": Method(pb.ServerMetadataRequest, self.server_metadata),
            "ModelMetadata": Method(pb.ModelMetadataRequest, self.model_metadata),
            "ModelInfer": Method(pb.ModelInferRequest, self.model_infer),
            "ModelStreamInfer": Method(pb.ModelInferRequest, self.model_stream_infer, kind="bidi"),
        }
        health = HealthService(self.dp)
        table = {f"/{SERVICE}/{name}".encode(): m for name, m in v2.items()}
        table[f"/{HEALTH}/Check".encode()] = Method(health_pb2.HealthCheckRequest, health.check, open=True)
        table[f"/{HEALTH}/Watch".encode()] = Method(
            health_pb2.HealthCheckRequest, health.watch, kind="server_stream", open=True
        )
        return table

    def authorize(self, method: Method, headers: dict[bytes, bytes]) -> RpcError | None:
        if method.open or self.auth.allows(headers.get(b"authorization")):
            return None
        self.dp.metrics.failure(Unauthorized.reason, PROTOCOL)
        return RpcError("UNAUTHENTICATED", _UNAUTHORIZED)

    def oversize(self) -> RpcError:
        self.dp.metrics.failure(PayloadTooLarge.reason, PROTOCOL)
        return RpcError(
            "RESOURCE_EXHAUSTED",
            f"the request message is over {self.max_message_bytes} bytes (MODELDEPLOY_MAX_BODY_BYTES); "
            "send smaller batches",
        )

    # health ---------------------------------------------------------------------------------
    async def server_live(self, request, call):
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request, call):
        return pb.ServerReadyResponse(ready=self.dp.ready)

    async def model_ready(self, request, call):
        try:
            return pb.ModelReadyResponse(ready=self.dp.model_ready(request.name, request.version))
        except ServingError as exc:
            raise rpc_error(exc) from None

    # metadata -------------------------------------------------------------------------------
    async def server_metadata(self, request, call):
        meta = self.dp.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    async def model_metadata(self, request, call):
        try:
            meta = self.dp.model_metadata(request.name, request.version)
        except ServingError as exc:
            raise rpc_error(exc) from None
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=tensor_metadata(meta["inputs"]),
            outputs=tensor_metadata(meta["outputs"]),
        )

    # inference ------------------------------------------------------------------------------
    async def _serve(self, request: pb.ModelInferRequest, started: float, alone: bool) -> pb.ModelInferResponse:
        """One inference; raises ServingError (counted) for any refusal."""
        name, version = request.model_name, request.model_version
        try:
            self.dp.admit(name, version)
            decoded = decode_infer_request(request)
        except ServingError as exc:
            self.dp.metrics.failure(exc.reason, PROTOCOL)
            raise
        except Exception as exc:  # a bug in decoding: still answered, and counted
            log.exception("decoding a gRPC request failed")
            self.dp.metrics.failure(InternalError.reason, PROTOCOL)
            raise InternalError(f"decoding the request failed: {exc}") from exc
        response = await self.dp.infer(name, version, decoded, protocol=PROTOCOL, started=started, alone=alone)
        return encode_infer_response(response)

    async def model_infer(self, request, call):
        started = time.perf_counter()
        try:
            # alone: no other gRPC call is in progress, so nothing could join this one's batch
            return await self._serve(request, started, call.alone)
        except ServingError as exc:
            raise rpc_error(exc) from None

    async def model_stream_infer(self, requests, call):
        """Each request gets one ModelStreamInferResponse, in the order they finish (tritonclient
        matches them by ``id``); a refused request gets its error_message and the stream goes on."""
        done: asyncio.Queue = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)
        pending = 0
        reading = True
        tasks: set[asyncio.Task] = set()  # held, so that none is collected while it runs

        async def one(request):
            try:
                message = pb.ModelStreamInferResponse(
                    infer_response=await self._serve(request, time.perf_counter(), False)
                )
            except ServingError as exc:
                message = pb.ModelStreamInferResponse(error_message=str(exc))
            except Exception as exc:  # a bug: answered all the same, or the stream would wait for it forever
                log.exception("a streamed inference failed")
                message = pb.ModelStreamInferResponse(error_message=f"internal error: {exc}")
            finally:
                window.release()
            await done.put(message)

        async def read():
            nonlocal pending, reading
            try:
                async for request in requests:
                    await window.acquire()
                    pending += 1
                    task = asyncio.ensure_future(one(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            except RpcError as exc:  # a message that does not parse: answered in the stream, which goes on
                await window.acquire()
                window.release()
                pending += 1
                await done.put(pb.ModelStreamInferResponse(error_message=exc.details))
            finally:
                reading = False
                await done.put(None)  # wakes the writer to see that reading ended

        reader = asyncio.ensure_future(read())
        try:
            while reading or pending:
                message = await done.get()
                if message is None:
                    continue
                pending -= 1
                yield message
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()


class HealthService:
    """grpc.health.v1 from the data plane's state, read at each call (nothing to keep in step)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    def _status(self, service: str):
        if service == LIVE_SERVICE:
            return health_pb2.HealthCheckResponse.SERVING
        if service in READY_SERVICES:
            return (
                health_pb2.HealthCheckResponse.SERVING if self.dp.ready else health_pb2.HealthCheckResponse.NOT_SERVING
            )
        return None

    async def check(self, request, call):
        status = self._status(request.service)
        if status is None:
            raise RpcError("NOT_FOUND", f"unknown service {request.service!r}; ask '', {SERVICE!r} or {LIVE_SERVICE!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def watch(self, request, call):
        last = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(HEALTH_WATCH_POLL_S)


class GrpcServer:
    def __init__(self, dataplane: DataPlane, host: str, port: int, auth_token: str, max_message_bytes: int) -> None:
        self.host, self.requested_port = host, port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        service = InferenceService(dataplane, auth_token, max_message_bytes)
        self.listener = GrpcListener(
            GrpcHandler(service.methods(), service.authorize, service.oversize, max_message_bytes)
        )
        self.port = 0

    async def start(self) -> None:
        try:
            self.port = await self.listener.start(self.host, self.requested_port)
        except OSError as exc:
            raise InvalidConfiguration(
                f"cannot serve gRPC on {self.address} ({exc.strerror or exc}); "
                "set MODELDEPLOY_GRPC_PORT to a free port, or 0 for no gRPC"
            ) from exc

    def drain(self) -> None:
        """Clients are asked (GOAWAY) to take their next calls elsewhere."""
        self.listener.drain()

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let those in progress finish for up to ``grace_s``."""
        await self.listener.stop(grace_s)
