"""Execution provider choice (pure, no GPU needed) and what ONNX Runtime really runs on."""

from __future__ import annotations

import pytest
from modeldeploy_runtime.backends import load_backend
from modeldeploy_runtime.backends.base import BackendError, GpuUnavailableError, TensorSpec
from modeldeploy_runtime.backends.onnx import (
    CPU_EP,
    CUDA_EP,
    TRT_EP,
    OnnxBackend,
    batchable,
    select_providers,
    spinning_pays,
    trt_profile_shapes,
)
from modeldeploy_runtime.config import load_config

GPU_BUILD = [TRT_EP, CUDA_EP, CPU_EP]


def names(chosen):
    return [name for name, _ in chosen]


def test_gpu_build_prefers_tensorrt_then_cuda_then_cpu():
    assert names(select_providers(GPU_BUILD, "fp32", "/cache")) == [TRT_EP, CUDA_EP, CPU_EP]


def test_cpu_build_uses_only_the_cpu():
    assert names(select_providers(["AzureExecutionProvider", CPU_EP], "fp16", "/cache")) == [CPU_EP]


def test_cuda_without_tensorrt():
    assert names(select_providers([CUDA_EP, CPU_EP], "fp32", "/cache")) == [CUDA_EP, CPU_EP]


@pytest.mark.parametrize(
    ("precision", "fp16", "int8"), [("fp32", False, False), ("fp16", True, False), ("int8", True, True)]
)
def test_tensorrt_flags_follow_precision_and_cache_under_the_cache_dir(precision, fp16, int8):
    options = dict(select_providers(GPU_BUILD, precision, "/var/cache/md"))[TRT_EP]
    assert options["trt_fp16_enable"] is fp16
    assert options["trt_int8_enable"] is int8
    assert options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == "/var/cache/md/trt-ep"


def test_tensorrt_profile_covers_batch_one_to_max():
    specs = [TensorSpec("input", "FP32", (-1, 3, 224, 224)), TensorSpec("mask", "INT64", (-1,))]
    assert trt_profile_shapes(specs, 8) == {
        "trt_profile_min_shapes": "input:1x3x224x224,mask:1",
        "trt_profile_opt_shapes": "input:8x3x224x224,mask:8",
        "trt_profile_max_shapes": "input:8x3x224x224,mask:8",
    }


def test_no_tensorrt_profile_with_other_dynamic_dimensions_or_no_batching():
    assert trt_profile_shapes([TensorSpec("ids", "INT64", (-1, -1))], 8) is None
    assert trt_profile_shapes([TensorSpec("x", "FP32", (-1, 4))], 0) is None


def test_batchable_needs_a_dynamic_first_dimension_everywhere():
    x, y = TensorSpec("x", "FP32", (-1, 4)), TensorSpec("y", "FP32", (-1, 2))
    assert batchable([x], [y])
    assert not batchable([x], [TensorSpec("y", "FP32", (2,))])
    assert not batchable([TensorSpec("x", "FP32", (2, 4))], [y])


def test_cpu_session_reports_the_providers_in_use(models, tmp_path):
    backend = OnnxBackend(str(models["affine"]), max_batch_size=4, threads=1, cache_dir=str(tmp_path))
    assert backend.info.providers == [CPU_EP]
    assert backend.info.device == "cpu"
    assert backend.max_batch_size == 4
    assert [(s.name, s.datatype, s.shape) for s in backend.inputs] == [("x", "FP32", (-1, 4))]


def test_fixed_shape_model_is_served_unbatched(models, tmp_path):
    backend = OnnxBackend(str(models["fixed"]), max_batch_size=8, threads=1, cache_dir=str(tmp_path))
    assert backend.max_batch_size == 0


def test_require_gpu_refuses_a_cpu_only_build(models, tmp_path):
    import onnxruntime

    if set(onnxruntime.get_available_providers()) & {TRT_EP, CUDA_EP}:
        pytest.skip("this onnxruntime build has GPU providers")
    with pytest.raises(GpuUnavailableError, match="MODELDEPLOY_REQUIRE_GPU"):
        OnnxBackend(str(models["affine"]), require_gpu=True, cache_dir=str(tmp_path))


def test_corrupt_model_is_a_backend_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(BackendError, match="cannot load"):
        OnnxBackend(str(bad), cache_dir=str(tmp_path))


def test_tensorrt_engines_need_the_gpu_image_here(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0")
    config = load_config([], {"MODELDEPLOY_MODEL_PATH": str(engine), "MODELDEPLOY_MODEL_NAME": "m"})
    with pytest.raises(BackendError, match="GPU"):
        load_backend(config, str(engine))


@pytest.mark.parametrize(
    ("device", "threads", "latency", "spin"),
    [
        ("cpu", 2, 0.030, True),
        ("cpu", 2, 0.004, True),
        ("cpu", 2, 0.0001, False),
        ("cpu", 1, 0.030, False),
        ("gpu", 4, 0.030, False),
    ],
)
def test_pool_threads_spin_only_for_heavy_cpu_models(device, threads, latency, spin):
    assert spinning_pays(device, threads, latency) is spin


def _cuda_available() -> bool:
    import os

    import onnxruntime

    return CUDA_EP in onnxruntime.get_available_providers() and os.path.exists("/dev/nvidiactl")


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs onnxruntime-gpu and an NVIDIA GPU")
def test_gpu_provider_really_in_use(models, tmp_path):
    backend = OnnxBackend(str(models["affine"]), require_gpu=True, cache_dir=str(tmp_path))
    assert backend.info.device == "gpu"
    assert backend.info.providers[0] in (TRT_EP, CUDA_EP)
    import numpy as np

    y = backend.infer({"x": np.ones((2, 4), dtype=np.float32)})["y"]
    assert y.tolist() == [[3.0] * 4] * 2
