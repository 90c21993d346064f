"""Which ONNX Runtime execution provider the settings ask for, and whether the one really running
the model is it.

onnxruntime-gpu falls back without an error: to the CUDA provider when TensorRT cannot start, to
the CPU when CUDA cannot. A pod that asked for a GPU and got the CPU would serve, slowly, and a
pod that asked for fp16 through TensorRT and got CUDA would serve fp32 at half the speed. Either
is refused at start (``provider mismatch: ...``) so the rollout fails instead. Pure functions:
the settings and the providers read back from the session in, a verdict out.
"""

from __future__ import annotations

from collections.abc import Sequence

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
GPU_EPS = (TRT_EP, CUDA_EP)
# Precisions only the TensorRT execution provider implements (the CUDA provider runs fp32).
TRT_PRECISIONS = ("fp16", "int8")


def asked_providers(require_gpu: bool, precision: str) -> tuple[str, ...]:
    """The providers acceptable as the one running the model; empty: any (the CPU defaults)."""
    if not require_gpu:
        return ()
    if precision in TRT_PRECISIONS:
        return (TRT_EP,)
    return GPU_EPS


def provider_mismatch(require_gpu: bool, precision: str, in_use: Sequence[str]) -> str | None:
    """The details of the termination message when the provider in use (the first of ``in_use``,
    as ``InferenceSession.get_providers()`` lists them) is not one asked for; None when it is."""
    asked = asked_providers(require_gpu, precision)
    running = in_use[0] if in_use else "no provider"
    if not asked or running in asked:
        return None
    if asked == (TRT_EP,):
        why = f"MODELDEPLOY_PRECISION={precision} needs {TRT_EP}"
        fix = "check the TensorRT libraries in the image and the engine build in the log, or set the precision to fp32"
    else:
        why = f"MODELDEPLOY_REQUIRE_GPU is true: asked for {' or '.join(asked)}"
        fix = "check the node's NVIDIA driver, the pod's nvidia.com/gpu limit, and the CUDA libraries in the image"
    return f"{why} but ONNX Runtime runs the model on {running} (providers in use: {', '.join(in_use)}); {fix}"
