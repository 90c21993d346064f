"""Serving serialized TensorRT engines (`format: tensorrt`).

TensorRT 10 only: tensors are addressed by name (`num_io_tensors`, `get_tensor_name`,
`set_input_shape`, `set_tensor_address`) and run with `execute_async_v3` on a CUDA stream; the
binding-index API of TensorRT 8 is gone. One request costs: copy inputs into page-locked host
buffers, async copies to the device, one enqueue, async copies back, one synchronize. Every
buffer is allocated once at load for the largest shape of the engine's optimization profile.

One execution context on one CUDA stream runs one batch at a time: the batcher hands the backend
one batch at a time, so more contexts would sit idle (several would need one optimization profile
each, and a batcher that runs batches concurrently, measured on a GPU). `tensorrt` and `pycuda` are
imported only when an engine is loaded, so the CPU image never needs them.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import NUMPY_TO_V2, BackendError, BackendInfo, GpuUnavailableError, TensorSpec
from .trt_plan import (
    BufferPlan,
    EngineTensor,
    PlanError,
    engine_mismatch,
    meta_path,
    numpy_dtype,
    plan_batching,
    plan_buffers,
    trt_dtype_name,
)

log = logging.getLogger(__name__)

GPU_EXTRA_HINT = "install the gpu extra (`pip install 'modeldeploy[gpu]'`, as in the GPU runtime image)"


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise GpuUnavailableError(f"TensorRT is not installed ({exc}); TensorRT needs a GPU: {GPU_EXTRA_HINT}") from exc
    if int(trt.__version__.split(".")[0]) < 10:
        raise BackendError(f"TensorRT {trt.__version__} is too old: TensorRT 10 or newer is required")
    return trt


def import_cuda() -> Any:
    """pycuda's driver module, initialised, or a BackendError saying why there is no GPU."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise GpuUnavailableError(f"pycuda is not installed ({exc}); TensorRT needs a GPU: {GPU_EXTRA_HINT}") from exc
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a driver
        raise GpuUnavailableError(f"no usable CUDA driver: {exc}; TensorRT needs an NVIDIA GPU") from exc
    if count == 0:
        raise GpuUnavailableError("no CUDA GPU is visible (check the pod's nvidia.com/gpu limit); TensorRT needs a GPU")
    return cuda


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: tuple[int, int]


def gpu_identity(cuda: Any, ordinal: int = 0) -> GpuIdentity:
    device = cuda.Device(ordinal)
    return GpuIdentity(device.name(), tuple(device.compute_capability()))


class _Slot:
    """The stream, its execution context and its buffers: one batch at a time runs here."""

    def __init__(self, cuda: Any, engine: Any, profile: int, plans: list[BufferPlan]):
        self.stream = cuda.Stream()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        if not self.context.set_optimization_profile_async(profile, self.stream.handle):
            raise BackendError(f"TensorRT refused optimization profile {profile}")
        self.stream.synchronize()  # the profile switch is enqueued on the stream
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}
        for plan in plans:
            self.host[plan.name] = cuda.pagelocked_empty(max(1, plan.elements), plan.dtype)
            self.device[plan.name] = cuda.mem_alloc(plan.nbytes)
            # Addresses never change, so they are set once, not per request.
            self.context.set_tensor_address(plan.name, int(self.device[plan.name]))

    def free(self) -> None:
        for mem in self.device.values():
            mem.free()
        self.device.clear()
        self.host.clear()
        self.context = None


