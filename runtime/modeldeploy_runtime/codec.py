"""Open Inference Protocol v2 request and response bodies: JSON tensors and the binary tensor data
extension (a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw tensors).

Pure functions from bytes to numpy and back. Checks here are about the body being well formed
(tensor data matching its own shape and datatype); whether it fits the model is the data plane's
business. Both encodings stay in one module, over the usual size: a binary request is a JSON
header plus raw tensors, so the two share the tensor parsing, the datatype checks and the limits.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BadRequest, PayloadTooLarge
from .types import V2_TO_NUMPY, InferRequest, InferResponse, RequestedOutput, v2_datatype

try:  # several times faster on large JSON tensors; the stdlib is the fallback
    import orjson

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is in the serve extra
    import json

    def _loads(data: bytes) -> Any:
        return json.loads(bytes(data))

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    _JSON_ERRORS = (ValueError, UnicodeDecodeError)


try:  # reads large JSON number arrays straight into numpy (2.2x faster than orjson + numpy)
    import simdjson

    from . import bigjson
except ImportError:  # pragma: no cover - pysimdjson is in the serve extra
    simdjson = None

SIMDJSON_MIN_BYTES = 32 * 1024  # below this, orjson is as fast and builds plain objects directly
_OF_TYPE = {"f": ("d", np.float64), "i": ("i", np.int64), "u": ("u", np.uint64)}
# numpy's own limit (NPY_MAXDIMS in numpy 2; ONNX Runtime and TensorRT take far fewer); past it
# numpy raises instead of the request being refused.
MAX_DIMS = 64
# Elements a shape may describe, counting a 0 dimension as 1: far past any real tensor, and small
# enough that element counts times item sizes never overflow numpy's 64-bit sizes.
MAX_ELEMENTS = 1 << 48
# The JSON values each kind of datatype takes; JSON's true/false, null and strings are refused
# for numbers, as Triton does, rather than read as 1, NaN or parsed text.
_JSON_TYPES = {"f": frozenset({int, float}), "i": frozenset({int}), "u": frozenset({int}), "b": frozenset({bool})}
_EXPECTED = {"f": "numbers", "i": "whole numbers", "u": "whole numbers", "b": "true or false"}
_JSON_NAMES = {type(None): "null", bool: "true/false", str: "strings", float: "fractional numbers",
               int: "whole numbers", dict: "objects", list: "arrays"}  # fmt: skip


def _simd_number_array(value, datatype: Any):
    """A numpy array of the numbers in a (possibly nested) JSON array, read without creating a
    Python object per number; None when the array does not hold numbers of the datatype's kind.
    When it holds something that is no number at all, a one-element list of the first such
    value, for _from_json to refuse by name: the rest of a large array is never built."""
    kind = V2_TO_NUMPY[datatype].kind if datatype in V2_TO_NUMPY else None
    if kind not in _OF_TYPE or not isinstance(value, simdjson.Array):
        return None
    of_type, np_type = _OF_TYPE[kind]
    try:
        return np.frombuffer(value.as_buffer(of_type=of_type), dtype=np_type)
    except (TypeError, ValueError):  # strings, booleans, floats for an integer type...
        bad = _first_of_other_type(value, _JSON_TYPES[kind])
        return None if bad is _NONE else [bad]


_NONE = object()


def _first_of_other_type(array, allowed: frozenset) -> Any:
    """The first scalar of a nested simdjson array whose type is not in ``allowed``; _NONE when
    all are (then the values are out of range, which the slow path tells)."""
    stack = [iter(array)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, simdjson.Array):
                stack.append(iter(item))
                break
            if type(item) not in allowed:
                return _plain(item)
        else:
            stack.pop()
    return _NONE


_REQUEST_KEYS = frozenset({"id", "inputs", "outputs", "parameters"})
_TENSOR_KEYS = frozenset({"name", "datatype", "shape", "parameters", "data"})


def _simd_loads(body) -> Any:
    """Parse with simdjson; every value this module reads becomes a plain Python object except
    the "data" of each input, which becomes a numpy array when it holds numbers. Keys it does not
    read are never built."""
    # a parser per document: cheap, and a parser cannot be reused while proxies into it live
    doc = simdjson.Parser().parse(body)
    if not isinstance(doc, simdjson.Object):
        return None if isinstance(doc, simdjson.Array) else doc  # refused by the caller either way
    out = {}
    for key in doc:
        if key not in _REQUEST_KEYS:
            continue
        value = doc[key]
        if key == "inputs" and isinstance(value, simdjson.Array):
            out[key] = [_simd_input(t) for t in value]
        else:
            out[key] = _plain(value)
    return out


def _simd_input(tensor) -> Any:
    if not isinstance(tensor, simdjson.Object):
        return _plain(tensor)
    keys = [key for key in tensor if key in _TENSOR_KEYS]
    datatype = tensor["datatype"] if "datatype" in keys else None
    out = {}
    for key in keys:
        value = tensor[key]
        numbers = _simd_number_array(value, datatype) if key == "data" else None
        out[key] = numbers if numbers is not None else _plain(value)
    return out


def _plain(value) -> Any:
    """A simdjson value as Python objects, built by Python loops rather than as_list() or
    as_dict(): twice as slow, but a decoding thread then lets the event loop in between
    (as_list() of 3.5 million strings held the GIL for 0.16 s)."""
    if isinstance(value, simdjson.Array):
        return [_plain(v) if isinstance(v, _CONTAINERS) else v for v in value]
    if isinstance(value, simdjson.Object):
        return {k: _plain(value[k]) for k in value}
    return value


_CONTAINERS = (simdjson.Array, simdjson.Object) if simdjson is not None else ()


@dataclass(frozen=True)
class BinaryLayout:
    """Where each input of a request whose tensors are all binary sits in its body: what it takes
    to read the next request with the same JSON header without parsing that header again."""

    tensors: tuple[tuple[str, np.dtype, tuple[int, ...], int], ...]  # (name, dtype, shape, offset in the body)
    size: int  # the body's length

    def inputs(self, body) -> dict[str, np.ndarray]:
        """The input arrays of ``body``, which must be ``size`` bytes long."""
        return {name: tensor_view(body, dtype, shape, offset) for name, dtype, shape, offset in self.tensors}


def dumps(obj: Any) -> bytes:
    return _dumps(obj)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo a ``Content-Encoding`` (gzip or deflate, as tritonclient sends), refusing to inflate
    past ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"the {encoding} body inflates past the {limit}-byte limit (MODELDEPLOY_MAX_BODY_BYTES)")
    return out


def check_shape(raw: Any, name: str) -> tuple[int, ...]:
    if isinstance(raw, list) and len(raw) > MAX_DIMS:
        raise BadRequest(f"input {name!r}: 'shape' has {len(raw)} dimensions; at most {MAX_DIMS} are supported")
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers, got {raw!r}")
    if math.prod(max(d, 1) for d in raw) > MAX_ELEMENTS:
        raise BadRequest(
            f"input {name!r}: 'shape' {raw} describes more than {MAX_ELEMENTS} elements "
            "(0 dimensions counted as 1); no tensor can be that large"
        )
    return tuple(raw)


def _bytes_elements(buf: memoryview, name: str) -> list[bytes]:
    """BYTES tensors in binary form: each element is a 4-byte little-endian length and the bytes."""
    items, pos, end = [], 0, len(buf)
    while pos < end:
        if pos + 4 > end:
            raise BadRequest(f"input {name!r}: BYTES binary data ends inside an element's 4-byte length")
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + n > end:
            raise BadRequest(f"input {name!r}: a BYTES element of {n} bytes runs past the tensor's data")
        items.append(bytes(buf[pos : pos + n]))
        pos += n
    return items


def from_binary(buf: memoryview, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _bytes_elements(buf, name)
        if len(items) != count:
            raise BadRequest(
                f"input {name!r}: shape {list(shape)} needs {count} BYTES elements, the binary data holds {len(items)}"
            )
        arr = np.empty(count, dtype=np.object_)
        arr[:] = items
        return arr.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if len(buf) != count * dtype.itemsize:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} "
            f"bytes, binary_data_size is {len(buf)}"
        )
    return tensor_view(buf, dtype, shape)


def tensor_view(buf, dtype: np.dtype, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
    """The tensor of ``shape`` at ``offset`` in ``buf``, without a copy when it is aligned: an
    unaligned view (the JSON header has any length) costs more in the backend than a copy."""
    arr = np.frombuffer(buf, dtype, math.prod(shape), offset).reshape(shape)
    return arr if arr.flags.aligned else arr.copy()


def _flatten(data: list) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _from_numbers(numbers: np.ndarray, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Data already read as float64/int64/uint64 numbers (see _simd_number_array)."""
    count = math.prod(shape)
    if numbers.size != count:
        raise BadRequest(f"input {name!r}: shape {list(shape)} needs {count} elements, 'data' has {numbers.size}")
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind in "iu" and numbers.size:
        info = np.iinfo(dtype)
        if numbers.min() < info.min or numbers.max() > info.max:
            raise BadRequest(f"input {name!r}: 'data' has values outside the range of {datatype}")
    return numbers.astype(dtype).reshape(shape)


