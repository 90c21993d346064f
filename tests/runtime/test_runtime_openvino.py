"""The OpenVINO backend over real HTTP with tritonclient: agreement with ONNX Runtime on the same
model, precision in metadata, bad input, batching, unbatched models and the latency gate."""

from __future__ import annotations

import re
import threading
import urllib.request

import numpy as np
import pytest

pytest.importorskip("openvino")
httpclient = pytest.importorskip("tritonclient.http")
from modeldeploy_runtime.cpu import bf16_missing, cpu_flags  # noqa: E402
from runtime_helpers import http_infer, http_metadata  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

OPENVINO = {"BACKEND": "openvino"}
needs_bf16 = pytest.mark.skipif(bf16_missing(cpu_flags()) is not None, reason="this CPU has no bf16 instructions")


def infer(server, name: str, x: np.ndarray, output: str, binary: bool = True) -> np.ndarray:
    return http_infer(server, x, name, output, binary)


metadata = http_metadata


def metric(server, name: str) -> float:
    with urllib.request.urlopen(server.base + "/metrics", timeout=10) as resp:
        found = re.search(rf"^{re.escape(name)} (\S+)$", resp.read().decode(), re.M)
    assert found, name
    return float(found.group(1))


@pytest.fixture(scope="module")
def cnn_inputs() -> np.ndarray:
    return np.random.default_rng(1).random((6, 3, 16, 16), dtype=np.float32)


def test_fp32_agrees_with_onnx_runtime_and_says_fp32(server_factory, models, cnn_inputs):
    ort = server_factory(models["cnn"], "m")
    ov = server_factory(models["cnn"], "m", **OPENVINO, PRECISION="fp32")
    for binary in (True, False):
        want = infer(ort, "x", cnn_inputs, "probs", binary)
        got = infer(ov, "x", cnn_inputs, "probs", binary)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    params = metadata(ov)["parameters"]
    assert metadata(ov)["platform"] == "openvino_onnx"
    assert (params["precision"], params["inference_precision"], params["providers"]) == ("fp32", "f32", "OpenVINO CPU")
    assert params["static_batch_1"] == "on"  # batches of 6 ran on the bounded compilation, single rows here:
    for row in cnn_inputs[:2]:
        np.testing.assert_allclose(infer(ov, "x", row[None], "probs"), infer(ort, "x", row[None], "probs"), rtol=1e-4)


def test_integer_inputs_are_exact(server_factory, models):
    server = server_factory(models["two_inputs"], "m", **OPENVINO)
    client = httpclient.InferenceServerClient(server.url)
    a, n = np.ones((2, 3), np.float32), np.array([[4], [41]], np.int64)
    inputs = []
    for name, arr, dt in (("a", a, "FP32"), ("b", a, "FP32"), ("n", n, "INT64")):
        inp = httpclient.InferInput(name, list(arr.shape), dt)
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    result = client.infer("m", inputs)
    client.close()
    assert result.as_numpy("count").tolist() == [[5], [42]]
    assert result.as_numpy("sum").tolist() == [[2.0] * 3] * 2


@needs_bf16
def test_bf16_is_served_close_to_fp32_and_says_bf16(server_factory, models, cnn_inputs):
    ort = server_factory(models["cnn"], "m")
    ov = server_factory(models["cnn"], "m", **OPENVINO, PRECISION="bf16")
    want, got = infer(ort, "x", cnn_inputs, "probs"), infer(ov, "x", cnn_inputs, "probs")
    assert (got.argmax(1) == want.argmax(1)).all()
    np.testing.assert_allclose(got, want, rtol=0.05, atol=1e-3)
    params = metadata(ov)["parameters"]
    assert (params["precision"], params["inference_precision"]) == ("bf16", "bf16")


@pytest.mark.parametrize(
    ("shape", "datatype", "words"),
    [([1, 3, 8, 8], "FP32", "expects [-1, 3, 16, 16]"), ([1, 3, 16, 16], "INT32", "FP32")],
    ids=["wrong-shape", "wrong-datatype"],
)
def test_bad_input_is_400_naming_the_tensor(server_factory, models, shape, datatype, words):
    server = server_factory(models["cnn"], "m", **OPENVINO)
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("x", shape, datatype)
    inp.set_data_from_numpy(np.zeros(shape, dtype=np.float32 if datatype == "FP32" else np.int32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("m", [inp])
    client.close()
    assert "400" in str(err.value.status()) and "'x'" in str(err.value) and words in str(err.value)
    assert server.proc.poll() is None


def test_concurrent_requests_are_batched(server_factory, models):
    server = server_factory(models["affine"], "m", **OPENVINO, MAX_BATCH_SIZE=8, MAX_QUEUE_DELAY_US=300_000)
    outputs: dict[int, list] = {}

    def call(i: int) -> None:
        outputs[i] = infer(server, "x", np.full((1, 4), float(i), np.float32), "y").tolist()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outputs == {i: [[2.0 * i + 1] * 4] for i in range(4)}
    assert metric(server, 'modeldeploy_batch_size_sum{model="m"}') == 4
    assert metric(server, 'modeldeploy_batch_size_count{model="m"}') < 4


def test_batch_above_the_bound_is_refused(server_factory, models):
    server = server_factory(models["affine"], "m", **OPENVINO, MAX_BATCH_SIZE=2)
    with pytest.raises(InferenceServerException, match="MODELDEPLOY_MAX_BATCH_SIZE"):
        infer(server, "x", np.zeros((3, 4), np.float32), "y")
    assert infer(server, "x", np.zeros((2, 4), np.float32), "y").tolist() == [[1.0] * 4] * 2


def test_model_without_batch_dimension_is_served_unbatched(server_factory, models):
    server = server_factory(models["fixed"], "m", **OPENVINO)
    assert metadata(server)["parameters"]["max_batch_size"] == 0
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(infer(server, "x", x, "y"), x.T)


def test_latency_gate_exits_non_zero_with_the_reason(server_factory, models):
    server = server_factory(models["cnn"], "m", **OPENVINO, LATENCY_BUDGET_MS="0.0001", WARMUP_REQUESTS=5, wait=False)
    assert server.wait_exit(60) == 1
    assert server.termination_log.read_text().startswith("latency budget exceeded: p95 ")


def test_string_tensors_are_refused_at_startup(server_factory, models):
    server = server_factory(models["strings"], "m", **OPENVINO, wait=False)
    assert server.wait_exit(60) == 1
    message = server.termination_log.read_text()
    assert message.startswith("model load failed: input 'text' has OpenVINO type string")
    assert "onnxruntime" in message
