"""The v2 REST API over real HTTP, with the real tritonclient (JSON and binary)."""

from __future__ import annotations

import gzip
import json
import re
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def client(affine_server):
    c = httpclient.InferenceServerClient(affine_server.url, network_timeout=30)
    yield c
    c.close()


def infer(client, x: np.ndarray, binary_in: bool, binary_out: bool | None, **kwargs):
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    outputs = None if binary_out is None else [httpclient.InferRequestedOutput("y", binary_data=binary_out)]
    return client.infer("affine", [inp], outputs=outputs, **kwargs)


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(False, False), (True, True), (False, True), (True, False), (True, None)]
)
def test_tritonclient_infer_json_and_binary(client, binary_in, binary_out):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = infer(client, x, binary_in, binary_out, request_id="req-1")
    np.testing.assert_array_equal(result.as_numpy("y"), 2 * x + 1)
    response = result.get_response()
    assert response["model_name"] == "affine" and response["id"] == "req-1"


def test_tritonclient_compressed_request(client):
    x = np.ones((1, 4), dtype=np.float32)
    result = infer(client, x, True, True, request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("y"), np.full((1, 4), 3.0))


def test_tritonclient_versioned_infer(client):
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    assert client.infer("affine", [inp], model_version="1").as_numpy("y").tolist() == [[1.0] * 4]
    with pytest.raises(InferenceServerException, match="no version '7'"):
        client.infer("affine", [inp], model_version="7")


def test_tritonclient_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("affine") and client.is_model_ready("affine", "1")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("affine")
    assert meta["name"] == "affine" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["parameters"]["providers"] == "CPUExecutionProvider"
    assert meta["parameters"]["device"] == "cpu"
    config = client.get_model_config("affine")
    assert config["max_batch_size"] == 4 and config["input"][0]["dims"] == [4]


def test_unknown_model_is_404_naming_it(client):
    with pytest.raises(InferenceServerException, match="'nope' is not served here"):
        client.get_model_metadata("nope")


def test_concurrent_requests_each_get_their_own_rows(client, affine_server):
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            c = httpclient.InferenceServerClient(affine_server.url, network_timeout=30)
            for j in range(10):
                x = np.full((1 + (i + j) % 3, 4), float(i * 100 + j), dtype=np.float32)
                y = infer(c, x, True, True).as_numpy("y")
                if not np.array_equal(y, 2 * x + 1):
                    raise AssertionError(f"worker {i} request {j} got {y.tolist()} for {x.tolist()}")
            results[i] = y
            c.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 8


def test_metrics_use_the_contract_names(client, affine_server):
    infer(client, np.zeros((1, 4), dtype=np.float32), True, True)
    with urllib.request.urlopen(affine_server.base + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for name in (
        "modeldeploy_inference_requests_total",
        "modeldeploy_request_duration_seconds_bucket",
        "modeldeploy_queue_duration_seconds_bucket",
        "modeldeploy_compute_duration_seconds_bucket",
        "modeldeploy_batch_size_bucket",
        "modeldeploy_inflight_requests",
    ):
        assert f"{name}{{" in text, name
    assert 'modeldeploy_model_ready{model="affine"} 1.0' in text
    ok = re.search(
        r'modeldeploy_inference_requests_total\{model="affine",outcome="success",protocol="rest",reason=""\} (\S+)',
        text,
    )
    assert ok and float(ok.group(1)) >= 1


def test_raw_json_request_and_response(affine_server):
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    req = urllib.request.Request(affine_server.base + "/v2/models/affine/infer", data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        doc = json.loads(resp.read())
    assert doc["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [3.0, 5.0, 7.0, 9.0]}]


def test_raw_gzip_body(affine_server):
    body = gzip.compress(json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                                 "data": [0, 0, 0, 0]}]}).encode())  # fmt: skip
    req = urllib.request.Request(
        affine_server.base + "/v2/models/affine/infer", data=body, method="POST", headers={"Content-Encoding": "gzip"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["outputs"][0]["data"] == [1.0] * 4


def test_pipelined_requests_are_answered_in_order(affine_server):
    """Two requests in one write, the first with a body large enough to be read directly."""
    import socket

    big = json.dumps({"inputs": [{"name": "x", "shape": [4, 4], "datatype": "FP32", "data": [1.0] * 16}],
                      "pad": "x" * 200_000}).encode()  # fmt: skip
    small = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5, 5, 5, 5]}]}).encode()

    def request(body: bytes) -> bytes:
        return (b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body

    with socket.create_connection(("127.0.0.1", affine_server.port), timeout=30) as s:
        s.sendall(request(big) + request(small))
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}]}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    first, second = data.split(b"HTTP/1.1 200 OK")[1:]
    assert b'"shape":[4,4]' in first and b"[3.0,3.0,3.0,3.0" in first
    assert b'"data":[11.0,11.0,11.0,11.0]' in second


