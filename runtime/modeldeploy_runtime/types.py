"""The bottom of the runtime: v2 datatypes and the typed request and response that the protocol
adapters (REST in codec.py and app.py, gRPC in grpc_codec.py and grpc_app.py) hand the data plane.

Nothing here imports another module of the runtime; backends, the data plane and the codecs all
import it. Requests carry tensors as numpy arrays by name, whatever the wire encoding was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def v2_datatype(arr: np.ndarray) -> str:
    """The v2 datatype of an array; anything numpy holds as objects is BYTES."""
    return NUMPY_TO_V2.get(arr.dtype, "BYTES")


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default (REST only; gRPC outputs are always raw)


@dataclass(slots=True)
class InferRequest:
    """One inference request, decoded from its wire form and not yet checked against the model."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_output: bool = False  # REST's `binary_data_output` parameter: the default of `outputs`
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferResponse:
    """The outputs of one request, in the order asked, each with whether REST sends it as binary."""

    model_name: str
    model_version: str
    outputs: list[tuple[str, np.ndarray, bool]]  # (name, array, binary)
    id: str | None = None
