"""The golden set: inputs and the outputs a trusted model gave for them, checked before ready.

A model that loads, warms up and meets its latency budget can still answer wrongly: a bad export,
the wrong preprocessing baked in, an INT8 model whose accuracy collapsed. After the latency gate
the server runs the golden set through the backend and refuses to become ready
(``golden set mismatch: ...``) when the answers are outside the tolerances, so the rollout stops
at its first pod.

The file is an ``.npz`` (``numpy.savez``) with one array per model input, ``input:<name>``, and
one per output to check, ``output:<name>``. Every array holds the same number of samples N along
its first axis: for a model the server batches (a dynamic first dimension on every input and
output) the rows of a batch, ``[N, ...]`` as a batch of N would be sent; for a model served
unbatched, N whole inputs stacked, ``[N, *input shape]``. ``modeldeploy validate --write-golden``
writes it.

The comparison is the one ``modeldeploy validate`` makes (optimize/compare.py): per output the
largest absolute and relative difference and, for classification outputs, top-1 agreement.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .backends.base import V2_TO_NUMPY, Backend, TensorSpec
from .errors import GoldenSetMismatch, InvalidConfiguration, ModelLoadFailed
from .optimize.compare import DEFAULT_MIN_TOP1, OutputDiff
from .sources import SourceOptions, resolve_model

log = logging.getLogger(__name__)

INPUT_PREFIX = "input:"
OUTPUT_PREFIX = "output:"
# A golden set is small; this bounds what a hostile or mistaken file can make the pod allocate.
MAX_GOLDEN_BYTES = 256 * 1024 * 1024
# Outputs without top-1 (regression, embeddings) are held to this when no tolerance is given.
DEFAULT_MAX_REL_ERROR = 0.01
WRITE_HINT = "write the file with `modeldeploy validate MODEL --write-golden PATH`"


class GoldenSetInvalid(ValueError):
    """The file cannot be a golden set of this model. The message names what is wrong."""


@dataclass(frozen=True)
class Tolerances:
    max_abs_error: float | None = None  # None: not checked
    max_rel_error: float | None = None
    min_top1: float = DEFAULT_MIN_TOP1


@dataclass(frozen=True)
class GoldenSet:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def count(self) -> int:
        return len(next(iter(self.inputs.values())))


def fetch_golden_set(location: str, sha256: str, cache_dir: str, options: SourceOptions | None = None) -> str:
    """The local path of the verified file, fetched exactly as the model is (fetch.py), so every
    source the model may come from serves golden sets too. fetch.py's messages name the model's
    settings; here they name the golden set's."""
    try:
        return resolve_model(location, sha256, cache_dir, options)
    except ModelLoadFailed as exc:
        message = str(exc).replace("MODELDEPLOY_MODEL_", "MODELDEPLOY_GOLDEN_SET_").replace("model file", "file")
        raise ModelLoadFailed(f"golden set: {message}") from exc


