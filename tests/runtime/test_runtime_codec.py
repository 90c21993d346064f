"""v2 request and response bodies: JSON and the binary tensor data extension."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest
from modeldeploy_runtime import bigjson
from modeldeploy_runtime.codec import decode_request, decompress, encode_response
from modeldeploy_runtime.errors import BadRequest, PayloadTooLarge


def binary_body(tensors: list[tuple[str, str, list[int], bytes]], extra: dict | None = None) -> tuple[bytes, int]:
    header = {
        "inputs": [
            {"name": n, "datatype": dt, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
            for n, dt, shape, raw in tensors
        ],
        **(extra or {}),
    }
    head = json.dumps(header).encode()
    return head + b"".join(raw for *_, raw in tensors), len(head)


def test_json_tensor_flat_and_nested_data():
    for data in ([1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]):
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": data}]})
        req = decode_request(body.encode())
        np.testing.assert_array_equal(req.inputs["x"], np.arange(1, 7, dtype=np.float32).reshape(2, 3))
        assert req.inputs["x"].dtype == np.float32


def test_binary_tensors_are_read_in_order():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[7], [8]], dtype=np.int64)
    body, n = binary_body([("a", "FP32", [2, 3], a.tobytes()), ("b", "INT64", [2, 1], b.tobytes())])
    req = decode_request(body, n)
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b)


def test_bytes_tensors_json_and_binary():
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"hi", b"", b"there", b"x"))
    body, n = binary_body([("t", "BYTES", [2, 2], raw)])
    assert decode_request(body, n).inputs["t"].tolist() == [[b"hi", b""], [b"there", b"x"]]
    body = json.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]})
    assert decode_request(body.encode()).inputs["t"].tolist() == [b"a", b"b"]


def test_request_options():
    body = json.dumps(
        {
            "id": "r1",
            "inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
            "parameters": {"binary_data_output": False},
        }
    )
    req = decode_request(body.encode())
    assert req.id == "r1"
    assert [(o.name, o.binary) for o in req.outputs] == [("y", True), ("z", None)]
    assert req.binary_output is False


@pytest.mark.parametrize(
    ("body", "header_length", "words"),
    [
        (b"{not json", None, ["not valid JSON"]),
        (b"[1, 2]", None, ["JSON object"]),
        (b'{"inputs": []}', None, ["'inputs'"]),
        (b'{"inputs": [{"datatype": "FP32"}]}', None, ["inputs[0]", "'name'"]),
        (b'{"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1], "data": [1]}]}', None, ["'x'", "FLOAT"]),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', None, ["'x'", "shape"]),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}', None, ["'x'", "2 elements"]),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}', None, ["'x'", "FP32"]),
        (b'{"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]}', None, ["'x'", "UINT8"]),
        (b'{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1.5]}]}', None, ["'x'", "whole"]),
        (b'{"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1], "data": [3]}]}', None, ["'x'", "true or false"]),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, ["'x'", "neither 'data'"]),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]}', None, ["'x'"]),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},'
         b' {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}', None, ["'x'", "twice"]),
    ],
)  # fmt: skip
def test_malformed_json_requests_name_the_problem(body, header_length, words):
    with pytest.raises(BadRequest) as err:
        decode_request(body, header_length)
    for word in words:
        assert word in str(err.value)


def test_binary_size_not_matching_shape():
    body, n = binary_body([("x", "FP32", [2, 3], b"\0" * 20)])
    with pytest.raises(BadRequest, match=r"'x'.*24 bytes.*20"):
        decode_request(body, n)


def test_binary_data_beyond_declared_sizes():
    body, n = binary_body([("x", "FP32", [1], b"\0" * 4)])
    with pytest.raises(BadRequest, match="add up to 4"):
        decode_request(body + b"extra", n)


def test_binary_size_past_the_end():
    head = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}]}
    ).encode()
    with pytest.raises(BadRequest, match="'x'.*runs past"):
        decode_request(head + b"\0" * 8, len(head))


@pytest.mark.parametrize("header_length", [0, 10_000])
def test_header_length_outside_the_body(header_length):
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        decode_request(b'{"inputs": []}', header_length)


def test_binary_size_without_header_length():
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}'
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        decode_request(body)


def test_truncated_bytes_element():
    body, n = binary_body([("t", "BYTES", [1], struct.pack("<I", 10) + b"abc")])
    with pytest.raises(BadRequest, match="'t'.*10 bytes"):
        decode_request(body, n)


def test_json_response():
    y = np.array([[1.5, 2.5]], dtype=np.float32)
    body, header_length = encode_response("m", "1", [("y", y, False)], "r1")
    assert header_length is None
    doc = json.loads(body)
    assert doc == {
        "model_name": "m",
        "model_version": "1",
        "id": "r1",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}],
    }


def test_binary_response_mixed_with_json():
    y = np.arange(4, dtype=np.int64).reshape(2, 2)
    s = np.array([b"ab", b"c"], dtype=object)
    body, n = encode_response("m", "1", [("y", y, True), ("s", s, True), ("z", y, False)])
    doc = json.loads(body[:n])
    sizes = [o.get("parameters", {}).get("binary_data_size") for o in doc["outputs"]]
    assert sizes == [32, 4 + 2 + 4 + 1, None]
    assert doc["outputs"][2]["data"] == [0, 1, 2, 3]
    blob = body[n:]
    np.testing.assert_array_equal(np.frombuffer(blob[:32], dtype=np.int64).reshape(2, 2), y)
    assert blob[32:] == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"


def test_decompress_gzip_and_deflate_within_limit():
    raw = b'{"inputs": []}' * 100
    assert decompress(gzip.compress(raw), "gzip", 10_000) == raw
    assert decompress(zlib.compress(raw), "deflate", 10_000) == raw
    with pytest.raises(PayloadTooLarge, match="limit"):
        decompress(gzip.compress(raw), "gzip", 100)
    with pytest.raises(BadRequest, match="br"):
        decompress(raw, "br", 10_000)
    with pytest.raises(BadRequest, match="gzip"):
        decompress(b"not gzip", "gzip", 10_000)


def test_binary_tensors_come_out_aligned_whatever_the_header_length():
    """ONNX Runtime copies unaligned inputs through a slow path, so the codec never hands one on."""
    x = np.arange(6, dtype=np.float32)
    for pad in range(4):
        body, n = binary_body([("x", "FP32", [6], x.tobytes())], extra={"id": "p" * pad})
        arr = decode_request(body, n).inputs["x"]
        assert arr.flags.aligned
        np.testing.assert_array_equal(arr, x)


@pytest.mark.parametrize("payload_at", [0, 1, 63, 64, 1000])
def test_large_bodies_are_placed_so_the_binary_part_is_64_byte_aligned(payload_at):
    from modeldeploy_runtime.httpserver import aligned_buffer

    buf = aligned_buffer(5000, payload_at)
    assert len(buf) == 5000
    assert np.frombuffer(buf[payload_at:], dtype=np.uint8).ctypes.data % 64 == 0


BIG = 20_000  # elements: the body is over the size from which JSON numbers are read by simdjson


@pytest.mark.parametrize(
    ("datatype", "values"),
    [("FP32", np.linspace(-1, 1, BIG, dtype=np.float32)), ("FP64", np.linspace(-1, 1, BIG)),
     ("INT64", np.arange(-BIG, BIG, 2, dtype=np.int64)), ("UINT8", np.arange(BIG, dtype=np.int64) % 256),
     ("FP16", np.linspace(-1, 1, BIG).astype(np.float16))],
)  # fmt: skip
def test_large_json_tensors_decode_exactly(datatype, values):
    body = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [2, values.size // 2],
                                   "data": values.tolist()}]})  # fmt: skip
    assert len(body) > 32 * 1024
    arr = decode_request(body.encode()).inputs["x"]
    assert arr.dtype == np.dtype({"FP32": "f4", "FP64": "f8", "INT64": "i8", "UINT8": "u1", "FP16": "f2"}[datatype])
    np.testing.assert_array_equal(arr.reshape(-1), values.astype(arr.dtype))


def test_large_json_nested_and_mixed_int_float_data():
    rows = [[float(i), i] for i in range(BIG)]  # 1.0 and 1 mixed
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [BIG, 2], "data": rows}]})
    arr = decode_request(body.encode()).inputs["x"]
    np.testing.assert_array_equal(arr, np.array(rows, dtype=np.float32))


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [("INT8", [1] * (BIG - 1) + [300], ["'x'", "INT8"]), ("FP32", [1.0] * (BIG - 1) + ["a"], ["'x'", "FP32"]),
     ("INT32", [1] * (BIG - 1) + [1.5], ["'x'", "INT32", "whole numbers"]),
     ("FP32", [1.0] * (BIG + 1), ["'x'", "needs", str(BIG)])],
)  # fmt: skip
def test_large_json_bad_data_names_the_tensor(datatype, data, words):
    body = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [BIG], "data": data}]})
    with pytest.raises(BadRequest) as err:
        decode_request(body.encode())
    for word in words:
        assert word in str(err.value)


def test_large_json_bool_and_bytes_take_the_general_path():
    flags = [True, False] * (BIG // 2)
    body = json.dumps({"inputs": [{"name": "b", "datatype": "BOOL", "shape": [BIG], "data": flags},
                                  {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]})  # fmt: skip
    req = decode_request(body.encode())
    assert req.inputs["b"].tolist() == flags and req.inputs["s"].tolist() == [b"a", b"b"]


def test_large_invalid_json_is_a_bad_request():
    with pytest.raises(BadRequest, match="not valid JSON"):
        decode_request(b'{"inputs": [' + b"1," * 40_000)


def test_json_response_keeps_nan_and_infinities_as_tritonclient_reads_them():
    y = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32)
    body, header_length = encode_response("m", "1", [("y", y, False)])
    assert header_length is None and b"[NaN,Infinity,-Infinity,1.5]" in body
    read = json.loads(body)["outputs"][0]["data"]  # Python's json and rapidjson read these
    assert np.isnan(read[0]) and read[1:] == [np.inf, -np.inf, 1.5]


def test_bytes_output_that_is_not_utf8_goes_binary_byte_for_byte():
    s = np.array([b"\xff\xfe raw", "é".encode()], dtype=object)
    body, n = encode_response("m", "1", [("s", s, False)])
    head = json.loads(body[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == len(body) - n
    assert body[n:] == struct.pack("<I", 6) + b"\xff\xfe raw" + struct.pack("<I", 2) + "é".encode()


def _big_doc(data: bytes, datatype: str = "FP32", shape=(-1,)) -> bytes:
    """A JSON request past bigjson.DOC_MIN_BYTES whose one input has ``data`` as written."""
    return b'{"id":"big","inputs":[{"name":"x","datatype":"%s","shape":%s,"data":%s}]}' % (
        datatype.encode(),
        json.dumps(list(shape)).encode(),
        data,
    )


@pytest.mark.parametrize("nested", [False, True])
def test_json_past_8_mb_reads_its_numbers_exactly(nested):
    x = np.random.default_rng(0).random((4, 300_000)).astype(np.float32)
    data = json.dumps(x.tolist() if nested else x.ravel().tolist()).encode()
    request = decode_request(_big_doc(data, shape=x.shape if nested else (x.size,)))
    assert request.id == "big"
    np.testing.assert_array_equal(request.inputs["x"].reshape(x.shape), x)


@pytest.mark.parametrize(
    ("tail", "datatype", "words"),
    [(b',"0.5"]', "FP32", ["'x'", "strings"]), (b",,1]", "FP32", ["not valid JSON"]),
     (b",nan]", "FP32", ["not valid JSON"]), (b",1.5]", "INT64", ["'x'", "whole numbers"])],
)  # fmt: skip
def test_json_past_8_mb_with_bad_data_names_the_problem(tail, datatype, words):
    body = _big_doc(b"[" + b"1," * 4_500_000 + b"1" + tail, datatype, (4_500_002,))
    with pytest.raises(BadRequest) as err:
        decode_request(body)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("escaped", [False, True])
def test_json_past_8_mb_reads_its_strings_exactly(escaped):
    words = [f"w{i}é" for i in range(900_000)]
    if escaped:  # an escape sends the array through the whole-document parse
        words[-1] = 'a"b\\c'
    request = decode_request(_big_doc(json.dumps(words).encode(), "BYTES", (len(words),)))
    got = request.inputs["x"]
    assert got.shape == (900_000,) and got[0] == "w0é".encode() and got[-1] == words[-1].encode()


def test_json_past_8_mb_of_strings_for_fp32_is_refused_by_name():
    body = _big_doc(json.dumps(["0.5"] * 2_000_000).encode(), "FP32", (2_000_000,))
    with pytest.raises(BadRequest, match=r"input 'x': FP32 data must be numbers; 'data' holds strings"):
        decode_request(body)


@pytest.mark.parametrize(
    ("data", "datatype"),
    [(b"[" + b"7," * 9_000_000 + b"7]", "INT64"), (json.dumps(['a"b'] * 3_000_000).encode(), "BYTES")],
    ids=["integers", "escaped-strings"],
)
def test_json_that_would_be_parsed_in_one_piece_past_16_mib_is_refused_with_the_fix(data, datatype):
    """Such JSON holds the GIL for its whole parse (about 4 ms per MB): past 16 MiB it is refused
    rather than stall the health probes, and the message says how to send it."""
    body = _big_doc(data, datatype, (data.count(b",") + 1,))
    assert len(body) > bigjson.PARSE_MAX_BYTES
    with pytest.raises(PayloadTooLarge) as err:
        decode_request(body)
    assert "binary" in str(err.value) and "16 MiB" in str(err.value)


def test_json_of_floats_past_16_mib_is_still_read():
    x = np.random.default_rng(2).random(2_000_000).astype(np.float32)
    body = _big_doc(json.dumps(x.tolist()).encode(), "FP32", (x.size,))
    assert len(body) > bigjson.PARSE_MAX_BYTES
    np.testing.assert_array_equal(decode_request(body).inputs["x"], x)
