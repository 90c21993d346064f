"""Fixtures for the chart tests: a real `helm` binary and a way to render the chart with values.

Helm comes from hack/install-helm.sh (cached); when it cannot be installed (no network on a
fresh machine) the tests that need it skip with the installer's error as the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from chart_helpers import CHART, NAMESPACE, RELEASE, ROOT, HelmResult, run_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        out = subprocess.run(
            [str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True, timeout=300, check=True
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"helm cannot be installed by hack/install-helm.sh: {getattr(exc, 'stderr', exc)}")
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def render(helm: Path, tmp_path: Path) -> Callable[..., HelmResult]:
    """`helm template` of the chart in the release namespace; extra args go to helm as they are."""

    def _render(values: dict | None = None, *args: str, chart: Path = CHART) -> HelmResult:
        return run_helm(
            helm,
            "template",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            *args,
            values=values,
            tmp_path=tmp_path,
        )

    return _render
