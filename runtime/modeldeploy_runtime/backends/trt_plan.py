"""The decisions behind a TensorRT engine, kept apart from TensorRT itself.

Which engine file belongs to which model and GPU, what shapes its optimization profile covers,
how large its buffers are and how its data types map to numpy and to the v2 protocol: all of it is
decided here by pure functions, so it is tested on machines without a GPU, where most of the
development happens, and the code that does need CUDA stays a thin shell around these answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .base import NUMPY_TO_V2

ENGINE_SUFFIX = ".engine"
META_SUFFIX = ".json"  # the sidecar next to an engine: "<engine>.json"
PRECISIONS = ("fp32", "fp16", "int8")

# TensorRT DataType member names -> numpy. Keyed by name so this module never imports tensorrt.
# BF16, FP8, INT4 and FP4 have no numpy type: such tensors cannot cross the v2 API.
TRT_TO_NUMPY: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "INT8": np.dtype(np.int8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
}


class PlanError(ValueError):
    """A model or engine cannot be planned as asked. The message names the input and the fix."""


def trt_dtype_name(dtype: object) -> str:
    """`tensorrt.DataType.FLOAT` -> "FLOAT" (pybind enums expose `.name`; their str() is dotted)."""
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]


def numpy_dtype(trt_name: str, tensor: str = "") -> np.dtype:
    try:
        return TRT_TO_NUMPY[trt_name]
    except KeyError:
        where = f" of tensor {tensor!r}" if tensor else ""
        raise PlanError(
            f"TensorRT data type {trt_name}{where} has no numpy equivalent; "
            f"supported: {', '.join(TRT_TO_NUMPY)}. Rebuild the engine with that tensor in FP32 or FP16"
        ) from None


def v2_datatype(trt_name: str, tensor: str = "") -> str:
    return NUMPY_TO_V2[numpy_dtype(trt_name, tensor)]


def volume(shape: Iterable[int]) -> int:
    return math.prod(int(d) for d in shape)


# ---------------------------------------------------------------------------------------------
# Engine identity: which file an engine is, and whether it may be loaded here.


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


@dataclass(frozen=True)
class EngineIdentity:
    """Everything an engine depends on. Two builds with equal identities are interchangeable;
    anything else (another GPU, TensorRT version, model or profile) needs a new engine."""

    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    max_batch_size: int
    opt_batch_size: int
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # fixed non-batch dims given

    def cache_key(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def engine_filename(self, stem: str) -> str:
        """A name a person can read and a cache can trust: the parts that most often differ are
        spelled out, and the key covers all of them."""
        major, minor = self.compute_capability
        return (
            f"{_slug(stem)}.{self.precision}.b{self.max_batch_size}"
            f".trt{self.tensorrt_version}.sm{major}{minor}.{_slug(self.gpu_name)}"
            f".{self.model_sha256[:12]}.{self.cache_key()[:12]}{ENGINE_SUFFIX}"
        )

    def to_meta(self) -> dict:
        meta = asdict(self)
        meta["compute_capability"] = list(self.compute_capability)
        meta["cache_key"] = self.cache_key()
        return meta

    @classmethod
    def from_meta(cls, meta: Mapping) -> EngineIdentity:
        fields = {k: meta[k] for k in cls.__dataclass_fields__ if k in meta}
        fields["compute_capability"] = tuple(fields.get("compute_capability", (0, 0)))
        return cls(**fields)


def meta_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + META_SUFFIX)


def engine_mismatch(meta: Mapping, tensorrt_version: str, gpu_name: str, cc: tuple[int, int]) -> str | None:
    """Why an engine built as `meta` describes must not run here, or None when it may.

    TensorRT engines are specific to the TensorRT version and the GPU model they were built on;
    loading one elsewhere either fails deep inside TensorRT or, worse, runs with kernels tuned
    for another GPU. Saying so up front, with the fix, is the point of the sidecar.
    """
    problems = []
    built_trt = str(meta.get("tensorrt_version", ""))
    if built_trt and built_trt != tensorrt_version:
        problems.append(f"TensorRT {built_trt} (this runtime has {tensorrt_version})")
    built_cc = tuple(meta.get("compute_capability", ()))
    if built_cc and built_cc != tuple(cc):
        problems.append(f"compute capability {built_cc[0]}.{built_cc[1]} (this GPU is {cc[0]}.{cc[1]})")
    built_gpu = str(meta.get("gpu_name", ""))
    if built_gpu and built_gpu != gpu_name:
        problems.append(f"GPU {built_gpu!r} (this one is {gpu_name!r})")
    if not problems:
        return None
    return (
        "engine was built for "
        + ", ".join(problems)
        + "; rebuild it on this GPU with `modeldeploy optimize tensorrt MODEL.onnx`"
    )


# ---------------------------------------------------------------------------------------------
# Optimization profiles: the shapes an engine accepts.

Dim = int | str | None  # an ONNX dimension: a size, a symbolic name, or unknown


@dataclass(frozen=True)
class ProfileShape:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def _is_dynamic(dim: Dim) -> bool:
    return not isinstance(dim, int) or dim < 0


def profile_shapes(
    inputs: Sequence[tuple[str, Sequence[Dim]]],
    max_batch_size: int,
    opt_batch_size: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, ProfileShape]:
    """min/opt/max shapes for each ONNX input.

    The first dimension is the batch: dynamic in the model, it spans 1..max_batch_size with
    opt_batch_size (default: the max, where a server under load spends its time) as the shape
    TensorRT tunes kernels for. Other dynamic dimensions must be fixed by `input_shapes`
    (name -> shape without the batch dimension), since guessing an image size is worse than asking.
    `max_batch_size` 0 builds an engine for the model's shapes as they are (no batching).
    """
    input_shapes = dict(input_shapes or {})
    unknown = sorted(set(input_shapes) - {name for name, _ in inputs})
    if unknown:
        known = ", ".join(name for name, _ in inputs)
        raise PlanError(f"--input-shape names unknown input(s) {', '.join(unknown)}; the model's inputs: {known}")
    if max_batch_size < 0:
        raise PlanError("--max-batch-size must be 0 (no batching) or positive")
    opt = opt_batch_size or max_batch_size
    if max_batch_size and not 1 <= opt <= max_batch_size:
        raise PlanError(f"--opt-batch-size {opt_batch_size} must lie in 1..{max_batch_size} (--max-batch-size)")

    profiles: dict[str, ProfileShape] = {}
    for name, dims in inputs:
        dims = list(dims)
        if not dims:
            profiles[name] = ProfileShape((), (), ())
            continue
        batch, rest = dims[0], dims[1:]
        if name in input_shapes:
            given = [int(d) for d in input_shapes[name]]
            if len(given) != len(rest) or any(d <= 0 for d in given):
                raise PlanError(
                    f"--input-shape {name}: expected {len(rest)} positive dimension(s) after the batch "
                    f"dimension (model shape {_show(dims)}), got {'x'.join(map(str, given)) or 'none'}"
                )
            for i, (model_dim, fixed) in enumerate(zip(rest, given, strict=True), start=1):
                if not _is_dynamic(model_dim) and model_dim != fixed:
                    raise PlanError(
                        f"--input-shape {name}: dimension {i} is fixed to {model_dim} by the model, not {fixed}"
                    )
            rest = given
        for i, dim in enumerate(rest, start=1):
            if _is_dynamic(dim):
                hint = "x".join("N" if _is_dynamic(d) else str(d) for d in rest)
                raise PlanError(
                    f"input {name!r} has a dynamic dimension {i} ({dim or '?'}) in shape {_show(dims)}; "
                    f"fix it with --input-shape {name}:{hint} (sizes after the batch dimension)"
                )
        rest = tuple(int(d) for d in rest)
        if max_batch_size == 0:
            if _is_dynamic(batch):
                raise PlanError(f"input {name!r} has a dynamic batch dimension {_show(dims)}: give --max-batch-size")
            shape = (int(batch), *rest)
            profiles[name] = ProfileShape(shape, shape, shape)
        elif _is_dynamic(batch):
            profiles[name] = ProfileShape((1, *rest), (opt, *rest), (max_batch_size, *rest))
        else:
            raise PlanError(
                f"input {name!r} has a fixed batch dimension {batch} (shape {_show(dims)}); re-export the "
                f"model with a dynamic first dimension to batch, or build with --max-batch-size 0"
            )
    return profiles


def _show(dims: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def calibration_shapes(profiles: Mapping[str, ProfileShape], batch_size: int) -> dict[str, tuple[int, ...]]:
    """INT8 calibration runs one fixed shape per input: the profile's opt shape with the
    calibration batch size, clamped to what the profile allows."""
    shapes = {}
    for name, prof in profiles.items():
        if not prof.max:
            shapes[name] = ()
            continue
        batch = max(prof.min[0], min(batch_size, prof.max[0]))
        shapes[name] = (batch, *prof.opt[1:])
    return shapes


# ---------------------------------------------------------------------------------------------
# Serving an engine: batching and buffers.


@dataclass(frozen=True)
class EngineTensor:
    """One I/O tensor as the engine reports it. `shape` may hold -1; `max_shape` is the largest
    shape the engine will ever produce or accept for it."""

    name: str
    is_input: bool
    trt_dtype: str
    shape: tuple[int, ...]
    max_shape: tuple[int, ...]


def plan_batching(tensors: Sequence[EngineTensor], requested: int) -> tuple[int, str | None]:
    """The max batch size to serve an engine with, and a note for the log when it is not the one
    requested. Like the ONNX backend, an engine whose inputs have no common dynamic first
    dimension is served unbatched (0); a request beyond the profile's max is served at that max,
    since the engine cannot take more and refusing to start would help nobody."""
    inputs = [t for t in tensors if t.is_input]
    batched = [t for t in inputs if t.shape and t.shape[0] == -1]
    if not batched or len(batched) != len(inputs):
        note = None
        if requested > 1:
            shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in inputs)
            note = (
                f"the engine's inputs have no common dynamic batch dimension ({shapes}): serving it "
                f"unbatched; to batch, build it from an ONNX model with a dynamic first dimension"
            )
        return 0, note
    engine_max = min(t.max_shape[0] for t in batched)
    if requested > engine_max:
        return engine_max, (
            f"max batch size {requested} exceeds the engine's optimization profile (max {engine_max}): "
            f"batching up to {engine_max}; rebuild with `modeldeploy optimize tensorrt "
            f"--max-batch-size {requested}` for more"
        )
    return requested or engine_max, None


@dataclass(frozen=True)
class BufferPlan:
    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: tuple[int, ...]
    elements: int
    nbytes: int


def plan_buffers(tensors: Sequence[EngineTensor]) -> list[BufferPlan]:
    """One host/device buffer pair per tensor, sized once for the largest shape so that requests
    never allocate: page-locked memory is slow to get and precious."""
    plans = []
    for t in tensors:
        if any(d < 0 for d in t.max_shape):
            raise PlanError(
                f"output {t.name!r} has a data-dependent shape {list(t.max_shape)}; engines with such "
                f"outputs are not supported, export the model with static output shapes"
            )
        dtype = numpy_dtype(t.trt_dtype, t.name)
        elements = volume(t.max_shape)
        plans.append(BufferPlan(t.name, t.is_input, dtype, t.max_shape, elements, max(1, elements) * dtype.itemsize))
    return plans
