"""The LiteRT backend: the committed .tflite fixture is what its script writes, and it is served
end to end over HTTP with tritonclient, agreeing with ONNX Runtime on the same weights; bad
input, batching, the latency gate and a broken file."""

from __future__ import annotations

import re
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
httpclient = pytest.importorskip("tritonclient.http")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from runtime_helpers import _save, http_infer  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_classifier_tflite as fixture  # noqa: E402

TFLITE = FIXTURES / "classifier.tflite"


def infer(server, x: np.ndarray, binary: bool = True) -> np.ndarray:
    return http_infer(server, x, "input", "probs", binary)


def onnx_twin(path: Path) -> Path:
    """The fixture's classifier as ONNX: Gemm (transB, as FULLY_CONNECTED lays out its weight) and Softmax."""
    w, b = fixture.weights()
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], transB=1),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", fixture.FEATURES])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", fixture.CLASSES])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    return _save(graph, path)


def test_committed_fixture_is_what_its_script_writes():
    pytest.importorskip("tflite")
    assert fixture.build() == TFLITE.read_bytes(), "run tests/fixtures/make_classifier_tflite.py and commit"


def test_served_end_to_end_agreeing_with_onnx_runtime(server_factory, tmp_path):
    lite = server_factory(TFLITE, "m")
    ort = server_factory(onnx_twin(tmp_path / "twin.onnx"), "m")
    x = np.random.default_rng(3).standard_normal((5, fixture.FEATURES)).astype(np.float32)
    for binary in (True, False):
        got, want = infer(lite, x, binary), infer(ort, x, binary)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        assert (got.argmax(1) == want.argmax(1)).all()
    client = httpclient.InferenceServerClient(lite.url)
    meta = client.get_model_metadata("m")
    client.close()
    assert meta["platform"] == "litert_tflite"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, fixture.FEATURES]}]
    assert (meta["parameters"]["precision"], meta["parameters"]["max_batch_size"]) == ("fp32", 8)


def test_concurrent_requests_are_batched(server_factory):
    server = server_factory(TFLITE, "m", MAX_BATCH_SIZE=8, MAX_QUEUE_DELAY_US=300_000)
    xs = {i: np.full((1, fixture.FEATURES), i / 4, np.float32) for i in range(4)}
    outputs: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        outputs[i] = infer(server, xs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    w, b = fixture.weights()
    for i, x in xs.items():
        logits = x @ w.T + b
        want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(outputs[i], want, rtol=1e-4, atol=1e-6)
    with urllib.request.urlopen(server.base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    count = float(re.search(r'^modeldeploy_batch_size_count\{model="m"\} (\S+)$', text, re.M).group(1))
    assert count < 4  # at least two of the four shared a batch
    # a batch of another size afterwards: the interpreter is resized again
    assert infer(server, np.zeros((3, fixture.FEATURES), np.float32)).shape == (3, fixture.CLASSES)


@pytest.mark.parametrize(("shape", "words"), [([1, 15], "expects [-1, 16]"), ([1, 16, 1], "expects [-1, 16]")])
def test_bad_input_is_400(server_factory, shape, words):
    server = server_factory(TFLITE, "m")
    with pytest.raises(InferenceServerException) as err:
        infer(server, np.zeros(shape, np.float32))
    assert "'input'" in str(err.value) and words in str(err.value)
    assert server.proc.poll() is None


def test_latency_gate_exits_non_zero_with_the_reason(server_factory):
    server = server_factory(TFLITE, "m", LATENCY_BUDGET_MS="0.00001", WARMUP_REQUESTS=5, wait=False)
    assert server.wait_exit(60) == 1
    assert server.termination_log.read_text().startswith("latency budget exceeded: p95 ")


def test_broken_file_is_a_model_load_failure(server_factory, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(TFLITE.read_bytes()[:200])
    server = server_factory(broken, "m", wait=False)
    assert server.wait_exit(60) == 1
    assert server.termination_log.read_text().startswith("model load failed: LiteRT cannot load")
