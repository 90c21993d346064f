"""INT8 for CPU serving: ONNX Runtime static quantization in QDQ format.

The defaults are the fast ones on x86 CPUs with VNNI: unsigned 8-bit activations and signed 8-bit
weights quantized per output channel. ONNX Runtime's own default (signed activations) and dynamic
quantization are both offered for comparison, and both were measured slower (see
bench/README.md, "Optimization"): the u8 x s8 product is what VNNI instructions compute natively.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..measure import data as data_mod
from ..measure.runner import InputSpec

log = logging.getLogger(__name__)

ACTIVATION_TYPES = ("uint8", "int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantizeOptions:
    activation_type: str = "uint8"  # QUInt8: what VNNI multiplies (u8 x s8)
    per_channel: bool = True  # weights: one scale per output channel, less accuracy lost
    calibrate_method: str = "minmax"
    preprocess: bool = True  # shape inference and graph optimization first, as ORT recommends
    calibration_batch_size: int = 16
    exclude_ops: tuple[str, ...] = ()  # op types left in float


@dataclass
class QuantizeResult:
    output: str
    input_bytes: int
    output_bytes: int
    calibration_samples: int
    seconds: float
    options: dict

    def summary(self) -> str:
        ratio = self.input_bytes / self.output_bytes if self.output_bytes else 0.0
        return (
            f"wrote {self.output} ({self.output_bytes / 1e6:.2f} MB, {ratio:.1f}x smaller than "
            f"{self.input_bytes / 1e6:.2f} MB) calibrated on {self.calibration_samples} sample(s) "
            f"in {self.seconds:.1f} s"
        )


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over our batches (duck-typed, so this module
    imports onnxruntime only when it quantizes)."""

    def __init__(self, samples: data_mod.Samples, specs: Sequence[InputSpec], batch_size: int):
        self._batches = list(data_mod.batches(samples, specs, batch_size))
        self._iter = iter(self._batches)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        self._iter = iter(self._batches)


def _preprocess(model_in: Path, workdir: Path) -> Path:
    from onnxruntime.quantization import quant_pre_process

    out = workdir / "preprocessed.onnx"
    try:
        quant_pre_process(str(model_in), str(out), skip_symbolic_shape=False)
    except Exception as exc:  # symbolic shape inference gives up on some models (e.g. ai.onnx.ml ops)
        log.info("symbolic shape inference failed (%s); preprocessing without it", exc)
        try:
            quant_pre_process(str(model_in), str(out), skip_symbolic_shape=True)
        except Exception as exc2:
            log.warning("preprocessing failed (%s); quantizing the model as it is", exc2)
            return model_in
    return out


def _flatten_gemm_bias(model_in: Path, workdir: Path) -> Path:
    """Gemm biases of shape [1, N] -> [N] (the same values under Gemm's broadcasting).

    Graph optimization fuses MatMul + Add into Gemm and keeps the Add's [1, N] constant as its
    bias (skl2onnx exports MLPs that way); ONNX Runtime's per-channel QDQ quantizer then fails on
    the 2-D bias with "truth value of an array ... is ambiguous" (onnxruntime 1.31).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_in))
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    changed = False
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3:
            continue
        bias = inits.get(node.input[2])
        if bias is None or uses.get(bias.name) != 1 or len(bias.dims) != 2 or bias.dims[0] != 1:
            continue
        flat = numpy_helper.from_array(numpy_helper.to_array(bias).reshape(-1), bias.name)
        bias.CopyFrom(flat)
        changed = True
    if not changed:
        return model_in
    out = workdir / "flat-bias.onnx"
    onnx.save(model, str(out))
    return out


def quantize_static_int8(
    model_in: str | Path,
    model_out: str | Path,
    samples: data_mod.Samples,
    specs: Sequence[InputSpec],
    options: QuantizeOptions = QuantizeOptions(),
) -> QuantizeResult:
    """Quantize `model_in` to INT8 (QDQ), calibrating activation ranges on `samples`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if options.activation_type not in ACTIVATION_TYPES:
        raise ValueError(f"activation type must be one of {ACTIVATION_TYPES}")
    if options.calibrate_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}")
    model_in, model_out = Path(model_in), Path(model_out)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    op_types = None
    if options.exclude_ops:
        op_types = _op_types(model_in, exclude=set(options.exclude_ops))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modeldeploy-quant-") as tmp:
        source = _preprocess(model_in, Path(tmp)) if options.preprocess else model_in
        source = _flatten_gemm_bias(source, Path(tmp))
        partial = model_out.with_name(model_out.name + ".partial")
        quantize_static(
            str(source),
            str(partial),
            _Reader(samples, specs, options.calibration_batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=options.per_channel,
            activation_type=QuantType.QUInt8 if options.activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[options.calibrate_method],
            op_types_to_quantize=op_types,
        )
        os.replace(partial, model_out)
    return QuantizeResult(
        output=str(model_out),
        input_bytes=model_in.stat().st_size,
        output_bytes=model_out.stat().st_size,
        calibration_samples=data_mod.count(samples, specs),
        seconds=time.perf_counter() - start,
        options=asdict(options),
    )


def quantize_dynamic_int8(model_in: str | Path, model_out: str | Path) -> QuantizeResult:
    """Dynamic quantization (weights only, activations scaled per run): here for comparison."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    start = time.perf_counter()
    quantize_dynamic(str(model_in), str(model_out), weight_type=QuantType.QInt8)
    return QuantizeResult(
        output=str(model_out),
        input_bytes=Path(model_in).stat().st_size,
        output_bytes=Path(model_out).stat().st_size,
        calibration_samples=0,
        seconds=time.perf_counter() - start,
        options={"dynamic": True, "weight_type": "int8"},
    )


def _op_types(model_path: Path, exclude: set[str]) -> list[str]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return sorted({node.op_type for node in model.graph.node} - exclude)


def is_quantized(model_path: str | Path) -> bool:
    """Whether a model already holds quantization nodes (QDQ or QOperator format)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    quant_ops = {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "DynamicQuantizeLinear",
    }
    return any(node.op_type in quant_ops for node in model.graph.node)


def default_output(model_in: str | Path, tag: str = "int8") -> Path:
    path = Path(model_in)
    return path.with_name(f"{path.stem}.{tag}{path.suffix or '.onnx'}")
