"""`modeldeploy validate`: what an optimized model lost against its original, with a pass/fail exit."""

from __future__ import annotations

import argparse
import sys

from .cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    UsageError,
    add_data_args,
    check_file,
    input_data,
    parse,
    report_error,
    write_json,
)

EPILOG = """exit status: 0 within the thresholds, 1 past one, 2 cannot run as asked.

examples:
  modeldeploy validate model.onnx model.int8.onnx --data heldout/
  modeldeploy validate model.onnx model.fp16.engine --min-top1 0.995        (GPU)
  modeldeploy validate encoder.onnx encoder.int8.onnx --max-abs-error 0.05
  modeldeploy validate model.onnx --engine openvino --precision bf16 --data heldout/
  modeldeploy validate model.onnx model.tflite                  (the same model converted to LiteRT)
  modeldeploy validate model.onnx model.xml --engine openvino   (an OpenVINO IR of it, ovc or NNCF INT8)
  modeldeploy validate model.onnx --write-golden golden.npz --data heldout/   (spec.model.goldenSet)
"""


COMPARE_SAMPLES = 1000
# A golden set travels with every rollout and runs before each pod is ready: small by default.
GOLDEN_SAMPLES = 64


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="modeldeploy validate",
        description="Run the original and the optimized model on the same inputs and report max "
        "absolute/relative error and top-1 agreement per output.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "original",
        help="the reference model (.onnx or .tflite, run at FP32 on ONNX Runtime; or an OpenVINO IR .xml with "
        "its .bin beside it, run at FP32 on OpenVINO)",
    )
    parser.add_argument(
        "optimized",
        nargs="?",
        help="the optimized model (.onnx, .tflite, an OpenVINO IR .xml, or a TensorRT .engine/.plan on a GPU); "
        "default: the original again, on --engine at --precision",
    )
    add_data_args(parser, default_samples=COMPARE_SAMPLES)
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="inputs per inference (default 32)")
    parser.add_argument(
        "--min-top1",
        type=float,
        default=0.99,
        metavar="FRACTION",
        help="least top-1 agreement on classification outputs (default 0.99)",
    )
    parser.add_argument("--max-abs-error", type=float, metavar="X", help="fail when any absolute difference exceeds X")
    parser.add_argument("--max-rel-error", type=float, metavar="X", help="fail when any relative difference exceeds X")
    parser.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAME",
        help="judge only these outputs (repeatable; default all)",
    )
    parser.add_argument(
        "--provider",
        choices=("cpu", "cuda"),
        default="cpu",
        help="ONNX Runtime provider for .onnx models (cuda needs a GPU)",
    )
    parser.add_argument(
        "--engine",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="what runs the optimized ONNX model (default onnxruntime; .xml models always run on openvino)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="precision of the optimized model on --engine openvino (bf16 needs a CPU with bf16 instructions)",
    )
    parser.add_argument("--threads", type=int, default=0, metavar="N", help="ONNX Runtime threads (0: its default)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON here ('-' for stdout)")
    parser.add_argument(
        "--write-golden",
        metavar="PATH",
        help="instead of comparing, run ORIGINAL (the trusted model) on the inputs and write them with its "
        f"outputs to PATH, an .npz golden set for spec.model.goldenSet (--output picks the outputs kept; "
        f"--samples defaults to {GOLDEN_SAMPLES} here)",
    )
    parser.set_defaults(samples=None)  # 1000 to compare, GOLDEN_SAMPLES for a golden set (see run)
    return parser


def main(argv: list[str]) -> int:
    args = parse(build_parser(), argv, "validate")
    if isinstance(args, int):
        return args
    return run(args)


