"""`modeldeploy bench`: latency percentiles and throughput by batch size, of model files
(in-process, several side by side) or of a running v2 server (over HTTP)."""

from __future__ import annotations

import argparse
import sys

from .cli_common import (
    EXIT_OK,
    Parser,
    UsageError,
    add_data_args,
    check_file,
    input_data,
    parse,
    parse_range,
    report_error,
    write_json,
)

EPILOG = """examples:
  modeldeploy bench model.onnx model.int8.onnx --batch-sizes 1,8,32
  modeldeploy bench model.onnx --provider cuda                    (GPU)
  modeldeploy bench model.fp16.engine --batch-sizes 1,32          (GPU)
  modeldeploy bench model.onnx --engine openvino --precision bf16 --batch-sizes 1,8
  modeldeploy bench model.tflite --batch-sizes 1
  modeldeploy bench model.xml --engine openvino --batch-sizes 1,8   (OpenVINO IR, model.bin beside it)
  modeldeploy bench --url http://localhost:8080 --model-name resnet --concurrency 1,8 --protocol binary
  modeldeploy bench --url grpc://localhost:8081 --model-name resnet --concurrency 1,8 --protocol grpc
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="modeldeploy bench",
        description="Latency (p50/p95/p99) and throughput by batch size, as a table and JSON.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "models", nargs="*", metavar="MODEL", help="model files to run in-process (.onnx, .xml, .tflite, .engine/.plan)"
    )
    parser.add_argument("--batch-sizes", default="1,8,32", metavar="LIST", help="comma-separated (default 1,8,32)")
    parser.add_argument("--duration", type=float, default=5.0, metavar="SECONDS", help="per measurement (default 5)")
    parser.add_argument("--warmup", type=int, default=10, metavar="N", help="requests before measuring (default 10)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here ('-' for stdout)")
    local = parser.add_argument_group("in-process")
    local.add_argument(
        "--provider", choices=("cpu", "cuda"), default="cpu", help="ONNX Runtime provider (cuda needs a GPU)"
    )
    local.add_argument(
        "--engine",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="what runs .onnx files (.xml files, OpenVINO IR, always run on openvino)",
    )
    local.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="OpenVINO precision (bf16: --engine openvino)"
    )
    local.add_argument(
        "--threads", type=int, default=0, metavar="N", help="ONNX Runtime intra-op threads (0: its default)"
    )
    remote = parser.add_argument_group("server (Open Inference Protocol v2 over HTTP or gRPC)")
    remote.add_argument(
        "--url", help="server base URL, e.g. http://localhost:8080 (grpc://localhost:8081 with --protocol grpc)"
    )
    remote.add_argument("--model-name", help="the served model's name")
    remote.add_argument("--model-version", help="the served version (default: the server's choice)")
    remote.add_argument(
        "--concurrency", default="1", metavar="LIST", help="concurrent clients, comma-separated (default 1)"
    )
    remote.add_argument(
        "--protocol",
        choices=("binary", "json", "grpc"),
        default="binary",
        help="REST with binary or JSON tensors, or gRPC with raw_input_contents (default binary)",
    )
    remote.add_argument("--token", help="bearer token, when the server requires one")
    remote.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per request (default 30)")
    add_data_args(parser, default_samples=None)
    return parser


def main(argv: list[str]) -> int:
    args = parse(build_parser(), argv, "bench")
    if isinstance(args, int):
        return args
    from ..backends.base import BackendError
    from ..measure import bench
    from ..measure.bench_http import ServerError
    from ..measure.data import DataError

    try:
        batch_sizes = _ints(bench, args.batch_sizes, "--batch-sizes")
        if args.duration <= 0:
            raise UsageError("--duration must be positive")
        if args.url and args.models:
            raise UsageError("give MODEL files or --url, not both")
        if args.url:
            results = _server(args, batch_sizes)
        elif args.models:
            results = _files(args, batch_sizes)
        else:
            raise UsageError("nothing to measure: give MODEL files, or --url URL --model-name NAME")
    except (UsageError, DataError, BackendError, ServerError, ValueError) as exc:
        return report_error("bench", exc)
    print(bench.format_table(results, show_concurrency=bool(args.url)))
    write_json(args.json, [r.to_dict() for r in results])
    return EXIT_OK


def _ints(bench, value: str, flag: str) -> list[int]:
    try:
        return bench.parse_int_list(value, flag)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _files(args: argparse.Namespace, batch_sizes: list[int]):
    from ..measure import bench
    from ..measure.runner import open_model

    if args.model_name or args.concurrency != "1":
        raise UsageError("--model-name and --concurrency apply to --url only")
    results = []
    for path in args.models:
        if args.precision == "bf16" and args.engine != "openvino":
            raise UsageError("--precision bf16 runs on OpenVINO: add --engine openvino")
        runner = open_model(
            check_file(path, "MODEL"),
            provider=args.provider,
            threads=args.threads,
            engine=args.engine,
            precision=args.precision,
        )
        try:
            samples = input_data(args, runner.inputs) if args.data else None
            sizes = batch_sizes if any(s.batched for s in runner.inputs) else [1]
            if sizes != batch_sizes:
                print(f"{path}: no batch dimension, measured at batch size 1 only", file=sys.stderr)
            results += bench.bench_runner(
                runner,
                sizes,
                samples=samples,
                duration=args.duration,
                warmup=args.warmup,
                seed=args.seed,
                value_range=parse_range(args.input_range),
                input_shapes=_shapes(args),
            )
        finally:
            runner.close()
    return results


def _server(args: argparse.Namespace, batch_sizes: list[int]):
    from ..measure import bench
    from ..measure.bench_http import bench_server

    if args.protocol == "grpc":
        from ..measure.bench_grpc import bench_grpc_server as bench_server  # noqa: F811
    if not args.model_name:
        raise UsageError("--url needs --model-name NAME (the model as the server names it)")
    if args.data:
        raise UsageError("--data applies to MODEL files; against a server inputs are generated from its metadata")
    return bench_server(
        args.url,
        args.model_name,
        version=args.model_version,
        batch_sizes=batch_sizes,
        concurrencies=_ints(bench, args.concurrency, "--concurrency"),
        **({} if args.protocol == "grpc" else {"protocol": args.protocol}),
        duration=args.duration,
        warmup=args.warmup,
        token=args.token,
        timeout=args.timeout,
        seed=args.seed,
        value_range=parse_range(args.input_range),
        input_shapes=_shapes(args),
    )


def _shapes(args: argparse.Namespace):
    from ..measure.data import parse_input_shapes

    return parse_input_shapes(args.input_shape)
