"""`modeldeploy optimize`: quantize an ONNX model to INT8 for CPU, or build a TensorRT engine for GPU."""

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

EPILOG = """examples:
  modeldeploy optimize quantize model.onnx --calibration-data calib/      # -> model.int8.onnx
  modeldeploy optimize tensorrt model.onnx --precision fp16 --max-batch-size 32   (GPU)
  modeldeploy optimize tensorrt model.onnx --precision int8 --calibration-data calib/   (GPU)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="modeldeploy optimize",
        description="Quantize an ONNX model to INT8 (CPU) or build a TensorRT engine (GPU).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", metavar="{quantize,tensorrt}", parser_class=Parser)

    q = sub.add_parser(
        "quantize",
        help="INT8 static quantization (QDQ) with ONNX Runtime, for CPU serving",
        description="Static INT8 quantization in QDQ format: activations calibrated on your data "
        "(unsigned 8-bit by default), weights signed 8-bit per channel.",
    )
    q.add_argument("model", help="the FP32 ONNX model")
    q.add_argument("-o", "--output", help="where to write the INT8 model (default: MODEL.int8.onnx next to it)")
    add_data_args(q, prefix="calibration-", default_samples=256)
    q.add_argument(
        "--activation-type",
        choices=("uint8", "int8"),
        default="uint8",
        help="activation type: uint8 (default; the fast one on VNNI CPUs) or int8 (ONNX Runtime's default)",
    )
    q.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor instead of per channel")
    q.add_argument(
        "--calibrate-method",
        choices=("minmax", "entropy", "percentile"),
        default="minmax",
        help="how activation ranges are chosen (default minmax; the others need much more memory)",
    )
    q.add_argument("--calibration-batch-size", type=int, default=16, metavar="N", help="default 16")
    q.add_argument("--no-preprocess", action="store_true", help="skip ONNX Runtime's shape inference and graph fusion")
    q.add_argument(
        "--exclude-op",
        action="append",
        default=[],
        metavar="OP",
        help="leave this op type in float (repeatable)",
    )
    q.add_argument(
        "--dynamic", action="store_true", help="dynamic quantization instead (no calibration; usually slower)"
    )
    q.add_argument("--json", metavar="PATH", help="write a JSON summary here ('-' for stdout)")

    t = sub.add_parser(
        "tensorrt",
        help="build a TensorRT engine from an ONNX model (needs an NVIDIA GPU, TensorRT 10 and pycuda)",
        description="Build a TensorRT engine for this GPU. Engines are named by model hash, TensorRT "
        "version, GPU and options; an up-to-date engine is reused. Needs a GPU.",
    )
    t.add_argument("model", help="the FP32 ONNX model (with a dynamic batch dimension to batch)")
    t.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp16",
        help="fp16 (default), int8 (calibrated; keeps fp16 where int8 has no kernel) or fp32",
    )
    t.add_argument(
        "--max-batch-size",
        type=int,
        default=32,
        metavar="N",
        help="largest batch (0: the model's fixed shapes)",
    )
    t.add_argument(
        "--opt-batch-size",
        type=int,
        default=0,
        metavar="N",
        help="batch size kernels are tuned for (default: the max)",
    )
    t.add_argument(
        "--workspace-gib", type=float, default=4.0, metavar="GIB", help="builder workspace limit (default 4)"
    )
    out = t.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", help="engine file to write (default: a name from model hash, TensorRT and GPU)")
    out.add_argument("--output-dir", help="directory for the engine (default: next to the model)")
    add_data_args(t, prefix="calibration-", default_samples=512)
    t.add_argument("--calibration-batch-size", type=int, default=8, metavar="N", help="default 8")
    t.add_argument("--force", action="store_true", help="rebuild even when an up-to-date engine exists")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--json", metavar="PATH", help="write a JSON summary here ('-' for stdout)")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parse(parser, argv, "optimize")
    if isinstance(args, int):
        return args
    if args.action is None:
        parser.print_help()
        return EXIT_USAGE
    return quantize(args) if args.action == "quantize" else tensorrt(args)


def quantize(args: argparse.Namespace) -> int:
    from ..backends.base import BackendError
    from ..measure.data import DataError
    from ..measure.runner import OrtRunner
    from ..optimize import quantize as quant

    try:
        model = check_file(args.model, "MODEL", (".onnx",))
        output = args.output or str(quant.default_output(model, "int8-dynamic" if args.dynamic else "int8"))
        if quant.is_quantized(model):
            raise UsageError(f"{model} is already quantized; give the FP32 model")
        if args.dynamic:
            result = quant.quantize_dynamic_int8(model, output)
        else:
            if args.calibration_batch_size < 1:
                raise UsageError("--calibration-batch-size must be at least 1")
            runner = OrtRunner(model)
            specs = runner.inputs
            runner.close()
            samples = input_data(args, specs, prefix="calibration_")
            if not args.calibration_data:
                print(
                    f"calibrating on {args.calibration_samples} generated input(s): "
                    "give --calibration-data DIR with real inputs for production accuracy",
                    file=sys.stderr,
                )
            options = quant.QuantizeOptions(
                activation_type=args.activation_type,
                per_channel=not args.per_tensor,
                calibrate_method=args.calibrate_method,
                preprocess=not args.no_preprocess,
                calibration_batch_size=args.calibration_batch_size,
                exclude_ops=tuple(args.exclude_op),
            )
            result = quant.quantize_static_int8(model, output, samples, specs, options)
    except (UsageError, DataError, BackendError) as exc:
        return report_error("optimize quantize", exc)
    except Exception as exc:  # ONNX Runtime's quantizer raises anything; say which step failed
        print(
            f"modeldeploy optimize quantize: quantization failed: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(result.summary())
    print(f"check it: modeldeploy validate {args.model} {result.output}")
    write_json(args.json, result.__dict__)
    return EXIT_OK


def tensorrt(args: argparse.Namespace) -> int:
    from ..backends.base import BackendError, GpuUnavailableError
    from ..backends.trt_plan import PlanError
    from ..measure.data import DataError, parse_input_shapes
    from ..optimize import trt_build

    try:
        model = check_file(args.model, "MODEL", (".onnx",))
        options = trt_build.BuildOptions(
            precision=args.precision,
            max_batch_size=args.max_batch_size,
            opt_batch_size=args.opt_batch_size,
            input_shapes=parse_input_shapes(args.input_shape),
            workspace_gib=args.workspace_gib,
            calibration_batch_size=args.calibration_batch_size,
            progress=not args.no_progress,
        )
        calibration = None
        if args.precision == "int8":
            specs = trt_build.input_specs_for_calibration(model)
            calibration = input_data(args, specs, prefix="calibration_")
        elif args.calibration_data:
            raise UsageError("--calibration-data is only used with --precision int8")
        result = trt_build.build_engine(
            model,
            options,
            output=args.output,
            output_dir=args.output_dir,
            calibration=calibration,
            force=args.force,
        )
    except GpuUnavailableError as exc:
        print(f"modeldeploy optimize tensorrt needs a GPU: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, DataError, PlanError) as exc:
        return report_error("optimize tensorrt", exc)
    except BackendError as exc:
        print(f"modeldeploy optimize tensorrt: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(result.summary())
    print(f"serve it: modeldeploy-runtime serve --model {result.engine} --name NAME")
    write_json(
        args.json,
        {
            "engine": str(result.engine),
            "cached": result.cached,
            "seconds": result.seconds,
            **result.identity.to_meta(),
        },
    )
    return EXIT_OK
