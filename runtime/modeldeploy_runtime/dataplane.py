"""The v2 data plane: health, metadata and inference for the one model this server runs.

It knows the backend, the batcher and the metrics, and nothing of HTTP or gRPC: the protocol
adapters decode their wire format into a typed InferRequest, and encode the InferResponse they get
back; failures are ServingError subclasses, which each adapter maps to its own status codes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Sequence

import numpy as np

from . import __version__
from .backends.base import Backend, TensorSpec
from .batching import Batcher
from .errors import BadRequest, InternalError, NotFound, NotReady, ServingError
from .metrics import Metrics
from .types import NUMPY_TO_V2, InferRequest, InferResponse

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


INLINE_MAX_MS = 10.0
CHECKED_MAX = 256  # input signatures whose check against the model is kept


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
        self._inline_elements = 0  # requests with at most this many input elements may run inline
        self._checked: dict[tuple, tuple[int, int]] = {}  # (rows, elements) by input names, dtypes, shapes
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
    def admit(self, name: str, version: str | None) -> None:
        """Refuse a request for another model, or while this one cannot serve: adapters call it
        before decoding a body, so that these answers do not depend on the body."""
        self.check_model(name, version)
        if self.state is not State.READY and self.state is not State.DRAINING:
            self._loaded()
            raise NotReady(f"model {self.name!r} is warming up; retry once /v2/health/ready answers 200")

    def _check(self, inputs: dict[str, np.ndarray]) -> tuple[int, int]:
        """(rows, elements) of inputs that fit the model. Names, datatypes and shapes seen before
        are not checked again: a client sends the same ones with every request."""
        key = tuple((name, arr.dtype, arr.shape) for name, arr in inputs.items())
        known = self._checked.get(key)
        if known is not None:
            return known
        backend = self.backend
        rows = validate_inputs(
            self.name, inputs, backend.inputs, backend.max_batch_size, getattr(backend, "strings_are_text", False)
        )
        known = rows, sum(arr.size for arr in inputs.values())
        if all(arr.dtype != np.object_ for arr in inputs.values()):  # BYTES contents are checked every time
            if len(self._checked) >= CHECKED_MAX:
                self._checked.clear()
            self._checked[key] = known
        return known

    async def infer(
        self,
        name: str,
        version: str | None,
        request: InferRequest,
        *,
        protocol: str = "rest",
        started: float | None = None,
        alone: bool = False,
    ) -> InferResponse:
        """Serve one decoded request. Every outcome is counted, under the adapter's ``protocol``;
        ``started``: when the adapter received it; ``alone``: no other client is connected, so no
        other request can share this one's batch."""
        started = time.perf_counter() if started is None else started
        self.inflight += 1
        try:
            self.admit(name, version)
            inputs = request.inputs
            rows, elements = self._check(inputs)
            wanted = select_outputs(self.name, request, self.backend.outputs)
            inline = alone and elements <= self._inline_elements
            outputs = await self.batcher.submit(inputs, rows, inline)
        except ServingError as exc:
            self.metrics.failure(exc.reason, protocol)
            raise
        except Exception as exc:
            log.exception("inference failed")
            self.metrics.failure("internal", protocol)
            raise InternalError(f"inference failed in the backend: {exc}") from exc
        finally:
            self.inflight -= 1
        # counted after the response is written (call_soon runs at the next pass of the loop)
        asyncio.get_running_loop().call_soon(self.metrics.succeeded, protocol, time.perf_counter() - started)
        return InferResponse(self.name, self.version, [(n, outputs[n], b) for n, b in wanted], request.id)
