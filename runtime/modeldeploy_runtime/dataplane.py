"""The v2 data plane: health, metadata and inference for the one model this server runs.

It knows the backend, the batcher and the metrics, and nothing of HTTP: it takes bytes and names
and returns bytes or dicts, raising ServingError subclasses that the adapter maps to a status.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import __version__
from .backends.base import NUMPY_TO_V2, Backend, TensorSpec
from .batching import Batcher
from .codec import BinaryLayout, InferRequest, decode_request, decompress, encode_response
from .errors import BadRequest, InternalError, NotFound, NotReady, ServingError
from .metrics import Metrics

log = logging.getLogger(__name__)

SERVER_NAME = "modeldeploy"
EXTENSIONS = ["binary_tensor_data"]


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def validate_inputs(
    model: str,
    inputs: dict[str, np.ndarray],
    specs: Sequence[TensorSpec],
    max_batch_size: int,
    strings_are_text: bool = False,
) -> int:
    """Check a request against the model's inputs; return its rows (1 for unbatched models).
    ``strings_are_text``: the backend carries BYTES elements as UTF-8 text only."""
    by_name = {s.name: s for s in specs}
    for name in inputs:
        if name not in by_name:
            raise BadRequest(f"input {name!r} is not an input of model {model!r}; its inputs are: {', '.join(by_name)}")
    rows = None
    for spec in specs:
        arr = inputs.get(spec.name)
        if arr is None:
            raise BadRequest(
                f"input {spec.name!r} is missing; model {model!r} needs it as {spec.datatype} {_shape_str(spec.shape)}"
            )
        got = inputs[spec.name]
        got_type = NUMPY_TO_V2.get(got.dtype, "BYTES")
        if got_type != spec.datatype:
            raise BadRequest(f"input {spec.name!r} has datatype {got_type}; model {model!r} expects {spec.datatype}")
        if len(got.shape) != len(spec.shape) or any(
            d >= 0 and g != d for g, d in zip(got.shape, spec.shape, strict=False)
        ):
            raise BadRequest(
                f"input {spec.name!r} has shape {_shape_str(got.shape)}; model {model!r} expects "
                f"{_shape_str(spec.shape)} (-1 = any size)"
            )
        if max_batch_size > 0:
            n = got.shape[0]
            if n < 1 or n > max_batch_size:
                raise BadRequest(
                    f"input {spec.name!r} has batch size {n}; model {model!r} takes 1 to "
                    f"{max_batch_size} rows per request (MODELDEPLOY_MAX_BATCH_SIZE)"
                )
            if rows is not None and n != rows:
                raise BadRequest(
                    f"input {spec.name!r} has batch size {n} but other inputs have {rows}; "
                    "every input needs the same first dimension"
                )
            rows = n
        if strings_are_text and spec.datatype == "BYTES":
            _check_text(model, spec.name, got)
    return rows or 1


def _check_text(model: str, name: str, arr: np.ndarray) -> None:
    for i, item in enumerate(arr.reshape(-1)):
        if isinstance(item, bytes):
            try:
                item.decode()
            except UnicodeDecodeError as exc:
                raise BadRequest(
                    f"input {name!r}: element {i} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                    f"model {model!r} runs on ONNX Runtime, whose string tensors hold UTF-8 text only"
                ) from None


def select_outputs(model: str, request: InferRequest, specs: Sequence[TensorSpec]) -> list[tuple[str, bool]]:
    """(name, binary) of the outputs to return, in the order asked (all outputs when none asked)."""
    if request.outputs is None:
        return [(s.name, request.binary_output) for s in specs]
    known = {s.name for s in specs}
    chosen = []
    for out in request.outputs:
        if out.name not in known:
            raise BadRequest(
                f"output {out.name!r} is not an output of model {model!r}; "
                f"its outputs are: {', '.join(s.name for s in specs)}"
            )
        chosen.append((out.name, request.binary_output if out.binary is None else out.binary))
    return chosen


def tensor_metadata(specs: Sequence[TensorSpec]) -> list[dict]:
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]


# Binary requests whose JSON header was seen before skip parsing and checking it again: a client
# sends the same header with every request of a shape. 600 KB images spent 45 us here (caches are
# cold after an inference), a tenth of the server's whole added latency.
PLAN_HEADER_MAX = 16 * 1024
PLANS_MAX = 256
# A lone request (one client connection open, nothing queued or running) of a model this fast runs
# on the event loop: two thread hand-offs cost 0.1 ms, and nothing could join its batch. The loop
# is then blocked for one inference, which health probes and new connections can wait out; only
# requests no larger than the warm-up's (whose latency was measured) qualify, so that a large
# request of a dynamic shape cannot block it for long.
INLINE_MAX_MS = 10.0
# Requests whose JSON is at least this long (and compressed ones) are decoded on a thread of their
# own, so that one of them cannot keep the event loop, and the health probes it answers, waiting:
# a 57 MB JSON request held it for 3 to 9 s. Below this, decoding takes a few ms and the two
# thread hand-offs (0.1 ms) would be felt.
OFFLOAD_MIN_BYTES = 1 << 20
OFFLOAD_MIN_COMPRESSED = 1 << 10


@dataclass(frozen=True)
class _Plan:
    """What a request's JSON header says, parsed and checked against the model."""

    layout: BinaryLayout | None  # None: the request is not all binary, and is not kept
    rows: int
    wanted: list[tuple[str, bool]]
    id: str | None
    elements: int  # in all inputs


