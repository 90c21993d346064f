"""``backend: auto``: the faster engine that agrees with the reference serves; the choice and its
figures are in metadata. Unit tests on fake backends, then one server over HTTP."""

from __future__ import annotations

import time

import numpy as np
import pytest
from modeldeploy_runtime.backends.auto import agreement, choose
from modeldeploy_runtime.backends.base import BackendError, BackendInfo, TensorSpec


class Fake:
    def __init__(self, delay_s: float, offset: float = 0.0, platform: str = "fake"):
        self.inputs = [TensorSpec("x", "FP32", (-1, 4))]
        self.outputs = [TensorSpec("y", "FP32", (-1, 4))]
        self.max_batch_size = 8
        self.info = BackendInfo(platform=platform)
        self.delay_s, self.offset, self.closed = delay_s, offset, False

    def infer(self, inputs):
        time.sleep(self.delay_s)
        return {"y": inputs["x"] * 2 + 1 + self.offset}

    def close(self):
        self.closed = True


def test_the_faster_agreeing_engine_serves_and_says_why():
    slow, fast = Fake(0.004, platform="a"), Fake(0.0, platform="b")
    chosen = choose({"onnxruntime": lambda: slow, "openvino": lambda: fast}, "fp32", runs=3)
    assert chosen is fast and slow.closed and not fast.closed
    assert chosen.info.extra["auto_choice"] == "openvino"
    assert "onnxruntime=" in chosen.info.extra["auto_p50_ms"] and "openvino=" in chosen.info.extra["auto_p50_ms"]
    assert chosen.info.extra["auto_max_rel_diff"] == "openvino=0"


class SlowStart(Fake):
    """Slow for its first ``slow_calls`` inferences, as an engine right after its load."""

    def __init__(self, delay_s: float, slow_s: float, slow_calls: int):
        super().__init__(delay_s, platform="slow-start")
        self.slow_s, self.slow_calls, self.calls = slow_s, slow_calls, 0

    def infer(self, inputs):
        self.calls += 1
        if self.calls <= self.slow_calls:
            time.sleep(self.slow_s)
        return super().infer(inputs)


def test_an_engine_slow_only_right_after_its_load_still_wins_when_it_is_faster():
    # timed in one block right after its load, 7 of its 12 timed runs would be slow ones; in turns, 5
    starter, steady = SlowStart(0.002, 0.030, slow_calls=8), Fake(0.010, platform="steady")
    chosen = choose({"onnxruntime": lambda: starter, "openvino": lambda: steady}, "fp32", runs=12)
    assert chosen is starter, chosen.info.extra["auto_p50_ms"]
    assert steady.closed


def test_a_faster_engine_that_disagrees_is_not_chosen():
    ref, wrong = Fake(0.004), Fake(0.0, offset=0.5)
    chosen = choose({"onnxruntime": lambda: ref, "openvino": lambda: wrong}, "fp32", runs=3)
    assert chosen is ref and wrong.closed


def test_an_engine_that_cannot_load_is_left_out():
    def broken():
        raise BackendError("no openvino here")

    ref = Fake(0.0)
    chosen = choose({"onnxruntime": lambda: ref, "openvino": broken}, "fp32", runs=2)
    assert chosen is ref and "no openvino here" in chosen.info.extra["auto_left_out"]


def test_no_engine_at_all_raises_the_first_reason():
    def broken():
        raise BackendError("corrupt file")

    with pytest.raises(BackendError, match="corrupt file"):
        choose({"onnxruntime": broken, "openvino": broken}, "fp32")


@pytest.mark.parametrize(
    ("ref", "got", "gap"),
    [(np.array([[1.0, -4.0]]), np.array([[1.0, -4.0]]), 0.0), (np.array([[1.0, -4.0]]), np.array([[1.2, -4.0]]), 0.05),
     (np.array([3]), np.array([4]), float("inf"))],
)  # fmt: skip
def test_agreement_is_relative_to_the_largest_reference_value(ref, got, gap):
    assert agreement({"y": ref}, {"y": got}) == pytest.approx(gap)


def test_auto_over_http_shows_its_choice(server_factory, models):
    pytest.importorskip("openvino")
    httpclient = pytest.importorskip("tritonclient.http")
    server = server_factory(models["cnn"], "m", BACKEND="auto")
    client = httpclient.InferenceServerClient(server.url)
    meta = client.get_model_metadata("m")
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    inp = httpclient.InferInput("x", [2, 3, 16, 16], "FP32")
    inp.set_data_from_numpy(x)
    probs = client.infer("m", [inp]).as_numpy("probs")
    client.close()
    params = meta["parameters"]
    assert params["auto_choice"] in ("onnxruntime", "openvino")
    assert meta["platform"] == {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino_onnx"}[params["auto_choice"]]
    assert "onnxruntime=" in params["auto_p50_ms"] and "openvino=" in params["auto_p50_ms"]
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert "backend auto: serving on" in server.log()


def test_quantized_models_are_recognised_from_their_operators(tmp_path, models):
    from modeldeploy_runtime.backends.onnx import is_quantized
    from onnx import TensorProto, helper, numpy_helper
    from runtime_helpers import _save

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                     numpy_helper.from_array(np.array(128, np.uint8), "z")],
    )  # fmt: skip
    assert is_quantized(str(_save(graph, tmp_path / "qdq.onnx")))
    assert not is_quantized(str(models["cnn"])) and not is_quantized(str(tmp_path / "missing.onnx"))