def read_golden_set(path: str) -> GoldenSet:
    """Load the arrays, refusing anything that is not a small .npz of plain arrays."""
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(info.file_size for info in archive.infolist())
            if size <= MAX_GOLDEN_BYTES:
                size = max(size, sum(_declared_bytes(archive, info) for info in archive.infolist()))
    except (zipfile.BadZipFile, OSError) as exc:
        raise GoldenSetInvalid(f"not an .npz file ({exc}); {WRITE_HINT}") from exc
    if size > MAX_GOLDEN_BYTES:
        raise GoldenSetInvalid(
            f"{size} bytes uncompressed, more than the {MAX_GOLDEN_BYTES} a golden set may hold; use fewer samples"
        )
    inputs: dict[str, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                if key.startswith(INPUT_PREFIX):
                    inputs[key[len(INPUT_PREFIX) :]] = npz[key]
                elif key.startswith(OUTPUT_PREFIX):
                    outputs[key[len(OUTPUT_PREFIX) :]] = npz[key]
                else:
                    raise GoldenSetInvalid(
                        f'an array is named "{key}"; name arrays "{INPUT_PREFIX}<model input>" or '
                        f'"{OUTPUT_PREFIX}<model output>"'
                    )
    except GoldenSetInvalid:
        raise
    except ValueError as exc:  # object arrays (pickles) and malformed members
        raise GoldenSetInvalid(
            f"an array is not a plain numeric array ({exc}); BYTES tensors cannot be in a golden set"
        ) from exc
    if not inputs or not outputs:
        raise GoldenSetInvalid(
            f'needs "{INPUT_PREFIX}<name>" and "{OUTPUT_PREFIX}<name>" arrays; the file has '
            f"{', '.join(_names(inputs, outputs)) or 'no array'}; {WRITE_HINT}"
        )
    counts = {key: a.shape[0] if a.ndim else None for key, a in _keyed(inputs, outputs).items()}
    if len(set(counts.values())) != 1 or None in counts.values() or 0 in counts.values():
        shown = ", ".join(f'"{k}" {v if v is not None else "a scalar"}' for k, v in counts.items())
        raise GoldenSetInvalid(f"arrays must all hold the same number (1 or more) of samples on axis 0: {shown}")
    return GoldenSet(inputs, outputs)


def _declared_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """The size an array's .npy header declares: numpy allocates it before reading the data, so a
    header is believed only after it has been checked (0 for members that are not arrays, which
    np.load refuses later)."""
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    except ValueError:
        return 0
    return int(np.prod(shape, dtype=np.float64) * dtype.itemsize)


def check_golden_set(golden: GoldenSet, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], batched: bool):
    """Refuse a golden set that does not fit the model: an input missing, an array of another
    shape or kind. Floats may differ in width (an fp16 export checked against its fp32 original's
    answers), as may integers; a float where the model takes integers is an error."""
    model_inputs = {s.name: s for s in inputs}
    model_outputs = {s.name: s for s in outputs}
    for spec in inputs:
        if spec.name not in golden.inputs:
            raise GoldenSetInvalid(
                f'no array "{INPUT_PREFIX}{spec.name}" for model input "{spec.name}" ({_describe(spec)}); '
                f"the file has {', '.join(_names(golden.inputs, golden.outputs))}"
            )
    for kind, prefix, arrays, specs in (
        ("input", INPUT_PREFIX, golden.inputs, model_inputs),
        ("output", OUTPUT_PREFIX, golden.outputs, model_outputs),
    ):
        for name, array in arrays.items():
            spec = specs.get(name)
            if spec is None:
                raise GoldenSetInvalid(
                    f'"{prefix}{name}" names no {kind} of the model; its {kind}s: {", ".join(specs)}'
                )
            if spec.datatype == "BYTES":
                raise GoldenSetInvalid(f'{kind} "{name}" is BYTES, which golden sets cannot hold')
            want = V2_TO_NUMPY[spec.datatype]
            if _kind(array.dtype) != _kind(want):
                raise GoldenSetInvalid(
                    f'"{prefix}{name}" is {array.dtype} but the model\'s {kind} "{name}" is {spec.datatype}'
                )
            sample = spec.shape[1:] if batched else spec.shape
            if array.ndim != len(sample) + 1 or any(
                d >= 0 and d != a for d, a in zip(sample, array.shape[1:], strict=False)
            ):
                layout = "[N, " + ", ".join(str(d) for d in sample) + "]" if sample else "[N]"
                raise GoldenSetInvalid(
                    f'"{prefix}{name}" has shape {list(array.shape)} but the model\'s {kind} "{name}" '
                    f"({_describe(spec)}) needs {layout}, N samples on axis 0 (-1: any size)"
                )


def run_golden_set(backend: Backend, golden: GoldenSet) -> dict[str, np.ndarray]:
    """The backend's outputs for every golden input, in batches of at most its max batch size
    (one sample at a time for a model served unbatched)."""
    dtypes = {s.name: V2_TO_NUMPY[s.datatype] for s in backend.inputs}
    feeds = {n: a.astype(dtypes[n], copy=False) for n, a in golden.inputs.items()}
    count, step = golden.count, backend.max_batch_size
    parts: dict[str, list[np.ndarray]] = {n: [] for n in golden.outputs}
    for start in range(0, count, step or 1):
        if step:
            batch = {n: a[start : start + step] for n, a in feeds.items()}
        else:
            batch = {n: a[start] for n, a in feeds.items()}
        result = backend.infer(batch)
        for name in parts:
            out = np.asarray(result[name])
            parts[name].append(out if step else out[np.newaxis])
    return {n: _concatenate(chunks) for n, chunks in parts.items()}


def _concatenate(chunks: list[np.ndarray]) -> np.ndarray:
    try:
        return np.concatenate(chunks)
    except ValueError:  # outputs whose shapes vary by batch: compared as is, and found to differ
        return np.array(chunks, dtype=object)