def _binary_exchange(port: int, bodies: list[tuple[bytes, int]]) -> list[tuple[int, int, bytes]]:
    """Send binary v2 requests one after another on one keep-alive connection; (status, JSON
    header length, body) each."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers = []
    try:
        for body, header_length in bodies:
            conn.request("POST", "/v2/models/affine/infer", body=body,
                         headers={"Inference-Header-Content-Length": str(header_length)})  # fmt: skip
            resp = conn.getresponse()
            answers.append((resp.status, int(resp.getheader("Inference-Header-Content-Length") or 0), resp.read()))
    finally:
        conn.close()
    return answers


def test_repeated_binary_header_with_new_data_gets_new_results(affine_server):
    """A client sends the same JSON header with every request; each answer is computed from that
    request's own tensor data, and a body that no longer fits the header is refused."""
    header = json.dumps({"id": "r1", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": 32}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()  # fmt: skip

    def body(value: float, extra: bytes = b"") -> tuple[bytes, int]:
        return header + np.full((2, 4), value, dtype=np.float32).tobytes() + extra, len(header)

    answers = _binary_exchange(affine_server.port, [body(1), body(2), body(3, extra=b"\0" * 4), body(4)])
    assert [status for status, _, _ in answers] == [200, 200, 400, 200]
    for (_, head_len, raw), value in zip([answers[0], answers[1], answers[3]], (1, 2, 4), strict=True):
        doc = json.loads(raw[:head_len])
        assert doc["id"] == "r1"
        y = np.frombuffer(raw[head_len:], dtype=np.float32).reshape(2, 4)
        np.testing.assert_array_equal(y, 2 * value + 1)
    assert b"binary_data_size add up to 32" in answers[2][2]


def test_each_request_id_is_echoed_with_binary_outputs(client):
    for request_id in ("a", "b", "a"):
        result = infer(client, np.ones((1, 4), dtype=np.float32), True, True, request_id=request_id)
        assert result.get_response()["id"] == request_id
        np.testing.assert_array_equal(result.as_numpy("y"), np.full((1, 4), 3.0))


@pytest.mark.parametrize("gzipped", [False, True])
def test_large_json_requests_decoded_off_the_event_loop_are_answered(affine_server, gzipped):
    """JSON of a megabyte and more, and compressed bodies, are decoded on a worker thread."""
    rows = [[float(i), 1.0, 2.0, 3.0] for i in range(4)]
    doc = {"inputs": [{"name": "x", "shape": [4, 4], "datatype": "FP32", "data": rows}], "pad": "x" * (1 << 21)}
    body = json.dumps(doc).encode()
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    req = urllib.request.Request(
        affine_server.base + "/v2/models/affine/infer", gzip.compress(body) if gzipped else body, headers
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.loads(resp.read())["outputs"][0]
    assert out["data"][:4] == [1.0, 3.0, 5.0, 7.0] and out["data"][-4:] == [7.0, 3.0, 5.0, 7.0]
    doc["inputs"][0]["data"] = ["0.5"] * 16
    req = urllib.request.Request(affine_server.base + "/v2/models/affine/infer", json.dumps(doc).encode())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and "'x'" in json.loads(err.value.read())["error"]
