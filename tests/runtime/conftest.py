"""Fixtures of the runtime tests: models built in the test session and server processes that are
killed at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import (
    ServerProcess,
    affine_model,
    fixed_shape_model,
    pairs_model,
    slow_model,
    small_cnn_model,
    start_server,
    string_model,
    two_input_model,
)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "affine": affine_model(root / "affine.onnx"),
        "two_inputs": two_input_model(root / "two_inputs.onnx"),
        "fixed": fixed_shape_model(root / "fixed.onnx"),
        "strings": string_model(root / "strings.onnx"),
        "slow": slow_model(root / "slow.onnx"),
        "pairs": pairs_model(root / "pairs.onnx"),
        "cnn": small_cnn_model(root / "cnn.onnx"),
    }


@pytest.fixture
def server_factory(tmp_path):
    started: list[ServerProcess] = []

    def factory(model, name="m", wait=True, **settings) -> ServerProcess:
        server = start_server(tmp_path / f"server{len(started)}", model, name, wait, **settings)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def affine_server(models, tmp_path_factory):
    """One shared server for the read-only tests of a module."""
    server = start_server(tmp_path_factory.mktemp("affine"), models["affine"], "affine", MAX_BATCH_SIZE=4)
    yield server
    server.stop()
