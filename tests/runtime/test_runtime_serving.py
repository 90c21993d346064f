"""Serving behaviour over real HTTP: auth, dynamic batching, unbatched and BYTES models, backpressure."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from runtime_helpers import post, slow_request  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

TOKEN = "s3cret-token"


def get(server, path: str, headers: dict | None = None) -> int:
    req = urllib.request.Request(server.base + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def metric(server, name: str) -> float:
    with urllib.request.urlopen(server.base + "/metrics", timeout=10) as resp:
        found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", resp.read().decode(), re.M)
    assert found, name
    return float(found.group(1))


def test_auth_guards_inference_and_metadata_but_not_health(server_factory, models):
    server = server_factory(models["affine"], "m", AUTH_TOKEN=TOKEN)
    good = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/m/ready", "/metrics"):
        assert get(server, path) == 200, path
    for path in ("/v2", "/v2/models/m", "/v2/models/m/config"):
        assert get(server, path) == 401, path
        assert get(server, path, {"Authorization": "Bearer wrong"}) == 401, path
        assert get(server, path, good) == 200, path
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="Authorization: Bearer"):
        client.infer("m", [inp])
    with pytest.raises(InferenceServerException, match="Authorization: Bearer"):
        client.infer("m", [inp], headers={"Authorization": TOKEN})  # the scheme is required
    assert client.infer("m", [inp], headers=good).as_numpy("y").tolist() == [[1.0] * 4]
    client.close()
    assert (
        metric(
            server,
            'modeldeploy_inference_requests_total{model="m",outcome="failure",protocol="rest",reason="unauthorized"}',
        )
        >= 2
    )


def test_unauthorized_answer_names_the_scheme(server_factory, models):
    server = server_factory(models["affine"], "m", AUTH_TOKEN=TOKEN)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.base + "/v2/models/m", timeout=10)
    assert err.value.code == 401
    assert err.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert "MODELDEPLOY_AUTH_TOKEN" in json.loads(err.value.read())["error"]


def test_queue_delay_merges_concurrent_requests(server_factory, models):
    server = server_factory(models["affine"], "m", MAX_BATCH_SIZE=8, MAX_QUEUE_DELAY_US=300_000)
    outputs: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        client = httpclient.InferenceServerClient(server.url, network_timeout=30)
        inp = httpclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(np.full((1, 4), float(i), dtype=np.float32))
        outputs[i] = client.infer("m", [inp]).as_numpy("y")
        client.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {i: o.tolist() for i, o in outputs.items()} == {i: [[2.0 * i + 1] * 4] for i in range(4)}
    batches = metric(server, 'modeldeploy_batch_size_count{model="m"}')
    rows = metric(server, 'modeldeploy_batch_size_sum{model="m"}')
    assert rows == 4 and batches < 4  # at least two of the four shared a batch


def test_model_without_batch_dimension_is_served_unbatched(server_factory, models):
    server = server_factory(models["fixed"], "m", MAX_BATCH_SIZE=8)
    client = httpclient.InferenceServerClient(server.url)
    meta = client.get_model_metadata("m")
    assert meta["inputs"][0]["shape"] == [2, 3] and meta["parameters"]["max_batch_size"] == 0
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    inp = httpclient.InferInput("x", [2, 3], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("m", [inp]).as_numpy("y"), x.T)
    bad = httpclient.InferInput("x", [1, 2, 3], "FP32")
    bad.set_data_from_numpy(x.reshape(1, 2, 3))
    with pytest.raises(InferenceServerException, match=r"'x' has shape \[1, 2, 3\]"):
        client.infer("m", [bad])
    client.close()


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_tensors_round_trip(server_factory, models, binary):
    server = server_factory(models["strings"], "m")
    client = httpclient.InferenceServerClient(server.url)
    text = np.array([["héllo", ""], ["a b", "z"]], dtype=object)
    inp = httpclient.InferInput("text", [2, 2], "BYTES")
    inp.set_data_from_numpy(text, binary_data=binary)
    out = client.infer("m", [inp], outputs=[httpclient.InferRequestedOutput("same", binary_data=binary)])
    got = out.as_numpy("same")
    decoded = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in got.tolist()]
    assert decoded == text.tolist()
    client.close()


def test_bytes_that_are_not_utf8_are_refused_not_rewritten(server_factory, models):
    """ONNX Runtime's string tensors hold text: other bytes would come back changed."""
    server = server_factory(models["strings"], "m")
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("text", [1, 2], "BYTES")
    inp.set_data_from_numpy(np.array([[b"ok", b"\xff\xfe"]], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException, match=r"'text': element 1 is not UTF-8"):
        client.infer("m", [inp])
    client.close()
    assert (
        metric(
            server,
            'modeldeploy_inference_requests_total{model="m",outcome="failure",protocol="rest",reason="bad_request"}',
        )
        == 1
    )


@pytest.mark.parametrize("binary_in", [True, False])
def test_nan_and_infinities_come_back_in_json_outputs(server_factory, models, binary_in):
    server = server_factory(models["affine"], "m")
    client = httpclient.InferenceServerClient(server.url)
    x = np.array([[np.nan, 3e38, -3e38, 1.0]], dtype=np.float32)  # 2x + 1 overflows to +-inf
    if not binary_in:
        x[0, 0] = 0.0  # JSON requests cannot carry NaN
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    out = client.infer("m", [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
    y = out.as_numpy("y")
    assert np.isnan(y[0, 0]) == binary_in
    assert y[0, 1:].tolist() == [np.inf, -np.inf, 3.0]
    client.close()


def test_full_queue_answers_503_with_retry_after(server_factory, models):
    server = server_factory(models["slow"], "m", MAX_BATCH_SIZE=1, MAX_QUEUE_SIZE=1)
    body, headers = slow_request(rows=384)
    statuses: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def call() -> None:
        result = post(server, body, headers)
        with lock:
            statuses.append(result)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = sorted(code for code, _ in statuses)
    assert len(codes) == 6 and codes[0] == 200 and codes[-1] == 503, codes
    refused = [h for code, h in statuses if code == 503]
    assert all(h.get("retry-after") == "1" for h in refused)
    assert post(server, *slow_request(rows=1))[0] == 200  # serving again once the queue drained
    assert (
        metric(
            server,
            'modeldeploy_inference_requests_total{model="m",outcome="failure",protocol="rest",reason="overloaded"}',
        )
        >= 1
    )


def test_queue_timeout_answers_503_with_retry_after(server_factory, models):
    """Requests that wait behind slow ones longer than the timeout are refused, not left waiting."""
    server = server_factory(models["slow"], "m", MAX_BATCH_SIZE=1, QUEUE_TIMEOUT_US=1000)
    body, headers = slow_request(rows=384)
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def call() -> None:
        conn_result = post(server, body, headers)
        with lock:
            results.append(conn_result)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = sorted(code for code, _ in results)
    assert len(codes) == 6 and codes[0] == 200 and codes[-1] == 503, codes
    assert all(h.get("retry-after") == "1" for code, h in results if code == 503)
    assert (
        metric(
            server,
            'modeldeploy_inference_requests_total{model="m",outcome="failure",protocol="rest",reason="queue_timeout"}',
        )
        >= 1
    )
    config = json.loads(urllib.request.urlopen(server.base + "/v2/models/m/config", timeout=10).read())
    assert config["dynamic_batching"]["default_queue_policy"] == {
        "timeout_action": "REJECT",
        "default_timeout_microseconds": 1000,
    }


def test_metrics_port_serves_only_metrics(server_factory, models):
    from ports import free_port

    port = free_port()
    server = server_factory(models["affine"], "m", METRICS_PORT=port, AUTH_TOKEN=TOKEN)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert 'modeldeploy_model_ready{model="m"} 1.0' in resp.read().decode()
    assert get(server, "/metrics") == 200  # still on the main port too


def test_metrics_port_says_what_the_model_runs_on_and_the_operator_reads_it(server_factory, models):
    """The info gauge and the warm-up p95, read by the operator's own parser from a real server
    with auth on: the metrics port needs no token."""
    from modeldeploy_operator.scrape import scrape
    from runtime_helpers import free_port

    port = free_port()
    server = server_factory(models["affine"], "m", METRICS_PORT=port, AUTH_TOKEN=TOKEN, WARMUP_REQUESTS="5")
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    for _ in range(3):
        request = urllib.request.Request(
            server.base + "/v2/models/m/infer", body.encode(), {"Authorization": f"Bearer {TOKEN}"}
        )
        urllib.request.urlopen(request, timeout=10).read()
    sample = scrape("127.0.0.1", port, "m")
    assert sample.info == {
        "backend": "onnxruntime",
        "provider": "CPUExecutionProvider",
        "precision": "fp32",
        "device": "cpu",
        "gpu_product": "",
    }
    assert 0 < sample.warmup_p95_ms < 1000
    assert sample.successes == 3 and sample.buckets[-1] == (float("inf"), 3.0)


def test_the_only_client_gets_pipelined_requests_answered_in_order(server_factory, models):
    """With one connection open, requests are served at once on the event loop (the fast path);
    pipelined ones still come back in order, each with its own result."""
    import socket

    server = server_factory(models["affine"], "m")

    def request(value: int) -> bytes:
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [value] * 4}]})
        return b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body.encode(),
        )

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"".join(request(v) for v in range(5)))
        data = b""
        while data.count(b"HTTP/1.1 200") < 5 or not data.endswith(b"}]}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    answers = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert [a["outputs"][0]["data"] for a in answers] == [[2.0 * v + 1] * 4 for v in range(5)]


def test_json_request_past_8_mb_is_read_exactly(server_factory, models):
    """The large-JSON path (numbers cut out of the document and read a piece at a time)."""
    server = server_factory(models["pairs"], "m")
    x = np.random.default_rng(1).random((1, 1_000_000)).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, x.size], "data": x.tolist()}]})
    assert len(body) > 8 << 20
    req = urllib.request.Request(server.base + "/v2/models/m/infer", body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        out = json.loads(resp.read())["outputs"][0]
    assert out["shape"] == [1, 500_000, 2]
    np.testing.assert_array_equal(np.array(out["data"], dtype=np.float32), x.ravel())