class TensorRTBackend:
    """A TensorRT engine behind the Backend protocol (see base.py)."""

    def __init__(self, engine_path: str, *, max_batch_size: int = 0):
        path = Path(engine_path)
        if not path.is_file():
            raise BackendError(f"engine file {engine_path} does not exist")
        trt = import_tensorrt()
        cuda = import_cuda()
        self._cuda = cuda
        self._trt = trt
        # The primary context is the one TensorRT's runtime API uses; pycuda joins it, and every
        # thread that touches CUDA pushes it first (pycuda contexts are per thread).
        self._ctx = cuda.Device(0).retain_primary_context()
        self._slots: list[_Slot] = []
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._ctx.push()
        try:
            self._load(path, max_batch_size)
        except BaseException as exc:
            self._release()
            self._ctx.pop()
            self._ctx.detach()
            if isinstance(exc, PlanError):
                raise BackendError(str(exc)) from exc
            raise
        self._ctx.pop()

    def _load(self, path: Path, max_batch_size: int) -> None:
        trt, cuda = self._trt, self._cuda
        gpu = gpu_identity(cuda)
        meta_file = meta_path(path)
        meta: dict = {}
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            reason = engine_mismatch(meta, trt.__version__, gpu.name, gpu.compute_capability)
            if reason:
                raise BackendError(f"{path.name}: {reason}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"TensorRT {trt.__version__} could not deserialize {path.name}: it is corrupt or was built "
                f"with another TensorRT version or GPU; rebuild it with `modeldeploy optimize tensorrt`"
            )
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        # Shapes at the profile's max tell the size of every buffer, outputs included.
        probe = engine.create_execution_context()  # profile 0 by default
        max_in = {}
        for name in names:
            if is_input[name]:
                shape = tuple(engine.get_tensor_shape(name))
                max_in[name] = tuple(engine.get_tensor_profile_shape(name, 0)[2]) if -1 in shape else shape
                probe.set_input_shape(name, max_in[name])
        tensors = [
            EngineTensor(
                name=n,
                is_input=is_input[n],
                trt_dtype=trt_dtype_name(engine.get_tensor_dtype(n)),
                shape=tuple(engine.get_tensor_shape(n)),
                max_shape=max_in[n] if is_input[n] else tuple(probe.get_tensor_shape(n)),
            )
            for n in names
        ]
        del probe
        self.max_batch_size, note = plan_batching(tensors, max_batch_size)
        if note:
            log.warning("%s: %s", path.name, note)
        plans = plan_buffers(tensors)
        self._plans = {p.name: p for p in plans}
        self._input_names = [t.name for t in tensors if t.is_input]
        self._output_names = [t.name for t in tensors if not t.is_input]
        self.inputs = [self._spec(t) for t in tensors if t.is_input]
        self.outputs = [self._spec(t) for t in tensors if not t.is_input]
        # The profile's bounds, to refuse a request with a clear message before TensorRT does.
        self._profile = {
            t.name: [tuple(s) for s in engine.get_tensor_profile_shape(t.name, 0)] if -1 in t.shape else None
            for t in tensors
            if t.is_input
        }
        slot = _Slot(cuda, engine, 0, plans)
        self._slots.append(slot)
        self._free.put(slot)
        precision = str(meta.get("precision", "unknown"))
        self.info = BackendInfo(
            platform="tensorrt_plan",
            providers=["TensorRT"],
            device="gpu",
            precision=precision,
            extra={
                "tensorrt_version": trt.__version__,
                "gpu": gpu.name,
                "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
            },
        )
        log.info(
            "loaded TensorRT engine %s on %s (max batch %d, precision %s)",
            path.name, gpu.name, self.max_batch_size, precision,
        )  # fmt: skip

    def _spec(self, t: EngineTensor) -> TensorSpec:
        shape = list(t.shape)
        if self.max_batch_size and shape:
            shape[0] = -1
        return TensorSpec(t.name, NUMPY_TO_V2[numpy_dtype(t.trt_dtype, t.name)], tuple(shape))

    def _check(self, name: str, array: np.ndarray) -> None:
        plan = self._plans[name]
        if array.ndim != len(plan.max_shape):
            raise BackendError(
                f"input {name!r}: expected {len(plan.max_shape)} dimensions, got shape {list(array.shape)}"
            )
        limits = self._profile.get(name)
        if limits:
            low, _, high = limits
            if any(d < lo or d > hi for d, lo, hi in zip(array.shape, low, high, strict=True)):
                raise BackendError(
                    f"input {name!r}: shape {list(array.shape)} is outside the engine's profile "
                    f"{list(low)}..{list(high)}"
                )
        elif tuple(array.shape) != plan.max_shape:
            raise BackendError(f"input {name!r}: expected shape {list(plan.max_shape)}, got {list(array.shape)}")

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed.is_set():
            raise BackendError("the TensorRT backend is closed")
        missing = [n for n in self._input_names if n not in inputs]
        if missing:
            raise BackendError(f"missing input(s): {', '.join(missing)}")
        arrays = {}
        for name in self._input_names:
            array = np.ascontiguousarray(inputs[name], dtype=self._plans[name].dtype)
            self._check(name, array)
            arrays[name] = array
        slot = self._free.get()
        self._ctx.push()
        try:
            return self._run(slot, arrays)
        finally:
            self._ctx.pop()
            self._free.put(slot)

    def _run(self, slot: _Slot, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, context, stream = self._cuda, slot.context, slot.stream
        for name, array in arrays.items():
            if not context.set_input_shape(name, array.shape):
                raise BackendError(f"input {name!r}: TensorRT rejected shape {list(array.shape)}")
            host = slot.host[name][: array.size]
            np.copyto(host.reshape(array.shape), array)
            cuda.memcpy_htod_async(slot.device[name], host, stream)
        shapes = {name: tuple(context.get_tensor_shape(name)) for name in self._output_names}
        if not context.execute_async_v3(stream.handle):
            raise BackendError("TensorRT failed to enqueue the inference (see the runtime log)")
        views = {}
        for name, shape in shapes.items():
            view = slot.host[name][: int(np.prod(shape))]
            cuda.memcpy_dtoh_async(view, slot.device[name], stream)
            views[name] = (view, shape)
        stream.synchronize()
        # Copies, because the page-locked buffers are reused by the next request.
        return {name: view.reshape(shape).copy() for name, (view, shape) in views.items()}

    def _release(self) -> None:
        for slot in self._slots:
            slot.free()
        self._slots.clear()
        self._engine = None

    def close(self, timeout: float = 30.0) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        # Wait for requests still running on a slot, so no buffer is freed under them.
        for _ in range(len(self._slots)):
            try:
                self._free.get(timeout=timeout)
            except queue.Empty:
                log.warning("closing the TensorRT backend while a request still runs")
                break
        self._ctx.push()
        try:
            self._release()
        finally:
            self._ctx.pop()
            self._ctx.detach()
