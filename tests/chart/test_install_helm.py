"""hack/install-helm.sh: a working helm, and a second run that touches nothing but the cache."""

from __future__ import annotations

import os
import subprocess

from chart_helpers import ROOT


def test_installed_helm_is_helm_3(helm):
    out = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.startswith("v3.")


def test_second_run_uses_the_cache_without_python_or_network(helm):
    # PYTHON=false makes any download or extraction fail, so success proves the cached path.
    env = {**os.environ, "PYTHON": "false", "MODELDEPLOY_CACHE": str(helm.parent.parent)}
    out = subprocess.run(
        [str(ROOT / "hack" / "install-helm.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == str(helm)
