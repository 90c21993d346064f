"""KServe's own Python clients (``kserve.InferenceGRPCClient``, and ``InferenceRESTClient`` with
the v2 protocol) against a real runtime process: readiness, inference with the token, and the
errors a careless client gets, named. They run in ``.venv-kserve`` (hack/setup.sh), since kserve
pins a protobuf older than this project's; tests/runtime/kserve_client.py is the client side."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ports import free_port
from runtime_helpers import start_server

ROOT = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
TOKEN = "s3cret"

pytestmark = pytest.mark.skipif(
    not KSERVE_PYTHON.exists(), reason="KServe's clients are not installed: run hack/setup.sh (.venv-kserve)"
)


@pytest.fixture(scope="module")
def results(models, tmp_path_factory):
    grpc_port = free_port()
    srv = start_server(
        tmp_path_factory.mktemp("kserve"), models["two_inputs"], "two", GRPC_PORT=grpc_port, AUTH_TOKEN=TOKEN
    )
    try:
        done = subprocess.run(
            [str(KSERVE_PYTHON), str(Path(__file__).with_name("kserve_client.py")), f"127.0.0.1:{grpc_port}",
             srv.base, "two", TOKEN],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        srv.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_kserve_client_sees_the_server_ready_and_gets_the_answers(results, protocol):
    got = results[protocol]
    assert got["live"] is True and got["model_ready"] is True
    infer = got["infer"]
    assert infer["outputs"]["sum"] == infer["want_total"]
    assert infer["outputs"]["count"] == infer["want_count"]


def test_kserve_grpc_client_gets_its_request_id_back(results):
    assert results["grpc"]["ready"] is True
    assert results["grpc"]["infer"]["id"] == "kserve-1"


def test_kserve_grpc_client_without_the_token_is_unauthenticated(results):
    refused = results["grpc"]["no_token"]
    assert refused["code"] == "UNAUTHENTICATED"
    assert "authorization: Bearer" in refused["details"]


def test_kserve_clients_get_the_bad_tensor_named_and_serving_goes_on(results):
    grpc_error, rest_error = results["grpc"]["bad_shape"], results["rest"]["bad_shape"]
    assert grpc_error["code"] == "INVALID_ARGUMENT" and "input 'a' has shape [2, 4]" in grpc_error["details"]
    assert rest_error["status"] == 400 and "input 'a' has shape [2, 4]" in rest_error["text"]
    assert results["grpc"]["after_errors"]["sum"] == results["grpc"]["infer"]["want_total"]
