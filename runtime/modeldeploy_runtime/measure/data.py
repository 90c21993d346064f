"""Inputs for calibration, validation and benchmarks: loaded from .npy/.npz files or generated.

Real data is always better (calibration ranges and top-1 agreement on random noise say little
about a real distribution), so every command takes a directory of arrays; generation from a seed
is the fallback that makes every command runnable on any model, reproducibly.

A directory holds `.npy` files (models with one input) or `.npz` files whose arrays are named
after the model's inputs. Each array is one sample (the input's shape without the batch
dimension) or a batch of samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from .runner import InputSpec

Samples = dict[str, np.ndarray]  # input name -> [N, ...] for batched inputs


class DataError(ValueError):
    """Input data that does not fit the model. The message names the file, the input and the fix."""


def parse_input_shapes(values: Sequence[str]) -> dict[str, list[int]]:
    """`--input-shape name:3x224x224` (repeatable) -> {"name": [3, 224, 224]}: sizes after the
    batch dimension, for inputs whose other dimensions are dynamic."""
    shapes: dict[str, list[int]] = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            parsed = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            parsed = None
        if not sep or not name or not parsed or any(d <= 0 for d in parsed):
            raise DataError(
                f"--input-shape {value!r}: expected NAME:DIMS with positive sizes after the batch "
                f"dimension, e.g. --input-shape input:3x224x224"
            )
        shapes[name] = parsed
    return shapes


def sample_shape(spec: InputSpec, input_shapes: Mapping[str, Sequence[int]] | None = None) -> tuple[int, ...]:
    """The shape of one sample of `spec` (without the batch dimension when batched)."""
    rest = list(spec.shape[1:] if spec.batched else spec.shape)
    given = (input_shapes or {}).get(spec.name)
    if given is not None:
        if len(given) != len(rest):
            raise DataError(
                f"--input-shape {spec.name}: the model's input has {len(rest)} dimension(s) after the batch "
                f"dimension ({list(spec.shape)}), got {len(given)}"
            )
        rest = [g if d == -1 else d for d, g in zip(rest, given, strict=True)]
    if any(d < 0 for d in rest):
        hint = "x".join("N" if d < 0 else str(d) for d in rest)
        raise DataError(
            f"input {spec.name!r} has dynamic dimensions {list(spec.shape)}: fix them with "
            f"--input-shape {spec.name}:{hint}"
        )
    return tuple(rest)


def generate(
    specs: Sequence[InputSpec],
    count: int,
    *,
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Samples:
    """`count` samples per input: standard normal floats (what normalised image and feature
    inputs look like) or uniform in `value_range`; small non-negative integers; random booleans."""
    rng = np.random.default_rng(seed)
    samples: Samples = {}
    for spec in specs:
        shape = sample_shape(spec, input_shapes)
        full = (count, *shape) if spec.batched else shape
        if spec.dtype.kind == "f":
            if value_range:
                data = rng.uniform(value_range[0], value_range[1], size=full)
            else:
                data = rng.standard_normal(size=full)
        elif spec.dtype.kind in "iu":
            data = rng.integers(0, 16, size=full)
        elif spec.dtype.kind == "b":
            data = rng.random(size=full) < 0.5
        else:
            raise DataError(f"input {spec.name!r}: cannot generate data of type {spec.dtype}; give --data")
        samples[spec.name] = data.astype(spec.dtype)
    return samples


def _fit(spec: InputSpec, array: np.ndarray, source: Path, input_shapes) -> np.ndarray:
    want = sample_shape(spec, input_shapes) if spec.batched else tuple(spec.shape)
    if spec.batched and array.shape == want:
        array = array[np.newaxis]
    got = array.shape[1:] if spec.batched else array.shape
    if tuple(got) != tuple(want):
        expected = f"[N, {', '.join(map(str, want))}] or {list(want)}" if spec.batched else str(list(want))
        raise DataError(
            f"{source.name}: input {spec.name!r} expects shape {expected}, the file holds {list(array.shape)}"
        )
    if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
        raise DataError(f"{source.name}: input {spec.name!r} expects {spec.dtype}, the file holds {array.dtype}")
    return array.astype(spec.dtype, copy=False)


def load_dir(
    directory: str | Path,
    specs: Sequence[InputSpec],
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Samples:
    """All samples in a directory, concatenated per input in file-name order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"--data {directory}: not a directory (expected a directory of .npy or .npz files)")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".npy", ".npz"))
    if not files:
        raise DataError(f"--data {directory}: no .npy or .npz files in it")
    names = [s.name for s in specs]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for path in files:
        if path.suffix == ".npy":
            if len(specs) != 1:
                raise DataError(
                    f"{path.name}: the model has {len(specs)} inputs ({', '.join(names)}); give .npz files "
                    f"with one array per input name (np.savez(path, **{{name: array}}))"
                )
            arrays = {names[0]: np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            missing = [n for n in names if n not in arrays]
            if missing:
                raise DataError(
                    f"{path.name}: no array for input(s) {', '.join(missing)} (it holds {', '.join(arrays)})"
                )
        for spec in specs:
            parts[spec.name].append(_fit(spec, arrays[spec.name], path, input_shapes))
    samples = {}
    for spec in specs:
        samples[spec.name] = np.concatenate(parts[spec.name]) if spec.batched else parts[spec.name][0]
    counts = {n: len(a) for n, a in samples.items() if next(s for s in specs if s.name == n).batched}
    if len(set(counts.values())) > 1:
        raise DataError(f"--data {directory}: inputs hold different numbers of samples: {counts}")
    return samples


def count(samples: Samples, specs: Sequence[InputSpec]) -> int:
    batched = [s for s in specs if s.batched]
    return len(samples[batched[0].name]) if batched else 1


def batches(
    samples: Samples, specs: Sequence[InputSpec], batch_size: int, *, drop_last: bool = False
) -> Iterator[Samples]:
    """Consecutive batches of at most `batch_size` samples. Unbatched models get each sample set
    once, as it is."""
    if not any(s.batched for s in specs):
        yield dict(samples)
        return
    total = count(samples, specs)
    for start in range(0, total, batch_size):
        if drop_last and start + batch_size > total:
            return
        yield {s.name: samples[s.name][start : start + batch_size] if s.batched else samples[s.name] for s in specs}


def tile_to(samples: Samples, specs: Sequence[InputSpec], size: int) -> Samples:
    """Exactly `size` samples, repeating the data when it holds fewer (benchmarks need full batches)."""
    total = count(samples, specs)
    index = np.arange(size) % total
    return {s.name: samples[s.name][index] if s.batched else samples[s.name] for s in specs}
