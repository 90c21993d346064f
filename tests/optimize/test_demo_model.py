"""The committed demo model (examples/models/digits-mlp.onnx) is what its README says it is."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from optimize_helpers import DEMO_MODEL, REPO


def test_demo_model_interface_matches_its_readme():
    session = ort.InferenceSession(str(DEMO_MODEL), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [("input", "tensor(float)", ["batch", 64])]
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("label", "tensor(int64)", ["batch"]),
        ("probabilities", "tensor(float)", ["batch", 10]),
    ]


def test_demo_model_reads_raw_pixels_and_is_accurate_on_held_out_digits(digits):
    _, x_test, _, y_test = digits  # the same split as hack/make_demo_model.py
    session = ort.InferenceSession(str(DEMO_MODEL), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {"input": x_test})
    assert (label == y_test).mean() >= 0.97  # README: 97.3%
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(label, probabilities.argmax(axis=1))


def test_demo_model_uses_only_standard_onnx_ops_so_tensorrt_can_parse_it():
    model = onnx.load(str(DEMO_MODEL))
    assert {n.domain for n in model.graph.node} <= {""}
    assert {o.domain for o in model.opset_import} == {""}
    assert DEMO_MODEL.stat().st_size < 64_000


def test_demo_model_has_no_denormal_weights_that_would_slow_fp32_down():
    from onnx import numpy_helper

    for init in onnx.load(str(DEMO_MODEL)).graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32:
            assert not ((array != 0) & (np.abs(array) < np.finfo(np.float32).tiny)).any(), init.name


def test_demo_model_script_regenerates_an_equivalent_model(tmp_path, digits):
    out = tmp_path / "digits-mlp.onnx"
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "make_demo_model.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    _, x_test, _, _ = digits
    committed = ort.InferenceSession(str(DEMO_MODEL), providers=["CPUExecutionProvider"])
    fresh = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (a,) = committed.run(["label"], {"input": x_test})
    (b,) = fresh.run(["label"], {"input": x_test})
    # Bit-identical with the same scikit-learn; other versions may train a slightly different net.
    assert (a == b).mean() >= 0.97
