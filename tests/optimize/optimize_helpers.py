"""Helpers of the optimization tests (a module apart from conftest.py, so tests can import it)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "examples" / "models" / "digits-mlp.onnx"


@functools.cache
def gpu_skip_reason() -> str | None:
    """Why TensorRT tests cannot run here, or None when a GPU with TensorRT 10 and pycuda works."""
    try:
        import pycuda.driver as cuda
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"needs an NVIDIA GPU with TensorRT 10 and pycuda (the gpu extra): {exc}"
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU is visible"
    except Exception as exc:  # pycuda raises its own errors without a driver
        return f"no usable CUDA driver: {exc}"
    return None


def run_cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`modeldeploy ...` as a user runs it: a separate process, with its exit code and output."""
    return subprocess.run(
        [sys.executable, "-c", "import sys, modeldeploy_cli; sys.exit(modeldeploy_cli.main())", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
