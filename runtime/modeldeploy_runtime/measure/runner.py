"""Running a model file in-process, whatever it is: ONNX through ONNX Runtime or OpenVINO, an
OpenVINO IR (.xml + .bin) through OpenVINO, a .tflite file through LiteRT, or a TensorRT engine.

Validation and benchmarks must run the original and the optimized model the same way, so both go
through one small interface. GPU execution is asked for explicitly and verified: onnxruntime-gpu
quietly falls back to the CPU when CUDA does not work, which would make a GPU benchmark measure
the CPU without saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from modeldeploy_contract.openvino_ir import is_ir, weights_of

from ..backends.base import V2_TO_NUMPY, BackendError, GpuUnavailableError

ENGINE_SUFFIXES = (".engine", ".plan")
ENGINES = ("onnxruntime", "openvino")  # what runs an ONNX file (--engine)
# rows the OpenVINO and LiteRT runners take per run; their backends bound the batch dimension
RUNNER_MAX_BATCH = 64
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# ONNX Runtime's type strings -> numpy
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    """A model input. Dynamic dimensions are -1; `batched` means the first one is the batch."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] == -1


class Runner(Protocol):
    path: Path
    inputs: list[InputSpec]
    output_names: list[str]
    description: str  # how it runs, e.g. "onnxruntime CPUExecutionProvider"
    max_batch_size: int  # the most rows one run takes; 0: no limit (or no batch dimension)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def is_engine(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


class OrtRunner:
    def __init__(self, path: Path, provider: str = "cpu", threads: int = 0):
        import onnxruntime as ort

        if provider not in PROVIDERS:
            raise BackendError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
        wanted = PROVIDERS[provider]
        if wanted not in ort.get_available_providers():
            raise GpuUnavailableError(
                f"--provider {provider} needs a GPU and onnxruntime-gpu: this onnxruntime offers "
                f"{', '.join(ort.get_available_providers())}; use --provider cpu here"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = [wanted] if provider == "cpu" else [wanted, PROVIDERS["cpu"]]
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        active = self._session.get_providers()
        if active[0] != wanted:
            raise GpuUnavailableError(
                f"--provider {provider}: onnxruntime fell back to {active[0]} (no working GPU); "
                f"run on a machine with an NVIDIA GPU or use --provider cpu"
            )
        self.path = path
        self.inputs = [_ort_input(i) for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.description = f"onnxruntime {active[0]}"
        self.max_batch_size = 0

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self.output_names, dict(feeds))
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self._session = None


def _ort_input(arg) -> InputSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise BackendError(f"input {arg.name!r} has type {arg.type}, which these tools cannot generate or load")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return InputSpec(arg.name, np.dtype(dtype), shape)


class EngineRunner:
    def __init__(self, path: Path, max_batch_size: int = 0):
        from ..backends.tensorrt import TensorRTBackend

        self._backend = TensorRTBackend(str(path), max_batch_size=max_batch_size)
        self.path = path
        self.inputs = [InputSpec(t.name, V2_TO_NUMPY[t.datatype], t.shape) for t in self._backend.inputs]
        self.output_names = [t.name for t in self._backend.outputs]
        self.description = f"tensorrt {self._backend.info.extra.get('tensorrt_version', '')}".strip()
        self.max_batch_size = self._backend.max_batch_size

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._backend.infer(dict(feeds))

    def close(self) -> None:
        self._backend.close()


class BackendRunner:
    """A CPU backend of the server (OpenVINO, LiteRT) run in process, exactly as it serves."""

    def __init__(self, path: Path, backend, description: str):
        self._backend = backend
        self.path = path
        self.inputs = [InputSpec(t.name, V2_TO_NUMPY[t.datatype], t.shape) for t in backend.inputs]
        self.output_names = [t.name for t in backend.outputs]
        self.description = description
        self.max_batch_size = backend.max_batch_size

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._backend.infer(dict(feeds))

    def close(self) -> None:
        self._backend.close()


def _threads(threads: int) -> int:
    from ..cpu import default_threads

    return threads or default_threads()


def open_model(
    path: str | Path, *, provider: str = "cpu", threads: int = 0, engine: str = "onnxruntime", precision: str = "fp32"
) -> Runner:
    """ONNX files run with ONNX Runtime on `provider`, or with OpenVINO at `precision` (fp32 or
    bf16) when `engine` is openvino; .xml files (OpenVINO IR, which nothing else reads) with
    OpenVINO at `precision`; .tflite files with LiteRT; .engine/.plan files with TensorRT (GPU)."""
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"model file {path} does not exist")
    if is_ir(str(path)):
        if not Path(weights_of(str(path))).is_file():
            raise BackendError(
                f"the OpenVINO IR {path} has no weights file {weights_of(str(path))} beside it: put NAME.bin "
                "next to NAME.xml"
            )
        engine = "openvino"
    if is_engine(path):
        return EngineRunner(path)
    if path.suffix.lower() == ".tflite":
        from ..backends.litert import LiteRtBackend

        backend = LiteRtBackend(str(path), max_batch_size=RUNNER_MAX_BATCH, threads=_threads(threads))
        return BackendRunner(path, backend, f"litert {backend.info.extra['litert']}")
    if engine == "openvino":
        from ..backends.openvino import OpenVinoBackend

        backend = OpenVinoBackend(
            str(path), max_batch_size=RUNNER_MAX_BATCH, threads=_threads(threads), precision=precision
        )
        return BackendRunner(path, backend, f"openvino {backend.info.extra['openvino']} {backend.info.precision}")
    if precision not in ("fp32", "int8"):
        raise BackendError(f"precision {precision} on ONNX Runtime's CPU provider: use --engine openvino")
    return OrtRunner(path, provider=provider, threads=threads)
