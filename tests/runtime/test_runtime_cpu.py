"""Inference threads from the container's CPU quota, not the host's core count."""

from __future__ import annotations

import pytest
from modeldeploy_runtime.cpu import cgroup_cpu_limit, parse_cfs, parse_cpu_max, threads_for


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5), ("", None),
     ("garbage", None)],
)  # fmt: skip
def test_parse_cgroup_v2_cpu_max(text, cpus):
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"), [("-1", "100000", None), ("400000", "100000", 4.0), ("x", "1", None)]
)
def test_parse_cgroup_v1_cfs(quota, period, cpus):
    assert parse_cfs(quota, period) == cpus


@pytest.mark.parametrize(
    ("limit", "usable", "threads"), [(None, 64, 64), (2.0, 64, 2), (2.5, 64, 2), (0.5, 64, 1), (8.0, 4, 4)]
)
def test_threads_from_the_limit(limit, usable, threads):
    assert threads_for(limit, usable) == threads


def test_reads_v2_then_v1_files(tmp_path):
    (tmp_path / "cpu.max").write_text("300000 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) == 3.0
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) == 1.0


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert cgroup_cpu_limit(str(tmp_path)) is None
