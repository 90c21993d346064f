"""The `modeldeploy` command.

Each subcommand lives with the code it drives and is imported only when called, so that
`modeldeploy render` works where only the operator extra is installed and `modeldeploy optimize`
where only the runtime extras are.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with a `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("modeldeploy_operator.render_cli", "print the objects the operator would apply for a ModelDeployment"),
    "optimize": ("modeldeploy_runtime.tools.optimize_cli", "quantize an ONNX model or build a TensorRT engine"),
    "validate": ("modeldeploy_runtime.tools.validate_cli", "compare an optimized model with its original"),
    "bench": ("modeldeploy_runtime.tools.bench_cli", "measure latency and throughput of a model or a server"),
}


def usage() -> str:
    lines = ["usage: modeldeploy COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `modeldeploy COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"modeldeploy: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = "operator" if name == "render" else "optimize"
        print(
            f"modeldeploy {name}: a dependency is missing ({exc.name or exc}); "
            f"install it with: pip install 'modeldeploy[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
