"""ONNX models and OpenVINO IR (NAME.xml + NAME.bin) on OpenVINO's CPU plugin.

OpenVINO's gain over ONNX Runtime on the CPU is bf16 (about 1.5-1.9x on ResNet-50 and MobileNetV2,
see bench/README.md), and it takes bf16 *by default* on a CPU with bf16 instructions. Precision is
what the spec says, never what the plugin guesses: the inference precision hint is always set, and
read back from the compiled model for metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from modeldeploy_contract.openvino_ir import is_ir, weights_of

from ..cpu import bf16_missing, cpu_flags
from .base import BackendError, BackendInfo, TensorSpec, UnsupportedConfigurationError
from .onnx import batchable

log = logging.getLogger(__name__)

# OpenVINO element type names (ov.Type.get_type_name()) -> v2 datatypes. Strings, bf16 tensors and
# sub-byte types have no v2 datatype the server carries, and are refused.
OV_TO_V2 = {
    "boolean": "BOOL",
    "u8": "UINT8",
    "u16": "UINT16",
    "u32": "UINT32",
    "u64": "UINT64",
    "i8": "INT8",
    "i16": "INT16",
    "i32": "INT32",
    "i64": "INT64",
    "f16": "FP16",
    "f32": "FP32",
    "f64": "FP64",
}

# The spec's precision -> OpenVINO's INFERENCE_PRECISION_HINT. int8 models carry their own
# quantized operators (QDQ); the hint says how the rest of the graph runs.
PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}
# What the compiled model reads back -> the precision metadata shows.
READ_BACK = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}


def check_precision(precision: str, flags: frozenset[str], capabilities: Sequence[str]) -> str:
    """The inference precision hint for ``precision`` on this CPU; raises where it cannot run.

    ``flags`` are the CPU's (``/proc/cpuinfo``), ``capabilities`` OpenVINO's
    ``OPTIMIZATION_CAPABILITIES``: bf16 needs both to agree, so a CPU that hides its bf16 flags from
    the container, or an OpenVINO build without bf16 kernels, is refused rather than emulated."""
    if precision not in PRECISION_HINTS:
        raise UnsupportedConfigurationError(
            f"precision {precision} is not served by OpenVINO on the CPU; set precision to fp32, bf16 or int8"
        )
    if precision == "bf16":
        missing = bf16_missing(flags)
        if missing:
            raise UnsupportedConfigurationError(f"precision bf16 on OpenVINO: {missing}")
        if "BF16" not in capabilities:
            raise UnsupportedConfigurationError(
                f"precision bf16 on OpenVINO: its CPU plugin reports no BF16 capability here "
                f"(it reports {', '.join(capabilities)}); set precision fp32"
            )
    return PRECISION_HINTS[precision]


def spec_from_port(port: Any, kind: str, fix: str = "serve this model with onnxruntime") -> TensorSpec:
    name = port.get_any_name()
    type_name = port.get_element_type().get_type_name()
    if type_name not in OV_TO_V2:
        raise BackendError(
            f"{kind} {name!r} has OpenVINO type {type_name}, which the OpenVINO backend does not serve "
            f"(it serves {', '.join(sorted(set(OV_TO_V2.values())))}); {fix}"
        )
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    return TensorSpec(name, OV_TO_V2[type_name], shape)


def bounded_batch_shapes(ov, inputs: Sequence[TensorSpec], max_batch_size: int) -> dict[str, Any]:
    """Each input with its batch dimension bounded to 1..max_batch_size: the CPU plugin plans
    memory for a bounded dimension and runs faster than on an unbounded one."""
    shapes = {}
    for spec in inputs:
        dims = [
            ov.Dimension(1, max_batch_size),
            *(ov.Dimension(d) if d >= 0 else ov.Dimension() for d in spec.shape[1:]),
        ]
        shapes[spec.name] = ov.PartialShape(dims)
    return shapes


class OpenVinoBackend:
    """One compiled model and one infer request on OpenVINO's CPU plugin, one stream, ``threads``
    threads. ``infer`` runs on the server's inference thread, one call at a time."""

    def __init__(
        self,
        model_path: str,
        *,
        max_batch_size: int = 8,
        threads: int = 1,
        precision: str = "fp32",
        flags: frozenset[str] | None = None,
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError(
                f"the OpenVINO backend needs the openvino package ({exc}); use the CPU or the GPU runtime image "
                "(both carry it), or pip install 'modeldeploy[openvino]'"
            ) from exc
        core = ov.Core()
        hint = check_precision(
            precision,
            cpu_flags() if flags is None else flags,
            core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
        )
        ir = is_ir(model_path)
        try:
            # an IR's weights named, as sources/ found them (it checked they are there)
            args = (model_path, weights_of(model_path)) if ir else (model_path,)
            model = core.read_model(*args)
        except Exception as exc:  # OpenVINO raises RuntimeError with the parser's message
            raise BackendError(f"OpenVINO cannot read {model_path}: {exc}") from exc
        fix = "convert the model with that tensor in another type" if ir else "serve this model with onnxruntime"
        inputs = [spec_from_port(p, "input", fix) for p in model.inputs]
        outputs = [spec_from_port(p, "output", fix) for p in model.outputs]
        self.max_batch_size = max_batch_size if batchable(inputs, outputs) else 0
        single = None  # the model at batch 1, when its other dimensions are fixed (see self._single)
        if self.max_batch_size > 1 and all(d >= 0 for s in inputs for d in s.shape[1:]):
            try:
                single = model.clone()
                single.reshape({s.name: [1, *s.shape[1:]] for s in inputs})
            except Exception as exc:  # a graph whose shapes do not propagate; the bounded model serves all
                log.debug("no static batch-1 model: %s", exc)
                single = None
        if self.max_batch_size:
            try:
                model.reshape(bounded_batch_shapes(ov, inputs, self.max_batch_size))
            except Exception as exc:
                log.debug("batch dimension left unbounded: %s", exc)
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise BackendError(f"OpenVINO cannot compile {model_path} for the CPU: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        # A request alone (concurrency 1, warm-up) runs on a static batch-1 compilation: the CPU
        # plugin's static kernels ran MobileNetV2 at bf16 8-10 % faster than its kernels for a
        # batch bounded to 1..8. The cost is a second copy of the compiled weights.
        self._single = None
        if single is not None:
            try:
                self._single = core.compile_model(single, "CPU", config).create_infer_request()
            except Exception as exc:
                log.debug("no static batch-1 compilation: %s", exc)
        self.inputs, self.outputs = inputs, outputs
        in_use = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        served = READ_BACK.get(in_use, in_use)
        if precision != "int8" and served != precision:  # the hint is a request; refuse a silent change
            raise UnsupportedConfigurationError(
                f"precision {precision} asked, but OpenVINO's CPU plugin compiled the model for {in_use}"
            )
        self.info = BackendInfo(
            platform="openvino_ir" if ir else "openvino_onnx",
            providers=[f"OpenVINO {d}" for d in self._compiled.get_property("EXECUTION_DEVICES")],
            device="cpu",
            precision="int8" if precision == "int8" else served,
            extra={"openvino": ov.get_version().split("-")[0], "threads": str(threads), "inference_precision": in_use},
        )
        if self._single is not None:
            self.info.extra["static_batch_1"] = "on"
        log.info(
            "OpenVINO %s: inference precision %s, %d threads, max batch %d",
            self.info.extra["openvino"],
            in_use,
            threads,
            self.max_batch_size,
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._request
        if self._single is not None and next(iter(inputs.values())).shape[0] == 1:
            request = self._single
        try:
            request.infer(inputs)
        except Exception as exc:  # a shape the model cannot take; the data plane reports it
            raise BackendError(f"OpenVINO inference failed: {exc}") from exc
        # copies: the request's output tensors are overwritten by the next inference
        return {spec.name: request.get_output_tensor(i).data.copy() for i, spec in enumerate(self.outputs)}

    def close(self) -> None:
        self._request = self._single = None
        self._compiled = None
