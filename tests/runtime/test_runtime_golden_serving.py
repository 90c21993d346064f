"""The golden set gate in real server processes: `modeldeploy validate --write-golden` makes the
file from a trusted model; a server of that model becomes ready with it, a server of another
model refuses readiness with the figures in its termination log, and a file that does not fit
the model is a configuration error."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading

import numpy as np
import pytest
from modeldeploy_runtime.tools import validate_cli
from runtime_helpers import small_cnn_model

SAMPLES = 64


@pytest.fixture(scope="module")
def golden(models, tmp_path_factory):
    """The golden set of the trusted classifier, as a user writes it."""
    path = tmp_path_factory.mktemp("golden") / "cnn-golden.npz"
    assert validate_cli.main([str(models["cnn"]), "--write-golden", str(path), "--samples", str(SAMPLES)]) == 0
    return path


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """The same architecture with other weights: a bad export of the trusted model."""
    return small_cnn_model(tmp_path_factory.mktemp("other") / "other.onnx", seed=1)


def test_write_golden_holds_the_inputs_and_the_trusted_models_outputs(golden, models):
    with np.load(golden) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert set(arrays) == {"input:x", "output:probs"}
    assert arrays["input:x"].shape == (SAMPLES, 3, 16, 16) and arrays["input:x"].dtype == np.float32
    assert arrays["output:probs"].shape == (SAMPLES, 10)
    import onnxruntime as ort

    session = ort.InferenceSession(str(models["cnn"]), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["probs"], {"x": arrays["input:x"]})
    assert np.allclose(arrays["output:probs"], expected, atol=1e-6)


def test_write_golden_refuses_an_optimized_model_argument(golden, models, capsys):
    assert validate_cli.main([str(models["cnn"]), str(models["cnn"]), "--write-golden", str(golden)]) == 2
    assert "drop OPTIMIZED" in capsys.readouterr().err


def test_the_trusted_model_becomes_ready_with_its_golden_set(server_factory, models, golden):
    server = server_factory(models["cnn"], "m", GOLDEN_SET_PATH=golden, MAX_BATCH_SIZE=16)
    assert server.status("/v2/health/ready") == 200
    assert f"golden set {golden}: {SAMPLES} inputs agree on probs" in server.log()


def test_a_model_that_disagrees_never_becomes_ready_and_says_by_how_much(server_factory, other_model, golden):
    server = server_factory(other_model, "m", GOLDEN_SET_PATH=golden, wait=False)
    assert server.wait_exit() == 1
    message = server.termination_log.read_text()
    match = re.fullmatch(
        r'golden set mismatch: output "probs" top-1 agreement (0\.\d+|0) < 0\.99 on 64 inputs\n', message
    )
    assert match, message
    assert float(match.group(1)) < 0.9  # other weights: most answers differ
    assert "ready:" not in server.log()


def test_the_latency_gate_runs_first(server_factory, other_model, golden):
    server = server_factory(other_model, "m", GOLDEN_SET_PATH=golden, LATENCY_BUDGET_MS="0.000001", wait=False)
    assert server.wait_exit() == 1
    assert server.termination_log.read_text().startswith("latency budget exceeded: ")


def test_a_golden_set_that_does_not_fit_the_model_is_invalid_configuration(server_factory, models, golden, tmp_path):
    with np.load(golden) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["input:x"] = arrays["input:x"][:, :, :8]  # half the image height
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    server = server_factory(models["cnn"], "m", GOLDEN_SET_PATH=bad, wait=False)
    assert server.wait_exit() == 1
    message = server.termination_log.read_text()
    assert message.startswith(f"invalid configuration: golden set {bad}: "), message
    assert '"input:x" has shape [64, 3, 8, 16]' in message and "needs [N, 3, 16, 16]" in message


def test_a_missing_golden_set_is_a_load_failure_naming_its_variable(server_factory, models, tmp_path):
    server = server_factory(models["cnn"], "m", GOLDEN_SET_PATH=tmp_path / "absent.npz", wait=False)
    assert server.wait_exit() == 1
    message = server.termination_log.read_text()
    assert message.startswith("model load failed: golden set: ") and "MODELDEPLOY_GOLDEN_SET_PATH" in message


@pytest.fixture
def golden_server(golden):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **kw: Quiet(*a, directory=str(golden.parent), **kw)
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{golden.name}"
    httpd.shutdown()
    httpd.server_close()


def test_a_golden_set_url_is_downloaded_and_verified_like_a_model(server_factory, models, golden, golden_server):
    sha = hashlib.sha256(golden.read_bytes()).hexdigest()
    server = server_factory(models["cnn"], "m", GOLDEN_SET_PATH=golden_server, GOLDEN_SET_SHA256=sha)
    assert server.status("/v2/health/ready") == 200
    refused = server_factory(models["cnn"], "m", GOLDEN_SET_PATH=golden_server, GOLDEN_SET_SHA256="0" * 64, wait=False)
    assert refused.wait_exit() == 1
    message = refused.termination_log.read_text()
    assert message.startswith("model load failed: golden set: ") and "MODELDEPLOY_GOLDEN_SET_SHA256 expects" in message