class DataPlane:
    def __init__(
        self,
        name: str,
        version: str,
        metrics: Metrics,
        max_queue_delay_s: float = 0.0,
        max_queue_size: int = 256,
        queue_timeout_s: float = 0.0,
    ) -> None:
        self.name = name
        self.version = version
        self.metrics = metrics
        self.state = State.LOADING
        self.backend: Backend | None = None
        self.batcher: Batcher | None = None
        self._delay = max_queue_delay_s
        self._queue = max_queue_size
        self._queue_timeout = queue_timeout_s
        self.inflight = 0  # requests inside infer(); a drain waits for this to reach 0
        self._plans: dict[bytes, _Plan] = {}  # by JSON header of binary requests
        self._inline_elements = 0  # requests with at most this many input elements may run inline
        # one thread: large requests are decoded one at a time, which also bounds their memory
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")
        metrics.inflight.set_function(lambda: self.inflight)  # read when scraped, not locked per request

    # lifecycle -----------------------------------------------------------------------------
    def attach(self, backend: Backend, warmup_p95_ms: float | None = None) -> None:
        """Start serving a loaded (and warmed) backend. A model whose warm-up p95 is within
        INLINE_MAX_MS may run a lone request on the event loop (see Batcher.submit)."""
        self.backend = backend
        if warmup_p95_ms is not None and warmup_p95_ms <= INLINE_MAX_MS:
            self._inline_elements = sum(math.prod(max(d, 1) for d in s.shape) for s in backend.inputs)
        self.batcher = Batcher(
            backend.infer,
            backend.max_batch_size,
            self._delay,
            self._queue,
            observe=self.metrics.batch_done,
            queue_timeout_s=self._queue_timeout,
        )
        self.batcher.start()

    def set_ready(self) -> None:
        if self.state is State.LOADING:
            self.state = State.READY
            self.metrics.ready.set(1)

    def fail(self) -> None:
        self.state = State.FAILED
        self.metrics.ready.set(0)

    def drain(self) -> None:
        """Readiness drops at once, so the Service stops sending to this replica. A model that is
        serving keeps answering what still arrives: an endpoint leaves kube-proxy's rules a moment
        after readiness drops, and a request refused then would fail a client for nothing."""
        if self.state is State.READY:
            self.state = State.DRAINING
        self.metrics.ready.set(0)

    async def wait_idle(self, timeout_s: float, poll_s: float = 0.01) -> bool:
        """Wait until no request is in flight; False when ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        while self.inflight > 0:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(poll_s)
        return True

    def close(self) -> None:
        self._decoder.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.stop()
        if self.backend is not None:
            self.backend.close()

    # health and metadata -------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def check_model(self, name: str, version: str | None) -> None:
        if name != self.name:
            raise NotFound(f"model {name!r} is not served here; this server serves {self.name!r}")
        if version not in (None, "", self.version):
            raise NotFound(f"model {name!r} has no version {version!r}; this server serves version {self.version}")

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_ready(self, name: str, version: str | None) -> bool:
        self.check_model(name, version)
        return self.ready

    def _loaded(self) -> Backend:
        if self.backend is None or self.state is State.FAILED:
            raise NotReady(f"model {self.name!r} is {self.state.value}; retry once /v2/health/ready answers 200")
        return self.backend

    def model_metadata(self, name: str, version: str | None) -> dict:
        self.check_model(name, version)
        backend = self._loaded()
        info = backend.info
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": info.platform,
            "inputs": tensor_metadata(backend.inputs),
            "outputs": tensor_metadata(backend.outputs),
            "parameters": {
                "providers": ",".join(info.providers),
                "device": info.device,
                "precision": info.precision,
                "max_batch_size": backend.max_batch_size,
                **info.extra,
            },
        }

    def model_config(self, name: str, version: str | None) -> dict:
        """A subset of Triton's model configuration, for clients that read batching limits from it."""
        self.check_model(name, version)
        backend = self._loaded()

        def dims(specs):
            cut = 1 if backend.max_batch_size > 0 else 0
            return [
                {
                    "name": s.name,
                    "data_type": "TYPE_" + ("STRING" if s.datatype == "BYTES" else s.datatype),
                    "dims": list(s.shape[cut:]),
                }
                for s in specs
            ]

        batching: dict = {"max_queue_delay_microseconds": int(self._delay * 1e6)}
        if self._queue_timeout > 0:
            batching["default_queue_policy"] = {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(self._queue_timeout * 1e6),
            }
        return {
            "name": self.name,
            "platform": backend.info.platform,
            "max_batch_size": backend.max_batch_size,
            "input": dims(backend.inputs),
            "output": dims(backend.outputs),
            "dynamic_batching": batching,
        }

    # inference -----------------------------------------------------------------------------
    async def infer(
        self,
        name: str,
        version: str | None,
        body: bytes,
        header_length: int | None = None,
        content_encoding: str = "",
        max_body_bytes: int = 1 << 62,
        started: float | None = None,
        alone: bool = False,
    ) -> tuple[bytes, int | None]:
        """Serve one inference request; returns the response body and, for binary responses, its
        JSON header length. Every outcome is counted. ``alone``: no other client is connected, so
        no other request can share this one's batch."""
        started = time.perf_counter() if started is None else started
        self.inflight += 1
        try:
            result = await self._infer(name, version, body, header_length, content_encoding, max_body_bytes, alone)
        except ServingError as exc:
            self.metrics.failure(exc.reason)
            raise
        except Exception as exc:
            log.exception("inference failed")
            self.metrics.failure("internal")
            raise InternalError(f"inference failed in the backend: {exc}") from exc
        finally:
            self.inflight -= 1
        # counted after the response is written (call_soon runs at the next pass of the loop)
        asyncio.get_running_loop().call_soon(self._succeeded, time.perf_counter() - started)
        return result

    def _succeeded(self, duration_s: float) -> None:
        metrics = self.metrics
        metrics.success.inc()
        metrics.request_s.observe(duration_s)

    def _decode(self, body, header_length, content_encoding, max_body_bytes) -> tuple[dict[str, np.ndarray], _Plan]:
        """The input arrays of a request and its plan, checked against the model."""
        backend = self.backend
        if content_encoding:
            body = decompress(body, content_encoding, max_body_bytes)
        key = None
        if header_length is not None and 0 < header_length <= min(len(body), PLAN_HEADER_MAX):
            key = bytes(body[:header_length])
        plan = self._plans.get(key) if key is not None else None
        if plan is not None and plan.layout.size == len(body):
            return plan.layout.inputs(body), plan
        request = decode_request(body, header_length)
        inputs = request.inputs
        rows = validate_inputs(
            self.name, inputs, backend.inputs, backend.max_batch_size, getattr(backend, "strings_are_text", False)
        )
        wanted = select_outputs(self.name, request, backend.outputs)
        plan = _Plan(request.layout, rows, wanted, request.id, sum(arr.size for arr in inputs.values()))
        if key is not None and request.layout is not None:
            if len(self._plans) >= PLANS_MAX:
                self._plans.clear()
            self._plans[key] = plan
        return inputs, plan

    async def _infer(self, name, version, body, header_length, content_encoding, max_body_bytes, alone):
        self.check_model(name, version)
        if self.state is not State.READY and self.state is not State.DRAINING:
            self._loaded()
            raise NotReady(f"model {self.name!r} is warming up; retry once /v2/health/ready answers 200")
        json_bytes = len(body) if header_length is None else header_length
        if (content_encoding and len(body) >= OFFLOAD_MIN_COMPRESSED) or json_bytes >= OFFLOAD_MIN_BYTES:
            loop = asyncio.get_running_loop()
            inputs, plan = await loop.run_in_executor(
                self._decoder, self._decode, body, header_length, content_encoding, max_body_bytes
            )
        else:
            inputs, plan = self._decode(body, header_length, content_encoding, max_body_bytes)
        inline = alone and plan.elements <= self._inline_elements
        outputs = await self.batcher.submit(inputs, plan.rows, inline)
        return encode_response(self.name, self.version, [(n, outputs[n], b) for n, b in plan.wanted], plan.id)