def golden_verdict(
    expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], tolerances: Tolerances
) -> str | None:
    """The details of the termination message when the model's outputs disagree with the golden
    set, None when they agree. Pure."""
    failures: list[str] = []
    count = 0
    for name, want in expected.items():
        count = max(count, len(want))
        have = got.get(name)
        label = f'output "{name}"'
        if have is None:
            failures.append(f"{label} is missing from the model's answers")
            continue
        if have.shape != want.shape or have.dtype == object:
            failures.append(f"{label} has shape {_shape(have)}, the golden set {list(want.shape)}")
            continue
        if _kind(have.dtype) == "f":
            stray = int(np.count_nonzero(np.isnan(have) & ~np.isnan(want.astype(np.float64))))
            if stray:
                failures.append(f"{label} is NaN in {stray} of {have.size} elements (the golden set has numbers there)")
                continue
        diff = OutputDiff(name)
        diff.add(want, have)
        if diff.top1_agreement is not None and diff.top1_agreement < tolerances.min_top1:
            failures.append(
                f"{label} top-1 agreement {_shown(diff.top1_agreement, tolerances.min_top1, above=False)} "
                f"< {tolerances.min_top1:g}"
            )
        max_abs, max_rel = tolerances.max_abs_error, tolerances.max_rel_error
        if diff.top1_agreement is None and max_abs is None and max_rel is None:
            max_rel = DEFAULT_MAX_REL_ERROR
        if max_abs is not None and not diff.max_abs_error <= max_abs:
            failures.append(f"{label} max abs error {_shown(diff.max_abs_error, max_abs)} > {max_abs:g}")
        if max_rel is not None and not diff.max_rel_error <= max_rel:
            failures.append(f"{label} max rel error {_shown(diff.max_rel_error, max_rel)} > {max_rel:g}")
    if not failures:
        return None
    return f"{'; '.join(failures)} on {count} inputs"


def check_golden_gate(backend: Backend, path: str, tolerances: Tolerances) -> None:
    """Read, check against the model, run and judge the golden set at ``path``: raise
    InvalidConfiguration for a file that does not fit, GoldenSetMismatch for wrong answers."""
    try:
        golden = read_golden_set(path)
        check_golden_set(golden, backend.inputs, backend.outputs, backend.max_batch_size > 0)
    except GoldenSetInvalid as exc:
        raise InvalidConfiguration(f"golden set {path}: {exc}") from exc
    try:
        got = run_golden_set(backend, golden)
    except Exception as exc:  # the backend refused the inputs: they do not fit the model
        raise InvalidConfiguration(f"golden set {path}: the model cannot run its inputs: {exc}") from exc
    verdict = golden_verdict(golden.outputs, got, tolerances)
    if verdict is not None:
        raise GoldenSetMismatch(verdict)
    log.info("golden set %s: %d inputs agree on %s", path, golden.count, ", ".join(golden.outputs))


def write_golden_set(path: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
    arrays = {f"{INPUT_PREFIX}{n}": np.asarray(a) for n, a in inputs.items()}
    arrays.update({f"{OUTPUT_PREFIX}{n}": np.asarray(a) for n, a in outputs.items()})
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _kind(dtype: np.dtype) -> str:
    return {"f": "f", "i": "i", "u": "i", "b": "b"}.get(np.dtype(dtype).kind, np.dtype(dtype).kind)


def _names(inputs: Mapping, outputs: Mapping) -> list[str]:
    return list(_keyed(inputs, outputs))


def _keyed(inputs: Mapping, outputs: Mapping) -> dict:
    return {**{INPUT_PREFIX + n: a for n, a in inputs.items()}, **{OUTPUT_PREFIX + n: a for n, a in outputs.items()}}


def _describe(spec: TensorSpec) -> str:
    return f"{spec.datatype} {list(spec.shape)}"


def _shape(array: np.ndarray) -> str:
    if array.dtype == object:
        return "varying by batch"
    return str(list(array.shape))


def _shown(value: float, bound: float, above: bool = True) -> str:
    """``value`` with two significant digits, or as many more as it takes to read as past
    ``bound``: 0.989 rather than 0.99 against 0.99."""
    for digits in range(2, 10):
        text = f"{value:.{digits}g}"
        if (float(text) > bound) if above else (float(text) < bound):
            return text
    return f"{value:g}"
