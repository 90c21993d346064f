"""Operator settings from the environment (see docs/architecture.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .render.common import DEFAULT_RUNTIME_IMAGE


class ConfigError(ValueError):
    pass


def _int(name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be at most {maximum}")
    return value


def _labels(name: str) -> tuple[tuple[str, str], ...]:
    """`k=v,k=v`: the labels of the operator's own pods."""
    raw = os.environ.get(name, "").strip()
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{name}={raw!r}: write labels as key=value,key=value")
        pairs.append((key.strip(), value.strip()))
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class OperatorConfig:
    runtime_image: str
    resync_seconds: int
    metrics_port: int
    health_port: int
    log_level: str
    operator_namespace: str = ""
    operator_pod_labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls) -> OperatorConfig:
        level = os.environ.get("MODELDEPLOY_LOG_LEVEL", "info").lower()
        if level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"MODELDEPLOY_LOG_LEVEL={level!r}: use debug, info, warning or error")
        return cls(
            runtime_image=os.environ.get("MODELDEPLOY_RUNTIME_IMAGE") or DEFAULT_RUNTIME_IMAGE,
            resync_seconds=_int("MODELDEPLOY_RESYNC_SECONDS", 30),
            metrics_port=_int("MODELDEPLOY_METRICS_PORT", 9090, minimum=0, maximum=65535),
            health_port=_int("MODELDEPLOY_HEALTH_PORT", 8081, minimum=0, maximum=65535),
            log_level=level,
            operator_namespace=os.environ.get("MODELDEPLOY_OPERATOR_NAMESPACE", ""),
            operator_pod_labels=_labels("MODELDEPLOY_OPERATOR_POD_LABELS"),
        )
