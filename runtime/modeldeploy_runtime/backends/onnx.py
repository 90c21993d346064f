"""ONNX models on ONNX Runtime, with an explicit provider list.

onnxruntime-gpu falls back to the CPU without an error when CUDA or TensorRT cannot start (a driver
mismatch, a missing library), so what was asked for proves nothing: the providers really in use
are read back from the session, logged, shown in model metadata, and checked against
``require_gpu`` and the precision (providers.py).
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..providers import CUDA_EP, GPU_EPS, TRT_EP, provider_mismatch
from .base import BackendError, BackendInfo, GpuUnavailableError, ProviderMismatchError, TensorSpec

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"

# ONNX Runtime's type strings -> v2 datatypes
ORT_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def select_providers(
    available: Sequence[str], precision: str, cache_dir: str, device_id: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """The providers to ask for, best first: TensorRT then CUDA when this onnxruntime build has
    them, the CPU always last (so a model still loads where the GPU does not work, and
    ``require_gpu`` decides whether that is acceptable)."""
    chosen: list[tuple[str, dict[str, Any]]] = []
    if TRT_EP in available:
        trt_cache = os.path.join(cache_dir, "trt-ep")
        chosen.append(
            (
                TRT_EP,
                {
                    "device_id": device_id,
                    "trt_fp16_enable": precision in ("fp16", "int8"),
                    "trt_int8_enable": precision == "int8",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": trt_cache,
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": trt_cache,
                },
            )
        )
    if CUDA_EP in available:
        chosen.append((CUDA_EP, {"device_id": device_id}))
    chosen.append((CPU_EP, {}))
    return chosen


def trt_profile_shapes(inputs: Sequence[TensorSpec], max_batch_size: int) -> dict[str, str] | None:
    """TensorRT EP optimisation profile covering batch 1..max_batch_size, so the engine is built
    once rather than again for every new batch size. None when other dimensions are dynamic (the
    EP then builds per shape, as it would without a profile)."""
    if max_batch_size <= 0 or not inputs:
        return None
    lo, hi = [], []
    for spec in inputs:
        rest = spec.shape[1:]
        if any(d < 0 for d in rest):
            return None
        dims = "x".join(str(d) for d in rest)
        lo.append(f"{spec.name}:1{'x' + dims if dims else ''}")
        hi.append(f"{spec.name}:{max_batch_size}{'x' + dims if dims else ''}")
    return {
        "trt_profile_min_shapes": ",".join(lo),
        "trt_profile_opt_shapes": ",".join(hi),
        "trt_profile_max_shapes": ",".join(hi),
    }


def specs_from_ort(args: Sequence[Any]) -> list[TensorSpec]:
    specs = []
    for arg in args:
        if arg.type not in ORT_TO_V2:
            raise BackendError(f"tensor {arg.name!r} has type {arg.type}, which the v2 protocol cannot carry")
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
        specs.append(TensorSpec(arg.name, ORT_TO_V2[arg.type], shape))
    return specs


def batchable(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """A model can be batched by the server when every input and output has a dynamic first
    dimension."""
    return all(len(s.shape) >= 1 and s.shape[0] == -1 for s in [*inputs, *outputs])


# Below this single-inference latency, ONNX Runtime's pool threads do not spin (see spinning_pays).
SPIN_MIN_LATENCY_S = 0.001


def spinning_pays(device: str, threads: int, single_latency_s: float) -> bool:
    """Whether ONNX Runtime's pool threads should spin between operators rather than sleep.

    Spinning saves a thread wake-up per parallel operator: a gain on models of a millisecond or
    more (ResNet-50 ran 4 % faster on 2 cores, MobileNetV2 0.2 ms faster at concurrency 1 and no
    slower at 8) and a loss on light ones, where the spinning takes the CPU that the HTTP side
    needs (a small MLP at concurrency 8 served 45 % fewer requests/s, with a p99 four times worse).
    Only the CPU provider with more than one thread has a pool to spin."""
    return device == "cpu" and threads > 1 and single_latency_s >= SPIN_MIN_LATENCY_S


def session_options(threads: int, spinning: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def batch_buckets(max_batch_size: int) -> list[int]:
    """The batch sizes that get a session of their own on the CUDA provider: the powers of two
    below the maximum, and the maximum (8 -> 1, 2, 4, 8; 6 -> 1, 2, 4, 6)."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


