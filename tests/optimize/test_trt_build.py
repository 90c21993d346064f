"""The parts of an engine build decided before TensorRT is involved: reading the ONNX inputs,
cutting calibration batches, and refusing what cannot be built (on any machine)."""

from __future__ import annotations

import numpy as np
import pytest
from modeldeploy_runtime.backends.trt_plan import PlanError
from modeldeploy_runtime.optimize.trt_build import BuildOptions, _calibration_batches, build_engine, onnx_inputs
from optimize_helpers import DEMO_MODEL, run_cli


def test_onnx_inputs_keep_symbolic_dimensions():
    assert onnx_inputs(DEMO_MODEL) == [("input", ["batch", 64])]


def test_calibration_batches_have_the_calibration_shape_and_drop_the_remainder():
    samples = {"input": np.arange(20 * 4, dtype=np.float32).reshape(20, 4)}
    batches = _calibration_batches(samples, {"input": (8, 4)})
    assert [b["input"].shape for b in batches] == [(8, 4), (8, 4)]
    assert np.array_equal(np.concatenate([b["input"] for b in batches]), samples["input"][:16])
    assert all(b["input"].flags.c_contiguous for b in batches)


def test_too_few_calibration_samples_are_refused():
    with pytest.raises(PlanError, match="at least 8 samples"):
        _calibration_batches({"input": np.zeros((3, 4), np.float32)}, {"input": (8, 4)})


def test_a_model_quantized_for_the_cpu_is_refused_for_tensorrt(tmp_path):
    int8 = tmp_path / "digits.int8.onnx"
    assert run_cli("optimize", "quantize", str(DEMO_MODEL), "-o", str(int8), "--input-range", "0,16").returncode == 0
    with pytest.raises(PlanError, match="already quantized .* build TensorRT engines from the original FP32 model"):
        build_engine(int8, BuildOptions(max_batch_size=8))


@pytest.mark.parametrize(
    "options, match",
    [
        (BuildOptions(precision="int4"), "--precision 'int4'"),
    ],
)
def test_bad_build_options_are_refused_by_flag(options, match):
    with pytest.raises(PlanError, match=match):
        build_engine(DEMO_MODEL, options)