def _refuse_types(found: set, datatype: str, name: str) -> None:
    shown = ", ".join(sorted(_JSON_NAMES.get(t, t.__name__) for t in found))
    want = "strings" if datatype == "BYTES" else _EXPECTED[V2_TO_NUMPY[datatype].kind]
    raise BadRequest(f"input {name!r}: {datatype} data must be {want}; 'data' holds {shown}")


# Whole-list operations that run in C hold the GIL throughout: on lists longer than this they go a
# slice at a time, so that a thread decoding a large request lets the event loop in between.
SLICE = 1 << 16


def _types(items: list) -> set:
    if len(items) <= SLICE:
        return set(map(type, items))
    found: set = set()
    for i in range(0, len(items), SLICE):
        found.update(map(type, items[i : i + SLICE]))
    return found


def _from_json(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return _from_numbers(data, datatype, shape, name)
    count = math.prod(shape)
    flat = data if isinstance(data, list) else [data]
    types = _types(flat)
    if list in types:  # nested (or ragged) lists: what counts is the elements, in order
        flat = _flatten(flat)
        types = _types(flat)
    if datatype == "BYTES":
        if not types <= {str}:
            _refuse_types(types - {str}, datatype, name)
        if len(flat) != count:
            raise BadRequest(f"input {name!r}: shape {list(shape)} needs {count} elements, 'data' has {len(flat)}")
        arr = np.empty(count, dtype=np.object_)
        for i in range(0, count, SLICE):
            arr[i : i + SLICE] = [x.encode() for x in flat[i : i + SLICE]]
        return arr.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    allowed = _JSON_TYPES[dtype.kind]
    if not types <= allowed:
        _refuse_types(types - allowed, datatype, name)
    if len(flat) != count:
        raise BadRequest(f"input {name!r}: shape {list(shape)} needs {count} elements, 'data' has {len(flat)}")
    if dtype.kind in "iu":  # numpy would wrap 300 to 44 for UINT8 without a word
        raw = np.array(flat)
        if raw.size and raw.dtype.kind not in "iu":  # past 64 bits: numpy falls back to objects
            raise BadRequest(f"input {name!r}: 'data' has values outside the range of {datatype}")
        return _from_numbers(raw.reshape(-1), datatype, shape, name)
    try:
        arr = np.fromiter(flat, dtype=dtype, count=len(flat))
    except OverflowError:  # an integer past what a float holds
        raise BadRequest(f"input {name!r}: 'data' has values outside the range of {datatype}") from None
    return arr.reshape(shape)


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse an inference request; ``header_length`` is the ``Inference-Header-Content-Length``
    header when the body carries binary tensors."""
    return decode_request_layout(body, header_length)[0]


def decode_request_layout(body: bytes, header_length: int | None = None) -> tuple[InferRequest, BinaryLayout | None]:
    """decode_request, and where the inputs sit in the body when every one is binary data of a
    fixed-size type (None otherwise): enough to read the next body with the same JSON header."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} "
            "bytes; it must be the length of the JSON header at the start of the body"
        )
    header = body if header_length is None else body[:header_length]
    try:
        doc = bigjson.loads(header, _loads) if simdjson is not None and len(header) >= bigjson.DOC_MIN_BYTES else None
        if doc is None and len(header) > bigjson.PARSE_MAX_BYTES:
            raise PayloadTooLarge(
                f"this {len(header) / 2**20:.0f} MiB JSON request has more than {bigjson.PARSE_MAX_BYTES >> 20} MiB "
                "that is not flat arrays of floating-point numbers or of strings without escapes (integers, "
                "booleans, escaped or nested strings), which the server would have to read in one piece: "
                "send the tensors in binary (the v2 binary tensor extension, with Inference-Header-Content-Length) "
                "or split the request"
            )
        if doc is None:
            doc = _simd_loads(header) if simdjson is not None and len(header) >= SIMDJSON_MIN_BYTES else _loads(header)
    except RecursionError:
        raise BadRequest("the request body nests JSON arrays or objects too deeply") from None
    except (*_JSON_ERRORS, ValueError) as exc:
        hint = "" if header_length is not None else " (binary tensors need the Inference-Header-Content-Length header)"
        raise BadRequest(f"the request body is not valid JSON: {exc}{hint}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the request needs 'inputs': a non-empty list of tensors")
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    layout: list | None = [] if header_length is not None else None
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a string 'name'")
        name = t["name"]
        if name in inputs:
            raise BadRequest(f"input {name!r} is given twice")
        datatype = t.get("datatype")
        if datatype not in V2_TO_NUMPY:
            raise BadRequest(f"input {name!r}: 'datatype' is {datatype!r}; use one of {', '.join(V2_TO_NUMPY)}")
        shape = check_shape(t.get("shape"), name)
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if header_length is None:
                raise BadRequest(
                    f"input {name!r} has binary_data_size but the request has no Inference-Header-Content-Length header"
                )
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size!r} runs past the {len(binary)} "
                    f"bytes of binary data after offset {offset}"
                )
            inputs[name] = from_binary(binary[offset : offset + size], datatype, shape, name)
            if layout is not None and datatype != "BYTES":
                layout.append((name, V2_TO_NUMPY[datatype], shape, header_length + offset))
            else:
                layout = None
            offset += size
        elif "data" in t:
            layout = None
            inputs[name] = _from_json(t["data"], datatype, shape, name)
        else:
            raise BadRequest(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    if offset != len(binary):
        raise BadRequest(
            f"the body has {len(binary)} bytes of binary tensor data but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be a JSON object")
    request = InferRequest(
        inputs=inputs,
        id=doc.get("id") if isinstance(doc.get("id"), str) else None,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_output=bool(params.get("binary_data_output", False)),
        parameters=params,
    )
    return request, BinaryLayout(tuple(layout), len(body)) if layout else None


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    outs = []
    for i, o in enumerate(raw):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a string 'name'")
        params = o.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"output {o['name']!r}: 'parameters' must be a JSON object")
        binary = params.get("binary_data")
        outs.append(RequestedOutput(o["name"], None if binary is None else bool(binary)))
    return outs


