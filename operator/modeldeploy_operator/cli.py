"""`modeldeploy-operator`: runs the operator (kopf, standalone: one replica, no peering objects)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from .config import ConfigError, OperatorConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modeldeploy-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (the default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"modeldeploy-operator: {exc}", file=sys.stderr)
        return 2
    # With `insecure-skip-tls-verify` in a kubeconfig, urllib3 would warn on every request: once is enough.
    warnings.filterwarnings("once", message="Unverified HTTPS request")
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import kopf  # noqa: PLC0415 (imported late so that --help and config errors are quick)
    from prometheus_client import start_http_server  # noqa: PLC0415

    from . import handlers  # noqa: PLC0415 (registers the handlers)
    from .kube import Kube  # noqa: PLC0415
    from .render import Settings  # noqa: PLC0415
    from .versions import UnsupportedCluster  # noqa: PLC0415

    kube = Kube.from_environment()
    try:
        versions = kube.discover_api_versions()
    except UnsupportedCluster as exc:
        print(f"modeldeploy-operator: {exc}", file=sys.stderr)
        return 2
    handlers.watch_versioned_children(versions)
    settings = Settings(
        runtime_image=config.runtime_image,
        api_versions=versions,
        operator_namespace=config.operator_namespace,
        operator_pod_labels=config.operator_pod_labels,
    )
    memo = handlers.operator_memo(config, kube, settings)

    if config.metrics_port:
        start_http_server(config.metrics_port)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
        memo=memo,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
