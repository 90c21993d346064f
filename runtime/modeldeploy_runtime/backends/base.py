"""The contract every inference backend meets.

Backends know nothing of HTTP, batching or metrics: they take named numpy arrays (already batched)
and return named numpy arrays. The data plane above them does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# Open Inference Protocol v2 datatypes <-> numpy. BYTES is carried as numpy object arrays.
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_V2: dict[np.dtype, str] = {dt: name for name, dt in V2_TO_NUMPY.items()}


class BackendError(Exception):
    """A model could not be loaded or run. The message is shown to users as is."""


class GpuUnavailableError(BackendError):
    """A GPU was required (``require_gpu``) but no working GPU provider or device was found. The
    server reports it as ``gpu unavailable: ...`` rather than as a model load failure."""


class ProviderMismatchError(BackendError):
    """The provider asked for (a GPU one, or TensorRT for fp16/int8) loaded, but ONNX Runtime
    runs the model on another one. Reported as ``provider mismatch: ...``."""


class UnsupportedConfigurationError(BackendError):
    """The model loads but cannot be served as configured on this machine (bf16 on a CPU without
    bf16 instructions): the server reports it as ``invalid
    configuration: ...``, a setting to change rather than a broken model."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. Dynamic dimensions are -1; when the backend batches, shape[0]
    is the batch dimension and is -1."""

    name: str
    datatype: str  # a key of V2_TO_NUMPY
    shape: tuple[int, ...]


@dataclass
class BackendInfo:
    """What metadata shows about how the model is really being run."""

    platform: str  # "onnxruntime_onnx", "tensorrt_plan", "openvino_onnx", "litert_tflite"
    providers: list[str] = field(default_factory=list)  # providers really in use, in priority order
    device: str = "cpu"  # "cpu" or "gpu"
    precision: str = "fp32"
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A loaded model.

    ``max_batch_size`` > 0 means the first dimension of every input and output is the batch
    dimension and ``infer`` accepts up to that many rows; 0 means the model has no batch
    dimension and is served unbatched.
    """

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    info: BackendInfo

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one (possibly batched) inference. Blocking; called from one inference thread at a
        time per execution slot."""
        ...

    def close(self) -> None: ...
