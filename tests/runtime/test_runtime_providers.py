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
    batch_buckets,
    batchable,
    has_convolutions,
    pad_rows,
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


def test_session_reports_the_providers_in_use(models, tmp_path):
    backend = OnnxBackend(str(models["affine"]), max_batch_size=4, threads=1, cache_dir=str(tmp_path))
    # onnxruntime-gpu on a machine with TensorRT libraries would put TensorRT first; without them
    # it logs why and falls back to CUDA (seen on an H200 without libnvinfer), which this expects.
    gpu = _cuda_available()
    assert backend.info.providers == ([CUDA_EP, CPU_EP] if gpu else [CPU_EP])
    assert backend.info.device == ("gpu" if gpu else "cpu")
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
    assert "batch_buckets" not in backend.info.extra  # no convolutions: one session is enough
    import numpy as np

    y = backend.infer({"x": np.ones((2, 4), dtype=np.float32)})["y"]
    assert y.tolist() == [[3.0] * 4] * 2


@pytest.mark.parametrize(
    ("max_batch_size", "sizes"), [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])]
)
def test_batch_buckets_are_powers_of_two_and_the_maximum(max_batch_size, sizes):
    assert batch_buckets(max_batch_size) == sizes


def test_pad_rows_appends_zero_rows_and_keeps_full_inputs_as_they_are():
    import numpy as np

    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    ids = np.array([[7], [8], [9]], dtype=np.int64)
    padded = pad_rows({"x": x, "ids": ids}, 4)
    assert padded["x"].tolist() == [[0, 1], [2, 3], [4, 5], [0, 0]] and padded["x"].dtype == np.float32
    assert padded["ids"].tolist() == [[7], [8], [9], [0]] and padded["ids"].dtype == np.int64
    assert pad_rows({"x": x}, 3)["x"] is x


def test_batch_bucket_sessions_answer_every_batch_size_with_its_own_rows(models, tmp_path):
    """Forced on here (the CPU provider does not need them) to check what a CUDA deployment runs:
    a batch of 3 runs padded on the size-4 session and comes back as 3 rows; one larger than every
    bucket runs as it is."""
    import numpy as np

    backend = OnnxBackend(str(models["affine"]), max_batch_size=4, threads=1, cache_dir=str(tmp_path),
                          batch_buckets=True)  # fmt: skip
    assert [size for size, _ in backend._buckets] == [1, 2, 4]
    assert len({id(session) for _, session in backend._buckets}) == 3
    assert backend.info.extra["batch_buckets"] == "1,2,4"
    for rows in (1, 2, 3, 4, 6):
        x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
        y = backend.infer({"x": x})["y"]
        assert y.shape == (rows, 4)
        np.testing.assert_array_equal(y, 2 * x + 1)


def test_cpu_provider_keeps_one_session(models, tmp_path):
    if _cuda_available():
        pytest.skip("the CUDA provider runs the model here")
    backend = OnnxBackend(str(models["affine"]), max_batch_size=4, threads=1, cache_dir=str(tmp_path))
    assert backend._buckets == [] and "batch_buckets" not in backend.info.extra


def test_cpu_pool_threads_spin_for_a_heavy_model_and_not_for_a_light_one(models, tmp_path):
    """What the pure rule decides is what the loaded session gets: the probe inference that
    measures the model must really run (a failing probe reads as 0 s and silently turns spinning off,
    which cost MobileNetV2 about 1 ms per inference on 2 cores)."""
    if _cuda_available():
        pytest.skip("the CUDA provider runs the model here")
    heavy = OnnxBackend(str(models["slow"]), threads=2, cache_dir=str(tmp_path))
    assert heavy._probe_latency() >= 0.001
    assert heavy.info.extra.get("spinning") == "on"
    light = OnnxBackend(str(models["affine"]), threads=2, cache_dir=str(tmp_path))
    assert "spinning" not in light.info.extra


def test_convolutions_are_found_in_the_model_file(models, tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    for op, weight_shape in (("Conv", (2, 1, 3, 3)), ("ConvTranspose", (1, 2, 3, 3))):
        graph = helper.make_graph(
            [helper.make_node(op, ["x", "w"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=[numpy_helper.from_array(np.ones(weight_shape, dtype=np.float32), "w")],
        )  # fmt: skip
        path = tmp_path / f"{op}.onnx"
        path.write_bytes(helper.make_model(graph).SerializeToString())
        assert has_convolutions(str(path)), op
    assert not has_convolutions(str(models["affine"]))
    assert not has_convolutions(str(models["slow"]))  # MatMuls only
    assert not has_convolutions(str(tmp_path / "missing.onnx"))
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert not has_convolutions(str(tmp_path / "empty.onnx"))
