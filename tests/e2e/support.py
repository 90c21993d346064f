"""Test support for the end-to-end suite: deadlines, the operator as a real process, and the
kubelet's part (writing pod status), since the local control plane runs no kubelet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import playedkubelet
from ports import free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "modeldeploy.dev", "v1alpha1", "modeldeployments"


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Polls until `check` returns something truthy; fails with the last value seen after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except kubernetes.client.ApiException as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


class Operator:
    """`modeldeploy-operator` run as a real process against the test cluster."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        resync_seconds: int = 3,
        extra_env: dict | None = None,
        args: list[str] | None = None,
    ):
        self.args = list(args) if args is not None else ["--all-namespaces"]
        self.kubeconfig, self.log_dir = kubeconfig, log_dir
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MODELDEPLOY_RESYNC_SECONDS": str(resync_seconds),
            "MODELDEPLOY_METRICS_PORT": str(free_port()),
            "MODELDEPLOY_HEALTH_PORT": str(free_port()),
            "MODELDEPLOY_RUNTIME_IMAGE": "registry.local/modeldeploy/runtime:test",
            "PYTHONWARNINGS": "ignore",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MODELDEPLOY_METRICS_PORT']}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MODELDEPLOY_HEALTH_PORT']}/healthz"

    def start(self) -> Operator:
        self.starts += 1
        log = open(self.log_dir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy_operator.cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        wait_for(self._healthy, 30, "the operator's liveness endpoint")
        return self

    def _healthy(self) -> bool:
        import urllib.request

        assert self.proc is not None and self.proc.poll() is None, f"operator exited: {self.log_tail()}"
        try:
            with urllib.request.urlopen(self.health_url, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 4000) -> str:
        path = self.log_dir / f"operator-{self.starts}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def metric(self, name: str, **labels: str) -> float:
        import urllib.request

        with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                head, _, value = line.rpartition(" ")
                if head.split("{")[0] == name:
                    total += float(value)
        return total


# ---- playing the kubelet ------------------------------------------------------------------------


# Fixed, so that reporting the same pod again changes nothing (the old report's timestamps).
STARTED_AT = "2026-01-01T00:00:00Z"


def set_pod_ready(core: kubernetes.client.CoreV1Api, pod: Any, ready: bool = True) -> None:
    playedkubelet.report(core, pod, playedkubelet.ready(pod, ready, started_at=STARTED_AT))


def set_pod_crash_loop(
    core: kubernetes.client.CoreV1Api, pod: Any, restarts: int, message: str = "", reason: str = "Error"
) -> None:
    playedkubelet.report(core, pod, playedkubelet.crash_loop(pod, restarts, message, reason, at=STARTED_AT))


def set_pod_waiting(core: kubernetes.client.CoreV1Api, pod: Any, reason: str, message: str) -> None:
    playedkubelet.report(core, pod, playedkubelet.waiting(pod, reason, message))
