"""ONNX Runtime on a GPU: the CUDA provider really runs there, and the runtime serves an ONNX model
on a GPU provider when the spec requires a GPU. Skipped, with the reason, without onnxruntime-gpu
and a GPU (onnxruntime-gpu silently falls back to the CPU; these tests check that it did not)."""

from __future__ import annotations

import json
import urllib.request

import onnxruntime as ort
import pytest
from optimize_helpers import DEMO_MODEL

ORT_GPU = "CUDAExecutionProvider" in ort.get_available_providers()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not ORT_GPU, reason="needs an NVIDIA GPU and onnxruntime-gpu (the gpu extra)"),
]


def test_onnxruntime_cuda_provider_really_runs_on_the_gpu_and_agrees_with_cpu(digits):
    from modeldeploy_runtime.measure.compare import compare_models
    from modeldeploy_runtime.measure.runner import open_model

    cpu = open_model(DEMO_MODEL, provider="cpu")
    cuda = open_model(DEMO_MODEL, provider="cuda")
    assert cuda.description == "onnxruntime CUDAExecutionProvider"
    result = compare_models(cpu, cuda, {"input": digits[1]}, batch_size=32)
    assert all(o.top1_agreement == 1.0 for o in result.outputs)


def test_runtime_serves_onnx_on_a_gpu_provider_when_a_gpu_is_required(serve):
    url = serve(DEMO_MODEL, "digits-gpu", "--require-gpu", "true", "--precision", "fp16", deadline_s=300)
    with urllib.request.urlopen(f"{url}/v2/models/digits-gpu", timeout=10) as resp:
        parameters = json.loads(resp.read())["parameters"]
    first = parameters["providers"].split(",")[0].strip()
    assert first in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert parameters["device"] == "gpu"