def run(args: argparse.Namespace) -> int:
    if args.write_golden:
        if args.samples is None:
            args.samples = GOLDEN_SAMPLES
        return write_golden(args)
    if args.samples is None:
        args.samples = COMPARE_SAMPLES
    from ..backends.base import BackendError
    from ..measure import compare
    from ..measure.data import DataError
    from ..measure.runner import open_model

    runners = []
    try:
        if not 0.0 <= args.min_top1 <= 1.0:
            raise UsageError(f"--min-top1 {args.min_top1}: expected a fraction in 0..1, e.g. 0.99")
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        original = check_file(args.original, "ORIGINAL")
        if args.precision == "bf16" and args.engine != "openvino":
            raise UsageError("--precision bf16 runs on OpenVINO: add --engine openvino")
        optimized = check_file(args.optimized, "OPTIMIZED") if args.optimized else original
        if not args.optimized and args.engine == "onnxruntime":
            raise UsageError("give OPTIMIZED, or --engine openvino to compare the model with itself on OpenVINO")
        reference = open_model(original, provider=args.provider, threads=args.threads)
        runners.append(reference)
        candidate = open_model(
            optimized, provider=args.provider, threads=args.threads, engine=args.engine, precision=args.precision
        )
        runners.append(candidate)
        samples = input_data(args, reference.inputs)
        limits = [r.max_batch_size for r in runners if r.max_batch_size]
        batch_size = min([args.batch_size, *limits])
        result = compare.compare_models(reference, candidate, samples, batch_size)
        thresholds = compare.Thresholds(
            min_top1=args.min_top1,
            max_abs_error=args.max_abs_error,
            max_rel_error=args.max_rel_error,
            outputs=compare.split_outputs(args.output),
        )
        failures = compare.judge(result, thresholds)
    except (UsageError, DataError, BackendError, compare.CompareError) as exc:
        return report_error("validate", exc)
    finally:
        for r in runners:
            r.close()
    print(compare.format_table(result))
    if not args.data:
        print(f"\n(inputs: {result.samples} generated, seed {args.seed}; give --data DIR for real inputs)")
    write_json(args.json, {**result.to_dict(), "passed": not failures, "failures": failures})
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return EXIT_FAILED
    print(f"\nPASSED (top-1 agreement >= {args.min_top1:.2%}" + _extra(args) + ")")
    return EXIT_OK


def write_golden(args: argparse.Namespace) -> int:
    """The golden set of ORIGINAL: the inputs --data or generation gives, and its outputs on them,
    run in batches as `validate` runs them."""
    import numpy as np

    from ..backends.base import BackendError
    from ..fetch import sha256_file
    from ..golden import write_golden_set
    from ..measure import compare
    from ..measure import data as data_mod
    from ..measure.data import DataError
    from ..measure.runner import open_model

    reference = None
    try:
        if args.optimized:
            raise UsageError("--write-golden runs ORIGINAL alone (the trusted model): drop OPTIMIZED")
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        original = check_file(args.original, "ORIGINAL")
        reference = open_model(original, provider=args.provider, threads=args.threads)
        kept = compare.split_outputs(args.output) or tuple(reference.output_names)
        unknown = [n for n in kept if n not in reference.output_names]
        if unknown:
            raise UsageError(
                f"--output {', '.join(unknown)}: no such output; the model has {', '.join(reference.output_names)}"
            )
        samples = input_data(args, reference.inputs)
        batch_size = min([args.batch_size, *([reference.max_batch_size] if reference.max_batch_size else [])])
        parts: dict[str, list[np.ndarray]] = {n: [] for n in kept}
        for batch in data_mod.batches(samples, reference.inputs, batch_size):
            outputs = reference.run(batch)
            for name in kept:
                parts[name].append(np.asarray(outputs[name]))
    except (UsageError, DataError, BackendError) as exc:
        return report_error("validate", exc)
    finally:
        if reference is not None:
            reference.close()
    if all(s.batched for s in reference.inputs):
        inputs, outputs = samples, {n: np.concatenate(p) for n, p in parts.items()}
    else:  # served unbatched: one whole input per sample, stacked on a new first axis
        inputs = {n: a[np.newaxis] for n, a in samples.items()}
        outputs = {n: np.stack(p) for n, p in parts.items()}
    from ..golden import MAX_GOLDEN_BYTES

    size = sum(a.nbytes for a in [*inputs.values(), *outputs.values()])
    if size > MAX_GOLDEN_BYTES:
        return report_error(
            "validate",
            UsageError(
                f"the golden set would hold {size} bytes, more than the {MAX_GOLDEN_BYTES} the runtime takes: "
                "give fewer --samples"
            ),
        )
    try:
        write_golden_set(args.write_golden, inputs, outputs)
    except OSError as exc:
        return report_error("validate", UsageError(f"--write-golden {args.write_golden}: {exc.strerror}"))
    count = len(next(iter(inputs.values())))
    print(
        f"wrote {args.write_golden}: {count} inputs ({', '.join(inputs)}) and the outputs {', '.join(outputs)}\n"
        f"of {args.original} ({reference.description})\nsha256 {sha256_file(args.write_golden)}"
    )
    write_json(args.json, {"golden_set": args.write_golden, "inputs": count, "outputs": list(outputs)})
    return EXIT_OK


def _extra(args: argparse.Namespace) -> str:
    parts = []
    if args.max_abs_error is not None:
        parts.append(f", max abs error <= {args.max_abs_error:g}")
    if args.max_rel_error is not None:
        parts.append(f", max rel error <= {args.max_rel_error:g}")
    return "".join(parts)


__all__ = ["main", "EXIT_USAGE"]
