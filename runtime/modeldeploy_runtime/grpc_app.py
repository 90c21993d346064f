"""The gRPC adapter: the v2 gRPC API (``inference.GRPCInferenceService``) and ``grpc.health.v1``
on a port of their own, over the same data plane as REST.

It only adapts, as app.py does for REST: checks the bearer token in the ``authorization``
metadata, decodes each ModelInferRequest into an InferRequest (grpc_codec.py), calls the data
plane (the same batcher, metrics under ``protocol="grpc"``, limits and checks), encodes the
InferResponse, and turns ServingErrors into gRPC status codes (errors.GRPC_STATUS). The message
size limit is the REST body limit; grpc refuses a larger message itself (RESOURCE_EXHAUSTED).
Health (ServerLive, ServerReady, ModelReady, grpc.health.v1) is open, like REST's.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .auth import BearerAuth
from .dataplane import DataPlane
from .errors import InternalError, InvalidConfiguration, ServingError, Unauthorized, grpc_status
from .grpc_codec import decode_infer_request, encode_infer_response, tensor_metadata
from .v2grpc import grpc_service_pb2 as pb
from .v2grpc import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

PROTOCOL = "grpc"
SERVICE = "inference.GRPCInferenceService"
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


def _abort_status(context, exc: ServingError) -> None:
    context.set_code(grpc.StatusCode[grpc_status(exc)])
    context.set_details(str(exc))


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, auth_token: str = "") -> None:
        self.dp = dataplane
        self.auth = BearerAuth(auth_token)
        self.calls = 0  # inference calls in progress

    def _authorize(self, context) -> None:
        if not self.auth.enabled:
            return
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                if self.auth.allows(value.encode() if isinstance(value, str) else value):
                    return
                break
        raise Unauthorized(_UNAUTHORIZED)

    def _refuse(self, context, exc: ServingError, empty):
        _abort_status(context, exc)
        return empty()

    # health ---------------------------------------------------------------------------------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dp.ready)

    async def ModelReady(self, request, context):
        try:
            return pb.ModelReadyResponse(ready=self.dp.model_ready(request.name, request.version))
        except ServingError as exc:
            return self._refuse(context, exc, pb.ModelReadyResponse)

    # metadata -------------------------------------------------------------------------------
    async def ServerMetadata(self, request, context):
        try:
            self._authorize(context)
        except ServingError as exc:
            self.dp.metrics.failure(exc.reason, PROTOCOL)
            return self._refuse(context, exc, pb.ServerMetadataResponse)
        meta = self.dp.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    async def ModelMetadata(self, request, context):
        try:
            self._authorize(context)
            meta = self.dp.model_metadata(request.name, request.version)
        except ServingError as exc:
            if isinstance(exc, Unauthorized):
                self.dp.metrics.failure(exc.reason, PROTOCOL)
            return self._refuse(context, exc, pb.ModelMetadataResponse)
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

    async def ModelInfer(self, request, context):
        started = time.perf_counter()
        self.calls += 1
        try:
            self._authorize(context)
            # alone: no other gRPC inference is in progress, so nothing could join this one's batch
            return await self._serve(request, started, self.calls == 1)
        except Unauthorized as exc:
            self.dp.metrics.failure(exc.reason, PROTOCOL)
            return self._refuse(context, exc, pb.ModelInferResponse)
        except ServingError as exc:
            return self._refuse(context, exc, pb.ModelInferResponse)
        finally:
            self.calls -= 1

    async def ModelStreamInfer(self, request_iterator, context):
        """Each request gets one ModelStreamInferResponse, in the order they finish (tritonclient
        matches them by ``id``); a refused request gets its error_message and the stream goes on."""
        try:
            self._authorize(context)
        except Unauthorized as exc:
            self.dp.metrics.failure(exc.reason, PROTOCOL)
            _abort_status(context, exc)
            return
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
                async for request in request_iterator:
                    await window.acquire()
                    pending += 1
                    task = asyncio.ensure_future(one(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
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


class HealthService(health_pb2_grpc.HealthServicer):
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

    async def Check(self, request, context):
        status = self._status(request.service)
        if status is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(f"unknown service {request.service!r}; ask '', {SERVICE!r} or {LIVE_SERVICE!r}")
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request, context):
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
        self.dataplane = dataplane
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_message_bytes = max_message_bytes
        self.auth_token = auth_token
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a second listener
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(self.dataplane, self.auth_token), server)
        health_pb2_grpc.add_HealthServicer_to_server(HealthService(self.dataplane), server)
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            self.port, error = 0, exc
        else:
            error = None
        if not self.port:
            raise InvalidConfiguration(
                f"cannot serve gRPC on {self.address} ({error or 'the port is in use or not allowed'}); "
                "set MODELDEPLOY_GRPC_PORT to a free port, or 0 for no gRPC"
            )
        await server.start()
        self.server = server

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let those in progress finish for up to ``grace_s``."""
        if self.server is not None:
            await self.server.stop(grace_s)