# How a NodeProto's op_type field (4, length-delimited) spells each convolution in the model file.
_CONV_OP_TYPES = tuple(
    b'"' + bytes([len(op)]) + op for op in (b"Conv", b"ConvTranspose", b"ConvInteger", b"QLinearConv")
)


def has_convolutions(model_path: str) -> bool:
    """Whether the ONNX file holds a convolution node, read from its protobuf bytes (the serving
    image has no onnx package). A chance match in weight data would only cost GPU memory."""
    return _has_op(model_path, _CONV_OP_TYPES)


# How the op_type field spells the operators of a quantized (QDQ or QOperator) model.
_QUANT_OP_TYPES = tuple(
    b'"' + bytes([len(op)]) + op for op in (b"QuantizeLinear", b"DequantizeLinear", b"QLinearConv", b"QLinearMatMul")
)


def is_quantized(model_path: str) -> bool:
    """Whether the ONNX file holds quantization operators (read as has_convolutions reads)."""
    return _has_op(model_path, _QUANT_OP_TYPES)


def _has_op(model_path: str, patterns: tuple[bytes, ...]) -> bool:
    try:
        with open(model_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return any(data.find(op) != -1 for op in patterns)  # mapped: a large model is not read into memory
    except (OSError, ValueError):  # missing, unreadable or empty
        return False


def pad_rows(inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """``inputs`` with zero rows appended along the batch dimension up to ``rows``."""
    out = {}
    for name, arr in inputs.items():
        if arr.shape[0] == rows:
            out[name] = arr
            continue
        padded = np.zeros((rows, *arr.shape[1:]), dtype=arr.dtype)
        padded[: arr.shape[0]] = arr
        out[name] = padded
    return out


def _as_str(arr: np.ndarray) -> np.ndarray:
    """ONNX Runtime takes string tensors as Python str (it would feed bytes as their repr). The
    data plane has refused elements that are not UTF-8 (``strings_are_text``)."""
    out = np.empty(arr.shape, dtype=np.object_)
    out.reshape(-1)[:] = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
    return out


class OnnxBackend:
    """One ONNX Runtime session. ``infer`` runs on the server's inference thread."""

    # Its Python API passes string tensors as str, so BYTES elements must be UTF-8 text: others
    # would come back rewritten, and are refused before they reach a batch.
    strings_are_text = True

    def __init__(
        self,
        model_path: str,
        *,
        max_batch_size: int = 8,
        threads: int = 1,
        precision: str = "fp32",
        cache_dir: str = "/var/cache/modeldeploy",
        require_gpu: bool = False,
        batch_buckets: bool | None = None,
    ) -> None:
        """``batch_buckets``: run each batch on a session kept for one batch size (see
        ``_bucket_sessions``); None turns it on where the CUDA provider runs a model with
        convolutions."""
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - the runtime extra installs it
            raise BackendError("onnxruntime is not installed; pip install 'modeldeploy[runtime]'") from exc
        available = ort.get_available_providers()
        providers = select_providers(available, precision, cache_dir)
        if require_gpu and not any(name in GPU_EPS for name, _ in providers):
            raise GpuUnavailableError(
                f"MODELDEPLOY_REQUIRE_GPU is true but this onnxruntime build has no GPU provider "
                f"(available: {', '.join(available)}); use the GPU runtime image"
            )
        if providers[0][0] == TRT_EP:
            os.makedirs(providers[0][1]["trt_engine_cache_path"], exist_ok=True)
            profile = trt_profile_shapes(self._peek_inputs(ort, model_path), max_batch_size)
            if profile:
                providers[0][1].update(profile)
        opts = session_options(threads)
        self.session = self._create(ort, model_path, opts, providers)
        self._buckets: list[tuple[int, Any]] = []  # (batch size, session), see _bucket_sessions
        in_use = self.session.get_providers()
        mismatch = provider_mismatch(require_gpu, precision, in_use)
        if mismatch is not None:
            self.session = None
            raise ProviderMismatchError(mismatch)
        self.inputs = specs_from_ort(self.session.get_inputs())
        self.outputs = specs_from_ort(self.session.get_outputs())
        self.max_batch_size = max_batch_size if batchable(self.inputs, self.outputs) else 0
        self._output_names = [s.name for s in self.outputs]
        self._string_inputs = [s.name for s in self.inputs if s.datatype == "BYTES"]
        device = "gpu" if any(p in GPU_EPS for p in in_use) else "cpu"
        self.info = BackendInfo(
            platform="onnxruntime_onnx",
            providers=list(in_use),
            device=device,
            precision=precision if in_use[0] == TRT_EP else "fp32",
            extra={"onnxruntime": ort.__version__, "threads": str(threads)},
        )
        if device == "cpu" and threads > 1:
            latency = self._probe_latency()
            if spinning_pays(device, threads, latency):
                self.session = None  # freed first, so that peak memory holds one copy of the weights
                opts = session_options(threads, spinning=True)
                self.session = self._create(ort, model_path, opts, providers)
                self.info.extra["spinning"] = "on"
        if batch_buckets is None:  # the case that needs them: cuDNN convolutions (see _bucket_sessions)
            batch_buckets = in_use[0] == CUDA_EP and has_convolutions(model_path)
        if batch_buckets and self.max_batch_size > 1 and not self._string_inputs:
            self._buckets = self._bucket_sessions(ort, model_path, opts, providers)  # as the main session
            self.info.extra["batch_buckets"] = ",".join(str(size) for size, _ in self._buckets)
        log.info(
            "ONNX Runtime providers in use: %s (asked for %s; %d threads%s%s)",
            ", ".join(in_use),
            ", ".join(name for name, _ in providers),
            threads,
            ", spinning" if "spinning" in self.info.extra else "",
            f"; a session per batch size {self.info.extra['batch_buckets']}" if self._buckets else "",
        )

    def _bucket_sessions(self, ort, model_path: str, opts, providers) -> list[tuple[int, Any]]:
        """One session per batch size of ``batch_buckets``, each run once at its size.

        The CUDA provider plans cuDNN convolutions for the last input shape a session saw and plans
        again whenever it changes: ResNet-50 on an H200 took 64-139 ms per change (by cuDNN search
        mode) against 2.5 ms for a batch of 8, and dynamic batching changes the batch size all the
        time (8 concurrent clients got 9 requests/s). A session that only ever sees one shape plans
        once. A batch runs on the smallest size that holds it, padded with zero rows; the cost is a
        copy of the model's weights on the GPU per extra session and at most twice the rows
        computed."""
        from ..warmup import warmup_inputs

        sample = warmup_inputs(self.inputs, batched=True)
        sizes = batch_buckets(self.max_batch_size)
        buckets = []
        for size in sizes:
            session = self.session if size == sizes[-1] else self._create(ort, model_path, opts, providers)
            try:  # plans its kernels now rather than on the first request of this size
                session.run(self._output_names, pad_rows(sample, size))
            except Exception as exc:  # warm-up runs the model again and reports a failure
                log.debug("first run of the batch-%d session failed: %s", size, exc)
            buckets.append((size, session))
        return buckets

    @staticmethod
    def _create(ort, model_path: str, opts, providers):
        try:
            return ort.InferenceSession(model_path, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise BackendError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc

    def _probe_latency(self, runs: int = 3) -> float:
        """Median latency of a single inference (0 when the model cannot run on generated inputs;
        warm-up will then report why)."""
        from ..warmup import time_inferences, warmup_inputs

        try:
            samples = time_inferences(self, warmup_inputs(self.inputs, self.max_batch_size > 0), runs)
        except Exception:
            return 0.0
        return sorted(samples)[len(samples) // 2]

    @staticmethod
    def _peek_inputs(ort, model_path: str) -> list[TensorSpec]:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            peek = ort.InferenceSession(model_path, sess_options=opts, providers=[CPU_EP])
        except Exception as exc:
            raise BackendError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
        return specs_from_ort(peek.get_inputs())

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self._string_inputs:
            inputs = {**inputs, name: _as_str(inputs[name])}
        if self._buckets:
            rows = next(iter(inputs.values())).shape[0]
            for size, session in self._buckets:
                if size >= rows:
                    outputs = session.run(self._output_names, pad_rows(inputs, size) if size > rows else inputs)
                    return {name: out[:rows] for name, out in zip(self._output_names, outputs, strict=True)}
        return dict(zip(self._output_names, self.session.run(self._output_names, inputs), strict=True))

    def close(self) -> None:
        self.session = None
        self._buckets = []
