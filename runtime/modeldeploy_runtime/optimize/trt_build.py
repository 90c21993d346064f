"""ONNX -> TensorRT engine builds (FP32, FP16, INT8 with calibration).

Engines are named by what they depend on (model hash, TensorRT version, GPU, precision, profile:
see backends/trt_plan.py) and carry a JSON sidecar with the same facts, so a build whose engine
already exists is a cache hit and an engine copied to another GPU is refused with the reason
instead of failing deep inside TensorRT. All the decisions are in trt_plan; this module only
drives TensorRT, which it imports when a build starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.tensorrt import gpu_identity, import_cuda, import_tensorrt
from ..backends.trt_plan import (
    PRECISIONS,
    EngineIdentity,
    PlanError,
    ProfileShape,
    calibration_shapes,
    meta_path,
    profile_shapes,
    sha256_file,
)
from ..measure import data as data_mod
from ..measure.runner import InputSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    max_batch_size: int = 32
    opt_batch_size: int = 0  # 0: the max
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    workspace_gib: float = 4.0
    calibration_batch_size: int = 8
    progress: bool = True


@dataclass
class BuildResult:
    engine: Path
    identity: EngineIdentity
    cached: bool
    seconds: float

    def summary(self) -> str:
        if self.cached:
            return f"up to date: {self.engine} (same model, TensorRT, GPU and options)"
        return f"wrote {self.engine} ({self.engine.stat().st_size / 1e6:.1f} MB) in {self.seconds:.0f} s"


def onnx_inputs(model_path: str | Path) -> list[tuple[str, list]]:
    """(name, dims) of the graph inputs that are not initializers; a dim is an int, a symbolic
    name, or None."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = []
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        inputs.append((value.name, dims))
    return inputs


def _progress_monitor(trt: Any) -> Any:
    """A tqdm bar per build phase. TensorRT calls these from C++: nothing may raise out of them."""
    from tqdm import tqdm

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, Any] = {}
            self._depth: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name] = depth
                self._bars[phase_name] = tqdm(
                    total=num_steps, desc=phase_name, position=depth, leave=depth == 0, unit="step"
                )
            except Exception:  # never raise into TensorRT
                pass

        def step_complete(self, phase_name, step):
            bar = self._bars.get(phase_name)
            if bar is not None:
                with contextlib.suppress(Exception):
                    bar.update(max(0, step + 1 - bar.n))  # `step` is the 0-based index just finished
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                with contextlib.suppress(Exception):
                    bar.close()

    return Progress()