def tensor_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype == np.object_:
        parts = []
        for item in arr.reshape(-1):
            b = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(arr).tobytes()


def _json_data(arr: np.ndarray) -> list | None:
    """The elements of an output for JSON; None for BYTES elements that are not UTF-8 text, which
    JSON cannot carry: that output goes as binary data instead, byte for byte (tritonclient reads
    an output as binary whenever it has a binary_data_size)."""
    if arr.dtype == np.object_:
        try:
            return [x.decode() if isinstance(x, bytes) else str(x) for x in arr.reshape(-1)]
        except UnicodeDecodeError:
            return None
    return arr.reshape(-1).tolist()


def _dumps_with_nonfinite(doc: dict) -> bytes:
    """JSON with NaN, Infinity and -Infinity written as such, as Triton writes them and its client
    reads them back (orjson would write null)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


_binary_headers: dict[tuple, bytes] = {}  # response JSON headers of all-binary responses, by what they hold
_BINARY_HEADERS_MAX = 256


def encode_infer_response(response: InferResponse) -> tuple[bytes, int | None]:
    """The REST body of a response, and its JSON header's length when any output is binary."""
    return encode_response(response.model_name, response.model_version, response.outputs, response.id)


def encode_response(
    model_name: str,
    model_version: str,
    outputs: list[tuple[str, np.ndarray, bool]],
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length (the value of
    ``Inference-Header-Content-Length``). ``outputs`` are (name, array, binary)."""
    if all(binary and arr.dtype != np.object_ for _, arr, binary in outputs):
        # the header depends only on names, types and shapes: the same for every request of a client
        key = (model_name, model_version, request_id, tuple((n, arr.dtype, arr.shape) for n, arr, _ in outputs))
        header = _binary_headers.get(key)
        if header is None:
            header = _dumps(
                _response_doc(model_name, model_version, outputs, request_id)[0]
            )  # every output binary: no numbers in it
            if len(_binary_headers) >= _BINARY_HEADERS_MAX:
                _binary_headers.clear()
            _binary_headers[key] = header
        # join reads contiguous arrays' memory directly: no intermediate bytes per tensor
        blobs = [arr.data if arr.flags.c_contiguous else tensor_bytes(arr) for _, arr, _ in outputs]
        return b"".join([header, *blobs]), len(header)
    doc, blobs, finite = _response_doc(model_name, model_version, outputs, request_id)
    header = _dumps(doc) if finite else _dumps_with_nonfinite(doc)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _response_doc(model_name, model_version, outputs, request_id) -> tuple[dict[str, Any], list[bytes], bool]:
    """The JSON header as a document, the binary outputs' bytes in order, and whether every
    number in the document is finite."""
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    tensors, blobs, finite = [], [], True
    for name, arr, binary in outputs:
        t: dict[str, Any] = {
            "name": name,
            "datatype": v2_datatype(arr),
            "shape": list(arr.shape),
        }
        data = None if binary else _json_data(arr)
        if data is None:
            blob = tensor_bytes(arr)
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            t["data"] = data
            if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
                finite = False
        tensors.append(t)
    doc["outputs"] = tensors
    return doc, blobs, finite
