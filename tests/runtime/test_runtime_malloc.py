"""glibc malloc settings: applied on glibc, left to the user when the environment sets them."""

from __future__ import annotations

import platform

import pytest
from modeldeploy_runtime import malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_settings_apply_on_glibc(monkeypatch):
    for name in malloc.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert malloc.keep_freed_memory() is True


def test_environment_settings_win(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert malloc.keep_freed_memory() is False
