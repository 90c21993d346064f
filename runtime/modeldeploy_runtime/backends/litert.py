""".tflite models on LiteRT (``ai-edge-litert``, the TensorFlow Lite runtime), CPU with XNNPACK.

A TFLite model declares its shapes at conversion; a dynamic dimension shows only in the tensor's
``shape_signature`` (-1), and the interpreter must be resized and its tensors allocated again
before a run of another shape. Batches here change size all the time, so the interpreter keeps
the last shape and resizes only when a run's shape differs.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .base import NUMPY_TO_V2, BackendError, BackendInfo, TensorSpec
from .onnx import batchable

log = logging.getLogger(__name__)


def spec_from_detail(detail: dict[str, Any], kind: str) -> TensorSpec:
    dtype = np.dtype(detail["dtype"])
    if dtype not in NUMPY_TO_V2 or dtype.kind == "O":
        raise BackendError(
            f"{kind} {detail['name']!r} has TFLite type {dtype}, which the LiteRT backend does not serve "
            "(it serves numeric and boolean tensors)"
        )
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    return TensorSpec(detail["name"], NUMPY_TO_V2[dtype], tuple(int(d) if d >= 0 else -1 for d in dims))


class LiteRtBackend:
    """One LiteRT interpreter with ``threads`` threads. ``infer`` runs on the server's inference
    thread, one call at a time (an interpreter is not safe to share between threads)."""

    def __init__(self, model_path: str, *, max_batch_size: int = 8, threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise BackendError(
                f"the LiteRT backend needs the ai-edge-litert package ({exc}); use the CPU runtime image, "
                "or pip install 'modeldeploy[litert]'"
            ) from exc
        version = _version()
        try:
            self._interpreter = Interpreter(model_path=model_path, num_threads=threads)
            self._interpreter.allocate_tensors()
        except Exception as exc:  # ValueError/RuntimeError with the flatbuffer verifier's message
            raise BackendError(f"LiteRT cannot load {model_path}: {exc}") from exc
        in_details = self._interpreter.get_input_details()
        out_details = self._interpreter.get_output_details()
        self.inputs = [spec_from_detail(d, "input") for d in in_details]
        self.outputs = [spec_from_detail(d, "output") for d in out_details]
        self._input_index = {d["name"]: d["index"] for d in in_details}
        self._output_index = [(d["name"], d["index"]) for d in out_details]
        self._shapes = {d["name"]: tuple(int(x) for x in d["shape"]) for d in in_details}
        self.max_batch_size = max_batch_size if batchable(self.inputs, self.outputs) else 0
        self.info = BackendInfo(
            platform="litert_tflite",
            providers=["LiteRT CPU"],
            device="cpu",
            precision=_precision(in_details),
            extra={"litert": version, "threads": str(threads)},
        )
        log.info("LiteRT %s: %d threads, max batch %d", version, threads, self.max_batch_size)

    def _fit(self, inputs: dict[str, np.ndarray]) -> None:
        """Resize the interpreter to these inputs' shapes when they differ from the last run's."""
        changed = False
        for name, arr in inputs.items():
            if self._shapes.get(name) != arr.shape:
                self._interpreter.resize_tensor_input(self._input_index[name], list(arr.shape))
                self._shapes[name] = arr.shape
                changed = True
        if changed:
            self._interpreter.allocate_tensors()

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            self._fit(inputs)
            for name, arr in inputs.items():
                self._interpreter.set_tensor(self._input_index[name], arr)
            self._interpreter.invoke()
        except Exception as exc:
            raise BackendError(f"LiteRT inference failed: {exc}") from exc
        # get_tensor copies, so the outputs survive the next run
        return {name: self._interpreter.get_tensor(index) for name, index in self._output_index}

    def close(self) -> None:
        self._interpreter = None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:  # a source build without metadata
        return "unknown"


def _precision(details: list[dict[str, Any]]) -> str:
    """int8 for a quantized model (its inputs carry a scale), fp32 otherwise."""
    return "int8" if any(d.get("quantization", (0.0, 0))[0] for d in details) else "fp32"
