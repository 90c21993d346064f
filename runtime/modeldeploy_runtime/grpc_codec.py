"""Open Inference Protocol v2 gRPC messages <-> the typed InferRequest and InferResponse.

Pure functions, the gRPC sibling of codec.py: tensors arrive in ``raw_input_contents`` (what
tritonclient sends) or in typed ``contents``, and outputs always go back in
``raw_output_contents``. Checks here are about a message being well formed; whether it fits the
model is the data plane's business. Errors name the tensor at fault.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .codec import MAX_DIMS, MAX_ELEMENTS, check_shape, from_binary, tensor_bytes, tensor_view
from .errors import BadRequest
from .types import V2_TO_NUMPY, InferRequest, InferResponse, RequestedOutput, v2_datatype
from .v2grpc import grpc_service_pb2 as pb

# The field of InferTensorContents that carries each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_WIDE = {"int_contents": np.int64, "uint_contents": np.uint64}  # read wide, then range-checked


def parameters(params) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as plain Python values."""
    out = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out


def decode_infer_request(message: pb.ModelInferRequest) -> InferRequest:
    """The typed request of a ModelInferRequest; raises BadRequest naming the tensor at fault."""
    tensors = message.inputs
    if not tensors:
        raise BadRequest("the request needs 'inputs': a non-empty list of tensors")
    raw = message.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries but the request has {len(tensors)} inputs; "
            "send one entry per input, in the order of 'inputs', or none and use 'contents'"
        )
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(tensors):
        name = tensor.name
        if name in inputs:
            raise BadRequest(f"input {name!r} is given twice")
        datatype = tensor.datatype
        dtype = V2_TO_NUMPY.get(datatype)
        if dtype is None:
            raise BadRequest(f"input {name!r}: 'datatype' is {datatype!r}; use one of {', '.join(V2_TO_NUMPY)}")
        shape = _shape(tensor.shape, name)
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(f"input {name!r} has 'contents' but the request carries raw_input_contents")
            inputs[name] = _from_raw(raw[i], datatype, dtype, shape, name, i)
        else:
            inputs[name] = _from_contents(tensor.contents, datatype, shape, name)
    outputs = message.outputs
    return InferRequest(
        inputs=inputs,
        id=message.id or None,
        outputs=[RequestedOutput(o.name) for o in outputs] if outputs else None,
        parameters=parameters(message.parameters) if message.parameters else {},
    )


def _shape(dims, name: str) -> tuple[int, ...]:
    """A tensor's shape (int64s, so only their count, sign and product need checking); the
    common case without a zero dimension is checked here, the rest by codec.check_shape."""
    shape = tuple(dims)
    if 0 < len(shape) <= MAX_DIMS and min(shape) > 0 and math.prod(shape) <= MAX_ELEMENTS:
        return shape
    return check_shape(list(shape), name)


def _from_raw(buf: bytes, datatype: str, dtype: np.dtype, shape: tuple[int, ...], name: str, index: int) -> np.ndarray:
    if datatype == "BYTES":
        return from_binary(memoryview(buf), datatype, shape, name)
    need = math.prod(shape) * dtype.itemsize
    if len(buf) != need:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {need} bytes, "
            f"raw_input_contents[{index}] has {len(buf)}"
        )
    return tensor_view(buf, dtype, shape)


def _from_contents(contents: pb.InferTensorContents, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"input {name!r}: {datatype} data has no 'contents' field; send it in raw_input_contents")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} needs {count} elements, contents.{field} has {len(values)}"
        )
    if datatype == "BYTES":
        arr = np.empty(count, dtype=np.object_)
        arr[:] = list(values)
        return arr.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if field in _WIDE and dtype.itemsize < 4 and count:
        wide = np.fromiter(values, dtype=_WIDE[field], count=count)
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise BadRequest(f"input {name!r}: contents.{field} has values outside the range of {datatype}")
        return wide.astype(dtype).reshape(shape)
    return np.fromiter(values, dtype=dtype, count=count).reshape(shape)


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id or ""
    )
    outputs, raw = message.outputs, message.raw_output_contents
    for name, arr, _ in response.outputs:
        outputs.add(name=name, datatype=v2_datatype(arr), shape=arr.shape)
        raw.append(tensor_bytes(arr))
    return message


def tensor_metadata(specs: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(name=s["name"], datatype=s["datatype"], shape=s["shape"]) for s in specs
    ]
