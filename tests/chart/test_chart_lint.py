"""`helm lint --strict`: the chart's own structure, with shipped and with non-default values."""

from __future__ import annotations

import pytest
from chart_helpers import CHART, NON_DEFAULT_VALUES, run_helm


@pytest.mark.parametrize("values", [None, NON_DEFAULT_VALUES], ids=["defaults", "non-defaults"])
def test_helm_lint_strict_passes(helm, tmp_path, values):
    result = run_helm(helm, "lint", "--strict", str(CHART), values=values, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_lint_strict_reports_a_schema_violation(helm, tmp_path):
    result = run_helm(helm, "lint", "--strict", str(CHART), values={"logLevel": "loud"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "logLevel" in result.stdout + result.stderr
