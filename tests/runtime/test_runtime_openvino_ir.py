"""OpenVINO IR models (NAME.xml + NAME.bin) served over real HTTP with tritonclient: the IR that
OpenVINO's own converter writes from the small CNN agrees with ONNX Runtime on that ONNX model;
`auto` serves it on OpenVINO; a missing .bin and a backend that cannot read IR stop the start with
a message naming what to fix; an IR from an https:// URL is fetched with its .bin, once."""

from __future__ import annotations

import hashlib
import http.server
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
httpclient = pytest.importorskip("tritonclient.http")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))
import make_openvino_ir  # noqa: E402
from runtime_helpers import http_infer, http_metadata  # noqa: E402


@pytest.fixture(scope="module")
def ir(models, tmp_path_factory) -> Path:
    """The small CNN as OpenVINO IR, converted here (nothing binary is committed)."""
    return make_openvino_ir.convert(models["cnn"], tmp_path_factory.mktemp("ir") / "cnn.xml")


def infer(server, x: np.ndarray, binary: bool = True) -> np.ndarray:
    return http_infer(server, x, "x", "probs", binary)


metadata = http_metadata


def refusal(server, code: int = 1) -> str:
    """The termination message of a start that failed (exit 1; 2 for a configuration error)."""
    assert server.wait_exit() == code, server.log()
    return server.termination_log.read_text()


def test_the_fixture_is_two_files_side_by_side(ir):
    assert ir.read_bytes().startswith(b"<?xml") and ir.with_suffix(".bin").stat().st_size > 0


def test_ir_is_served_agreeing_with_onnx_runtime_on_the_onnx_model(server_factory, models, ir):
    ort = server_factory(models["cnn"], "m")
    ov = server_factory(ir, "m", MAX_BATCH_SIZE=4, MAX_QUEUE_DELAY_US=1000)  # the format and backend from .xml
    x = np.random.default_rng(3).random((4, 3, 16, 16), dtype=np.float32)
    for binary in (True, False):
        np.testing.assert_allclose(infer(ov, x, binary), infer(ort, x, binary), rtol=1e-4, atol=1e-6)
    for row in x[:2]:  # one row runs on the static batch-1 compilation
        np.testing.assert_allclose(infer(ov, row[None]), infer(ort, row[None]), rtol=1e-4, atol=1e-6)
    meta = metadata(ov)
    assert meta["platform"] == "openvino_ir"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("x", "FP32", [-1, 3, 16, 16])]
    assert (meta["parameters"]["precision"], meta["parameters"]["inference_precision"]) == ("fp32", "f32")


def test_auto_serves_an_ir_on_openvino_without_a_contest(server_factory, ir):
    server = server_factory(ir, "m", BACKEND="auto")
    params = metadata(server)["parameters"]
    assert params["auto_choice"].startswith("openvino") and "auto_p50_ms" not in params
    assert infer(server, np.zeros((1, 3, 16, 16), np.float32)).shape == (1, 10)


def test_an_ir_without_its_bin_stops_naming_the_missing_file(server_factory, ir, tmp_path):
    lonely = tmp_path / "lonely.xml"
    lonely.write_bytes(ir.read_bytes())
    message = refusal(server_factory(lonely, "m", wait=False))
    assert message.startswith("model load failed: ")
    assert str(tmp_path / "lonely.bin") in message and "NAME.bin next to NAME.xml" in message


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_an_ir_on_a_backend_that_cannot_read_it_is_refused(server_factory, ir, backend):
    message = refusal(server_factory(ir, "m", wait=False, BACKEND=backend), code=2)
    assert message.startswith("invalid configuration: MODELDEPLOY_BACKEND")
    assert "OpenVINO IR" in message and "set it to openvino or auto" in message


class Files(http.server.SimpleHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):
        type(self).hits.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def web(ir, tmp_path):
    """A web server of cnn.xml and cnn.bin, and of lonely.xml whose .bin is not there."""
    site = tmp_path / "site"
    site.mkdir()
    for name in ("cnn.xml", "cnn.bin"):
        (site / name).write_bytes((ir.parent / name).read_bytes())
    (site / "lonely.xml").write_bytes(ir.read_bytes())
    handler = type("Handler", (Files,), {"hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: handler(*a, directory=str(site), **kw))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_an_ir_from_a_url_is_fetched_with_its_bin_once(server_factory, ir, web, tmp_path):
    base, handler = web
    sha = hashlib.sha256(ir.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    server = server_factory(f"{base}/cnn.xml?v=1", "m", MODEL_SHA256=sha, CACHE_DIR=cache)
    assert infer(server, np.ones((1, 3, 16, 16), np.float32)).shape == (1, 10)
    assert handler.hits == ["/cnn.xml?v=1", "/cnn.bin?v=1"]  # the query (a token) goes with the .bin too
    kept = cache / "models" / sha
    assert (kept / "cnn.bin").read_bytes() == ir.with_suffix(".bin").read_bytes()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    again = server_factory(f"{base}/cnn.xml?v=1", "m", MODEL_SHA256=sha, CACHE_DIR=cache)
    assert again.status("/v2/health/ready") == 200
    assert len(handler.hits) == 2, handler.hits  # both files came from the cache
    again.proc.send_signal(signal.SIGTERM)
    assert again.wait_exit() == 0
    # A cached .bin that no longer hashes as it arrived is fetched again.
    (kept / "cnn.bin").write_bytes(b"\0" * 16)
    third = server_factory(f"{base}/cnn.xml?v=1", "m", MODEL_SHA256=sha, CACHE_DIR=cache)
    assert third.status("/v2/health/ready") == 200 and handler.hits[2:] == ["/cnn.bin?v=1"]


def test_a_url_ir_whose_bin_is_missing_names_the_url_it_tried(server_factory, ir, web):
    base, _ = web
    sha = hashlib.sha256(ir.read_bytes()).hexdigest()
    message = refusal(server_factory(f"{base}/lonely.xml", "m", wait=False, MODEL_SHA256=sha))
    assert message.startswith(f"model load failed: the weights file {base}/lonely.bin of the OpenVINO IR")
    assert "404" in message and "put NAME.bin beside NAME.xml" in message