def _calibrator(trt: Any, cuda: Any, batches: list[dict[str, np.ndarray]], cache: Path) -> Any:
    """Entropy calibration over fixed-shape batches; the calibration table is cached next to the
    engine, so a rebuild with the same data skips calibration."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._device = {n: cuda.mem_alloc(a.nbytes) for n, a in batches[0].items()}
            self._batch_size = len(next(iter(batches[0].values())))

        def get_batch_size(self):
            return self._batch_size

        def get_batch(self, names):
            batch = next(self._batches, None)
            if batch is None:
                return None
            for name in names:
                cuda.memcpy_htod(self._device[name], np.ascontiguousarray(batch[name]))
            return [int(self._device[name]) for name in names]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, table):
            cache.write_bytes(bytes(table))

        def free(self) -> None:
            for mem in self._device.values():
                mem.free()

    return Calibrator()


def _add_profile(builder, config, profiles: Mapping[str, ProfileShape]) -> None:
    profile = builder.create_optimization_profile()
    for name, shape in profiles.items():
        if shape.max:
            profile.set_shape(name, shape.min, shape.opt, shape.max)
    config.add_optimization_profile(profile)


def build_engine(
    model_path: str | Path,
    options: BuildOptions,
    *,
    output: str | Path | None = None,
    output_dir: str | Path | None = None,
    calibration: data_mod.Samples | None = None,
    force: bool = False,
) -> BuildResult:
    """Build (or find in the cache) the engine of `model_path` for this GPU."""
    if options.precision not in PRECISIONS:
        raise PlanError(f"--precision {options.precision!r}: choose one of {', '.join(PRECISIONS)}")
    model_path = Path(model_path)
    profiles = profile_shapes(
        onnx_inputs(model_path), options.max_batch_size, options.opt_batch_size, options.input_shapes
    )
    from .quantize import is_quantized

    if is_quantized(model_path):
        raise PlanError(
            f"{model_path.name} is already quantized (QuantizeLinear/QLinear nodes, likely for CPU): build "
            f"TensorRT engines from the original FP32 model and let TensorRT calibrate (--precision int8)"
        )
    trt = import_tensorrt()
    cuda = import_cuda()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    try:
        gpu = gpu_identity(cuda)
        identity = EngineIdentity(
            model_sha256=sha256_file(model_path),
            tensorrt_version=trt.__version__,
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
            precision=options.precision,
            max_batch_size=options.max_batch_size,
            opt_batch_size=options.opt_batch_size or options.max_batch_size,
            input_shapes={k: list(v) for k, v in sorted(options.input_shapes.items())},
        )
        if output:
            engine_path = Path(output)
        else:
            engine_path = Path(output_dir or model_path.parent) / identity.engine_filename(model_path.stem)
        sidecar = meta_path(engine_path)
        if not force and engine_path.is_file() and sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            if meta.get("cache_key") == identity.cache_key():
                return BuildResult(engine_path, identity, cached=True, seconds=0.0)
        engine_path.parent.mkdir(parents=True, exist_ok=True)  # the calibration cache goes there too
        start = time.perf_counter()
        serialized = _build(trt, cuda, model_path, options, profiles, calibration, engine_path)
        partial = engine_path.with_name(engine_path.name + ".partial")
        partial.write_bytes(serialized)
        os.replace(partial, engine_path)
        seconds = time.perf_counter() - start
        meta = identity.to_meta()
        meta.update(
            source=str(model_path),
            build_seconds=round(seconds, 1),
            profiles={n: {"min": p.min, "opt": p.opt, "max": p.max} for n, p in profiles.items()},
        )
        sidecar.write_text(json.dumps(meta, indent=2) + "\n")
        return BuildResult(engine_path, identity, cached=False, seconds=seconds)
    finally:
        ctx.pop()
        ctx.detach()


def _build(trt, cuda, model_path: Path, options: BuildOptions, profiles, calibration, engine_path: Path) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanError(f"TensorRT cannot parse {model_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines keep FP16 for layers without INT8 kernels
    _add_profile(builder, config, profiles)
    calibrator = None
    if options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calibration is None:
            raise PlanError(
                "--precision int8 needs calibration data: give --calibration-data DIR or --calibration-samples N"
            )
        shapes = calibration_shapes(profiles, options.calibration_batch_size)
        batches = _calibration_batches(calibration, shapes)
        calib_profile = builder.create_optimization_profile()
        for name, shape in shapes.items():
            if shape:
                calib_profile.set_shape(name, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
        calibrator = _calibrator(trt, cuda, batches, engine_path.with_name(engine_path.name + ".calib"))
        config.int8_calibrator = calibrator
    if options.progress:
        config.progress_monitor = _progress_monitor(trt)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise PlanError(f"TensorRT failed to build an engine from {model_path.name} (its log above says why)")
    return bytes(serialized)


def _calibration_batches(samples: data_mod.Samples, shapes: Mapping[str, Sequence[int]]) -> list[dict[str, np.ndarray]]:
    names = list(shapes)
    batch = next((s[0] for s in shapes.values() if s), 1)
    total = min(len(samples[n]) for n in names)
    if total < batch:
        raise PlanError(f"INT8 calibration needs at least {batch} samples (the calibration batch size), got {total}")
    return [
        {n: np.ascontiguousarray(samples[n][start : start + batch]) for n in names}
        for start in range(0, total - batch + 1, batch)
    ]


def input_specs_for_calibration(model_path: str | Path) -> list[InputSpec]:
    """The model's inputs as the data helpers want them, read with ONNX Runtime (no GPU needed)."""
    from ..measure.runner import OrtRunner

    runner = OrtRunner(Path(model_path))
    try:
        return runner.inputs
    finally:
        runner.close()
