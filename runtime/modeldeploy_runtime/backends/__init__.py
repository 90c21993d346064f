"""Backend selection. Each backend module is imported only when chosen, so the CPU image never
imports TensorRT, a machine without CUDA never crashes at import, and OpenVINO and LiteRT are
loaded only by the models that use them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    Backend,
    BackendError,
    BackendInfo,
    GpuUnavailableError,
    ProviderMismatchError,
    TensorSpec,
    UnsupportedConfigurationError,
)

if TYPE_CHECKING:
    from ..config import RuntimeConfig

__all__ = [
    "Backend",
    "BackendError",
    "BackendInfo",
    "GpuUnavailableError",
    "ProviderMismatchError",
    "TensorSpec",
    "UnsupportedConfigurationError",
    "load_backend",
]


def load_backend(config: RuntimeConfig, model_file: str | None = None, threads: int = 1) -> Backend:
    """Load the configured model. ``model_file`` is the verified local copy (see fetch.py);
    ``threads`` the inference threads the CPU may run."""
    path = model_file or config.model_path
    if config.backend == "tensorrt":
        try:
            from .tensorrt import TensorRTBackend
        except ImportError as exc:
            raise BackendError(
                f"the TensorRT backend cannot be imported ({exc}); TensorRT engines need the GPU runtime "
                "image (pip install 'modeldeploy[gpu]' on a machine with CUDA)"
            ) from exc
        return TensorRTBackend(path, max_batch_size=config.max_batch_size)
    if config.backend == "openvino":
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(path, max_batch_size=config.max_batch_size, threads=threads, precision=config.precision)
    if config.backend == "litert":
        from .litert import LiteRtBackend

        return LiteRtBackend(path, max_batch_size=config.max_batch_size, threads=threads)
    from .onnx import OnnxBackend

    def onnxruntime() -> Backend:
        return OnnxBackend(
            path,
            max_batch_size=config.max_batch_size,
            threads=threads,
            precision=config.precision,
            cache_dir=config.cache_dir,
            require_gpu=config.require_gpu,
        )

    if config.backend == "auto":
        return _auto(config, path, threads, onnxruntime)
    return onnxruntime()


def _auto(config: RuntimeConfig, path: str, threads: int, onnxruntime) -> Backend:
    """ONNX Runtime on a GPU pod (OpenVINO here is CPU only); on a CPU-only pod the faster of ONNX
    Runtime and OpenVINO that agree (see auto.py); OpenVINO alone serves bf16 and reads IR."""
    from .auto import choose

    if config.model_format == "openvino":
        from .openvino import OpenVinoBackend

        backend = OpenVinoBackend(
            path, max_batch_size=config.max_batch_size, threads=threads, precision=config.precision
        )
        backend.info.extra["auto_choice"] = "openvino (the only engine reading OpenVINO IR)"
        return backend
    if config.precision == "bf16":
        from .openvino import OpenVinoBackend

        backend = OpenVinoBackend(path, max_batch_size=config.max_batch_size, threads=threads, precision="bf16")
        backend.info.extra["auto_choice"] = "openvino (the only engine serving bf16)"
        return backend
    if config.require_gpu or config.precision == "fp16":
        backend = onnxruntime()
        backend.info.extra["auto_choice"] = "onnxruntime (GPU)"
        return backend

    def openvino() -> Backend:
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(path, max_batch_size=config.max_batch_size, threads=threads, precision=config.precision)

    from .onnx import is_quantized

    # INT8 kernels of two engines round differently (2.6 % apart on MobileNetV2 INT8): a quantized
    # model is judged with the int8 tolerance whatever the precision setting says.
    precision = "int8" if is_quantized(path) else config.precision
    return choose({"onnxruntime": onnxruntime, "openvino": openvino}, precision)
