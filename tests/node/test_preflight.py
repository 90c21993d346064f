"""Where a machine cannot run a node, the tier says why and skips; these run everywhere."""

from __future__ import annotations

import nodehost
import realnode


def test_without_root_the_reason_says_root(monkeypatch):
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 1000)
    assert "needs root" in realnode.why_not()


def test_without_cgroup_controllers_the_reason_names_the_missing_one(monkeypatch, tmp_path):
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 0)
    (tmp_path / "cpu").mkdir()
    monkeypatch.setattr(nodehost, "CGROUP_ROOT", tmp_path)
    reason = realnode.why_not()
    assert reason.startswith("no memory cgroup controller") and str(tmp_path) in reason


def test_cgroup_v2_controllers_count(monkeypatch, tmp_path):
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 0)
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    monkeypatch.setattr(nodehost, "CGROUP_ROOT", tmp_path)
    reason = realnode.why_not()
    assert reason is None or "cgroup" not in reason
