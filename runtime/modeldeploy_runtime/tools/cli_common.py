"""What `modeldeploy optimize`, `validate` and `bench` share: input data flags, errors, JSON.

Exit codes are the same in all three: 0 done, 1 the work ran and failed (a threshold, a build),
2 the command cannot run as asked (a flag, a file, no GPU); the message names the flag and the fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A flag or file the command cannot work with; printed as is, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but returning errors instead of exiting, so `main()` always returns a code."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)


def add_data_args(parser: argparse.ArgumentParser, *, prefix: str = "", default_samples: int | None = 256) -> None:
    """`--data DIR` or generated inputs (`--samples N --seed S [--input-range LOW,HIGH]`)."""
    group = parser.add_argument_group("input data")
    group.add_argument(
        f"--{prefix}data",
        metavar="DIR",
        help="directory of .npy files (one-input models) or .npz files (arrays named by input); "
        "each array is one sample or a batch. Default: generated inputs",
    )
    if default_samples is not None:
        group.add_argument(
            f"--{prefix}samples",
            type=int,
            default=default_samples,
            metavar="N",
            help=f"how many inputs to generate when no data is given (default {default_samples})",
        )
    group.add_argument("--seed", type=int, default=0, help="seed of generated inputs (default 0)")
    group.add_argument(
        "--input-range",
        metavar="LOW,HIGH",
        help="generate float inputs uniform in [LOW, HIGH) instead of standard normal, e.g. 0,16",
    )
    group.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="fix an input's dynamic dimensions after the batch one, e.g. input:3x224x224 (repeatable)",
    )


def parse_range(value: str | None) -> tuple[float, float] | None:
    if not value:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--input-range {value!r}: expected LOW,HIGH, e.g. --input-range 0,16") from None
    if not low < high:
        raise UsageError(f"--input-range {value!r}: LOW must be below HIGH")
    return low, high


def input_data(args: argparse.Namespace, specs, *, prefix: str = ""):
    """The samples the flags ask for: loaded from the data directory or generated."""
    from ..measure import data as data_mod

    directory = getattr(args, f"{prefix}data")
    input_shapes = data_mod.parse_input_shapes(args.input_shape)
    if directory:
        return data_mod.load_dir(directory, specs, input_shapes)
    count = getattr(args, f"{prefix}samples")
    if count < 1:
        raise UsageError(f"--{prefix.replace('_', '-')}samples must be at least 1")
    return data_mod.generate(
        specs, count, seed=args.seed, value_range=parse_range(args.input_range), input_shapes=input_shapes
    )


def check_file(path: str, flag: str, suffixes: Sequence[str] = ()) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: expected a {' or '.join(suffixes)} file")
    return p


def write_json(path: str | None, payload: object) -> None:
    if not path:
        return
    text = json.dumps(payload, indent=2, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text)


def report_error(command: str, exc: BaseException) -> int:
    print(f"modeldeploy {command}: {exc}", file=sys.stderr)
    return EXIT_USAGE


def parse(parser: argparse.ArgumentParser, argv: list[str], command: str) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status when there is nothing to run (`--help`, a usage error)."""
    setup_logging()
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own error message
        return int(exc.code or 0)
    except UsageError as exc:
        return report_error(command, exc)
