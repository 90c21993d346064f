"""What a user sees from `modeldeploy optimize|validate|bench` when something cannot work: the
GPU paths on a machine without a GPU, and flags or files that do not fit."""

from __future__ import annotations

import pytest
from modeldeploy_runtime.backends.base import BackendError, GpuUnavailableError
from optimize_helpers import DEMO_MODEL, gpu_skip_reason, run_cli

needs_no_gpu = pytest.mark.skipif(gpu_skip_reason() is None, reason="checks behaviour without a GPU; one is here")


@pytest.mark.parametrize("command", ["optimize", "validate", "bench"])
def test_help_works_everywhere(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert f"modeldeploy {command}" in result.stdout


@needs_no_gpu
def test_tensorrt_build_without_a_gpu_says_it_needs_one():
    result = run_cli("optimize", "tensorrt", str(DEMO_MODEL), "--max-batch-size", "8")
    assert result.returncode == 2
    assert "modeldeploy optimize tensorrt needs a GPU" in result.stderr
    assert "pip install 'modeldeploy[gpu]'" in result.stderr
    assert "Traceback" not in result.stderr


@needs_no_gpu
def test_tensorrt_backend_without_a_gpu_raises_gpu_unavailable(tmp_path):
    from modeldeploy_runtime.backends.tensorrt import TensorRTBackend

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not checked before the GPU is")
    with pytest.raises(GpuUnavailableError, match="TensorRT needs a GPU"):
        TensorRTBackend(str(engine))


def test_tensorrt_backend_names_a_missing_engine(tmp_path):
    from modeldeploy_runtime.backends.tensorrt import TensorRTBackend

    with pytest.raises(BackendError, match="engine file .*missing.engine does not exist"):
        TensorRTBackend(str(tmp_path / "missing.engine"))


@needs_no_gpu
@pytest.mark.parametrize("command", ["validate", "bench"])
def test_engines_in_validate_and_bench_without_a_gpu_say_they_need_one(command, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    argv = [str(DEMO_MODEL), str(engine)] if command == "validate" else [str(engine)]
    result = run_cli(command, *argv)
    assert result.returncode == 2
    assert "TensorRT needs a GPU" in result.stderr


@pytest.mark.skipif(
    "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
    reason="checks behaviour without onnxruntime-gpu",
)
@pytest.mark.parametrize("command", ["validate", "bench"])
def test_cuda_provider_without_a_gpu_says_it_needs_one(command):
    argv = [str(DEMO_MODEL)] * (2 if command == "validate" else 1)
    result = run_cli(command, *argv, "--provider", "cuda")
    assert result.returncode == 2
    assert "--provider cuda needs a GPU" in result.stderr and "use --provider cpu" in result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["optimize", "tensorrt", str(DEMO_MODEL), "--max-batch-size", "0"], "dynamic batch dimension"),
        (["optimize", "tensorrt", str(DEMO_MODEL), "--opt-batch-size", "64"], "--opt-batch-size 64 must lie"),
        (["optimize", "tensorrt", str(DEMO_MODEL), "--input-shape", "nope:3"], "unknown input(s) nope"),
        (["optimize", "quantize", "missing.onnx"], "MODEL missing.onnx: no such file"),
        (["optimize", "quantize", str(DEMO_MODEL), "--calibration-data", "/nonexistent"], "not a directory"),
        (["optimize", "quantize", str(DEMO_MODEL), "--input-range", "5,1"], "LOW must be below HIGH"),
        (["validate", str(DEMO_MODEL), str(DEMO_MODEL), "--min-top1", "99"], "expected a fraction in 0..1"),
        (["bench"], "nothing to measure"),
        (["bench", str(DEMO_MODEL), "--batch-sizes", "1,x"], "--batch-sizes '1,x': expected positive integers"),
        (["bench", "--url", "http://127.0.0.1:1"], "--url needs --model-name"),
        (["bench", "--url", "ftp://host", "--model-name", "m"], "expected http://HOST:PORT"),
        (["optimize", "frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_flags_get_a_message_naming_the_flag_and_exit_2(argv, message):
    result = run_cli(*argv)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_errors_come_before_the_gpu_check():
    """A model that cannot be built is reported as such, even where no GPU is."""
    result = run_cli("optimize", "tensorrt", str(DEMO_MODEL), "--max-batch-size", "0")
    assert "needs a GPU" not in result.stderr
