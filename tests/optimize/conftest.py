"""Fixtures of the optimization tests: real data (scikit-learn's digits, shipped with it: no
download), a small network trained on it in seconds, and the runtime's server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from ports import free_port


@pytest.fixture(scope="session")
def digits():
    """(x_train, x_test, y_train, y_test): raw 8x8 pixels 0..16 as float32, a stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="session")
def digits_onnx(digits, tmp_path_factory) -> Path:
    """An MLPClassifier trained on the digits here and now, exported with skl2onnx as is
    (input "X" [N, 64], outputs "label" [N] and "probabilities" [N, 10])."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x_train, _, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=0).fit(x_train / 16.0, y_train)
    # The scaling stays outside the graph here: the model sees x / 16, like the classifier did.
    model = to_onnx(clf, x_train[:1] / 16.0, options={"zipmap": False}, target_opset=17)
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="session")
def digits_dirs(digits, tmp_path_factory):
    """Calibration inputs (training digits) and held-out inputs as .npy directories, scaled like
    the model of `digits_onnx` expects."""
    x_train, x_test, _, _ = digits
    root = tmp_path_factory.mktemp("digits-data")
    calib, held = root / "calib", root / "heldout"
    calib.mkdir()
    held.mkdir()
    np.save(calib / "train.npy", x_train[:512] / 16.0)
    np.save(held / "test.npy", x_test / 16.0)
    return calib, held


@pytest.fixture
def serve(tmp_path):
    """Start the runtime's server on a model (the real `modeldeploy-runtime serve`); yields its URL."""
    procs = []

    def start(model: Path, name: str, *extra: str, deadline_s: float = 60.0) -> str:
        port = free_port()
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "modeldeploy_runtime.cli", "serve",
                "--model", str(model), "--name", name, "--port", str(port), "--host", "127.0.0.1",
                "--metrics-port", str(free_port()),
                "--termination-log", str(tmp_path / "termination-log"),
                "--cache-dir", str(tmp_path / "cache"), *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        procs.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}: {(tmp_path / f'{name}.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return url
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server not ready within {deadline_s} s: {(tmp_path / f'{name}.log').read_text()}")

    yield start
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
