"""INT8 quantization for CPU measured on real data (scikit-learn's digits), and `validate` judging
it: the quantized model must keep its accuracy and pass, a broken one must fail."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from optimize_helpers import run_cli


def accuracy(model_path, x, y) -> float:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (label,) = session.run(["label"], {"X": x})
    return float((label == y).mean())


@pytest.fixture(scope="module")
def int8_model(digits_onnx, digits_dirs, tmp_path_factory):
    calib, _ = digits_dirs
    out = tmp_path_factory.mktemp("int8") / "digits.int8.onnx"
    result = run_cli("optimize", "quantize", str(digits_onnx), "--calibration-data", str(calib), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    return out


def test_int8_loses_less_than_one_point_of_accuracy_on_held_out_digits(digits, digits_onnx, int8_model):
    _, x_test, _, y_test = digits
    fp32 = accuracy(digits_onnx, x_test / 16.0, y_test)
    int8 = accuracy(int8_model, x_test / 16.0, y_test)
    assert fp32 > 0.93, "the network did not learn the digits; the comparison would mean nothing"
    assert int8 > fp32 - 0.01, f"INT8 accuracy {int8:.4f} vs FP32 {fp32:.4f}"


def test_int8_model_is_static_qdq_with_uint8_activations_and_per_channel_int8_weights(int8_model):
    model = onnx.load(str(int8_model))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "DynamicQuantizeLinear" not in ops  # static: ranges calibrated ahead of time
    activation_zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zero_points and all(zp.dtype == np.uint8 for zp in activation_zero_points)
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None]
    int8_weights = [n for n in weights if inits[n.input[0]].dtype == np.int8]
    assert int8_weights, "no int8 weight found"
    # Per channel: one scale per output channel of each weight matrix.
    assert any(inits[n.input[1]].size > 1 for n in int8_weights)


def test_validate_passes_the_int8_model_on_held_out_digits(digits_onnx, digits_dirs, int8_model, tmp_path):
    _, heldout = digits_dirs
    report = tmp_path / "report.json"
    result = run_cli("validate", str(digits_onnx), str(int8_model), "--data", str(heldout), "--json", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["samples"] == 450
    by_name = {o["name"]: o for o in data["outputs"]}
    assert by_name["label"]["top1_agreement"] >= 0.99
    assert by_name["probabilities"]["top1_agreement"] >= 0.99
    assert 0 < by_name["probabilities"]["max_abs_error"] < 0.2


def broken_copy(model_path, out_path):
    """The same graph with the output layer's class columns rotated: it runs, looks fine, and is wrong."""
    model = onnx.load(str(model_path))
    last = [n for n in model.graph.node if n.op_type == "MatMul"][-1]
    for init in model.graph.initializer:
        if init.name == last.input[1]:
            weights = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.roll(weights, 1, axis=1), init.name))
    onnx.save(model, str(out_path))
    return out_path


def test_validate_catches_a_broken_model_with_a_non_zero_exit(digits_onnx, digits_dirs, tmp_path):
    _, heldout = digits_dirs
    broken = broken_copy(digits_onnx, tmp_path / "broken.onnx")
    result = run_cli("validate", str(digits_onnx), str(broken), "--data", str(heldout))
    assert result.returncode == 1
    assert "FAILED" in result.stderr
    assert "output 'label': top-1 agreement" in result.stderr


def test_validate_threshold_is_configurable(digits_onnx, digits_dirs, int8_model):
    _, heldout = digits_dirs
    strict = run_cli("validate", str(digits_onnx), str(int8_model), "--data", str(heldout), "--max-abs-error", "1e-9")
    assert strict.returncode == 1
    assert "output 'probabilities': max abs error" in strict.stderr


def test_validate_runs_on_generated_inputs_and_says_so(digits_onnx, int8_model):
    result = run_cli("validate", str(digits_onnx), str(int8_model), "--samples", "200", "--input-range", "0,1")
    assert result.returncode in (0, 1), result.stderr
    assert "200 generated, seed 0" in result.stdout


def test_quantizing_an_already_quantized_model_is_refused(int8_model):
    result = run_cli("optimize", "quantize", str(int8_model), "--calibration-samples", "8")
    assert result.returncode == 2
    assert "already quantized" in result.stderr


def test_dynamic_quantization_is_available_for_comparison(digits_onnx, digits, tmp_path):
    _, x_test, _, y_test = digits
    out = tmp_path / "digits.dyn.onnx"
    result = run_cli("optimize", "quantize", str(digits_onnx), "--dynamic", "-o", str(out))
    assert result.returncode == 0, result.stderr
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    assert accuracy(out, x_test / 16.0, y_test) > 0.9
