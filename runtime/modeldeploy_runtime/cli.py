"""``modeldeploy-runtime serve``: the entry point of the runtime container."""

from __future__ import annotations

import os
import sys

import modeldeploy_contract as contract

from .config import ConfigError, build_parser, load_config

USAGE = """usage: modeldeploy-runtime serve [--model PATH|URL] [--name NAME] [options]

Serve one model over the Open Inference Protocol v2 (REST). Every option can also be set by an
environment variable (MODELDEPLOY_*); run `modeldeploy-runtime serve --help` for the list."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[:1] != list(contract.SERVE_ARGS):
        print(f"modeldeploy-runtime: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        config = load_config(argv[1:])
    except ConfigError as exc:
        message = contract.termination_message(contract.INVALID_CONFIGURATION, str(exc))
        print(f"modeldeploy-runtime: {message}", file=sys.stderr)
        from .termination import write_termination_message

        try:
            flag = build_parser().parse_known_args(argv[1:])[0].termination_log
        except ConfigError:  # the command line itself is what is wrong
            flag = None
        path = flag or os.environ.get("MODELDEPLOY_TERMINATION_LOG", contract.TERMINATION_LOG)
        write_termination_message(path, message)
        return 2
    from .server import serve  # imports numpy and the backends only when serving

    return serve(config)


if __name__ == "__main__":
    raise SystemExit(main())
