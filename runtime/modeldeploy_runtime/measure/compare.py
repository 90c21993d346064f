"""What an optimization cost: the original and the optimized model on the same inputs.

Per output: the largest absolute difference, the largest relative difference, and for
classification-like outputs the top-1 agreement (argmax over the last axis of float scores, or
equality of integer labels). Relative error is taken only where the reference is at least 0.1% of
the output's largest magnitude: near zero every tiny difference is "infinitely" relative and the
figure would say nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from . import data as data_mod
from .runner import Runner

REL_FLOOR = 1e-3  # relative error ignores |reference| < REL_FLOOR * max|reference|
DEFAULT_MIN_TOP1 = 0.99


class CompareError(ValueError):
    """The two models cannot be compared (different inputs or outputs). The message says how."""


@dataclass
class OutputDiff:
    name: str
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    top1_agreement: float | None = None  # None: not a classification output
    compared: int = 0  # rows compared for top-1
    _agree: int = field(default=0, repr=False)

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if ref.shape != cand.shape:
            raise CompareError(
                f"output {self.name!r}: the original gives shape {list(ref.shape)}, "
                f"the optimized model {list(cand.shape)}"
            )
        if ref.dtype.kind in "fc" or cand.dtype.kind in "fc":
            r, c = ref.astype(np.float64), cand.astype(np.float64)
            diff = np.abs(r - c)
            diff = np.where(np.isnan(r) & np.isnan(c), 0.0, diff)  # NaN in both is agreement
            diff = np.where(np.isnan(diff), np.inf, diff)
            if diff.size:
                self.max_abs_error = max(self.max_abs_error, float(diff.max()))
                mag = np.abs(r)
                floor = REL_FLOOR * float(np.nanmax(mag)) if np.isfinite(mag).any() else 0.0
                mask = mag >= max(floor, np.finfo(np.float64).tiny)
                if mask.any():
                    self.max_rel_error = max(self.max_rel_error, float((diff[mask] / mag[mask]).max()))
            if ref.ndim >= 2 and ref.shape[-1] > 1:
                agree = np.argmax(r, axis=-1) == np.argmax(c, axis=-1)
                self._count(agree)
        elif ref.dtype.kind in "iub":
            diff = np.abs(ref.astype(np.int64) - cand.astype(np.int64))
            if diff.size:
                self.max_abs_error = max(self.max_abs_error, float(diff.max()))
            self._count(ref == cand if ref.ndim <= 1 else np.all(ref == cand, axis=tuple(range(1, ref.ndim))))

    def _count(self, agree: np.ndarray) -> None:
        self._agree += int(np.count_nonzero(agree))
        self.compared += int(agree.size)
        self.top1_agreement = self._agree / self.compared if self.compared else None


@dataclass
class Comparison:
    reference: str
    candidate: str
    samples: int
    outputs: list[OutputDiff]
    reference_runs_on: str = ""
    candidate_runs_on: str = ""  # the engine and precision, e.g. "openvino 2026.4.1 bf16"

    def to_dict(self) -> dict:
        d = asdict(self)
        for out in d["outputs"]:
            out.pop("_agree", None)
        return d


def compare_models(reference: Runner, candidate: Runner, samples: data_mod.Samples, batch_size: int = 32) -> Comparison:
    ref_inputs = {s.name: s for s in reference.inputs}
    cand_inputs = {s.name: s for s in candidate.inputs}
    if set(ref_inputs) != set(cand_inputs):
        raise CompareError(
            f"the models have different inputs: original {sorted(ref_inputs)}, optimized {sorted(cand_inputs)}"
        )
    common = [n for n in reference.output_names if n in candidate.output_names]
    if not common:
        raise CompareError(
            f"the models share no output name: original {reference.output_names}, optimized {candidate.output_names}"
        )
    diffs = {n: OutputDiff(n) for n in common}
    specs = reference.inputs
    for batch in data_mod.batches(samples, specs, batch_size):
        ref_out = reference.run(batch)
        cand_feed = {n: a.astype(cand_inputs[n].dtype, copy=False) for n, a in batch.items()}
        cand_out = candidate.run(cand_feed)
        for name in common:
            diffs[name].add(np.asarray(ref_out[name]), np.asarray(cand_out[name]))
    return Comparison(
        reference=str(reference.path),
        candidate=str(candidate.path),
        samples=data_mod.count(samples, specs),
        outputs=[diffs[n] for n in common],
        reference_runs_on=reference.description,
        candidate_runs_on=candidate.description,
    )


@dataclass(frozen=True)
class Thresholds:
    min_top1: float = DEFAULT_MIN_TOP1
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    outputs: tuple[str, ...] = ()  # the outputs judged; empty: all


def judge(comparison: Comparison, thresholds: Thresholds) -> list[str]:
    """The reasons the optimized model fails, empty when it passes."""
    known = {o.name for o in comparison.outputs}
    unknown = [n for n in thresholds.outputs if n not in known]
    if unknown:
        raise CompareError(
            f"--output {', '.join(unknown)}: no such output; the models share {', '.join(sorted(known))}"
        )
    judged = [o for o in comparison.outputs if not thresholds.outputs or o.name in thresholds.outputs]
    if (
        all(o.top1_agreement is None for o in judged)
        and thresholds.max_abs_error is None
        and thresholds.max_rel_error is None
    ):
        raise CompareError(
            "no output is a classification output (float scores [N, classes] or integer labels), so "
            "top-1 agreement does not apply: give --max-abs-error or --max-rel-error"
        )
    failures = []
    for o in judged:
        if o.top1_agreement is not None and o.top1_agreement < thresholds.min_top1:
            failures.append(
                f"output {o.name!r}: top-1 agreement {o.top1_agreement:.2%} < {thresholds.min_top1:.2%} "
                f"({o.compared - o._agree} of {o.compared} differ)"
            )
        if thresholds.max_abs_error is not None and not o.max_abs_error <= thresholds.max_abs_error:
            failures.append(f"output {o.name!r}: max abs error {o.max_abs_error:.4g} > {thresholds.max_abs_error:.4g}")
        if thresholds.max_rel_error is not None and not o.max_rel_error <= thresholds.max_rel_error:
            failures.append(f"output {o.name!r}: max rel error {o.max_rel_error:.4g} > {thresholds.max_rel_error:.4g}")
    return failures


def format_table(comparison: Comparison) -> str:
    rows = [("output", "max abs error", "max rel error", "top-1 agreement")]
    for o in comparison.outputs:
        top1 = "n/a" if o.top1_agreement is None else f"{o.top1_agreement:.2%} of {o.compared}"
        rows.append((o.name, _num(o.max_abs_error), _num(o.max_rel_error), top1))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"original:  {comparison.reference}"
        + (f" ({comparison.reference_runs_on})" if comparison.reference_runs_on else ""),
        f"optimized: {comparison.candidate}"
        + (f" ({comparison.candidate_runs_on})" if comparison.candidate_runs_on else ""),
        f"samples:   {comparison.samples}",
        "",
    ]
    for i, r in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.4g}"


def split_outputs(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(v for value in values for v in value.split(",") if v)
